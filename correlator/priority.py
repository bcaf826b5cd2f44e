"""Priority P1-P4 of an alert, in the spirit of Splunk risk-based alerting (risk over 100 in
24 h, or 3 ATT&CK tactics in 7 days).

    risk      = max(host risk, user risk) of the alert's entities right after the detection
                (decayed with RiskConfig.half_life_ms, 12 h by default)
    P1 if risk >= p1_risk (100) AND a P1 gate holds AND the anomaly models corroborate it:
            gates: a rule of level high/critical on an asset/identity of criticality high/critical,
            when the detection is new there (novel, below) and >= p1_criticality_tactics (2)
            tactics back it (criticality lowers the bar, it is no gate alone), or >=
            p1_min_tactics (3) distinct ATT&CK tactics (see "tactics" below), or, with
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
    novel: the detection's repeat factor (RiskConfig: 0.5^k for the rule's k earlier hits on the
    entity in the window, times its fleet prevalence) is >= p1_novelty (0.5): a rule that fired on
    this host before, or across the fleet, is routine there and makes no P1 by itself (its risk
    still counts). Routine admin work (PsExec, WMI, discovery) repeats; an intrusion's steps are new.
    learning_ms (24 h): the first learning_ms of event time give no P1 (P2 at most): the baselines
    that tell routine from new (rule repeats, fleet prevalence, the anomaly models) have not seen a
    day yet, so every detection is new and every host anomalous.

Who carries the priority (risk-based alerting, as Splunk RBA separates risk events from notables):

    entity risk alert (kind "risk", rule id "risk:entity", one per host and case): opened when the
        host's priority above is P3 or more urgent AND its case holds >= entity_min_tactics (2)
        distinct tactics (or a correlation hit is in the window). The case is the open alert, or,
        before it opens, the host's contributions of the last AlertConfig.risk_inactivity_ms (24 h),
        which the new alert starts with as its evidence. Every later contribution to the host
        joins it; only a qualifying one keeps it open (24 h). Its priority escalates only. For it,
        "tactics" are those of corroborating contributions within the case window: made with the
        anomaly context >= p1_anomaly (an intrusion's steps bring new processes, addresses and
        accounts; routine work the models know does not; without anomaly scores, any) and novel
        (above). With p1_distinct_techniques (true), tactics are counted as steps: each by its own
        ATT&CK technique (`tactic_steps`), since one technique tagged with several tactics (T1053.005
        scheduled task: execution, persistence, privilege escalation) is one step, not three.
    per-rule alert (one rule on one entity, the original alert): a risk contribution, recorded at
        rule_alert_priority (P4) at most urgent: visible, explained, counted in risk, not paged.
        rule_alert_priority = 1 and entity_alerts = false give the per-rule priorities of the
        formula above (the behaviour before entity alerts, with "tactics" the entity's in 7 days).
    correlation alert: of a level in correlation_alert_levels (critical), its own priority by the
        formula above (a high-confidence pattern); else recorded like a per-rule alert (its hit
        still adds risk to the host and can open its entity alert).
"""

from __future__ import annotations

from collections.abc import Mapping
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
    # repeats and fleet prevalence, the anomaly models): no entity alert is P1 then (P2 at most). A
    # day, so that they have seen one daily cycle of the fleet's routine.
    learning_ms: int = 24 * 3_600_000
    # A detection counts toward P1 (its tactics toward p1_min_tactics, its level toward the
    # criticality gate) only when new on the entity and rare in the fleet: its repeat factor
    # (RiskConfig.repeat_decay ** earlier hits of the rule on the entity x fleet prevalence) >= this.
    p1_novelty: float = 0.5
    # P1's tactics are counted as steps, each tactic by a distinct ATT&CK technique (tactic_steps)
    p1_distinct_techniques: bool = True
    # Criticality lowers the bar of corroboration, it does not replace it: the criticality gate also
    # needs this many tactics (as the tactic gate counts them; 0: the gate stands alone)
    p1_criticality_tactics: int = 2
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
    novelty: float = 1.0  # the detection's repeat factor (see `novel` in the module docstring)
    max_level: str | None = None
    asset_criticality: str | None = None
    tactics: int = 0

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
        if risk >= config.p1_risk and self.max_level in config.p1_levels \
                and self.asset_criticality in config.p1_criticality:
            if self.novelty < config.p1_novelty:
                reasons.append(f"{self.max_level} rule on {self.asset_criticality} asset, but routine there (repeat "
                               f"factor {self.novelty:.3g} < p1_novelty {config.p1_novelty:g}: the rule fired on this "
                               "entity or across the fleet before): no criticality gate")
            elif self.tactics < config.p1_criticality_tactics:
                reasons.append(f"{self.max_level} rule on {self.asset_criticality} asset, but {self.tactics} "
                               f"corroborated tactics < p1_criticality_tactics {config.p1_criticality_tactics}: "
                               "criticality alone makes no P1")
        if self.demoted:
            reasons.append(f"demoted one step: noisy rule, anomaly score {self.anomaly:.3f} < {config.demote_below:g}")
        return reasons

    def to_dict(self) -> dict[str, Any]:
        return {"priority": self.label, "base_priority": f"P{self.base_priority}", "risk": round(self.risk, 4),
                "p1_gates": self.gates, "demoted": self.demoted, "reasons": self.reasons,
                "thresholds": {"p1_risk": self.config.p1_risk, "p2_risk": self.config.p2_risk,
                               "p3_risk": self.config.p3_risk, "p1_min_tactics": self.config.p1_min_tactics,
                               "p1_novelty": self.config.p1_novelty, "novelty": round(self.novelty, 4),
                               "p1_criticality_tactics": self.config.p1_criticality_tactics,
                               "demote_below": self.config.demote_below, "noisy_hits": self.config.noisy_hits}}


def priority_of(config: PriorityConfig, risk: float, tactics: int, max_level: str | None,
                asset_criticality: str | None, correlation: bool, anomaly: float | None, noisy: bool,
                novelty: float = 1.0) -> tuple[int, bool]:
    """(priority, demoted) exactly as `prioritize` decides them, without the gate texts and the
    result object: the engine calls this on every hit and `prioritize` only for an explanation.
    `novelty`: the detection's repeat factor (the criticality gate needs it >= p1_novelty)."""
    if risk >= config.p1_risk:
        gated = ((max_level in config.p1_levels and asset_criticality in config.p1_criticality
                  and novelty >= config.p1_novelty and tactics >= config.p1_criticality_tactics)
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
               correlation: bool, anomaly: float | None, noisy: bool, novelty: float = 1.0) -> PriorityResult:
    gates: list[str] = []
    if max_level in config.p1_levels and asset_criticality in config.p1_criticality and novelty >= config.p1_novelty \
            and tactics >= config.p1_criticality_tactics:
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
    return PriorityResult(min(4, base + 1) if demoted else base, base, risk, gates, demoted, config, anomaly, novelty,
                          max_level, asset_criticality, tactics)


def technique_step(technique: str) -> str:
    """The step a technique tag stands for: its parent technique (T1087.001 and T1087.002 are one
    behaviour, account discovery).

    >>> technique_step("T1053.005"), technique_step("T1047")
    ('T1053', 'T1047')
    """
    return technique.split(".", 1)[0]


def tactic_steps(witnesses: Mapping[str, Mapping[str, int]], since: int) -> dict[str, str]:
    """The most tactics that each have a step of their own: tactic -> the technique (`technique_step`,
    or a rule id for a rule without technique tags) that stands for it, a maximum matching between
    tactics and the techniques seen with them at or after `since` (`witnesses`: tactic -> technique
    -> last ms). One technique is one step of an intrusion whatever number of tactics its rule is
    tagged with: a scheduled task (T1053) is execution, persistence and privilege escalation in
    ATT&CK, and one scheduled task is still one step.

    >>> tactic_steps({"execution": {"T1053": 5}, "persistence": {"T1053": 5}}, 0)
    {'execution': 'T1053'}
    >>> sorted(tactic_steps({"execution": {"T1569": 5, "T1021": 5}, "lateral-movement": {"T1569": 5, "T1021": 5},
    ...                      "discovery": {"T1087": 1}}, 2).items())
    [('execution', 'T1021'), ('lateral-movement', 'T1569')]
    """
    options = {tactic: [step for step, ms in steps.items() if ms >= since] for tactic, steps in witnesses.items()}
    owner: dict[str, str] = {}  # step -> tactic

    def assign(tactic: str, visited: set[str]) -> bool:  # Kuhn's augmenting path (a few tactics, a few steps)
        for step in options[tactic]:
            if step in visited:
                continue
            visited.add(step)
            if step not in owner or assign(owner[step], visited):
                owner[step] = tactic
                return True
        return False

    for tactic in sorted(options, key=lambda name: len(options[name])):
        if options[tactic]:
            assign(tactic, set())
    return {tactic: step for step, tactic in owner.items()}
