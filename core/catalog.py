"""The catalog: node types, EDA tools and services, defined once.

Validation of requests, the `GET /catalog` endpoint and the providers all read this module.
Credits are the platform's unit of cost; every rate here is in credits per hour.
"""

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NodeType:
    name: str
    vcpus: int
    memory_gb: int
    credits_per_hour: float
    # The instance type each cloud maps this node type to.
    instance_types: dict[str, str]


@dataclass(frozen=True)
class LocalOffer:
    """What the `local` provider installs for a tool: one version, from a Debian package or from PyPI."""

    version: str
    debian_package: str | None = None
    pip_package: str | None = None


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    versions: tuple[str, ...]
    # The Spack package that builds it on a cloud cluster's shared storage (every listed version).
    spack_package: str
    # What the `local` provider offers: Debian 12's version, or none.
    local: LocalOffer | None = None
    # The listed tools are open source: installing one costs nothing beyond the cluster itself.
    credits_per_hour: float = 0.0


@dataclass(frozen=True)
class ConfigKey:
    """A setting a service takes in its `config`: a name matching `pattern`, or a whole number in a range."""

    name: str
    description: str
    pattern: str | None = None
    minimum: int | None = None
    maximum: int | None = None

    def check(self, value: Any) -> None:
        if self.pattern is not None:
            if not isinstance(value, str) or not re.fullmatch(self.pattern, value):
                raise ValueError(f"config.{self.name} must match {self.pattern}")
        elif not isinstance(value, int) or isinstance(value, bool) or not self.minimum <= value <= self.maximum:
            raise ValueError(f"config.{self.name} must be a whole number from {self.minimum} to {self.maximum}")


@dataclass(frozen=True)
class Service:
    name: str
    description: str
    versions: tuple[str, ...]
    credits_per_hour: float
    port: int
    config_keys: tuple[ConfigKey, ...] = field(default=())
    # The version the `local` provider runs (Debian 12's), or none.
    local_version: str | None = None


NODE_TYPES: dict[str, NodeType] = {
    n.name: n
    for n in (
        NodeType("small", 2, 8, 1.0, {"aws": "m6i.large", "gcp": "n2-standard-2", "azure": "Standard_D2s_v5"}),
        NodeType("medium", 4, 16, 2.0, {"aws": "m6i.xlarge", "gcp": "n2-standard-4", "azure": "Standard_D4s_v5"}),
        NodeType("large", 8, 32, 4.0, {"aws": "m6i.2xlarge", "gcp": "n2-standard-8", "azure": "Standard_D8s_v5"}),
        NodeType("xlarge", 16, 64, 8.0, {"aws": "m6i.4xlarge", "gcp": "n2-standard-16", "azure": "Standard_D16s_v5"}),
        NodeType("highmem", 8, 64, 6.0, {"aws": "r6i.2xlarge", "gcp": "n2-highmem-8", "azure": "Standard_E8s_v5"}),
    )
}

TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool("iverilog", "Icarus Verilog simulator", ("12.0", "11.0"), "iverilog", LocalOffer("11.0", "iverilog")),
        Tool(
            "verilator",
            "Verilog/SystemVerilog simulator and linter",
            ("5.024", "5.006", "4.228"),
            "verilator",
            LocalOffer("5.006", "verilator"),
        ),
        Tool("yosys", "RTL synthesis", ("0.40", "0.33", "0.23"), "yosys", LocalOffer("0.23", "yosys")),
        Tool("nextpnr", "FPGA place and route", ("0.7", "0.6", "0.4"), "nextpnr", LocalOffer("0.4", "nextpnr-ice40")),
        Tool("openroad", "RTL-to-GDS flow", ("2.0",), "openroad"),
        Tool(
            "klayout",
            "layout viewer and editor",
            ("0.28.17", "0.28.12", "0.28.5"),
            "klayout",
            LocalOffer("0.28.5", "klayout"),
        ),
        Tool("ngspice", "SPICE circuit simulator", ("42", "39"), "ngspice", LocalOffer("39", "ngspice")),
        Tool("gtkwave", "waveform viewer", ("3.3.118",), "gtkwave", LocalOffer("3.3.118", "gtkwave")),
        Tool("magic", "VLSI layout tool", ("8.3.460", "8.3.105"), "magic", LocalOffer("8.3.105", "magic")),
        Tool(
            "cocotb",
            "Python coroutine testbenches",
            ("1.9.0", "1.8.1"),
            "py-cocotb",
            LocalOffer("1.9.0", pip_package="cocotb"),
        ),
    )
}

SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service(
            "postgresql",
            "PostgreSQL database",
            ("16", "15", "14"),
            0.5,
            5432,
            (ConfigKey("databaseName", "the database to create (default postgres)", pattern=r"[a-z_][a-z0-9_]{0,62}"),),
            local_version="15",
        ),
        Service(
            "redis",
            "Redis in-memory store",
            ("7.2", "7.0"),
            0.25,
            6379,
            (ConfigKey("maxMemoryMB", "memory limit", minimum=16, maximum=1_048_576),),
            local_version="7.0",
        ),
    )
}

PROVIDER_NOTES = {
    "local": "every node of a local cluster runs on one machine: a node type gives each node's CPUs and "
    "memory as Slurm sees them, so a cluster may oversubscribe the machine; tools are Debian 12's versions",
    "sim": "a simulation: nothing is created anywhere",
}

STORAGE_CREDITS_PER_GB_HOUR = 0.0002
MIN_NODES, MAX_NODES = 1, 64
MIN_STORAGE_GB, MAX_STORAGE_GB, DEFAULT_STORAGE_GB = 10, 65_536, 10


def check_tool(name: str, version: str) -> None:
    """Refuse, with a message that lists what there is, a tool or version the catalog does not have."""
    tool = TOOLS.get(name)
    if tool is None:
        raise ValueError(f"tool {name!r} is not in the catalog; known tools: {', '.join(TOOLS)}")
    if version not in tool.versions:
        raise ValueError(f"{name} {version!r} is not in the catalog; versions: {', '.join(tool.versions)}")


def check_service(name: str, version: str, config: dict[str, Any]) -> None:
    service = SERVICES.get(name)
    if service is None:
        raise ValueError(f"service {name!r} is not in the catalog; known services: {', '.join(SERVICES)}")
    if version not in service.versions:
        raise ValueError(f"{name} {version!r} is not in the catalog; versions: {', '.join(service.versions)}")
    keys = {key.name: key for key in service.config_keys}
    for setting, value in config.items():
        if setting not in keys:
            raise ValueError(f"{name} takes no config {setting!r}; it takes: {', '.join(keys) or 'nothing'}")
        keys[setting].check(value)


def versions_by_provider(versions: tuple[str, ...], local_version: str | None) -> dict[str, list[str]]:
    """Which versions each kind of provider installs: every listed one (Spack builds any; the sim
    pretends to), except the local provider, which has Debian 12's version or none."""
    every = list(versions)
    return {"sim": every, "aws": every, "gcp": every, "azure": every, "local": [local_version] if local_version else []}


def tool_versions(tool: Tool) -> dict[str, list[str]]:
    return versions_by_provider(tool.versions, tool.local.version if tool.local else None)


def service_versions(service: Service) -> dict[str, list[str]]:
    return versions_by_provider(service.versions, service.local_version)


def check_offered(provider_kind: str, tools: list[tuple[str, str]], services: list[tuple[str, str]]) -> None:
    """Refuse a tool or service version (all in the catalog) that providers of this kind do not install,
    with a message that lists what they do offer."""
    wanted = [(name, version, tool_versions(TOOLS[name])) for name, version in tools]
    wanted += [(name, version, service_versions(SERVICES[name])) for name, version in services]
    for name, version, by_provider in wanted:
        offered = by_provider.get(provider_kind)
        if offered is not None and version not in offered:
            choice = f"the versions they offer: {', '.join(offered)}" if offered else f"they offer no {name}"
            raise ValueError(f"{name} {version} is not offered by {provider_kind} providers; {choice}")
