"""Each top-level folder is one layer, and a layer imports only the layers below it (README, "How it is
built"). Read from the source, every import counted, the ones inside functions too."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLATFORM = ("core", "infra", "services", "activities", "workflows", "api", "worker", "cli")
# What each layer may import (itself included). Workflows import only the core and their activities
# (they run in Temporal's sandbox, deterministic); the API and the worker are the two processes, side by side.
ALLOWED = {
    "core": {"core"},
    "infra": {"core", "infra"},
    "services": {"core", "infra", "services"},
    "activities": {"core", "infra", "services", "activities"},
    "workflows": {"core", "activities", "workflows"},
    "api": {"core", "infra", "services", "workflows", "api"},
    "worker": {"core", "infra", "services", "activities", "workflows", "worker"},
    "cli": {*PLATFORM},
    "harness": {*PLATFORM, "harness"},
    "bench": {*PLATFORM, "harness", "bench"},
}
KNOWN = {*ALLOWED, "tests"}


def imported_layers(path: Path, module: str) -> set[str]:
    """The top-level folders of this repository that the module at `path` imports from."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [_absolute(module, node.level, node.module)]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & KNOWN
    return found


def _absolute(module: str, level: int, name: str | None) -> str:
    if not level:
        return name or ""
    package = module.split(".")[: -level or None]
    return ".".join([*package, name] if name else package)


def modules() -> list[tuple[str, Path, str]]:
    found = [("worker", ROOT / "worker.py", "worker")]
    for layer in ALLOWED.keys() - {"worker"}:
        for path in sorted((ROOT / layer).rglob("*.py")):
            found.append((layer, path, ".".join(path.relative_to(ROOT).with_suffix("").parts)))
    return sorted(found)


def violations(layer: str, path: Path, module: str) -> set[str]:
    return imported_layers(path, module) - ALLOWED[layer]


@pytest.mark.parametrize(("layer", "path", "module"), modules(), ids=[module for _, _, module in modules()])
def test_a_module_imports_only_its_own_layer_and_the_layers_below(layer: str, path: Path, module: str) -> None:
    assert not violations(layer, path, module), f"{module} ({layer}) imports {sorted(violations(layer, path, module))}"


def test_every_top_level_package_is_a_layer_the_check_knows() -> None:
    # A new folder, or a name left from an old layout, would otherwise be let through unchecked.
    found = {path.parent.name for path in ROOT.glob("*/__init__.py")} | {path.stem for path in ROOT.glob("*.py")}
    assert found <= KNOWN, f"not a known layer: {sorted(found - KNOWN)}"


def test_the_check_sees_an_import_from_a_higher_layer_wherever_it_is_written(tmp_path: Path) -> None:
    lower = tmp_path / "lower.py"
    lower.write_text("def f():\n    from api import deps\n\nimport services.credits\nfrom workflows import cluster\n")
    assert violations("core", lower, "core.lower") == {"api", "services", "workflows"}
    assert violations("services", lower, "services.lower") == {"api", "workflows"}
    assert violations("api", lower, "api.lower") == set()
