"""The schema's migrations (Alembic), and the runner that applies them. A migration may run the domain's
code for its data step (0005 sums the tenants' standing rates with services.credits): that is why they
live in the domain layer, not in the core with the models."""

from pathlib import Path

MIGRATIONS = Path(__file__).parent


def upgrade(url: str) -> None:
    """Apply every migration that the database does not have yet."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    command.upgrade(config, "head")
