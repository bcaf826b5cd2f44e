"""Load-time warnings for `|re` values a backtracking engine could take exponential time on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from cluster.cli import main
from cluster.cli import rules as cli_rules
from detectors.loader import Ruleset
from detectors.regex_safety import backtracking_risks
from tests.conftest import ROOT
from tests.ruletools import rule_yaml

REDOS_ID = "5b0c1f7e-0000-4000-8000-0000000000aa"


@pytest.mark.parametrize(
    "pattern",
    [
        r"(a+)+$",
        r"(.*)*x",
        r"(\d+\s?)+x",
        r"(x+x+)+y",
        r"(a*b*)*c",
        r"(?:.*\)){1,}.*\"",  # SigmaHQ's Invoke-Obfuscation VAR+ rules
        r"((ab)*)*c",
        r"(a|a)*b",  # re's parser turns this into a(?:|) under the star
        r"(a|aa)+b",
        r"(?:\s|)+x",
        r"^(a+)+\1$",
    ],
)
def test_nested_quantifiers_and_overlapping_alternation_are_reported(pattern: str) -> None:
    assert backtracking_risks(pattern)


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?:[a-z0-9\-]+\.)+com",  # the dot ends each run
        r"(ab|ac)+",  # the alternatives part at their second character
        r"(\w|_)+",  # re's parser makes this one class
        r"(?:0[0-9]{1,11}\.){3}0",
        r"(a+){2}",  # a bounded repeat only multiplies by a constant
        r"([0-9a-fA-F]{2}\s?){2,20}",
        r"(?:(?:25[0-5]|(?:2[0-4]|1\d|[1-9])?\d)(?:\.|\b)){4}",
        r"\+.*\+.*\+.*\+",  # polynomial, not reported
        r"a++b",
        r"(?>a+)+b",  # atomic: no backtracking into it
        r"\s[-/–—―]e[a-z]*\s+[a-z0-9+/]{40,}",
    ],
)
def test_delimited_bounded_and_atomic_repeats_are_not_reported(pattern: str) -> None:
    assert backtracking_risks(pattern) == ()


def _write_redos_rule(folder: Path) -> Path:
    path = folder / "redos.yml"
    path.write_text(rule_yaml("sel:\n    CommandLine|re: '(a+)+$'\ncondition: sel", rule_id=REDOS_ID))
    return path


def test_rules_check_warns_about_a_super_linear_pattern_with_rule_id_file_and_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_redos_rule(tmp_path)
    assert main(["rules", "check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    warning = next(line for line in out.splitlines() if line.startswith("WARNING"))
    assert str(path) in warning and f"id={REDOS_ID}" in warning and "'(a+)+$'" in warning
    assert "nested quantifier" in warning and "RE2" in warning
    assert "compiled 1 " in out and "rejected 0" in out  # warned, not rejected


def test_rules_check_json_carries_the_warnings_and_engine_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_redos_rule(tmp_path)
    (tmp_path / "backref.yml").write_text(rule_yaml("sel:\n    CommandLine|re: '(\\w)\\1{5}'\ncondition: sel"))
    assert main(["rules", "check", str(tmp_path), "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["compiled"] == 2 and report["rejected"] == []
    assert report["regex_engines"] == {"re2": 1, "re2-ascii": 0, "regex": 1}
    by_pattern = {w["pattern"]: w for w in report["warnings"]}
    assert by_pattern["(a+)+$"]["rule_id"] == REDOS_ID and by_pattern["(a+)+$"]["engine"] == "re2"
    assert by_pattern["(a+)+$"]["risks"]
    # Not risky, but RE2 cannot run it: reported with the engine that does, and why.
    assert by_pattern["(\\w)\\1{5}"]["engine"] == "regex" and by_pattern["(\\w)\\1{5}"]["reason"] == "backreference"
    assert by_pattern["(\\w)\\1{5}"]["risks"] == []


def test_rules_check_prints_no_warning_for_the_shipped_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(ROOT / "rules")]) == 0
    out = capsys.readouterr().out
    assert "WARNING" not in out
    assert re.search(r"\|re values: [1-9]\d* on RE2, 0 on RE2 for ASCII text only, 0 on the regex module", out)


def test_rules_push_warns_and_still_publishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_redos_rule(tmp_path)
    published: list[Any] = []
    # The broker is not what is under test: record what would be published.
    monkeypatch.setattr(cli_rules, "push", lambda bootstrap, topic, rules, client: published.extend(rules) or len(rules))
    assert main(["rules", "push", str(tmp_path), "--bootstrap-servers", "127.0.0.1:1"]) == 0
    captured = capsys.readouterr()
    assert f"WARNING {tmp_path / 'redos.yml'} id={REDOS_ID}" in captured.err and "'(a+)+$'" in captured.err
    assert [rule_id for rule_id, _ in published] == [REDOS_ID]
    assert "pushed 1 rules" in captured.out


def test_every_sigmahq_regex_runs_on_re2_and_only_real_nested_quantifiers_are_reported(sigmahq_ruleset: Ruleset) -> None:
    warned = {(w.rule_id, w.pattern) for w in sigmahq_ruleset.warnings}
    assert len(warned) == 3  # the three Invoke-Obfuscation VAR+ rules (process, PS module, PS script)
    assert all(r"(?:.*\)){1,}" in pattern for _, pattern in warned)
    assert {w.engine for w in sigmahq_ruleset.warnings} == {"re2"}
