"""One place for every setting. Every command reads the same `HPCINFRA_*` environment variables."""

from datetime import timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.providers import check_account_entry


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

    # Leases (services/leases.py): the lease a cluster gets when none is asked for (0: none, it runs until
    # deleted), the longest a CAD manager may ask for or extend to, counted from then (0: no limit; an IT
    # manager may go beyond it), and how long before its end a cluster's lease warns (cluster.expiring).
    lease_default_hours: float = Field(default=0, ge=0, le=366 * 24)
    lease_max_hours: float = Field(default=0, ge=0, le=10 * 366 * 24)
    lease_warning_minutes: float = Field(default=60, ge=0, le=7 * 24 * 60)

    # Credits: what a new tenant is granted, and how many hours of runway (its balance over its clusters'
    # total rate, the new one included) an approval must leave; 0 turns the check off.
    opening_credits: Decimal = Field(default=Decimal(10_000), ge=0, le=1_000_000_000, decimal_places=6)
    budget_min_runway_hours: float = Field(default=24, ge=0)

    # Requests per minute each API token (or signed-in user) may make; beyond it, 429. 0 turns it off.
    rate_limit_per_minute: int = Field(default=600, ge=0)

    # Workflows a worker keeps in memory between their tasks. Each live cluster has two (its own and its
    # metering); one evicted from the cache is replayed from its history at its next task, once a minute.
    worker_max_cached_workflows: int = Field(default=10_000, ge=0)

    # The simulated provider waits this long for each simulated step (0 in tests).
    sim_step_seconds: float = 1.0

    # Pulumi, for the aws, gcp and azure providers: where stack state lives and how its secrets are
    # encrypted. Empty backend means a folder in the data folder; an empty passphrase in development
    # means one kept in the data folder (production must set it, or use a KMS secrets provider).
    pulumi_backend_url: str = ""
    pulumi_secrets_provider: str = "passphrase"
    pulumi_passphrase: str = ""

    # Outbound webhooks: each delivery is retried with exponential backoff from the initial interval (doubling
    # up to the maximum) until it is accepted or `webhook_give_up_after` has passed; each attempt waits this
    # long for the receiver's answer.
    webhook_retry_initial_seconds: float = Field(default=10, gt=0, le=3600)
    webhook_retry_maximum_seconds: float = Field(default=3600, gt=0, le=86400)
    webhook_give_up_after: timedelta = timedelta(hours=24)
    webhook_timeout_seconds: float = Field(default=10, gt=0, le=60)
    # Webhook receivers must be public addresses: a URL whose host is (or resolves to) a loopback, private,
    # link-local, multicast, reserved or unspecified address is refused, at registration and at delivery.
    # An operator with an internal receiver names its networks here (CIDR, as a JSON list: ["10.1.0.0/16"]).
    webhook_allowed_networks: list[str] = []

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _check_webhook_networks(cls, entries: list[str]) -> list[str]:
        from ipaddress import ip_network

        networks = []
        for entry in entries:
            try:
                networks.append(str(ip_network(entry.strip())))
            except ValueError as e:
                raise ValueError(
                    f"HPCINFRA_WEBHOOK_ALLOWED_NETWORKS: {entry!r} is not a network in CIDR notation, such as "
                    f"10.1.0.0/16 or fd00:1::/64 ({e})"
                ) from None
        return networks

    # Which cloud accounts tenants' providers may name: "<tenant name>/<cloud>:<account>" allows the account
    # to that tenant alone, a bare "<cloud>:<account>" to every tenant ("aws:<account id>", "gcp:<project>",
    # "azure:<subscription id>"); empty allows any. A bare entry lets any tenant's IT manager build and bill
    # clusters in that account, so a careful operator scopes every entry to its tenant. When set, a cloud
    # provider must name its account in its config (`accountId`, `project`, `subscriptionId`); it is checked
    # at registration (API and CLI) and again before each run of the provider. Providers that run on the
    # platform's own machines (`local`) are registered by admins only, whatever this says.
    allowed_cloud_accounts: list[str] = []

    @field_validator("allowed_cloud_accounts")
    @classmethod
    def _check_cloud_accounts(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            check_account_entry(entry)
        return entries

    # Fernet keys for service credentials, comma-separated; the first encrypts, all decrypt.
    # Empty in development means a key kept in the data folder; production requires keys.
    credential_keys: str = ""

    # OIDC sign-in: JWT bearer tokens from an identity provider, accepted next to API tokens (see
    # api/oidc.py). An empty issuer turns it off. A token must be issued by `oidc_issuer` for
    # `oidc_audience`, signed with one of `oidc_algorithms` by a key the provider publishes at
    # `oidc_jwks_url`, and name the caller's role, tenant (by name) and e-mail in the given claims.
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks_url: str = ""
    oidc_role_claim: str = "hpcinfra_role"
    oidc_tenant_claim: str = "hpcinfra_tenant"
    oidc_email_claim: str = "email"
    oidc_algorithms: list[str] = ["RS256", "ES256"]
    # A token whose `email_verified` claim is anything but true is always refused; one without it is refused
    # unless this is set (for identity providers that verify every address and do not say so).
    oidc_accept_unstated_email_verification: bool = False

    # Decisions by Temporal signal (`decide` on a request's workflow) name their decider but cannot prove it:
    # anyone who may signal in the Temporal namespace can send one. Operators who cannot restrict who may
    # signal there turn them off; the API's decisions (PATCH /requests/{id}) are unaffected.
    signal_decisions: bool = True

    # How often the worker looks for work committed to the database whose workflow never started (an API
    # stopped between its commit and the start, a Temporal blip) and starts it (services/resume.py).
    resume_every_seconds: float = Field(default=60, gt=0, le=86400)

    # Observability (see core/observability.py). Log lines as JSON objects or as text; empty means
    # JSON in production and text in development.
    log_format: Literal["", "json", "text"] = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The worker serves Prometheus metrics (the Temporal SDK's and the application's) on this port of
    # `worker_metrics_host`, at /metrics; 0 turns it off.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    worker_metrics_host: str = "0.0.0.0"
    # Where traces go: none (no tracer, no interceptor, no cost), console (stdout, for a look in
    # development), or otlp (OTLP over HTTP to OTEL_EXPORTER_OTLP_ENDPOINT, a collector; the standard
    # OTEL_* variables configure it further). The service name is OTEL_SERVICE_NAME or hpcinfra-<part>.
    otel_exporter: Literal["none", "console", "otlp"] = "none"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_oidc(self) -> "Settings":
        # Public-key signatures only (as api.oidc.ALGORITHMS): never `none`, never HS*.
        accepted = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
        refused = [a for a in self.oidc_algorithms if a not in accepted]
        if refused or not self.oidc_algorithms:
            raise ValueError(
                f"HPCINFRA_OIDC_ALGORITHMS may name only {', '.join(accepted)} (public-key signatures), not {refused}"
            )
        if self.oidc_issuer:
            for name in ("oidc_audience", "oidc_jwks_url", "oidc_role_claim", "oidc_tenant_claim", "oidc_email_claim"):
                if not getattr(self, name).strip():
                    raise ValueError(f"HPCINFRA_{name.upper()} must be set when HPCINFRA_OIDC_ISSUER is")
            if self.env == "production" and not self.oidc_jwks_url.startswith("https://"):
                raise ValueError("HPCINFRA_OIDC_JWKS_URL must be an https:// URL in production")
        return self

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
    def json_logs(self) -> bool:
        return self.log_format == "json" or (not self.log_format and self.env == "production")

    @property
    def stack_backend_url(self) -> str:
        return self.pulumi_backend_url or f"file://{(self.data_dir / 'pulumi-state').resolve()}"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'hpcinfra.db'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
