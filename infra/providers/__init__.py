"""Providers by kind. Every kind a cloud provider can be registered with appears here."""

from pathlib import Path

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
