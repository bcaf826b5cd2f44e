"""Rule loading keeps the good rules and reports each bad one with its path, id and reason."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.cli import main
from detectors.evaluate import build_matcher
from detectors.loader import Ruleset, RuleSource, load_ruleset
from detectors.rulefiles import load_rules_from_paths
from tests.conftest import RULE_DIRS, SIGMA
from tests.ruletools import rule_yaml

GOOD = rule_yaml("sel:\n    Image|endswith: '\\\\evil.exe'\ncondition: sel", rule_id="11111111-1111-4111-8111-111111111111")


def test_every_sigmahq_rule_compiles(sigmahq_ruleset: Ruleset) -> None:
    files = sum(1 for d in RULE_DIRS for _ in d.rglob("*.yml"))
    assert not sigmahq_ruleset.rejections, sigmahq_ruleset.rejections[:5]
    assert sigmahq_ruleset.compiled == sigmahq_ruleset.loaded == files == 3757


def test_placeholder_rules_compile_once_values_are_given() -> None:
    folder = SIGMA / "rules-placeholder"
    without = load_rules_from_paths([folder])
    assert without.rejections and all("placeholder" in r.reason for r in without.rejections)
    names = {name for r in without.rejections for name in re.findall(r"%([^%]+)%", r.reason)}
    with_values = load_rules_from_paths([folder], placeholders={n: ["value-for-" + n] for n in names})
    assert not with_values.rejections
    assert with_values.compiled == sum(1 for _ in folder.rglob("*.yml")) == 23


def test_bad_rules_are_rejected_with_path_and_reason_and_good_ones_kept(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text(GOOD)
    (tmp_path / "broken_yaml.yml").write_text("title: x\ndetection: [unclosed\n")
    (tmp_path / "unknown_modifier.yml").write_text(
        rule_yaml("sel:\n    Image|sometimes: 'x'\ncondition: sel", rule_id="22222222-2222-4222-8222-222222222222")
    )
    (tmp_path / "bad_condition.yml").write_text(
        rule_yaml("sel:\n    Image: 'x'\ncondition: sel and (", rule_id="33333333-3333-4333-8333-333333333333")
    )
    (tmp_path / "bad_regex.yml").write_text(
        rule_yaml("sel:\n    Image|re: '(unclosed'\ncondition: sel", rule_id="44444444-4444-4444-8444-444444444444")
    )
    (tmp_path / "not_a_mapping.yml").write_text("- just\n- a list\n")
    (tmp_path / "binary.yml").write_bytes(b"\xff\xfe\x00garbage\x81")
    (tmp_path / "zz_duplicate.yml").write_text(GOOD.replace("test rule", "same id again"))
    ruleset = load_rules_from_paths([tmp_path])
    assert [r.meta.id for r in ruleset.rules] == ["11111111-1111-4111-8111-111111111111"]
    reasons = {Path(r.path).name: r for r in ruleset.rejections}
    assert set(reasons) == {
        "broken_yaml.yml", "unknown_modifier.yml", "bad_condition.yml", "bad_regex.yml",
        "not_a_mapping.yml", "binary.yml", "zz_duplicate.yml",
    }
    assert "invalid YAML" in reasons["broken_yaml.yml"].reason
    assert "sometimes" in reasons["unknown_modifier.yml"].reason
    assert reasons["unknown_modifier.yml"].id == "22222222-2222-4222-8222-222222222222"
    assert "condition" in reasons["bad_condition.yml"].reason.lower()
    assert "unclosed" in reasons["bad_regex.yml"].reason or "regular expression" in reasons["bad_regex.yml"].reason.lower()
    assert "duplicate rule id" in reasons["zz_duplicate.yml"].reason
    assert "utf-8" in reasons["binary.yml"].reason.lower()


def test_rules_check_json_reports_counts_and_rejections(tmp_path: Path, capsys) -> None:
    (tmp_path / "good.yml").write_text(GOOD)
    (tmp_path / "bad.yml").write_text("title: [\n")
    assert main(["rules", "check", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["loaded"] == 2 and report["compiled"] == 1
    assert report["rejected"][0]["path"].endswith("bad.yml") and report["rejected"][0]["reason"]


def test_rules_check_fails_only_when_it_cannot_run(tmp_path: Path) -> None:
    assert main(["rules", "check", str(tmp_path / "missing")]) == 2
    assert main(["rules", "check", str(tmp_path), "--pipeline", "no-such-pipeline"]) == 2


def test_meta_filters_apply_to_the_rules_they_name(tmp_path: Path) -> None:
    (tmp_path / "rule.yml").write_text(GOOD)
    other = GOOD.replace("11111111-1111-4111-8111-111111111111", "66666666-6666-4666-8666-666666666666")
    (tmp_path / "other.yml").write_text(other)
    (tmp_path / "filter.yml").write_text(
        "title: Allow the build server\nlogsource:\n    product: windows\n    category: process_creation\n"
        "filter:\n    rules:\n        - 11111111-1111-4111-8111-111111111111\n"
        "    selection:\n        Computer: 'BUILD01'\n    condition: not selection\n"
    )
    ruleset = load_rules_from_paths([tmp_path])
    assert ruleset.filters_applied == 1 and not ruleset.rejections
    by_id = {r.meta.id: build_matcher(r.condition) for r in ruleset.rules}
    build = {"Image": "C:\\x\\evil.exe", "Computer": "build01"}
    desk = {"Image": "C:\\x\\evil.exe", "Computer": "desk7"}
    assert not by_id["11111111-1111-4111-8111-111111111111"](build)
    assert by_id["11111111-1111-4111-8111-111111111111"](desk)
    assert by_id["66666666-6666-4666-8666-666666666666"](build)  # not named by the filter


def test_correlation_with_unknown_rule_references_is_rejected_with_reason() -> None:
    folder = SIGMA / "specification" / "examples" / "correlation"
    ruleset = load_rules_from_paths([folder])
    assert not ruleset.correlations
    assert len(ruleset.rejections) == sum(1 for _ in folder.glob("*.yml"))
    assert all(r.reason.startswith("correlation:") for r in ruleset.rejections)


def test_correlation_rules_are_resolved_to_rule_ids(tmp_path: Path) -> None:
    ids = {}
    for n, name in enumerate(("recon_cmd_a", "recon_cmd_b", "recon_cmd_c")):
        ids[name] = f"5555555{n}-5555-4555-8555-555555555555"
        text = rule_yaml(f"sel:\n    CommandLine|contains: 'cmd{n}'\ncondition: sel", rule_id=ids[name])
        (tmp_path / f"{name}.yml").write_text(text + f"name: {name}\n")
    temporal = SIGMA / "specification" / "examples" / "correlation" / "temporal.yml"
    (tmp_path / "temporal.yml").write_text(temporal.read_text())
    ruleset = load_rules_from_paths([tmp_path])
    assert not ruleset.rejections
    (spec,) = ruleset.correlations
    assert spec.type == "temporal"
    assert spec.rules == tuple(ids[n] for n in ("recon_cmd_a", "recon_cmd_b", "recon_cmd_c"))
    assert spec.group_by == ("ComputerName", "User")
    assert spec.timespan_seconds == 300


def test_sysmon_pipeline_can_be_selected_by_name() -> None:
    folder = SIGMA / "rules" / "windows" / "process_creation"
    some = sorted(folder.glob("*.yml"))[:20]
    ruleset = load_rules_from_paths(some, pipelines=["sysmon"])
    assert not ruleset.rejections
    assert ruleset.rules and all("EventID" in r.fields for r in ruleset.rules)


def test_sigmaray_help_reads_well() -> None:
    out = subprocess.run([sys.executable, "-m", "cluster.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("rules", "scan", "bench"):
        assert command in out


def test_custom_pipeline_yaml_renames_fields_before_compiling(tmp_path: Path) -> None:
    (tmp_path / "rule.yml").write_text(GOOD)
    pipeline = tmp_path / "edr.yml"
    pipeline.write_text(
        "name: edr field names\npriority: 10\ntransformations:\n"
        "  - id: image_to_process_path\n    type: field_name_mapping\n    mapping:\n      Image: process.executable\n"
    )
    ruleset = load_rules_from_paths([tmp_path / "rule.yml"], pipelines=[str(pipeline)])
    assert not ruleset.rejections
    matcher = build_matcher(ruleset.rules[0].condition)
    assert matcher({"process": {"executable": "C:\\x\\EVIL.exe"}})
    assert not matcher({"Image": "C:\\x\\evil.exe"})


# --- cold loads in parallel (detectors/parallel.py) ---------------------------------------------


def _parallel_sources() -> list[RuleSource]:
    texts = [rule_yaml(f"sel:\n    Image|endswith: '\\\\tool{n}.exe'\n    CommandLine|re: 'a+b{n}'\ncondition: sel",
                       rule_id=f"00000000-0000-4000-8000-{n:012d}") for n in range(9)]
    texts.append(rule_yaml("sel:\n    Image: x\ncondition: sel", rule_id="00000000-0000-4000-8000-000000000001"))
    texts.append("title: [unclosed")
    texts.append(rule_yaml("sel:\n    Image|expand: '%missing%'\ncondition: sel"))
    return [RuleSource(f"r{n:02d}.yml", text) for n, text in enumerate(texts)]


def test_a_parallel_load_gives_what_a_serial_load_gives_duplicates_and_rejections_included() -> None:
    from detectors.parallel import load_ruleset_parallel

    sources = _parallel_sources()
    serial = load_ruleset(sources)
    parallel = load_ruleset_parallel(sources, (), None, workers=3)
    assert parallel.rules == serial.rules and len(serial.rules) == 9
    assert sorted(map(str, parallel.rejections)) == sorted(map(str, serial.rejections))
    assert any("duplicate rule id (first in r01.yml)" in r.reason for r in parallel.rejections)
    assert (parallel.version, parallel.loaded, parallel.warnings) == (serial.version, serial.loaded, serial.warnings)


def test_a_load_with_filters_correlations_threads_or_few_rules_stays_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from detectors import parallel

    sources = _parallel_sources() * 100
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert parallel.parallel_workers(sources) == 2
    assert parallel.parallel_workers(sources[:10]) == 1
    with_filter = [*sources, RuleSource("f.yml", "title: f\nfilter:\n    rules: [x]\n")]
    assert parallel.parallel_workers(with_filter) == 1
    monkeypatch.setattr(threading, "active_count", lambda: 3)
    assert parallel.parallel_workers(sources) == 1


def test_sysmon_pipeline_stays_sysmon_after_plugin_discovery() -> None:
    # pySigma's @Pipeline decorator is a shared instance calling the function decorated last:
    # discovering plugins (an unknown pipeline name) used to turn "sysmon" into another pipeline.
    from detectors.errors import ConfigError
    from detectors.rulefiles import resolve_pipeline

    before = len(resolve_pipeline("sysmon").items)
    with pytest.raises(ConfigError):
        resolve_pipeline("no-such-pipeline")
    assert len(resolve_pipeline("sysmon").items) == before > 10
