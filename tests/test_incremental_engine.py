"""Live rule pushes compile incrementally and give the engine a full load gives.

`IncrementalRules` is what `LiveRules` runs on every change of the rules topic (without Kafka
here): the file rules are SigmaHQ's Windows rules, the topic holds a few rules that are added,
changed and deleted between builds, and after each build the incremental engine must match every
OTRF event of a few datasets exactly as an engine built from a full load of the same texts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.build import build_engine, load_rules
from cluster.config import RulesConfig
from cluster.kafka.live_rules import IncrementalRules
from cluster.sources.files import read_events
from detectors.engine import SigmaEngine
from detectors.rulefiles import read_rule_sources
from detectors.ruleset import Ruleset
from tests.conftest import OTRF, SIGMA
from tests.ruletools import rule_yaml

TOPIC = "sigmaray.rules"
DATASETS = [OTRF / "jsonl" / d for d in ("defense_evasion/psh_mavinject_dll_notepad.jsonl",
                                         "execution/empire_launcher_vbs.jsonl",
                                         "discovery/empire_shell_net_local_users.jsonl")]
WHOAMI = "11111111-0000-4000-8000-000000000001"
LSASS = "11111111-0000-4000-8000-000000000002"
SERVICE = "11111111-0000-4000-8000-000000000003"


def _events() -> list[dict]:
    events = [r.event for path in DATASETS if path.is_file() for r in read_events(path) if r.event is not None]
    assert len(events) > 1000
    return events


def _topic_rule(rule_id: str, detection: str, logsource: str = "product: windows\n    category: process_creation") -> str:
    return rule_yaml(detection, logsource, rule_id=rule_id)


def _full(config: RulesConfig, files: list, texts: dict[str, str]) -> tuple[SigmaEngine, Ruleset]:
    compiler = IncrementalRules(config, files, TOPIC)
    extra = compiler.sources(texts)[len(files):]
    ruleset = load_rules(config, extra=extra, files=files, cache_url="off")
    return build_engine(ruleset, config), ruleset


def _same(incremental: tuple[SigmaEngine, Ruleset], full: tuple[SigmaEngine, Ruleset], events: list[dict]) -> None:
    (engine, ruleset), (full_engine, full_ruleset) = incremental, full
    assert ruleset.rules == full_ruleset.rules  # same rules, same order
    assert sorted(map(str, ruleset.rejections)) == sorted(map(str, full_ruleset.rejections))
    assert (ruleset.version, ruleset.loaded, ruleset.correlations) == (
        full_ruleset.version, full_ruleset.loaded, full_ruleset.correlations)
    for event in events:
        assert engine.match_positions(event) == full_engine.match_positions(event), event


@pytest.fixture(scope="module")
def windows_rules() -> tuple[RulesConfig, list]:
    folder = SIGMA / "rules" / "windows"
    config = RulesConfig(paths=(str(folder),))
    files, unreadable = read_rule_sources([folder])
    assert not unreadable
    return config, files


def test_pushes_compile_only_the_changed_rules_and_match_like_a_full_load(
    windows_rules: tuple[RulesConfig, list], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SIGMARAY_RULE_CACHE", str(tmp_path / "cache"))
    config, files = windows_rules
    events = _events()
    compiler = IncrementalRules(config, files, TOPIC)
    texts = {WHOAMI: _topic_rule(WHOAMI, "sel:\n    Image|endswith: '\\\\whoami.exe'\ncondition: sel")}
    first = compiler.build(texts)
    assert not compiler.report.incremental
    _same(first, _full(config, files, texts), events)

    steps = [
        # a new rule on another logsource
        {**texts, LSASS: _topic_rule(LSASS, "sel:\n    TargetImage|endswith: '\\\\lsass.exe'\ncondition: sel",
                                     "product: windows\n    category: process_access")},
        # a changed rule: another condition on the same logsource
        {WHOAMI: _topic_rule(WHOAMI, "sel:\n    CommandLine|contains: 'powershell'\ncondition: sel"),
         LSASS: _topic_rule(LSASS, "sel:\n    TargetImage|endswith: '\\\\lsass.exe'\ncondition: sel",
                            "product: windows\n    category: process_access")},
        # a deleted rule, and a rule that does not compile (it is a rejection, like in a full load)
        {LSASS: _topic_rule(LSASS, "sel:\n    TargetImage|endswith: '\\\\lsass.exe'\ncondition: sel",
                            "product: windows\n    category: process_access"),
         SERVICE: _topic_rule(SERVICE, "sel:\n    ServiceName|expand: '%unknown%'\ncondition: sel",
                              "product: windows\n    service: system")},
    ]
    for texts in steps:
        built = compiler.build(texts)
        report = compiler.report
        assert report.incremental, report.reason
        assert report.recompiled_sources <= 2
        assert report.reused_rules >= len(first[1].rules) - 3
        # Only the logsource classes that a pushed rule belongs to (and those whose positions
        # moved after it: the topic's rules come last) are built again.
        assert report.rebuilt_classes <= 3, report
        _same(built, _full(config, files, texts), events)


def test_a_pushed_rule_whose_id_is_taken_falls_back_to_a_full_load(
    windows_rules: tuple[RulesConfig, list], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SIGMARAY_RULE_CACHE", str(tmp_path / "cache"))
    config, files = windows_rules
    compiler = IncrementalRules(config, files, TOPIC)
    compiler.build({})
    texts = {"x": rule_yaml("sel:\n    Image: 'a'\ncondition: sel", rule_id=_first_id(compiler))}
    taken = compiler.build(texts)
    assert not compiler.report.incremental and "id is already taken" in compiler.report.reason
    assert any(r.reason.startswith("duplicate rule id") for r in taken[1].rejections)
    _same(taken, _full(config, files, texts), _events()[:200])


def _first_id(compiler: IncrementalRules) -> str:
    assert compiler._ruleset is not None
    return compiler._ruleset.rules[0].meta.id
