from hpcinfra.cli import app

app()
