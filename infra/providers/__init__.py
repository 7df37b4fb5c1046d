"""Providers by kind. Every kind a cloud provider can be registered with appears here."""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.providers import Provider, ProviderUnavailable, describe_validation_error

KINDS = ("sim", "local", "aws", "gcp", "azure")
CLOUDS = ("aws", "gcp", "azure")
# Kinds whose clusters run on the platform's own machines: `local` starts root processes on the worker's
# host, so only admins register it. (`sim` runs nothing: it writes a file per cluster in the data folder.)
ON_PLATFORM_MACHINES = ("local",)
# The setting that lists the cloud accounts providers may name (core.settings).
ALLOWED_ACCOUNTS_SETTING = "HPCINFRA_ALLOWED_CLOUD_ACCOUNTS"


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


def check_account(kind: str, config: dict[str, Any], tenant: str, allowed: Sequence[str]) -> None:
    """Refuse a cloud provider of the tenant named `tenant` whose account (AWS), project (GCP) or
    subscription (Azure) is not one the operator allows it (`allowed`: entries `<cloud>:<account>` for
    every tenant, `<tenant>/<cloud>:<account>` for that tenant alone; empty allows any). With a list, a
    provider must name its account: one left to the worker's credentials could be any. The message does
    not repeat the list, nor say whether another tenant may use the account: both are the operator's."""
    if kind not in CLOUDS or not allowed:
        return
    from infra.clouds.plan import ACCOUNT_KEYS

    key = ACCOUNT_KEYS[kind]
    account = config.get(key)
    if not account:
        raise ValueError(
            f"{ALLOWED_ACCOUNTS_SETTING} limits the {kind} accounts of this platform: a {kind} provider must name its {key}"
        )
    # Azure writes subscription ids in either case; the others' ids have one. Tenant names are exact:
    # "Acme" and "acme" may be two tenants.
    wanted = f"{kind}:{account}".lower()
    for entry in allowed:
        scope, target = _split_entry(entry)
        if target.lower() == wanted and scope in (None, tenant):
            return
    raise ValueError(
        f"{kind} {key} {account!r} is not one of the accounts {ALLOWED_ACCOUNTS_SETTING} allows this tenant"
    )


def refuse_unallowed_account(kind: str, config: dict[str, Any], tenant: str, settings: ProviderSettings) -> None:
    """Before a provider run: refuse the cluster's provider when its account is not one the operator allows
    the cluster's tenant now. A provider registered before the list was set or narrowed, or by the admin
    CLI, was never checked against it. ProviderUnavailable, because no retry can change the answer."""
    try:
        check_account(kind, config, tenant, settings.allowed_cloud_accounts)
    except ValueError as e:
        raise ProviderUnavailable(f"this cluster's provider may not be used: {e}") from None


def check_account_entry(entry: str) -> None:
    """Refuse an entry of the allowed-accounts setting that names no account of a cloud, or names it for
    a tenant by a name no tenant can have."""
    from infra.clouds.plan import AWS_ACCOUNT, AZURE_SUBSCRIPTION, GCP_PROJECT

    patterns = {"aws": AWS_ACCOUNT, "gcp": GCP_PROJECT, "azure": AZURE_SUBSCRIPTION}
    scope, target = _split_entry(entry)
    cloud, _, account = target.partition(":")
    if cloud not in patterns or not re.fullmatch(patterns[cloud], account):
        raise ValueError(
            f"{ALLOWED_ACCOUNTS_SETTING}: {entry!r} is none of aws:<12-digit account id>, gcp:<project id>, "
            "azure:<subscription id>, each alone or after '<tenant name>/'"
        )
    # Tenant names are stripped of surrounding spaces when tenants are made (hpcinfra.accounts).
    if scope is not None and (not scope or scope != scope.strip()):
        raise ValueError(
            f"{ALLOWED_ACCOUNTS_SETTING}: {entry!r} names no tenant before its '/': a tenant's name is not empty "
            "and neither starts nor ends with a space"
        )


def _split_entry(entry: str) -> tuple[str | None, str]:
    """An allowed-accounts entry as (its tenant, None for every tenant; `<cloud>:<account>`). No account id
    has a '/', and a tenant's name may: the last '/' is the one that ends the tenant's name."""
    scope, slash, target = entry.rpartition("/")
    return (scope if slash else None), target
