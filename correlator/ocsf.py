"""An alert as an OCSF 1.8.0 Detection Finding (class 2004, category 2 Findings).

activity_id 1 Create / 2 Update / 3 Close, type_uid = 2004 * 100 + activity_id, severity_id and
priority_id from P1-P4 (P1 Critical, P2 High, P3 Medium, P4 Low), times in ms of event time,
finding_info {uid = alert id, title, types, analytic, attacks}, resources (the host and users, with
criticality/role/owner), evidences (one per contributing detection ref, capped), risk_score, status,
and the whole explanation under `unmapped.sigmaray.explanation`. Profiles applied (metadata.profiles):
security_control (is_alert, risk_*, attacks) and incident (priority_id, priority). Pure.
"""

from __future__ import annotations

from typing import Any

from correlator.alerts import AlertState
from correlator.priority import PRIORITY_ID, SEVERITY_ID, SEVERITY_NAME
from correlator.risk import TACTIC_IDS

OCSF_VERSION = "1.8.0"
CLASS_UID = 2004
CATEGORY_UID = 2
ACTIVITIES = {1: "Create", 2: "Update", 3: "Close"}
PRODUCT = {"name": "sigmaray", "vendor_name": "sigmaray", "version": "0.1.0"}
# security_control: is_alert, risk_score/level/details, attacks; incident: priority_id/priority
PROFILES = ["security_control", "incident"]
_RISK_LEVEL = {1: (4, "Critical"), 2: (3, "High"), 3: (2, "Medium"), 4: (1, "Low")}
_ANALYTIC_TYPE = {"sigma": (1, "Rule"), "correlation": (1, "Rule"), "anomaly": (3, "Statistical")}


def attacks(tactics: list[str], techniques: list[str]) -> list[dict[str, Any]]:
    """OCSF attack objects: one per technique (with its sub-technique), then one per tactic alone."""
    out: list[dict[str, Any]] = []
    for uid in techniques:
        base, _, sub = uid.partition(".")
        attack: dict[str, Any] = {"technique": {"uid": base}}
        if sub:
            attack["sub_technique"] = {"uid": uid}
        out.append(attack)
    for name in tactics:
        tactic = {"name": name.replace("-", " ").title()}
        if name in TACTIC_IDS:
            tactic["uid"] = TACTIC_IDS[name]
        out.append({"tactic": tactic})
    return out


def _title(state: AlertState) -> str:
    first = next(iter(state.rules.values()), None)
    title = first.title if first else ",".join(state.rule_ids)
    return f"{title} on {state.entity}"


def detection_finding(state: AlertState, activity_id: int, time_ms: int, resources: list[dict[str, Any]],
                      risk: float) -> dict[str, Any]:
    priority = state.priority
    analytic_type = _ANALYTIC_TYPE.get(state.kind, (1, "Rule"))
    first_rule = next(iter(state.rules.values()), None)
    title = _title(state)
    analytic: dict[str, Any] = {"uid": ",".join(state.rule_ids), "type_id": analytic_type[0], "type": analytic_type[1]}
    if first_rule is not None:
        analytic["name"] = first_rule.title
    finding_info: dict[str, Any] = {
        "uid": state.alert_id, "title": title, "types": [state.kind], "analytic": analytic,
        "first_seen_time": state.first_ms, "last_seen_time": state.last_ms,
        "related_events_count": state.ref_total,
    }
    found = attacks(state.tactics, state.techniques)
    if found:
        finding_info["attacks"] = found
    evidences = [{"uid": f"{topic}:{partition}:{offset}", "name": "detection",
                  "data": {"topic": topic, "partition": partition, "offset": offset}}
                 for topic, partition, offset in state.refs]
    if not evidences:
        evidences = [{"name": "entity", "data": {"entity": state.entity}}]
    risk_level_id, risk_level = _RISK_LEVEL[priority]
    closing = activity_id == 3
    finding = {
        "activity_id": activity_id, "activity_name": ACTIVITIES[activity_id],
        "category_uid": CATEGORY_UID, "category_name": "Findings",
        "class_uid": CLASS_UID, "class_name": "Detection Finding",
        "type_uid": CLASS_UID * 100 + activity_id, "type_name": f"Detection Finding: {ACTIVITIES[activity_id]}",
        "severity_id": SEVERITY_ID[priority], "severity": SEVERITY_NAME[priority],
        "priority_id": PRIORITY_ID[priority], "priority": f"P{priority}",
        "time": time_ms, "start_time": state.first_ms, "end_time": state.last_ms, "count": state.count,
        "status_id": 5 if closing else 1, "status": "Archived" if closing else "New",
        "is_alert": True,
        "message": f"P{priority} {title}: {state.count} hit(s)",
        "metadata": {"product": dict(PRODUCT), "version": OCSF_VERSION, "profiles": list(PROFILES),
                     "log_name": "sigmaray.alerts",
                     "uid": f"{state.alert_id}-{state.emitted}"},
        "finding_info": finding_info,
        "resources": resources,
        "evidences": evidences,
        "risk_score": round(risk), "risk_level_id": risk_level_id, "risk_level": risk_level,
        "risk_details": "; ".join(state.explanation.get("priority", {}).get("reasons", [])),
        "unmapped": {"sigmaray": {"explanation": state.explanation}},
    }
    if found:  # the security_control profile's copy of finding_info.attacks
        finding["attacks"] = found
    return finding
