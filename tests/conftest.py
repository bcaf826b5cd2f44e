"""Shared fixtures: paths into ../shared and the SigmaHQ ruleset, compiled once per worker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.rulefiles import load_rules_from_paths
from detectors.loader import Ruleset

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SIGMA = SHARED / "sigma"
OTRF = SHARED / "datasets" / "otrf"
RULE_DIRS = [SIGMA / d for d in ("rules", "rules-emerging-threats", "rules-threat-hunting", "rules-compliance")]
# Two emerging-threat rules use `expand` with a site-specific list; the spec says a tool must
# reject such a rule unless it is given values, so the corpus runs give one.
CORPUS_PLACEHOLDERS = {"known_cdcs": ["DC01.corp.example", "10.0.0.10"]}


def pytest_configure(config: pytest.Config) -> None:
    if not SIGMA.is_dir():
        raise pytest.UsageError(f"reference data not found at {SHARED}: the tests read ../shared beside the project")


@pytest.fixture(scope="session")
def sigmahq_ruleset() -> Ruleset:
    return load_rules_from_paths(RULE_DIRS, placeholders=CORPUS_PLACEHOLDERS)


@pytest.fixture(scope="session")
def regression_manifest() -> list[dict[str, Any]]:
    return json.loads((SIGMA / "regression" / "manifest.json").read_text())


def otrf_files() -> list[Path]:
    return sorted((OTRF / "jsonl").rglob("*.jsonl"))


BOOTSTRAP = "127.0.0.1:9092"


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """The development broker (`sigmaray kafka up`): started if it is not running, and stopped
    after the last module that needed it, unless something else started it."""
    from cluster import kafka_dev

    with kafka_dev.shared_broker():
        yield BOOTSTRAP


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """A Ray of the module's own (`address="local"`: never another test's or a `ray up` one)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=f"test-{uuid.uuid4().hex[:6]}",
             logging_level="WARNING")
    yield ray
    ray.shutdown()
