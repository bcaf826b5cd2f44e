"""The runtime's quick start runs as written: files through exactly what a PartitionWorker runs,
built by the one build function from a config; and `import cluster` stays cheap (no Kafka,
no Ray, no engine until a name is used)."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

MODULES = ["cluster", "cluster.build", "cluster.state.attempts"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run_as_written(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_importing_cluster_loads_neither_kafka_nor_ray_nor_the_engine() -> None:
    code = ("import sys, cluster; heavy = [m for m in ('confluent_kafka', 'ray', 'detectors.engine') if m in sys.modules];"
            " print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_every_exported_name_resolves_to_the_object_of_its_module() -> None:
    import cluster

    for name in cluster.__all__:
        value = getattr(cluster, name)
        assert value is getattr(importlib.import_module(cluster._EXPORTS[name]), name)


def test_the_command_line_prints_its_version() -> None:
    out = subprocess.run([sys.executable, "-m", "cluster.cli", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("sigmaray ")


def test_the_configured_logsource_mapping_reaches_both_the_engine_and_the_entity_scorer(tmp_path: Path) -> None:
    import shutil

    from cluster.build import build_detector, build_scorer
    from cluster.config import config_from_dict
    from detectors.routing import DEFAULT_MAPPING_PATH

    mapping = tmp_path / "mapping.yml"
    shutil.copyfile(DEFAULT_MAPPING_PATH, mapping)
    config = config_from_dict({
        "rules": {"paths": [str(ROOT / "rules")], "mapping": str(mapping)},
        "models": {"entities": [{"logsource": {"service": "security"}, "fields": {"user": ["TargetUserName"]}}]},
    })
    detector, _ruleset = build_detector(config)
    scorer = build_scorer(config)
    assert detector.engine.mapping.source == str(mapping)
    assert scorer.entity_mapping._routing.source == str(mapping)
