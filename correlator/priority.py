"""Priority P1-P4 of an alert, in the spirit of Splunk risk-based alerting (risk over 100 in
24 h, or 3 ATT&CK tactics in 7 days).

    risk      = max(host risk, user risk) of the alert's entities right after the detection
                (decayed with RiskConfig.half_life_ms, 12 h by default)
    P1 if risk >= p1_risk (100) AND a P1 gate holds:
            a rule of level high/critical on an asset/identity of criticality high/critical, or
            >= p1_min_tactics (3) distinct ATT&CK tactics on the entity within the window (7 days), or
            a correlation-rule hit on the entity within the window;
       (risk >= p1_risk without a gate is P2)
    P2 if risk >= p2_risk (60)
    P3 if risk >= p3_risk (25)
    P4 otherwise
    demotion: one step lower (never below P4) when the entity's anomaly model calls it normal
    (score known and < demote_below, 0.5) and the rule is noisy on the entity (>= noisy_hits, 10,
    hits in the alert, or listed in noisy_rules).
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
        gated = (max_level in config.p1_levels and asset_criticality in config.p1_criticality) \
            or tactics >= config.p1_min_tactics or correlation
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
    if correlation:
        gates.append("correlation hit")
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
