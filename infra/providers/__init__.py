"""The provider of each kind (core.providers lists the kinds), and the check of a config against its kind."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.providers import CLOUDS, KINDS, Provider, ProviderUnavailable, check_account, describe_validation_error


@dataclass(frozen=True)
class ProviderSettings:
    data_dir: Path
    sim_step_seconds: float
    # For the cloud kinds: where Pulumi keeps stack state, and how it encrypts the stacks' secrets.
    stack_backend_url: str
    stack_secrets_provider: str
    stack_passphrase: str
    # The operator's allowed cloud accounts (HPCINFRA_ALLOWED_CLOUD_ACCOUNTS), checked again at each run.
    allowed_cloud_accounts: tuple[str, ...] = ()


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
        from infra.clouds.plan import CLOUD_OF_KEY
        from infra.clouds.plan import CloudConfig as model

        # One model serves the three clouds: a key of another cloud's would be ignored, which nobody means.
        for key in config:
            if CLOUD_OF_KEY.get(key, kind) != kind:
                raise ValueError(f"invalid {kind} provider config: {key}: a {CLOUD_OF_KEY[key]} setting")
    elif kind == "local":
        from infra.providers.local import LocalConfig as model
    else:
        return
    try:
        model.model_validate(config)
    except ValidationError as e:
        raise ValueError(f"invalid {kind} provider config: {describe_validation_error(e)}") from None


def refuse_unallowed_account(kind: str, config: dict[str, Any], tenant: str, settings: ProviderSettings) -> None:
    """Before a provider run: refuse the cluster's provider when its account is not one the operator allows
    the cluster's tenant now. A provider registered before the list was set or narrowed, or by the admin
    CLI, was never checked against it. ProviderUnavailable, because no retry can change the answer."""
    try:
        check_account(kind, config, tenant, settings.allowed_cloud_accounts)
    except ValueError as e:
        raise ProviderUnavailable(f"this cluster's provider may not be used: {e}") from None
