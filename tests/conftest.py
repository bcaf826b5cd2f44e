"""Shared fixtures: paths into ../shared, the SigmaHQ ruleset compiled once per worker, the test
run's own Kafka broker and a Ray per module.

Tests are tiered by markers that the fixtures apply themselves: a test that uses `broker` is
`kafka`, one that uses `ray_local` is `ray`; modules that start Ray or SSH otherwise say so with
`pytestmark`. The fast lane is `pytest -m "not kafka and not ray and not ssh and not slow"`.
Without ../shared the tests that read it are skipped, with the reason, and the rest run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detectors.loader import Ruleset
from detectors.rulefiles import load_rules_from_paths
from tests import broker as test_broker

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SIGMA = SHARED / "sigma"
OTRF = SHARED / "datasets" / "otrf"
RULE_DIRS = [SIGMA / d for d in ("rules", "rules-emerging-threats", "rules-threat-hunting", "rules-compliance")]
# Two emerging-threat rules use `expand` with a site-specific list; the spec says a tool must
# reject such a rule unless it is given values, so the corpus runs give one.
CORPUS_PLACEHOLDERS = {"known_cdcs": ["DC01.corp.example", "10.0.0.10"]}


SHARED_MISSING = f"reference data not found at {SHARED} (../shared beside the project)"
# Names by which a test module reaches ../shared: such a module is skipped without it.
_SHARED_NAMES = ("SHARED", "SIGMA", "OTRF", "RULE_DIRS", "otrf_files", "sigmahq_ruleset", "regression_manifest",
                 "CORPUS_PLACEHOLDERS")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    sources: dict[str, str] = {}
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if "broker" in names:
            item.add_marker(pytest.mark.kafka)
        if "ray_local" in names:
            item.add_marker(pytest.mark.ray)
        if not SIGMA.is_dir():
            path = str(item.path)
            if path not in sources:
                sources[path] = item.path.read_text(encoding="utf-8") if item.path.suffix == ".py" else ""
            if names & set(_SHARED_NAMES) or any(name in sources[path] for name in _SHARED_NAMES):
                item.add_marker(pytest.mark.skip(reason=SHARED_MISSING))


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or plain pytest): the run is over
        test_broker.stop()


@pytest.fixture(scope="session")
def sigmahq_ruleset() -> Ruleset:
    return load_rules_from_paths(RULE_DIRS, placeholders=CORPUS_PLACEHOLDERS)


@pytest.fixture(scope="session")
def regression_manifest() -> list[dict[str, Any]]:
    return json.loads((SIGMA / "regression" / "manifest.json").read_text())


def otrf_files() -> list[Path]:
    return sorted((OTRF / "jsonl").rglob("*.jsonl"))


BOOTSTRAP = test_broker.BOOTSTRAP


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """The test run's own broker (tests/broker.py): a free port and a data folder of its own,
    never a person's `sigmaray kafka up` one. Marks the test `kafka`."""
    with test_broker.held() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """A Ray of the module's own (`address="local"`: never another test's or a `ray up` one)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=f"test-{uuid.uuid4().hex[:6]}",
             logging_level="WARNING")
    yield ray
    ray.shutdown()
