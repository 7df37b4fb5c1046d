"""Providers by kind. Every kind a cloud provider can be registered with appears here."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.providers.base import Provider, ProviderUnavailable, describe_validation_error

KINDS = ("sim", "local", "aws", "gcp", "azure")
CLOUDS = ("aws", "gcp", "azure")


@dataclass(frozen=True)
class ProviderSettings:
    data_dir: Path
    sim_step_seconds: float
    # For the cloud kinds: where Pulumi keeps stack state, and how it encrypts the stacks' secrets.
    stack_backend_url: str
    stack_secrets_provider: str
    stack_passphrase: str


def get_provider(kind: str, settings: ProviderSettings, *, recover: bool = False) -> Provider:
    """The provider for `kind`. `recover` says that an earlier attempt at the same operation may have
    died half way, so whatever it left (a lock, pending operations) must be cleared first."""
    if kind == "sim":
        from infra.providers.sim import SimProvider

        return SimProvider(settings.sim_step_seconds, settings.data_dir / "sim")
    if kind == "local":
        from infra.providers.local import LocalProvider

        return LocalProvider(settings.data_dir / "local")
    if kind in CLOUDS:
        from infra.clouds.runner import StackRunner, StackSettings
        from infra.providers.pulumi_provider import PulumiProvider

        stacks = StackSettings(
            backend_url=settings.stack_backend_url,
            secrets_provider=settings.stack_secrets_provider,
            passphrase=settings.stack_passphrase,
            work_dir=settings.data_dir / "pulumi-work",
        )
        return PulumiProvider(kind, StackRunner(stacks), recover=recover)
    raise ProviderUnavailable(f"unknown provider kind {kind!r}; known kinds: {', '.join(KINDS)}")


def check_config(kind: str, config: dict[str, Any]) -> None:
    """Refuse a provider config this kind cannot use, with a message saying what is wrong."""
    from pydantic import BaseModel, ValidationError

    model: type[BaseModel]
    if kind == "sim":
        from infra.providers.sim import SimConfig as model
    elif kind in CLOUDS:
        from infra.clouds.plan import CloudConfig as model
    elif kind == "local":
        from infra.providers.local import LocalConfig as model
    else:
        return
    try:
        model.model_validate(config)
    except ValidationError as e:
        raise ValueError(f"invalid {kind} provider config: {describe_validation_error(e)}") from None
