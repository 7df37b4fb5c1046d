"""The catalog: node types, EDA tools and services, defined once.

Validation of requests, the `GET /catalog` endpoint and the providers all read this module.
Credits are the platform's unit of cost; every rate here is in credits per hour.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NodeType:
    name: str
    vcpus: int
    memory_gb: int
    credits_per_hour: float
    # The instance type each cloud maps this node type to.
    instance_types: dict[str, str]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    versions: tuple[str, ...]
    # The listed tools are open source: installing one costs nothing beyond the cluster itself.
    credits_per_hour: float = 0.0


@dataclass(frozen=True)
class Service:
    name: str
    description: str
    versions: tuple[str, ...]
    credits_per_hour: float
    port: int
    config_keys: tuple[str, ...] = field(default=())


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
        Tool("iverilog", "Icarus Verilog simulator", ("12.0", "11.0")),
        Tool("verilator", "Verilog/SystemVerilog simulator and linter", ("5.024", "5.006", "4.228")),
        Tool("yosys", "RTL synthesis", ("0.40", "0.33")),
        Tool("nextpnr", "FPGA place and route", ("0.7", "0.6")),
        Tool("openroad", "RTL-to-GDS flow", ("2.0",)),
        Tool("klayout", "layout viewer and editor", ("0.28.17", "0.28.12")),
        Tool("ngspice", "SPICE circuit simulator", ("42", "39")),
        Tool("gtkwave", "waveform viewer", ("3.3.118",)),
        Tool("magic", "VLSI layout tool", ("8.3.460",)),
        Tool("cocotb", "Python coroutine testbenches", ("1.9.0", "1.8.1")),
    )
}

SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service("postgresql", "PostgreSQL database", ("16", "15", "14"), 0.5, 5432, ("databaseName",)),
        Service("redis", "Redis in-memory store", ("7.2", "7.0"), 0.25, 6379, ("maxMemoryMB",)),
    )
}

STORAGE_CREDITS_PER_GB_HOUR = 0.0002
MIN_NODES, MAX_NODES = 1, 64
MIN_STORAGE_GB, MAX_STORAGE_GB, DEFAULT_STORAGE_GB = 10, 65_536, 10
