"""The correlation rules the project ships (rules/windows/correlation/), each proven on real events.

Every test runs the whole pipeline a deployment runs: all shipped rules are loaded from rules/,
each event goes through the Sigma engine, each rule match becomes a `Hit` (rule id, the event's
own time, the event as fields, its file and line as evidence), and the hits feed a
`CorrelationEngine.from_ruleset(...)` in event-time order; open windows are flushed at the end.

Where the events come from:

- Lateral movement: the OTRF recordings as they are. SharpWMI (`covenant_sharpwmi_create_
  dcerpc_wmi`) and WS-Man automation (`covenant_com_wsman_automation`) each hold a process started
  by WmiPrvSE.exe on WORKSTATION6 and the 4624 type 3 logon of the remote user on that host about
  a second later. The PsExec recording (`cmd_psexec_lsa_secrets_dump`) ran PsExec against the
  local host: it holds the real PSEXESVC 7045 but no network logon, so the chain is (rightly) not
  there; a derived stream adds the real 4624 type 3 of pgustavo from `covenant_sc_query_dcerpc_
  smb_svcctl`, re-hosted to WORKSTATION5 and re-timed two seconds before the service install.
- Failed logons: OTRF has no Security 4625 at all. They are derived from a REAL 4624 (pgustavo
  logging on to MORDORDC over the network from 172.18.39.5, `covenant_sc_query_dcerpc_smb_svcctl`
  line 334): same fields, EventID 4625, the fields a 4625 does not have dropped, TargetUserSid
  S-1-0-0, and the values Windows writes for a wrong password (Status 0xc000006d, SubStatus
  0xc000006a, FailureReason %%2313); a bad password over the network is an NTLM failure (a
  Kerberos one is a 4771 on the DC), so the package is NTLM / NtLmSsp. They are re-timed seconds
  (or minutes) apart before the real successful logon. Password spraying swaps TargetUserName for
  real account names: the OTRF lab's (pgustavo, wardog, sbeavers, Administrator, Guest,
  DefaultAccount, WDAGUtilityAccount) and the generator's office accounts.
- Benign: every OTRF recording on its own, and a generator background stream without attacks.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.sources.files import read_events
from correlator.correlations import CorrelationEngine, suppressed_rule_ids
from correlator.records import CorrelationHit, Hit
from detectors.engine import SigmaEngine
from detectors.loader import Ruleset
from detectors.rulefiles import load_rules_from_paths
from models.datasets.generator import USERS, generate
from models.eventtime import event_time_ms
from tests.conftest import OTRF, ROOT, SIGMA, otrf_files

pytestmark = pytest.mark.skipif(not OTRF.exists(), reason="needs ../shared/datasets/otrf")

CORRELATION_DIR = ROOT / "rules" / "windows" / "correlation"
JSONL = OTRF / "jsonl"
S = 1000  # ms
MIN = 60 * S

# rule ids (see the YAML files)
FAILED_LOGON = "67ad0341-bbc8-422d-92cb-feec2c5bbb6a"
REMOTE_LOGON = "7e78441f-f5f9-402f-8e14-3e7e70c5da7c"
REPEATED_FAILURES = "ef1dfad3-bf0f-4683-b0ed-bcc7537813c9"
BRUTE_FORCE = "dbeb5e6d-b62c-46e4-9463-399ff3567ddf"
SPRAYING = "ed70b5ea-fd60-458c-b8c6-7e2c3b53484a"
REMOTE_EXECUTION = "025f5e65-9d18-417d-84e1-a0851114973b"
LATERAL = "332337b8-4ad9-4054-b901-6a817e7c4575"
PSEXEC_SERVICE = "76be2f87-0eb5-44e7-960c-988fe3cf9951"  # shipped detection rule
WMI_CHILD = "976f21eb-d0ce-4916-b19c-16a2c8219ea2"  # shipped detection rule
ALERTING = {BRUTE_FORCE, SPRAYING, LATERAL}  # the correlations that raise alerts

SC_QUERY = "lateral_movement/covenant_sc_query_dcerpc_smb_svcctl.jsonl"
SHARPWMI = "lateral_movement/covenant_sharpwmi_create_dcerpc_wmi.jsonl"
WSMAN = "lateral_movement/covenant_com_wsman_automation.jsonl"
PSEXEC = "credential_access/cmd_psexec_lsa_secrets_dump.jsonl"
REAL_LOGON = (SC_QUERY, 334)  # 4624 type 3, pgustavo from 172.18.39.5 on MORDORDC
OTRF_ACCOUNTS = ["pgustavo", "wardog", "sbeavers", "Administrator", "Guest", "DefaultAccount", "WDAGUtilityAccount"]

# 4624 fields a 4625 does not have
NOT_IN_4625 = {
    "TargetLogonId", "LogonGuid", "ImpersonationLevel", "RestrictedAdminMode", "TargetOutboundUserName",
    "TargetOutboundDomainName", "VirtualAccount", "TargetLinkedLogonId", "ElevatedToken",
}

Event = dict[str, Any]
Item = tuple[Event, tuple[str, int]]  # an event and its evidence (file, line)


# --- plumbing ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ruleset() -> Ruleset:
    loaded = load_rules_from_paths([ROOT / "rules"])
    assert not loaded.rejections, [r.to_dict() for r in loaded.rejections]
    return loaded


@pytest.fixture(scope="module")
def sigma(ruleset: Ruleset) -> SigmaEngine:
    return SigmaEngine(ruleset.rules)


def read(file: str) -> list[Item]:
    items: list[Item] = []
    for record in read_events(JSONL / file):
        assert record.error is None and record.event is not None
        items.append((dict(record.event), (file, record.line)))
    return items


def line(file: str, number: int) -> Event:
    (event,) = [e for e, (_, n) in read(file) if n == number]
    return event


def hits_of(sigma: SigmaEngine, items: Iterable[Item]) -> list[Hit]:
    """The rule matches as hits. A match on an event without a time cannot be placed in event time
    and is left out (the PsExec recording has 45 such events, its 7045 among them)."""
    hits: list[Hit] = []
    for event, (file, number) in items:
        time = event_time_ms(event)
        if time is not None:
            hits.extend(Hit(meta.id, time, event, ref=(file, 0, number)) for meta in sigma.match(event))
    return sorted(hits, key=lambda h: h.event_time_ms)  # the stream in event-time order


def correlate(ruleset: Ruleset, sigma: SigmaEngine, items: Iterable[Item]) -> list[CorrelationHit]:
    engine = CorrelationEngine.from_ruleset(ruleset)
    out = engine.process_many(hits_of(sigma, items))
    return out + engine.flush()


def alerts(fired: Sequence[CorrelationHit]) -> list[CorrelationHit]:
    return [f for f in fired if f.correlation_id in ALERTING]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def retimed(event: Mapping[str, Any], ms: int, **changes: Any) -> Event:
    out = {**event, **changes}
    out["TimeCreated_SystemTime"] = iso(ms)
    if "UtcTime" in out:
        out["UtcTime"] = iso(ms).replace("T", " ").rstrip("Z")
    return out


def failed_logon(success: Mapping[str, Any], ms: int, **changes: Any) -> Event:
    """A 4625 for a wrong password, derived from a real 4624 (see the module docstring)."""
    event = {k: v for k, v in success.items() if k not in NOT_IN_4625}
    event.update({
        "EventID": 4625, "Version": 0, "TargetUserSid": "S-1-0-0", "Status": "0xc000006d",
        "SubStatus": "0xc000006a", "FailureReason": "%%2313", "AuthenticationPackageName": "NTLM",
        "LogonProcessName": "NtLmSsp ", "LmPackageName": "-", "KeyLength": "0",
    })
    return retimed(event, ms, **changes)


@pytest.fixture(scope="module")
def success() -> Event:
    event = line(*REAL_LOGON)
    assert (event["EventID"], event["LogonType"], event["TargetUserName"], event["IpAddress"]) == (
        4624, "3", "pgustavo", "172.18.39.5"
    )
    return event


def failures(success: Mapping[str, Any], times: Iterable[int], **changes: Any) -> list[Item]:
    return [(failed_logon(success, t, **changes), ("derived-4625", i)) for i, t in enumerate(times, 1)]


# --- the files -----------------------------------------------------------------------------------


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def test_correlation_rules_are_complete_sigma_documents(ruleset: Ruleset) -> None:
    docs = [d for p in sorted(CORRELATION_DIR.glob("*.yml")) for d in _documents(p)]
    assert len(docs) == 7  # 2 base detection rules + 5 correlations (2 of them chained steps)
    ids = [str(d["id"]) for d in docs]
    assert len(set(ids)) == len(ids) and all(str(uuid.UUID(i)) == i for i in ids)
    for doc in docs:
        for key in ("title", "id", "status", "description", "references", "author", "date", "tags",
                    "falsepositives", "level"):
            assert doc.get(key), f"{doc.get('title')}: missing {key}"
        assert doc["status"] == "experimental" and doc["author"] == "sigmaray"
        assert str(doc["date"]) == "2026-11-30"
        assert any(t.startswith("attack.t1") for t in doc["tags"])
        assert ("correlation" in doc) != ("detection" in doc)
    specs = {s.id: s for s in ruleset.correlations}
    assert set(specs) == {REPEATED_FAILURES, BRUTE_FORCE, SPRAYING, REMOTE_EXECUTION, LATERAL}
    assert specs[BRUTE_FORCE].rules == (REPEATED_FAILURES, REMOTE_LOGON)
    assert specs[REPEATED_FAILURES].rules == (FAILED_LOGON,)
    assert specs[SPRAYING].rules == (FAILED_LOGON,)
    assert specs[LATERAL].rules == (REMOTE_LOGON, REMOTE_EXECUTION)
    assert specs[REMOTE_EXECUTION].rules == (PSEXEC_SERVICE, WMI_CHILD)


def test_correlation_rules_validate_against_the_sigma_json_schemas() -> None:
    jsonschema = pytest.importorskip("jsonschema")  # not a declared dependency (comes with pySigma's tree)
    folder = SIGMA / "specification" / "json-schema"
    for path in sorted(CORRELATION_DIR.glob("*.yml")):
        for doc in _documents(path):
            name = "sigma-correlation-rules-schema.json" if "correlation" in doc else "sigma-detection-rule-schema.json"
            schema = json.loads((folder / name).read_text(encoding="utf-8"))
            validator = jsonschema.validators.validator_for(schema)(schema, format_checker=jsonschema.FormatChecker())
            doc["date"] = str(doc["date"])  # YAML reads an unquoted ISO date as datetime.date
            assert [e.message for e in validator.iter_errors(doc)] == [], f"{path.name}: {doc['title']}"


def test_base_rules_raise_no_alert_the_shipped_detections_still_do(ruleset: Ruleset) -> None:
    suppressed = suppressed_rule_ids(ruleset.correlations)
    assert suppressed == {FAILED_LOGON, REMOTE_LOGON, REPEATED_FAILURES, REMOTE_EXECUTION}
    assert PSEXEC_SERVICE not in suppressed and WMI_CHILD not in suppressed


def test_derived_failed_logon_matches_only_the_failed_logon_rule(sigma: SigmaEngine, success: Event) -> None:
    assert [m.id for m in sigma.match(success)] == [REMOTE_LOGON]
    derived = failed_logon(success, event_time_ms(success) or 0)
    assert [m.id for m in sigma.match(derived)] == [FAILED_LOGON]
    assert [m.id for m in sigma.match({**derived, "IpAddress": "-"})] == []  # no address: not counted
    assert [m.id for m in sigma.match({**success, "TargetUserName": "MORDORDC$"})] == []  # computer account


# --- brute force: >= 5 failures of one account from one address, then its success, in 10 min -------


def test_brute_force_five_failures_then_the_real_success_fires(
    ruleset: Ruleset, sigma: SigmaEngine, success: Event
) -> None:
    t = event_time_ms(success) or 0
    stream = [*failures(success, [t - 50 * S + i * 10 * S for i in range(5)]), (success, REAL_LOGON)]
    fired = correlate(ruleset, sigma, stream)
    (alert,) = alerts(fired)
    assert alert.correlation_id == BRUTE_FORCE and alert.level == "high"
    assert alert.group == {"TargetUserName": "pgustavo", "IpAddress": "172.18.39.5"}
    assert alert.last_event_ms == t and alert.value == 2
    assert [f.correlation_id for f in fired].count(REPEATED_FAILURES) == 1  # the chained step


@pytest.mark.parametrize(
    "case",
    ["four failures", "failures alone", "success alone", "spread past 10 min", "success first",
     "other address", "other account"],
)
def test_brute_force_does_not_fire(ruleset: Ruleset, sigma: SigmaEngine, success: Event, case: str) -> None:
    t = event_time_ms(success) or 0
    real = (success, REAL_LOGON)
    five = failures(success, [t - 50 * S + i * 10 * S for i in range(5)])
    stream: list[Item] = {
        "four failures": [*five[1:], real],
        "failures alone": five,
        "success alone": [real],
        # 5 failures 3 minutes apart (12 min in all): never 5 within 10 minutes
        "spread past 10 min": [*failures(success, [t - 12 * MIN + i * 3 * MIN for i in range(5)]), real],
        "success first": [real, *failures(success, [t + 10 * S + i * 10 * S for i in range(5)])],
        "other address": [*failures(success, [t - 50 * S + i * 10 * S for i in range(5)], IpAddress="172.18.39.6"),
                          real],
        "other account": [*failures(success, [t - 50 * S + i * 10 * S for i in range(5)], TargetUserName="wardog"),
                          real],
    }[case]
    assert alerts(correlate(ruleset, sigma, stream)) == []


# --- password spraying: >= 10 distinct accounts failing from one address in 30 min ---------------


SPRAYED = OTRF_ACCOUNTS + sorted(USERS)  # 7 + 6 real-looking account names


def test_password_spraying_ten_accounts_from_one_address_fires(
    ruleset: Ruleset, sigma: SigmaEngine, success: Event
) -> None:
    t = event_time_ms(success) or 0
    stream = [(failed_logon(success, t + i * 20 * S, TargetUserName=user), ("derived-4625", i))
              for i, user in enumerate(SPRAYED)]
    fired = alerts(correlate(ruleset, sigma, stream))
    assert [f.correlation_id for f in fired] == [SPRAYING]  # once: not again at the 11th, 12th, 13th
    assert fired[0].group == {"IpAddress": "172.18.39.5"}
    assert fired[0].value == 10 and fired[0].last_event_ms == t + 9 * 20 * S


@pytest.mark.parametrize("case", ["one account many times", "nine accounts", "spread past 30 min", "many addresses"])
def test_password_spraying_does_not_fire(ruleset: Ruleset, sigma: SigmaEngine, success: Event, case: str) -> None:
    t = event_time_ms(success) or 0
    users: list[str] = {
        "one account many times": ["pgustavo"] * 40,
        "nine accounts": SPRAYED[:9] * 3,
        "spread past 30 min": SPRAYED[:10],
        "many addresses": SPRAYED[:10],
    }[case]
    step = 4 * MIN if case == "spread past 30 min" else 20 * S  # 10 users over 36 min: at most 8 in 30 min
    stream = [
        (failed_logon(success, t + i * step, TargetUserName=user,
                      **({"IpAddress": f"172.18.39.{10 + i}"} if case == "many addresses" else {})),
         ("derived-4625", i))
        for i, user in enumerate(users)
    ]
    fired = correlate(ruleset, sigma, stream)
    assert all(f.correlation_id != SPRAYING for f in fired)
    if case == "one account many times":  # that is the brute force step instead (no success: no alert)
        assert [f.correlation_id for f in fired] == [REPEATED_FAILURES] * 2  # once per 10 min, 13 min of failures
    assert alerts(fired) == []


# --- lateral movement: a user's network logon and remote execution on one host in 5 min --------


@pytest.mark.parametrize("file", [SHARPWMI, WSMAN])
def test_lateral_movement_fires_on_the_real_wmi_recordings(ruleset: Ruleset, sigma: SigmaEngine, file: str) -> None:
    fired = correlate(ruleset, sigma, read(file))
    (alert,) = alerts(fired)
    assert alert.correlation_id == LATERAL
    assert alert.group == {"Computer": "WORKSTATION6.theshire.local"}
    assert alert.value == 2 and alert.last_event_ms - alert.first_event_ms < 5 * S


def _wmi_host_items(file: str) -> tuple[list[Item], list[Item]]:
    """The real remote-execution events and user network logons of WORKSTATION6 in `file`."""
    host = "WORKSTATION6.theshire.local"
    executions, logons = [], []
    for event, ref in read(file):
        if event.get("Computer") != host:
            continue
        if event.get("EventID") == 4624 and event.get("LogonType") == "3" and event.get("TargetUserName") == "pgustavo":
            logons.append((event, ref))
        elif "WmiPrvSE" in str(event.get("ParentImage") or event.get("ParentProcessName") or ""):
            executions.append((event, ref))
    return executions, logons


def test_lateral_movement_real_sharpwmi_events_alone_fire_but_not_each_half(
    ruleset: Ruleset, sigma: SigmaEngine
) -> None:
    executions, logons = _wmi_host_items(SHARPWMI)
    assert len(logons) == 5 and executions
    assert [f.correlation_id for f in alerts(correlate(ruleset, sigma, executions + logons))] == [LATERAL]
    assert alerts(correlate(ruleset, sigma, executions)) == []
    assert alerts(correlate(ruleset, sigma, logons)) == []


def test_lateral_movement_order_does_not_matter_by_design(ruleset: Ruleset, sigma: SigmaEngine) -> None:
    """In the recording the logons come ~1 s after the process; moved 2 min before it, it still fires."""
    executions, logons = _wmi_host_items(SHARPWMI)
    first = min(event_time_ms(e) or 0 for e, _ in executions)
    earlier = [(retimed(e, first - 2 * MIN + i * S), ref) for i, (e, ref) in enumerate(logons)]
    assert [f.correlation_id for f in alerts(correlate(ruleset, sigma, executions + earlier))] == [LATERAL]


@pytest.mark.parametrize("case", ["logons 5 min later", "logons 6 min earlier", "logons on another host"])
def test_lateral_movement_split_apart_does_not_fire(ruleset: Ruleset, sigma: SigmaEngine, case: str) -> None:
    executions, logons = _wmi_host_items(SHARPWMI)
    last = max(event_time_ms(e) or 0 for e, _ in executions)
    first = min(event_time_ms(e) or 0 for e, _ in executions)
    moved: list[Item] = []
    for i, (event, ref) in enumerate(logons):
        if case == "logons 5 min later":  # exactly one timespan after the last process: not "within"
            moved.append((retimed(event, last + 5 * MIN + i * S), ref))
        elif case == "logons 6 min earlier":
            moved.append((retimed(event, first - 6 * MIN - i * S), ref))
        else:
            moved.append(({**event, "Computer": "WORKSTATION5.theshire.local"}, ref))
    assert alerts(correlate(ruleset, sigma, executions + moved)) == []


def test_lateral_movement_psexec_service_after_a_real_network_logon_fires(
    ruleset: Ruleset, sigma: SigmaEngine, success: Event
) -> None:
    """The recording's System 7045 carries no time at all: it gets the time of the last timed
    event recorded before it (its 4697 twin has none either)."""
    recorded = read(PSEXEC)
    # the recording ran PsExec against its own host: the service, but no network logon -> no chain
    assert not any(e.get("EventID") == 4624 and e.get("LogonType") == "3" for e, _ in recorded)
    index = next(i for i, (e, _) in enumerate(recorded) if e.get("EventID") == 7045 and e.get("ServiceName") == "PSEXESVC")
    service, ref = recorded[index]
    assert event_time_ms(service) is None
    t = next(event_time_ms(e) for e, _ in reversed(recorded[:index]) if event_time_ms(e) is not None)
    assert t is not None
    psexec = [*recorded[:index], (retimed(service, t), ref), *recorded[index + 1:]]
    fired = correlate(ruleset, sigma, psexec)
    assert alerts(fired) == []
    assert [f.correlation_id for f in fired] == [REMOTE_EXECUTION]  # the step did see the PSEXESVC service
    logon = retimed(success, t - 2 * S, Computer=service["Computer"])  # the real 4624 type 3, re-hosted
    (alert,) = alerts(correlate(ruleset, sigma, [*psexec, (logon, REAL_LOGON)]))
    assert alert.correlation_id == LATERAL and alert.group == {"Computer": "WORKSTATION5"}
    # the same logon 5 minutes before the service: too far apart
    early = retimed(success, t - 5 * MIN, Computer=service["Computer"])
    assert alerts(correlate(ruleset, sigma, [*psexec, (early, REAL_LOGON)])) == []


# --- benign streams ------------------------------------------------------------------------------


def test_over_every_otrf_recording_only_the_lateral_movement_ones_alert(ruleset: Ruleset, sigma: SigmaEngine) -> None:
    """Each recording is its own stream (they were recorded on different days). No recording
    holds a 4625, so brute force and spraying never fire; the lateral movement chain fires only
    where a remote user's logon and WMI/PsExec execution on one host were recorded together."""
    got: Counter[tuple[str, str]] = Counter()
    for path in otrf_files():
        name = path.relative_to(JSONL).as_posix()
        for alert in alerts(correlate(ruleset, sigma, read(name))):
            got[(name, alert.correlation_id)] += 1
    assert got == {(SHARPWMI, LATERAL): 1, (WSMAN, LATERAL): 1}


def test_generator_office_background_raises_no_correlation_alert(ruleset: Ruleset, sigma: SigmaEngine) -> None:
    """5000 synthesized office events (logons, processes, network, files, registry), no attacks:
    the generator writes 4624 logons (network ones too) but no 4625 and no remote execution."""
    events = list(generate(5000, seed=1, attack_share=0.0))
    assert not any(e.get("EventID") == 4625 for e in events)
    assert sum(e.get("EventID") == 4624 for e in events) > 0
    items = [(dict(e), ("generator", i)) for i, e in enumerate(events)]
    hits = hits_of(sigma, items)
    fired = correlate(ruleset, sigma, items)
    assert alerts(fired) == [], [f.to_dict() for f in fired]
    assert [f for f in fired if f.correlation_id in (REPEATED_FAILURES, REMOTE_EXECUTION)] == []
    assert hits  # the stream did reach the engine (base rule hits on the background logons)
