"""The `hpcinfra` command (cli/main.py): the embedded stack, the servers, migrations and
administration, which use the database; and the user commands (cli/user/), which use the HTTP
API only. Run as `hpcinfra ...` or `python -m cli ...`."""
