"""Priority P1-P4 of an alert, in the spirit of Splunk risk-based alerting (risk over 100 in
24 h, or 3 ATT&CK tactics in 7 days).

    risk      = max(host risk, user risk) of the alert's entities right after the detection
                (decayed with RiskConfig.half_life_ms, 12 h by default)
    P1 if risk >= p1_risk (100) AND a P1 gate holds AND the anomaly models corroborate it:
            gates: a rule of level high/critical on an asset/identity of criticality high/critical,
            or >= p1_min_tactics (3) distinct ATT&CK tactics (see "tactics" below), or, with
            correlation_gate (off by default), a correlation-rule hit on the entity in the window;
            corroboration: the detection carries no anomaly scores (models off), or the host's
            anomaly context (RiskConfig.anomaly_breadth) >= p1_anomaly (1.0: 4 distinct anomalous
            entities on the host in the hour, its event's own included);
       (risk >= p1_risk without both is P2)
    P2 if risk >= p2_risk (60)
    P3 if risk >= p3_risk (25)
    P4 otherwise
    demotion: one step lower (never below P4) when the entity's anomaly model calls it normal
    (score known and < demote_below, 0.5) and the rule is noisy on the entity (>= noisy_hits, 10,
    hits in the alert, or listed in noisy_rules).
    learning_ms (0, off): the first learning_ms of event time give no P1 (P2 at most).

Who carries the priority (risk-based alerting, as Splunk RBA separates risk events from notables):

    entity risk alert (kind "risk", rule id "risk:entity", one per host and case): opened when the
        host's priority above is P3 or more urgent AND its case holds >= entity_min_tactics (2)
        distinct tactics (or a correlation hit is in the window). The case is the open alert, or,
        before it opens, the host's contributions of the last AlertConfig.risk_inactivity_ms (24 h),
        which the new alert starts with as its evidence. Every later contribution to the host
        joins it; only a qualifying one keeps it open (24 h). Its priority escalates only. For it,
        "tactics" are those of contributions made with the anomaly context >= p1_anomaly within
        the case window (an intrusion's steps bring new processes, addresses and accounts; routine
        work the models know does not); without anomaly scores, every tactic of the case.
    per-rule alert (one rule on one entity, the original alert): a risk contribution, recorded at
        rule_alert_priority (P4) at most urgent: visible, explained, counted in risk, not paged.
        rule_alert_priority = 1 and entity_alerts = false give the per-rule priorities of the
        formula above (the behaviour before entity alerts, with "tactics" the entity's in 7 days).
    correlation alert: of a level in correlation_alert_levels (critical), its own priority by the
        formula above (a high-confidence pattern); else recorded like a per-rule alert (its hit
        still adds risk to the host and can open its entity alert).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# OCSF: severity_id 5 Critical, 4 High, 3 Medium, 2 Low; priority_id 4 Critical, 3 High, 2 Medium, 1 Low
SEVERITY_ID = {1: 5, 2: 4, 3: 3, 4: 2}
SEVERITY_NAME = {1: "Critical", 2: "High", 3: "Medium", 4: "Low"}
PRIORITY_ID = {1: 4, 2: 3, 3: 2, 4: 1}


@dataclass(slots=True)
class PriorityConfig:
    p1_risk: float = 100.0
    p2_risk: float = 60.0
    p3_risk: float = 25.0
    p1_min_tactics: int = 3
    p1_levels: frozenset[str] = frozenset({"high", "critical"})
    p1_criticality: frozenset[str] = frozenset({"high", "critical"})
    demote_below: float = 0.5
    noisy_hits: int = 10
    noisy_rules: frozenset[str] = field(default_factory=frozenset)
    # P1 also needs the anomaly models to corroborate, when the detection carries their scores:
    # anomaly (the host's anomaly context, RiskConfig.anomaly_breadth) >= p1_anomaly
    p1_anomaly: float = 1.0
    # The first learning_ms of event time the correlator runs are a learning period (baselines: rule
    # repeats and fleet prevalence, the anomaly models): no entity alert is P1 then (P2 at most).
    learning_ms: int = 0
    # A correlation hit in the window is a P1 gate only when this is true: the shipped lateral-movement
    # correlation fires on every administrator's PsExec/WMI session (its own falsepositives say so)
    correlation_gate: bool = False
    entity_alerts: bool = True  # open entity risk alerts (see the module docstring)
    entity_min_tactics: int = 2  # distinct tactics in the window an entity alert needs (no correlation)
    rule_alert_priority: int = 4  # the most urgent priority a per-rule alert is emitted with
    # correlations of these levels keep their own priority; the others are recorded like rule hits
    # (the shipped lateral-movement correlation lists admin PsExec/WMI as its false positive)
    correlation_alert_levels: frozenset[str] = frozenset({"critical"})


@dataclass(slots=True)
class PriorityResult:
    priority: int  # 1 (P1) .. 4 (P4)
    base_priority: int
    risk: float
    gates: list[str]
    demoted: bool
    config: PriorityConfig
    anomaly: float | None

    @property
    def label(self) -> str:
        return f"P{self.priority}"

    @property
    def reasons(self) -> list[str]:
        """Each step of the formula that decided, in words (built only for explanations)."""
        config, risk = self.config, self.risk
        if risk >= config.p1_risk:
            reasons = [f"risk {risk:.1f} >= {config.p1_risk:g}" + ("" if self.gates else " but no P1 gate: P2")]
        elif risk >= config.p2_risk:
            reasons = [f"risk {risk:.1f} >= {config.p2_risk:g}"]
        elif risk >= config.p3_risk:
            reasons = [f"risk {risk:.1f} >= {config.p3_risk:g}"]
        else:
            reasons = [f"risk {risk:.1f} < {config.p3_risk:g}"]
        if risk >= config.p1_risk and not self.gates and self.anomaly is not None \
                and self.anomaly < config.p1_anomaly:
            reasons.append(f"anomaly context {self.anomaly:.2f} < p1_anomaly {config.p1_anomaly:g}: "
                           "the models do not corroborate a P1")
        if self.demoted:
            reasons.append(f"demoted one step: noisy rule, anomaly score {self.anomaly:.3f} < {config.demote_below:g}")
        return reasons

    def to_dict(self) -> dict[str, Any]:
        return {"priority": self.label, "base_priority": f"P{self.base_priority}", "risk": round(self.risk, 4),
                "p1_gates": self.gates, "demoted": self.demoted, "reasons": self.reasons,
                "thresholds": {"p1_risk": self.config.p1_risk, "p2_risk": self.config.p2_risk,
                               "p3_risk": self.config.p3_risk, "p1_min_tactics": self.config.p1_min_tactics,
                               "demote_below": self.config.demote_below, "noisy_hits": self.config.noisy_hits}}


def priority_of(config: PriorityConfig, risk: float, tactics: int, max_level: str | None,
                asset_criticality: str | None, correlation: bool, anomaly: float | None, noisy: bool) -> tuple[int, bool]:
    """(priority, demoted) exactly as `prioritize` decides them, without the gate texts and the
    result object: the engine calls this on every hit and `prioritize` only for an explanation."""
    if risk >= config.p1_risk:
        gated = ((max_level in config.p1_levels and asset_criticality in config.p1_criticality)
                 or tactics >= config.p1_min_tactics or (correlation and config.correlation_gate)) \
            and (anomaly is None or anomaly >= config.p1_anomaly)
        base = 1 if gated else 2
    elif risk >= config.p2_risk:
        base = 2
    elif risk >= config.p3_risk:
        base = 3
    else:
        base = 4
    if anomaly is not None and anomaly < config.demote_below and noisy and base < 4:
        return min(4, base + 1), True
    return base, False


def prioritize(config: PriorityConfig, risk: float, tactics: int, max_level: str | None, asset_criticality: str | None,
               correlation: bool, anomaly: float | None, noisy: bool) -> PriorityResult:
    gates: list[str] = []
    if max_level in config.p1_levels and asset_criticality in config.p1_criticality:
        gates.append(f"{max_level} rule on {asset_criticality} asset")
    if tactics >= config.p1_min_tactics:
        gates.append(f"{tactics} distinct tactics >= {config.p1_min_tactics}")
    if correlation and config.correlation_gate:
        gates.append("correlation hit")
    if gates and anomaly is not None and anomaly < config.p1_anomaly:
        gates = []  # the models do not corroborate: no gate holds (reasons say why)
    if risk >= config.p1_risk:
        base = 1 if gates else 2
    elif risk >= config.p2_risk:
        base = 2
    elif risk >= config.p3_risk:
        base = 3
    else:
        base = 4
    demoted = anomaly is not None and anomaly < config.demote_below and noisy and base < 4
    return PriorityResult(min(4, base + 1) if demoted else base, base, risk, gates, demoted, config, anomaly)
