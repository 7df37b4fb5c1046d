"""One place for every setting. Every command reads the same `HPCINFRA_*` environment variables."""

from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HPCINFRA_", extra="ignore")

    # "development" allows the conveniences of the embedded stack; "production" refuses them.
    env: str = "development"
    data_dir: Path = Path("data")
    # Empty means SQLite in the data folder.
    database_url: str = ""

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "hpcinfra"
    # Where operators find the Temporal web UI; printed by `hpcinfra dev`.
    temporal_ui_port: int = 8233

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    max_body_bytes: int = 1_000_000

    # A request nobody decides within this time is rejected as expired.
    request_expiry: timedelta = timedelta(days=7)
    # Direct `POST /clusters` by a CAD manager, without approval, up to this size.
    self_service_max_nodes: int = 2
    self_service_node_types: list[str] = ["small", "medium"]

    # Credits: what a new tenant is granted, and how many hours of runway (its balance over its clusters'
    # total rate, the new one included) an approval must leave; 0 turns the check off.
    opening_credits: Decimal = Field(default=Decimal(10_000), ge=0, le=1_000_000_000, decimal_places=6)
    budget_min_runway_hours: float = Field(default=24, ge=0)

    # The simulated provider waits this long for each simulated step (0 in tests).
    sim_step_seconds: float = 1.0

    # Pulumi, for the aws, gcp and azure providers: where stack state lives and how its secrets are
    # encrypted. Empty backend means a folder in the data folder; an empty passphrase in development
    # means one kept in the data folder (production must set it, or use a KMS secrets provider).
    pulumi_backend_url: str = ""
    pulumi_secrets_provider: str = "passphrase"
    pulumi_passphrase: str = ""

    # Fernet keys for service credentials, comma-separated; the first encrypts, all decrypt.
    # Empty in development means a key kept in the data folder; production requires keys.
    credential_keys: str = ""

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.env not in ("development", "production"):
            raise ValueError("HPCINFRA_ENV must be 'development' or 'production'")
        if self.env == "production" and not self.database_url:
            raise ValueError("HPCINFRA_DATABASE_URL must be set in production (SQLite is for development)")
        if self.env == "production" and not self.credential_keys.strip():
            raise ValueError(
                "HPCINFRA_CREDENTIAL_KEYS must be set in production (`hpcinfra credentials new-key` makes one)"
            )
        return self

    @property
    def stack_backend_url(self) -> str:
        return self.pulumi_backend_url or f"file://{(self.data_dir / 'pulumi-state').resolve()}"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'hpcinfra.db'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
