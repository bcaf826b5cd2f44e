"""`field: null` per the Sigma specification: an absent field or JSON null, never "" or [].

The two SigmaHQ rules that the old reading (null = absent, null, "" or []) flipped are run on
real-shaped events, in both engine modes. Where the event comes from real data, what was changed
is said next to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from detectors.engine import SigmaEngine
from detectors.loader import RuleSource, load_ruleset
from tests.conftest import OTRF, SIGMA
from tests.ruletools import matches

FIREWALL_RULE = SIGMA / "rules/windows/builtin/firewall_as/win_firewall_as_add_rule.yml"
CACTUSTORCH_RULE = SIGMA / "rules/windows/create_remote_thread/create_remote_thread_win_hktl_cactustorch.yml"


def _engines(rule: Path) -> list[SigmaEngine]:
    ruleset = load_ruleset([RuleSource(str(rule), rule.read_text(encoding="utf-8"))])
    assert not ruleset.rejections and len(ruleset.rules) == 1
    return [SigmaEngine(ruleset.rules, mode="indexed"), SigmaEngine(ruleset.rules, mode="plain")]


def _fires(rule: Path, event: dict[str, Any]) -> bool:
    answers = {bool(engine.match(event)) for engine in _engines(rule)}
    assert len(answers) == 1, "indexed and plain modes disagree"
    return answers.pop()


def _without(event: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != name}


def test_null_matches_absent_and_json_null_but_not_empty_string_or_empty_list() -> None:
    rule = "sel:\n    F: null\ncondition: sel"
    assert matches(rule, {})
    assert matches(rule, {"F": None})
    assert not matches(rule, {"F": ""})
    assert not matches(rule, {"F": []})
    assert not matches(rule, {"F": "x"})
    assert not matches(rule, {"F": 0})


def test_null_on_a_dotted_field_reads_the_nested_value() -> None:
    rule = "sel:\n    a.b: null\ncondition: sel"
    assert matches(rule, {"a": {}})
    assert matches(rule, {"a": {"b": None}})
    assert not matches(rule, {"a": {"b": ""}})


def test_not_null_selection_is_true_for_the_empty_string() -> None:
    # The specification's way to say "not null": a negated selection of its own.
    rule = "sel:\n    F: 'x'\nfilter:\n    G: null\ncondition: sel and not filter"
    assert matches(rule, {"F": "x", "G": ""})
    assert not matches(rule, {"F": "x"})


def _firewall_2004() -> dict[str, Any]:
    """A Windows Firewall With Advanced Security 2004 event ("A rule has been added to the
    exception list") in the flattened shape. Neither the OTRF set nor the regression samples have
    one, so the System part is copied from regression sample 974515da (a real Windows event) with
    the provider, channel, EventID and Task replaced by those of 2004, and the EventData keys are
    those of the 2004 manifest, with the values an added port rule of a user-space tool shows."""
    sample = SIGMA / "regression/jsonl/974515da-6cc5-4c95-ae65-f97f9150ec7f.jsonl"
    real = json.loads(sample.read_text(encoding="utf-8").splitlines()[0])
    system_keys = ("Version", "Level", "Opcode", "Keywords", "TimeCreated_SystemTime", "EventRecordID",
                   "Execution_ProcessID", "Execution_ThreadID", "Computer", "Security_UserID")
    event = {key: real[key] for key in system_keys}
    event.update({
        "Provider_Name": "Microsoft-Windows-Windows Firewall With Advanced Security",
        "Provider_Guid": "D1BC9AFF-2ABF-4D71-9146-ECB2A986EB85",
        "EventID": 2004, "Task": 0,
        "Channel": "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall",
        "RuleId": "{8B0E9C4A-6C2E-4B3B-9C51-2D4A8F1E0C77}", "RuleName": "Sync Agent", "Origin": 1,
        "ApplicationPath": "", "ServiceName": "", "Direction": 1, "Protocol": 6, "LocalPorts": "8443",
        "RemotePorts": "*", "Action": 3, "Profiles": 2147483647, "LocalAddresses": "*", "RemoteAddresses": "*",
        "RemoteMachineAuthorizationList": "", "RemoteUserAuthorizationList": "", "EmbeddedContext": "",
        "Flags": 1, "Active": 1, "EdgeTraversal": 0, "LooseSourceMapped": 0, "SecurityOptions": 0,
        "ModifyingUser": "S-1-5-21-3541430928-2051711210-1391384369-1104",
        "ModifyingApplication": "C:\\Users\\alice\\AppData\\Roaming\\SyncAgent\\agent.exe",
        "SchemaVersion": 542, "RuleStatus": 65536, "LocalOnlyMapped": 0,
    })
    return event


def test_uncommon_firewall_rule_fires_when_application_path_is_the_empty_string() -> None:
    # Its `filter_main_null` (ApplicationPath: null) must not swallow "": the rule filters ''
    # separately (filter_optional_no_path, for svchost/dllhost only).
    event = _firewall_2004()
    assert _fires(FIREWALL_RULE, event)


def test_uncommon_firewall_rule_is_filtered_when_application_path_is_absent_or_null() -> None:
    event = _firewall_2004()
    assert not _fires(FIREWALL_RULE, _without(event, "ApplicationPath"))
    # EVTX renders an empty <Data Name="ApplicationPath"/> as null, and the reader keeps it.
    assert not _fires(FIREWALL_RULE, {**event, "ApplicationPath": None})


def test_uncommon_firewall_rule_keeps_its_empty_path_filter_for_svchost() -> None:
    event = {**_firewall_2004(), "ModifyingApplication": "C:\\Windows\\System32\\svchost.exe"}
    assert not _fires(FIREWALL_RULE, event)


def _remote_thread() -> dict[str, Any]:
    """OTRF's Sysmon EventID 8 from psh_mavinject_dll_notepad (mavinject injecting into
    notepad), with the source changed to mshta.exe and the target to a 32-bit process under
    SysWOW64: what the CACTUSTORCH rule describes (a script host starting a thread in a WoW64
    process). StartModule is then set per case."""
    path = OTRF / "jsonl/defense_evasion/psh_mavinject_dll_notepad.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event.get("EventID") == 8:
            break
    else:  # pragma: no cover - the dataset is fixed
        pytest.fail("no EventID 8 in the OTRF mavinject dataset")
    assert event["StartModule"].endswith("KERNEL32.DLL")
    return {**event, "SourceImage": "C:\\Windows\\System32\\mshta.exe",
            "TargetImage": "C:\\Windows\\SysWOW64\\rundll32.exe"}


def test_cactustorch_does_not_fire_on_an_empty_start_module() -> None:
    assert not _fires(CACTUSTORCH_RULE, {**_remote_thread(), "StartModule": ""})


def test_cactustorch_fires_when_start_module_is_null_or_absent() -> None:
    event = _remote_thread()
    assert _fires(CACTUSTORCH_RULE, {**event, "StartModule": None})
    assert _fires(CACTUSTORCH_RULE, _without(event, "StartModule"))
    assert not _fires(CACTUSTORCH_RULE, event)  # a real module: not the shellcode thread
