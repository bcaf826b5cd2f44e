"""`sigmaray demo` and its event stream (`models.datasets.generator`).

(1) The generator: deterministic for a seed, unique ids, strictly increasing event time, the
flattened Windows shape, benign background that the shipped rules leave alone, and injected
attacks (replayed from OTRF, or synthesized without it) that they detect.
The demo end to end is in test_demo_command.py.
"""

from __future__ import annotations

import collections
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from correlator.correlations import suppressed_rule_ids
from detectors.engine import SigmaEngine
from detectors.ir import CompiledRule
from detectors.rulefiles import load_rules_from_paths
from models.datasets.generator import (
    DEFAULT_START,
    HOSTS,
    GeneratedEvent,
    attack_scenarios,
    generate,
    generate_labeled,
)
from tests.conftest import OTRF, ROOT

SYSMON = "Microsoft-Windows-Sysmon/Operational"
FQDNS = {h.fqdn for h in HOSTS}
KEY = re.compile(r"[A-Za-z0-9_]+")
# The OTRF lab cleared the Security log before its recordings; the replays leave that out on
# purpose (it is lab set-up, not the attack), so every other shipped rule must fire.
NOT_INJECTED = {"Security Audit Log Cleared"}


@pytest.fixture(scope="module")
def rules() -> list[CompiledRule]:
    ruleset = load_rules_from_paths([ROOT / "rules"])
    assert not ruleset.rejections
    # the base rules of the shipped correlations (generate: false) raise no alert of their own
    suppressed = suppressed_rule_ids(ruleset.correlations)
    return [r for r in ruleset.rules if r.meta.id not in suppressed]


@pytest.fixture(scope="module")
def engine(rules: list[CompiledRule]) -> SigmaEngine:
    return SigmaEngine(rules)


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.fixture(scope="module")
def otrf_stream() -> list[GeneratedEvent]:
    return list(generate_labeled(20_000, seed=0, attack_share=0.01, otrf_root=OTRF))


# --- (1) the generator ----------------------------------------------------------------------------


@pytest.mark.parametrize("otrf_root", [OTRF, None], ids=["otrf", "synthetic"])
def test_same_seed_gives_the_same_stream_and_another_seed_another(otrf_root: Path | None) -> None:
    first = list(generate(3000, seed=7, attack_share=0.03, otrf_root=otrf_root))
    assert first == list(generate(3000, seed=7, attack_share=0.03, otrf_root=otrf_root))
    other = list(generate(3000, seed=8, attack_share=0.03, otrf_root=otrf_root))
    assert sum(a != b for a, b in zip(first, other, strict=True)) > 2900


@pytest.mark.parametrize("otrf_root", [OTRF, None], ids=["otrf", "synthetic"])
def test_ids_are_unique_and_event_time_increases_strictly_from_the_start(otrf_root: Path | None) -> None:
    start = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    events = list(generate(8000, seed=2, attack_share=0.02, otrf_root=otrf_root, start=start))
    assert len(events) == 8000
    assert len({e["sigmaray_event_id"] for e in events}) == 8000
    times = [_ms(e["TimeCreated_SystemTime"]) for e in events]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    assert times[0] >= _ms("2027-03-01T12:00:00.000Z")
    # 25 background events/s by default: 8000 events cover about 5 minutes of event time
    assert timedelta(minutes=3) < timedelta(milliseconds=times[-1] - times[0]) < timedelta(minutes=8)
    for event, time in zip(events, times, strict=True):
        if event["Channel"] == SYSMON:  # Sysmon's own UtcTime says the same instant
            assert _ms(event["UtcTime"].replace(" ", "T") + "Z") == time


def test_events_have_the_flattened_windows_shape(otrf_stream: list[GeneratedEvent]) -> None:
    kinds: collections.Counter[tuple[str, int]] = collections.Counter()
    twins: dict[str, set[str]] = collections.defaultdict(set)
    for item in otrf_stream:
        event = item.event
        assert all(KEY.fullmatch(k) for k in event), sorted(k for k in event if not KEY.fullmatch(k))
        assert not any(isinstance(v, dict) for v in event.values())  # flat
        assert event["Computer"] in FQDNS
        assert isinstance(event["EventID"], int) and isinstance(event["EventRecordID"], int)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["TimeCreated_SystemTime"])
        if item.attack is not None:
            continue
        kinds[(event["Channel"], event["EventID"])] += 1
        assert event["Provider_Name"] in ("Microsoft-Windows-Sysmon", "Microsoft-Windows-Security-Auditing")
        if event["EventID"] == 1:
            for name in ("Image", "CommandLine", "ParentImage", "ParentCommandLine", "User", "ProcessGuid",
                         "ProcessId", "IntegrityLevel", "Hashes", "OriginalFileName"):
                assert event[name], name
            assert event["ProcessId"].isdigit()  # OTRF renders EventData numbers as strings
            twins[event["Computer"]].add(event["CommandLine"])
        if event["EventID"] == 4688:
            assert event["NewProcessName"] and event["ParentProcessName"] is not None
            assert event["NewProcessId"].startswith("0x")
            assert event["CommandLine"] in twins[event["Computer"]]  # Sysmon 1 came first
    for kind in [(SYSMON, 1), (SYSMON, 3), (SYSMON, 11), (SYSMON, 13), ("Security", 4624), ("Security", 4688)]:
        assert kinds[kind] > 500, (kind, kinds)
    assert kinds[(SYSMON, 1)] == kinds[("Security", 4688)]
    assert len({item.event["Computer"] for item in otrf_stream}) == len(HOSTS)


def test_background_alone_raises_no_detection(engine: SigmaEngine) -> None:
    for seed in (0, 1):
        items = list(generate_labeled(20_000, seed=seed, attack_share=0))
        assert all(item.attack is None for item in items)
        hits = collections.Counter(m.title for item in items for m in engine.match(item.event))
        assert hits == {}, hits


def _detections_by_sequence(items: list[GeneratedEvent], engine: SigmaEngine) -> tuple[
        dict[int, set[str]], dict[int, str], collections.Counter[str]]:
    fired: dict[int, set[str]] = collections.defaultdict(set)
    scenario: dict[int, str] = {}
    background: collections.Counter[str] = collections.Counter()
    for item in items:
        matches = engine.match(item.event)
        if item.sequence is None:
            background.update(m.title for m in matches)
            continue
        scenario[item.sequence] = str(item.attack)
        fired[item.sequence].update(m.title for m in matches)
    return fired, scenario, background


def test_replayed_otrf_attacks_are_detected_and_the_background_is_not(
    otrf_stream: list[GeneratedEvent], engine: SigmaEngine
) -> None:
    fired, scenario, background = _detections_by_sequence(otrf_stream, engine)
    attack_events = sum(1 for item in otrf_stream if item.attack is not None)
    assert 160 <= attack_events <= 300  # 1% of 20,000, in whole sequences
    assert 8 <= len(scenario) <= 14
    assert all(s.startswith("otrf-") for s in scenario.values())
    assert {s: fired[s] for s in scenario if not fired[s]} == {}  # every sequence detected
    assert background == {}


@pytest.mark.parametrize("otrf_root", [OTRF, None], ids=["otrf", "synthetic"])
def test_every_attack_scenario_is_detected_and_together_they_fire_every_shipped_rule(
    otrf_root: Path | None, engine: SigmaEngine, rules: list[CompiledRule]
) -> None:
    scenarios = attack_scenarios(otrf_root)
    assert len(scenarios) == (17 if otrf_root else 11)
    # A large share: every scenario is drawn before any is repeated.
    items = list(generate_labeled(12_000, seed=5, attack_share=0.04, otrf_root=otrf_root))
    fired, scenario, background = _detections_by_sequence(items, engine)
    assert set(scenario.values()) == {s.id for s in scenarios}
    assert [scenario[s] for s in scenario if not fired[s]] == []
    assert background == {}
    assert set().union(*fired.values()) == {r.meta.title for r in rules} - NOT_INJECTED


def test_replays_are_moved_onto_the_generator_hosts_and_timeline(otrf_stream: list[GeneratedEvent]) -> None:
    recorded = re.compile(r"workstation\d|mordordc|hfdc01|it001|acct001|hr001|file001|theshire|shire\.com|mordor\.local",
                          re.IGNORECASE)
    start_ms = _ms("2026-11-28T08:00:00.000Z")
    assert DEFAULT_START == datetime.fromtimestamp(start_ms / 1000, UTC)
    for item in otrf_stream:
        if item.attack is None:
            continue
        event = item.event
        leftovers = [v for v in event.values() if isinstance(v, str) and recorded.search(v)]
        assert leftovers == [], (item.attack, leftovers[:2])
        assert _ms(event["TimeCreated_SystemTime"]) > start_ms
        if "CreationUtcTime" in event:  # moved with the event, not left in 2020
            assert event["CreationUtcTime"].startswith("2026-")


def test_without_otrf_the_synthesizer_supplies_the_attacks(tmp_path: Path) -> None:
    synthetic = {s.id for s in attack_scenarios(None)}
    assert {s.id for s in attack_scenarios(tmp_path)} == synthetic  # a folder without the datasets
    assert {s.source for s in attack_scenarios(OTRF, attacks="synthetic")} == {"synthetic"}
    labels = {i.attack for i in generate_labeled(4000, seed=1, attack_share=0.05, otrf_root=tmp_path)}
    assert labels - {None} <= synthetic and len(labels) > 5
    with pytest.raises(ValueError, match="no OTRF dataset"):
        attack_scenarios(tmp_path, attacks="otrf")


def test_edge_shares_and_bad_arguments() -> None:
    assert list(generate(0)) == []
    only_attacks = list(generate_labeled(300, seed=3, attack_share=1.0))
    assert len(only_attacks) == 300 and all(i.attack for i in only_attacks)
    times = [_ms(i.event["TimeCreated_SystemTime"]) for i in only_attacks]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    few = list(generate_labeled(50, seed=3, attack_share=0.001))  # rounds to no attack at all
    assert len(few) == 50 and not any(i.attack for i in few)
    for bad in ({"attack_share": 1.5}, {"count": -1}, {"attacks": "pcap"}):
        with pytest.raises(ValueError):
            list(generate(**{"count": 10, **bad}))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone"):
        list(generate(10, start=datetime(2026, 1, 1)))
