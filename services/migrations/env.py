"""Alembic environment: the URL comes from the caller (`hpcinfra db upgrade`) or from settings."""

from alembic import context

from core.db import make_engine
from core.models import Base
from core.settings import get_settings

url = context.config.attributes.get("url") or get_settings().sqlalchemy_url
engine = make_engine(url)

with engine.connect() as connection:
    # Batch mode lets SQLite alter tables by copying them; PostgreSQL alters in place.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
