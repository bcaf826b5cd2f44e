"""The tree tells the architecture, and this test keeps it telling the truth.

- `detectors/` (the Sigma engine) imports nothing of `models/` or `cluster/`;
- `models/` (entity scoring) imports nothing of `cluster/`, and of the engine only its routing
  and errors;
- `correlator/` (correlation rules, fusion, alerts) is pure too: it imports the engine and the
  models, never `cluster/`;
- Kafka (`confluent_kafka`) is imported only in `cluster/kafka/`, Ray only in `cluster/ray/`;
- `cluster/processing/`, `cluster/sources/` and `cluster/state/` import neither;
- `evaluation/` replays in-process: it never imports `cluster.kafka`, `cluster.ray` or the CLI,
  and only the CLI imports it;
- the CLI (`cluster/cli/`) parses and prints: it reaches Kafka and Ray only through their
  packages.

Imports are read from the source (every `import` statement, also those inside functions), so a
late import cannot slip through.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("detectors", "models", "correlator", "cluster", "evaluation")
WALKED = PACKAGES  # every package whose imports are checked


def _modules() -> Iterator[tuple[str, Path]]:
    for package in WALKED:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
            yield ".".join(parts), path


def _imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Absolute names of everything the module imports, with the line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield name, node.lineno
            for alias in node.names:  # `from cluster import kafka` imports cluster.kafka
                yield f"{name}.{alias.name}", node.lineno


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _violations() -> list[str]:
    found: list[str] = []
    for module, path in _modules():
        for name, line in _imports(module, path):
            where = f"{path.relative_to(ROOT)}:{line} imports {name}"
            if _under(module, "detectors") and (_under(name, "cluster") or _under(name, "models")):
                found.append(f"{where}: the engine must not depend on the runtime or the models")
            if _under(module, "correlator") and _under(name, "cluster"):
                found.append(f"{where}: the correlator's logic must not depend on the runtime")
            if _under(module, "models"):
                if _under(name, "cluster"):
                    found.append(f"{where}: models must not depend on the runtime")
                if _under(name, "detectors") and not (_under(name, "detectors.routing") or _under(name, "detectors.errors")):
                    found.append(f"{where}: models use only the engine's routing and errors")
            if _under(module, "evaluation") and any(_under(name, f"cluster.{part}") for part in ("kafka", "ray", "cli")):
                found.append(f"{where}: evaluation replays in-process: no Kafka, Ray or CLI")
            if _under(name, "evaluation") and not (_under(module, "evaluation") or _under(module, "cluster.cli")):
                found.append(f"{where}: nothing below evaluation (engine, models, correlator, runtime) imports it")
            if _under(name, "confluent_kafka") and not _under(module, "cluster.kafka"):
                found.append(f"{where}: Kafka is imported only in cluster/kafka/")
            if _under(name, "ray") and not _under(module, "cluster.ray"):
                found.append(f"{where}: Ray is imported only in cluster/ray/")
    return found


def test_imports_point_down_the_layers_and_kafka_and_ray_each_have_one_home() -> None:
    assert (ROOT / "cluster" / "kafka" / "__init__.py").is_file(), "cluster/kafka/ is the home of Kafka"
    assert (ROOT / "cluster" / "ray" / "__init__.py").is_file(), "cluster/ray/ is the home of Ray"
    assert _violations() == []


def test_the_import_walk_sees_late_and_relative_imports(tmp_path: Path) -> None:
    source = "def f():\n    import ray\n    from .kafka import client\n"
    path = tmp_path / "mod.py"
    path.write_text(source)
    names = [name for name, _line in _imports("cluster.cli.mod", path)]
    assert "ray" in names and "cluster.cli.kafka" in names


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_exports_a_documented_public_api(package: str) -> None:
    import importlib

    module = importlib.import_module(package)
    assert module.__doc__ and ">>>" in module.__doc__, f"{package} has no quick start"
    assert getattr(module, "__all__", None), f"{package} exports nothing"
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.__all__ names {name}, which it lacks"
