"""Providers by kind. Every kind a cloud provider can be registered with appears here."""

from pathlib import Path
from typing import Any

from infra.providers.base import Provider, ProviderUnavailable

KINDS = ("sim", "aws", "gcp", "azure")


def get_provider(kind: str, *, sim_step_seconds: float, data_dir: Path) -> Provider:
    if kind == "sim":
        from infra.providers.sim import SimProvider

        return SimProvider(sim_step_seconds, data_dir / "sim")
    if kind in KINDS:
        raise ProviderUnavailable(
            f"provisioning on {kind} is not available in this version of hpcinfra yet "
            "(its Pulumi program is still to come); register a 'sim' provider to try the platform"
        )
    raise ProviderUnavailable(f"unknown provider kind {kind!r}; known kinds: {', '.join(KINDS)}")


def check_config(kind: str, config: dict[str, Any]) -> None:
    """Refuse a provider config this kind cannot use, with a message saying what is wrong."""
    if kind == "sim":
        from pydantic import ValidationError

        from infra.providers.sim import SimConfig

        try:
            SimConfig.model_validate(config)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise ValueError(f"invalid sim provider config: {problems}") from None
