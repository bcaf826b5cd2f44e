"""Built-in evaluation scenarios: a simulated enterprise's benign days with real attack
recordings injected, seeded. `sigmaray eval --list` shows them.

>>> sorted(SCENARIOS)[:2]
['enterprise', 'enterprise-month']
>>> SCENARIOS["small"].days, SCENARIOS["small"].workstations
(2, 12)
"""

from __future__ import annotations

from evaluation.scenarios.build import CAMPAIGN_KINDS, ScenarioFiles, ScenarioSpec, generate

__all__ = ["CAMPAIGN_KINDS", "SCENARIOS", "ScenarioFiles", "ScenarioSpec", "generate", "scenario"]

SCENARIOS: dict[str, ScenarioSpec] = {spec.name: spec for spec in (
    ScenarioSpec("small", "2 days, 16 hosts; a multi-step campaign, an admin's campaign, a single technique "
                 "(small enough for a test)", days=2, workstations=12, servers=3, dcs=1, admins=2,
                 campaigns=("multi-step", "admin", "single-technique"), max_recording_events=700),
    ScenarioSpec("enterprise", "7 days, 120 hosts; multi-step, low-and-slow over days, a campaign on a critical "
                 "asset, an admin's campaign, two single techniques", days=7, workstations=100, servers=16, dcs=2,
                 admins=4, campaigns=("multi-step", "low-and-slow", "critical-asset", "admin", "single-technique",
                                      "single-technique")),
    ScenarioSpec("enterprise-month", "28 days, 200 hosts; every campaign kind, twice", days=28, workstations=180,
                 servers=17, dcs=3, admins=6, campaigns=("multi-step", "low-and-slow", "critical-asset", "admin",
                                                         "single-technique") * 2),
)}


def scenario(name: str) -> ScenarioSpec:
    """The built-in scenario `name`; KeyError naming the known ones otherwise."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r} (known: {', '.join(sorted(SCENARIOS))})") from None
