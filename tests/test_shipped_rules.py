"""The rules the project ships (rules/): well-formed Sigma, and each one proven on the real OTRF
attack recordings it was written for, without firing on a large share of everything else.

All OTRF events (56k) are matched once per module by the `otrf_hits` fixture; the tests below only
read its counters.
"""

from __future__ import annotations

import collections
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.sources.files import read_events
from detectors.engine import SigmaEngine
from detectors.ir import CompiledRule
from detectors.routing import LogSource, rule_applies
from detectors.rulefiles import load_rules_from_paths
from tests.conftest import OTRF, ROOT, SIGMA, otrf_files

RULES_DIR = ROOT / "rules"
# Correlation rules and their base rules (rules/windows/correlation/) are tested in
# tests/test_shipped_correlations.py; this module covers the standalone detection rules.
CORRELATION_DIR = RULES_DIR / "windows" / "correlation"
RULE_FILES = sorted(p for p in RULES_DIR.rglob("*.yml") if CORRELATION_DIR not in p.parents)
RULE_IDS = [p.relative_to(RULES_DIR).as_posix() for p in RULE_FILES]
JSONL = OTRF / "jsonl"

LEVELS = {"informational", "low", "medium", "high", "critical"}
# Tactic tags: the Sigma tags appendix list, plus the two tactics that replaced defense-evasion in
# ATT&CK v18, which the SigmaHQ rules in ../shared already use (attack.stealth, attack.defense-impairment).
TACTICS = {
    "reconnaissance", "resource-development", "initial-access", "execution", "persistence",
    "privilege-escalation", "defense-evasion", "stealth", "defense-impairment", "credential-access",
    "discovery", "lateral-movement", "collection", "command-and-control", "exfiltration", "impact",
}
TECHNIQUE_TAG = re.compile(r"attack\.t\d{4}(\.\d{3})?")
MAX_SHARE = 0.02  # of the events of the rule's logsource
# Below this many hits a rule is never "noisy": a logsource with a handful of events in OTRF
# (4 PowerShell 4104 script blocks, 3 Sysmon WMI events) makes any share meaningless.
NOISE_FLOOR = 5


@dataclass(frozen=True)
class Sample:
    """One event that must match: OTRF file (relative to jsonl/), 1-based line, and a field
    substring that shows it is the attack event and not a bystander."""

    file: str
    line: int
    field: str
    contains: str


@dataclass(frozen=True)
class Expect:
    sample: Sample
    files: dict[str, int]  # OTRF file -> exact number of matching events in that file
    total: int  # exact number of matching events over all OTRF
    other_files_ok: bool = False  # the rule may also fire in files not listed (counted in total)
    extra: dict[str, Any] = field(default_factory=dict)


# Every shipped rule, keyed by its path under rules/. Counts include both Sysmon 1 and Security 4688
# for process_creation rules: OTRF recorded both, and both are the same process start.
EXPECTED: dict[str, Expect] = {
    "windows/process_access/proc_access_win_lsass_full_access.yml": Expect(
        Sample("credential_access/cmd_lsass_memory_dumpert_syscalls.jsonl", 51, "SourceImage", "Outflank-Dumpert.exe"),
        {
            "credential_access/cmd_lsass_memory_dumpert_syscalls.jsonl": 2,  # Dumpert, 0x1fffff
            "credential_access/psh_lsass_memory_dump_comsvcs.jsonl": 1,  # rundll32 comsvcs, 0x1fffff
            "credential_access/empire_powerdump_sam_access.jsonl": 1,  # powershell, 0x1f3fff
        },
        total=4,
    ),
    "windows/process_creation/proc_creation_win_rundll32_comsvcs_minidump.yml": Expect(
        Sample("credential_access/psh_lsass_memory_dump_comsvcs.jsonl", 107, "CommandLine", "comsvcs.dll MiniDump"),
        {"credential_access/psh_lsass_memory_dump_comsvcs.jsonl": 2},
        total=2,
    ),
    "windows/process_creation/proc_creation_win_credential_hive_dump.yml": Expect(
        Sample("credential_access/empire_shell_reg_dump_sam.jsonl", 227, "CommandLine", "save HKLM\\sam"),
        {
            "credential_access/empire_shell_reg_dump_sam.jsonl": 2,  # reg save HKLM\sam
            "credential_access/cmd_psexec_lsa_secrets_dump.jsonl": 2,  # reg save HKLM\security\policy\secrets
            "credential_access/cmd_sam_copy_esentutl.jsonl": 2,  # esentutl /y /vss ...\config\SAM
        },
        total=6,
    ),
    "windows/security/win_security_dcsync_replication_by_user.yml": Expect(
        Sample(
            "credential_access/covenant_dcsync_dcerpc_drsuapi_DsGetNCChanges.jsonl", 120,
            "Properties", "1131f6aa-9c07-11d1-f79f-00c04fc2dcd2",
        ),
        {"credential_access/covenant_dcsync_dcerpc_drsuapi_DsGetNCChanges.jsonl": 3},
        total=3,
    ),
    "windows/process_creation/proc_creation_win_powershell_encoded_command.yml": Expect(
        Sample("execution/empire_launcher_vbs.jsonl", 259, "CommandLine", "-noP -sta -w 1 -enc"),
        {"execution/empire_launcher_vbs.jsonl": 2, "defense_evasion/empire_launcher_sct_regsvr32.jsonl": 2},
        total=4,
    ),
    "windows/ps_script/posh_ps_logging_amsi_reflection_bypass.yml": Expect(
        Sample("execution/empire_launcher_vbs.jsonl", 918, "ScriptBlockText", "cachedGroupPolicySettings"),
        {"execution/empire_launcher_vbs.jsonl": 1, "defense_evasion/empire_launcher_sct_regsvr32.jsonl": 1},
        total=2,
    ),
    "windows/process_creation/proc_creation_win_wmiprvse_child_process.yml": Expect(
        Sample("lateral_movement/covenant_sharpwmi_create_dcerpc_wmi.jsonl", 845, "Image", "GruntHTTP2.exe"),
        {
            "lateral_movement/covenant_sharpwmi_create_dcerpc_wmi.jsonl": 2,  # Grunt started by SharpWMI
            "lateral_movement/covenant_com_wsman_automation.jsonl": 2,  # whoami over WS-Man
        },
        total=4,
    ),
    "windows/process_creation/proc_creation_win_mshta_regsvr32_script_proxy.yml": Expect(
        Sample("defense_evasion/cmd_mshta_javascript_getobject_sct.jsonl", 202, "CommandLine", "javascript:"),
        {
            "defense_evasion/cmd_mshta_javascript_getobject_sct.jsonl": 2,
            "defense_evasion/cmd_mshta_vbscript_execute_psh.jsonl": 2,
            "defense_evasion/empire_launcher_sct_regsvr32.jsonl": 2,  # regsvr32 /i:http://... scrobj.dll
        },
        total=6,
    ),
    "windows/security/win_security_audit_log_cleared.yml": Expect(
        Sample("credential_access/cmd_psexec_lsa_secrets_dump.jsonl", 1, "Provider_Name", "Microsoft-Windows-Eventlog"),
        {
            "credential_access/cmd_psexec_lsa_secrets_dump.jsonl": 1,
            # the flattener inferred the wrong provider (Security-Auditing) for this one: EventID alone still catches it
            "defense_evasion/wmic_remote_xsl_jscript.jsonl": 1,
            "execution/cmd_sharpview_pcre_net.jsonl": 1,  # channel spelled "security"
        },
        total=27,  # the OTRF lab cleared the Security log before 27 of its recordings
        other_files_ok=True,
    ),
    "windows/registry_set/registry_set_win_netntlm_downgrade.yml": Expect(
        Sample(
            "defense_evasion/empire_monologue_netntlm_downgrade.jsonl", 505, "TargetObject", "\\Lsa\\LMCompatibilityLevel"
        ),
        {"defense_evasion/empire_monologue_netntlm_downgrade.jsonl": 6},  # 3 values lowered, then restored
        total=6,
    ),
    "windows/registry_set/registry_set_win_run_key_script_interpreter.yml": Expect(
        Sample(
            "persistence/empire_persistence_registry_modification_run_keys_elevated_user.jsonl", 289,
            "TargetObject", "\\CurrentVersion\\Run\\Updater",
        ),
        {"persistence/empire_persistence_registry_modification_run_keys_elevated_user.jsonl": 1},
        total=1,
    ),
    "windows/wmi_event/sysmon_wmi_command_consumer_created.yml": Expect(
        Sample("persistence/covenant_persistwmi.jsonl", 352, "Destination", "powershell -Sta -Nop -Window Hidden"),
        {"persistence/covenant_persistwmi.jsonl": 1},
        total=1,
    ),
    "windows/security/win_security_scheduled_task_script_action.yml": Expect(
        Sample("lateral_movement/schtask_create.jsonl", 578, "TaskName", "\\SoftwareProtectionPlatform\\EventCacheManager"),
        {
            "lateral_movement/schtask_create.jsonl": 1,  # 4698, cmd.exe /C, created remotely
            "lateral_movement/schtask_modification.jsonl": 1,  # 4702, action replaced by powershell -enc
            "persistence/empire_schtasks_creation_standard_user.jsonl": 1,  # 4698, HTML-escaped TaskContent
        },
        total=3,
    ),
    "windows/system/win_system_remote_exec_service_installed.yml": Expect(
        Sample("credential_access/cmd_psexec_lsa_secrets_dump.jsonl", 286, "ServiceName", "PSEXESVC"),
        {"credential_access/cmd_psexec_lsa_secrets_dump.jsonl": 1},
        total=1,
    ),
}


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _compile_one(path: Path) -> CompiledRule:
    ruleset = load_rules_from_paths([path])
    assert not ruleset.rejections, [r.to_dict() for r in ruleset.rejections]
    assert len(ruleset.rules) == 1, f"{path} should hold exactly one detection rule"
    return ruleset.rules[0]


@dataclass
class OtrfHits:
    by_rule_file: dict[str, collections.Counter[str]]  # rule id -> OTRF file -> matches
    lines: dict[str, set[tuple[str, int]]]  # rule id -> {(OTRF file, line)}
    logsource_events: collections.Counter[LogSource]  # rule logsource -> OTRF events it sees
    events: int


@pytest.fixture(scope="module")
def shipped() -> list[CompiledRule]:
    ruleset = load_rules_from_paths(RULE_FILES)
    assert not ruleset.rejections, [r.to_dict() for r in ruleset.rejections]
    return ruleset.rules


@pytest.fixture(scope="module")
def otrf_hits(shipped: list[CompiledRule]) -> OtrfHits:
    engine = SigmaEngine(shipped)
    logsources = {LogSource(r.meta.product, r.meta.category, r.meta.service) for r in shipped}
    by_rule_file: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    lines: dict[str, set[tuple[str, int]]] = collections.defaultdict(set)
    seen: collections.Counter[LogSource] = collections.Counter()
    applies: dict[tuple[Any, ...], list[LogSource]] = {}  # route is a pure function of route_key
    events = 0
    for path in otrf_files():
        name = path.relative_to(JSONL).as_posix()
        for record in read_events(path):
            assert record.error is None, f"{name}:{record.line}: {record.error}"
            events += 1
            key = engine.mapping.route_key(record.event)
            if key not in applies:
                route = engine.mapping.route(record.event)
                applies[key] = [ls for ls in logsources if rule_applies(ls, route)]
            seen.update(applies[key])
            for meta in engine.match(record.event):
                by_rule_file[meta.id][name] += 1
                lines[meta.id].add((name, record.line))
    return OtrfHits(by_rule_file, lines, seen, events)


# --- (1) the files are valid, complete Sigma rules ---------------------------------------------


def test_rules_folder_holds_the_starter_set() -> None:
    assert len(RULE_FILES) >= 10
    assert set(RULE_IDS) == set(EXPECTED), "every shipped rule needs an entry in EXPECTED (and only those)"


def test_all_shipped_rules_compile_without_rejection(shipped: list[CompiledRule]) -> None:
    assert len(shipped) == len(RULE_FILES)


def test_shipped_rule_ids_are_unique_uuids() -> None:
    ids = [str(_yaml(p)["id"]) for p in RULE_FILES]
    assert len(set(ids)) == len(ids), collections.Counter(ids).most_common(3)
    for rule_id in ids:
        assert str(uuid.UUID(rule_id)) == rule_id


def test_shipped_rule_ids_do_not_reuse_sigmahq_ids() -> None:
    ours = {str(_yaml(p)["id"]) for p in RULE_FILES}
    text_hits = set()
    for folder in ("rules", "rules-emerging-threats", "rules-threat-hunting"):
        for path in (SIGMA / folder).rglob("*.yml"):
            head = path.read_text(encoding="utf-8", errors="replace")[:400]
            text_hits.update(i for i in ours if i in head)
    assert not text_hits


@pytest.mark.parametrize("path", RULE_FILES, ids=RULE_IDS)
def test_rule_has_required_metadata_level_and_attack_tags(path: Path) -> None:
    doc = _yaml(path)
    for key in ("title", "id", "status", "description", "references", "author", "date", "tags",
                "logsource", "detection", "falsepositives", "level"):
        assert doc.get(key), f"missing {key}"
    assert doc["status"] == "experimental"
    assert doc["author"] == "sigmaray"
    assert str(doc["date"]) == "2026-11-28"
    assert doc["level"] in LEVELS
    tags = doc["tags"]
    assert len(tags) == len(set(tags))
    assert any(t.startswith("attack.") and t[len("attack."):] in TACTICS for t in tags), tags
    assert any(TECHNIQUE_TAG.fullmatch(t) for t in tags), tags
    assert all(t.startswith("attack.") and (t[7:] in TACTICS or TECHNIQUE_TAG.fullmatch(t)) for t in tags), tags


@pytest.mark.parametrize("path", RULE_FILES, ids=RULE_IDS)
def test_rule_validates_against_the_sigma_v2_json_schema(path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")  # not a declared dependency (comes with pySigma's tree)
    schema = json.loads((SIGMA / "specification" / "json-schema" / "sigma-detection-rule-schema.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema, format_checker=jsonschema.FormatChecker())
    doc = _yaml(path)
    doc["date"] = str(doc["date"])  # YAML reads an unquoted ISO date as datetime.date
    assert [e.message for e in validator.iter_errors(doc)] == []


@pytest.mark.parametrize("path", RULE_FILES, ids=RULE_IDS)
def test_rule_logsource_and_fields_are_sigmahq_taxonomy(path: Path) -> None:
    """The logsource is one SigmaHQ knows, and every field a category rule tests is a field of it."""
    legit = json.loads((SIGMA / "reference" / "logsource.json").read_text())["legit"]["windows"]
    rule = _compile_one(path)
    assert rule.meta.product == "windows"
    assert (rule.meta.category is None) != (rule.meta.service is None), "use a category or a service"
    if rule.meta.category:
        assert rule.meta.category in legit["category"]
        allowed = set(legit["common"]) | set(legit["category"][rule.meta.category])
        assert set(rule.fields) <= allowed, sorted(set(rule.fields) - allowed)
    else:
        assert rule.meta.service in legit["service"]
    # the folder says what the rule reads
    assert path.parent.name == (rule.meta.category or rule.meta.service)


# --- (2) each rule fires on the attack events it was written for --------------------------------


@pytest.mark.parametrize("path", RULE_FILES, ids=RULE_IDS)
def test_rule_matches_its_attack_sample_event(path: Path) -> None:
    """Read the one sample line directly and match it alone: no fixture, no other rules."""
    expect = EXPECTED[path.relative_to(RULES_DIR).as_posix()]
    rule = _compile_one(path)
    sample = expect.sample
    records = [r for r in read_events(JSONL / sample.file) if r.line == sample.line]
    assert len(records) == 1
    event = records[0].event
    assert sample.contains in str(event.get(sample.field)), f"{sample.file}:{sample.line} is not the attack event"
    assert [m.id for m in SigmaEngine([rule]).match(event)] == [rule.meta.id]


@pytest.mark.parametrize("path", RULE_FILES, ids=RULE_IDS)
def test_rule_match_count_in_its_target_datasets_is_exact(path: Path, otrf_hits: OtrfHits) -> None:
    expect = EXPECTED[path.relative_to(RULES_DIR).as_posix()]
    rule_id = str(_yaml(path)["id"])
    got = {f: otrf_hits.by_rule_file[rule_id][f] for f in expect.files}
    assert got == expect.files
    assert (expect.sample.file, expect.sample.line) in otrf_hits.lines[rule_id]
    if not expect.other_files_ok:
        others = {f: n for f, n in otrf_hits.by_rule_file[rule_id].items() if f not in expect.files}
        assert not others, f"fires outside its target datasets: {others}"


@pytest.mark.parametrize("path", RULE_FILES, ids=RULE_IDS)
def test_rule_total_matches_over_all_otrf_are_pinned(path: Path, otrf_hits: OtrfHits) -> None:
    expect = EXPECTED[path.relative_to(RULES_DIR).as_posix()]
    rule_id = str(_yaml(path)["id"])
    assert sum(otrf_hits.by_rule_file[rule_id].values()) == expect.total


# --- (3) no rule is noisy -----------------------------------------------------------------------


def test_no_rule_fires_on_more_than_two_percent_of_its_logsource(
    shipped: list[CompiledRule], otrf_hits: OtrfHits
) -> None:
    assert otrf_hits.events > 50_000
    rows, noisy = [], []
    for rule in sorted(shipped, key=lambda r: str(r.meta.path)):
        logsource = LogSource(rule.meta.product, rule.meta.category, rule.meta.service)
        population = otrf_hits.logsource_events[logsource]
        hits = sum(otrf_hits.by_rule_file[rule.meta.id].values())
        share = hits / population if population else 0.0
        assert population > 0, f"{rule.meta.title}: no OTRF event reaches its logsource"
        rows.append(
            f"{hits:5d} / {population:6d} {share:7.2%}  {rule.meta.category or rule.meta.service:16s} {rule.meta.title}"
        )
        if hits > NOISE_FLOOR and share > MAX_SHARE:
            noisy.append(rule.meta.title)
    print("\nshipped rule hits over all OTRF (hits / events of the rule's logsource):")
    print("\n".join(rows))
    assert not noisy, f"rules above {MAX_SHARE:.0%} of their logsource: {noisy}"
