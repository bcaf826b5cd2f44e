"""SigmaHQ's regression samples: every rule reaches its expected match count, from both formats."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.sources.files import read_events
from detectors.engine import SigmaEngine
from detectors.loader import Ruleset
from tests.conftest import SIGMA


@pytest.fixture(scope="module")
def engine(sigmahq_ruleset: Ruleset) -> SigmaEngine:
    return SigmaEngine(sigmahq_ruleset.rules)


def _hits(engine: SigmaEngine, path: str, rule_id: str) -> tuple[int, int]:
    events = hits = 0
    for record in read_events(SIGMA / path):
        assert record.event is not None, record.error
        events += 1
        if any(meta.id == rule_id for meta in engine.match(record.event)):
            hits += 1
    return events, hits


@pytest.mark.parametrize("kind", ["jsonl", "evtx"])
def test_every_regression_sample_reaches_its_expected_match_count(
    engine: SigmaEngine, regression_manifest: list[dict[str, Any]], kind: str
) -> None:
    failures = []
    for sample in regression_manifest:
        expected = sample["expected_match_count"] or 1
        events, hits = _hits(engine, sample[kind], sample["rule_id"])
        assert events == sample["events"]
        if hits < expected:
            failures.append(f"{sample['rule_path']}: {hits}/{expected} of {events} events")
    assert len(regression_manifest) == 202
    assert not failures, f"{len(failures)} samples below their expected count:\n" + "\n".join(failures)
