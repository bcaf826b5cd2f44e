"""A scenario from its spec and a seed: the enterprise, days of benign activity, the injected
campaigns, written as events files, labels and a criticality table.

Files written to the output folder:

- `benign.jsonl`: the enterprise's benign activity, in event-time order;
- `campaign-NN-<kind>.jsonl`: one per multi-step campaign, labeled as a whole file;
- `single-technique.jsonl`: the single-technique incidents one after another, each labeled as a
  line range (so both label forms are exercised);
- `labels.jsonl`, `criticality.csv`, `scenario.json` (the spec, the seed and what was injected).

`sigmaray eval` merges the events files in event-time order before the replay.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from evaluation.labels import Incident, LabelRange, write_labels
from evaluation.scenarios.benign import ACTIVITIES, Activity, Context
from evaluation.scenarios.enterprise import Enterprise, Host, Person, build_enterprise
from evaluation.scenarios.events import EventFactory
from evaluation.scenarios.recordings import STAGES, Recording, catalog, regression_catalog, replay

HOUR = 3_600_000
DAY = 24 * HOUR
CAMPAIGN_KINDS = ("multi-step", "low-and-slow", "critical-asset", "admin", "single-technique")


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    name: str
    description: str
    days: int
    workstations: int
    servers: int
    dcs: int
    admins: int = 3
    campaigns: tuple[str, ...] = ("multi-step",)  # CAMPAIGN_KINDS, one entry per injected incident
    max_recording_events: int = 1500  # recordings larger than this are not used (keeps small scenarios small)
    regression_share: float = 0.5  # single-technique incidents drawn from SigmaHQ's regression samples
    start: str = "2026-11-02T00:00:00Z"  # a Monday

    def __post_init__(self) -> None:
        unknown = [kind for kind in self.campaigns if kind not in CAMPAIGN_KINDS]
        if unknown:
            raise ValueError(f"scenario {self.name}: unknown campaign kind(s) {', '.join(unknown)} "
                             f"(known: {', '.join(CAMPAIGN_KINDS)})")
        if self.days < 1 or self.workstations < len(self.campaigns) or self.dcs < 1 or self.admins < 1:
            raise ValueError(f"scenario {self.name}: needs at least 1 day, 1 domain controller, 1 admin and a "
                             "workstation per campaign")


@dataclass(slots=True)
class ScenarioFiles:
    directory: Path
    events: list[str]
    labels: str
    criticality: str
    spec: ScenarioSpec
    seed: int
    summary: dict[str, Any] = field(default_factory=dict)


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method: the means here are small (a few per host per day)
    if mean <= 0:
        return 0
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _hosts_for(activity: Activity, corp: Enterprise) -> list[tuple[Host, Person | None]]:
    def owner(host: Host) -> Person | None:
        return corp.person(host.owner) if host.owner else None

    if activity.where == "workstation":
        return [(host, owner(host)) for host in corp.workstations]
    if activity.where == "developer":
        return [(host, owner(host)) for host in corp.workstations if (person := owner(host)) and person.developer]
    if activity.where in ("server", "dc"):
        return [(host, None) for host in corp.hosts if host.role == activity.where]
    if activity.where == "admin":
        out: list[tuple[Host, Person | None]] = []
        for admin in corp.admins:
            station = corp.workstation_of(corp.admin_of.get(admin.name, ""))
            if station is not None:
                out.append((station, admin))
        return out
    if activity.where == "scanner":
        servers = [host for host in corp.servers if "management" in host.kind] or corp.servers[:1]
        return [(host, None) for host in servers[:1]]
    return [(host, owner(host)) for host in corp.hosts]


def benign_events(corp: Enterprise, factory: EventFactory, rng: random.Random, start_ms: int,
                  days: int) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    """Every activity on every host it applies to, at Poisson counts: one list per day (a
    month of a large enterprise never sits in memory at once)."""
    for day in range(days):
        out: list[tuple[int, dict[str, Any]]] = []
        base = start_ms + day * DAY
        weekend = datetime.fromtimestamp(base / 1000, UTC).weekday() >= 5
        for activity in ACTIVITIES:
            office = activity.hours != (0, 24)
            for host, person in _hosts_for(activity, corp):
                mean = activity.per_day * (0.1 if weekend and office else 1.0)
                for _ in range(_poisson(rng, mean)):
                    low, high = activity.hours
                    at = base + rng.randrange(low * HOUR, high * HOUR)
                    out += activity.build(Context(factory, rng, corp, host, person), at)
        yield out


def _stages(recordings: Sequence[Recording], rng: random.Random, steps: int) -> list[Recording]:
    chosen: list[Recording] = []
    for stage in STAGES[:steps] if steps <= len(STAGES) else STAGES:
        pool = [rec for rec in recordings if rec.tactic in stage and rec not in chosen]
        if pool:
            chosen.append(rng.choice(pool))
    return chosen


@dataclass(slots=True)
class _Campaign:
    ident: str
    kind: str
    host: Host
    user: Person
    steps: list[tuple[int, Recording]]


def plan_campaigns(spec: ScenarioSpec, corp: Enterprise, recordings: Sequence[Recording], rng: random.Random,
                   start_ms: int, samples: Sequence[Recording] = ()) -> list[_Campaign]:
    """Where, when, by whom and with which recordings (OTRF; `samples`: SigmaHQ regression
    samples, for some single-technique incidents) each incident of the spec happens."""
    usable = [rec for rec in recordings if rec.events <= spec.max_recording_events]
    if not usable:
        raise ValueError("no usable attack recordings (is ../shared/datasets/otrf there?)")
    span = spec.days * DAY
    campaigns: list[_Campaign] = []
    victims = rng.sample(corp.workstations, len(corp.workstations))
    for number, kind in enumerate(spec.campaigns, 1):
        ident = f"{kind}-{number:02d}"
        if kind == "critical-asset":
            criticals = [host for host in corp.hosts if host.criticality == "critical"] or corp.dcs
            host = rng.choice(criticals)
            user = rng.choice(corp.admins)
        elif kind == "admin":
            user = rng.choice(corp.admins)
            host = corp.workstation_of(corp.admin_of.get(user.name, "")) or victims.pop()
        else:
            host = victims.pop()
            user = corp.person(host.owner)
        if kind == "single-technique":
            chosen = [rng.choice(samples if samples and rng.random() < spec.regression_share else usable)]
            gaps = [0]
        elif kind == "admin":
            pool = [rec for rec in usable if rec.tactic in ("lateral_movement", "credential_access", "persistence",
                                                              "execution")]
            chosen = rng.sample(pool, min(3, len(pool)))
            gaps = [0] + [rng.randrange(20 * 60_000, 3 * HOUR) for _ in chosen[1:]]
        else:
            chosen = _stages(usable, rng, 4 if kind == "multi-step" else 3)
            if kind == "low-and-slow":
                gaps = [0] + [rng.randrange(14 * HOUR, 30 * HOUR) for _ in chosen[1:]]
            else:
                gaps = [0] + [rng.randrange(5 * 60_000, 90 * 60_000) for _ in chosen[1:]]
        total = sum(gaps) + HOUR
        latest = max(span - total, DAY // 2)
        # Campaign starts spread over the scenario, after the first half day (the models warm up).
        first = start_ms + rng.randrange(DAY // 2, latest) if latest > DAY // 2 else start_ms + DAY // 2
        first = first - first % HOUR + rng.randrange(HOUR)
        at, steps = first, []
        for gap, recording in zip(gaps, chosen, strict=True):
            at += gap
            steps.append((at, recording))
        campaigns.append(_Campaign(ident, kind, host, user, steps))
    return campaigns


def _write(path: Path, chunks: Iterable[list[tuple[int, dict[str, Any]]]]) -> int:
    """Each chunk sorted by event time, appended (`sigmaray eval` merges by time anyway, so a
    chunk's few minutes of spill past midnight need no global sort)."""
    count = 0
    with open(path, "wb") as f:
        for events in chunks:
            events.sort(key=lambda item: item[0])
            for _, event in events:
                f.write(orjson.dumps(event) + b"\n")
            count += len(events)
    return count


def generate(spec: ScenarioSpec, seed: int, out_dir: str | Path, otrf_root: str | Path,
             sigma_root: str | Path | None = None) -> ScenarioFiles:
    """Write the scenario's files to `out_dir` (created if needed); the same (spec, seed) and
    recordings give the same files, byte for byte. `sigma_root` (../shared/sigma) adds SigmaHQ's
    regression samples to the single-technique incidents."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{spec.name}:{seed}")
    corp = build_enterprise(rng, spec.workstations, spec.servers, spec.dcs, spec.admins)
    factory = EventFactory(rng)
    start_ms = int(datetime.fromisoformat(spec.start.replace("Z", "+00:00")).timestamp() * 1000)
    samples = regression_catalog(sigma_root) if sigma_root is not None else []
    # The campaigns are planned before the benign days are drawn, so one seed gives the same
    # incidents whatever the benign volume.
    campaigns = plan_campaigns(spec, corp, catalog(otrf_root), rng, start_ms, samples)
    files: list[str] = []
    incidents: list[Incident] = []
    count = _write(out / "benign.jsonl", benign_events(corp, factory, random.Random(f"{spec.name}:{seed}:benign"),
                                                         start_ms, spec.days))
    files.append(str(out / "benign.jsonl"))
    summary: dict[str, Any] = {"benign_events": count, "hosts": len(corp.hosts), "people": len(corp.people),
                               "start": spec.start, "days": spec.days, "dcs": [host.fqdn for host in corp.dcs],
                               "incidents": []}
    singles: list[tuple[_Campaign, list[tuple[int, dict[str, Any]]]]] = []
    dc = corp.dcs[0] if corp.dcs else corp.servers[0]
    for campaign in campaigns:
        events: list[tuple[int, dict[str, Any]]] = []
        for at, recording in campaign.steps:
            others = [host for host in corp.hosts if host.role != "dc" and host != campaign.host]
            events += replay(recording, at, campaign.host, rng.sample(others, min(3, len(others))), dc, campaign.user)
        techniques = tuple(dict.fromkeys(t for _, rec in campaign.steps for t in rec.techniques))
        title = " -> ".join(rec.title for _, rec in campaign.steps)
        info = {"incident": campaign.ident, "kind": campaign.kind, "host": campaign.host.name, "user": campaign.user.name,
                "techniques": list(techniques), "events": len(events),
                "steps": [{"at": at, "recording": rec.name, "techniques": list(rec.techniques)} for at, rec in campaign.steps]}
        summary["incidents"].append(info)
        if campaign.kind == "single-technique":
            singles.append((campaign, events))
            continue
        path = out / f"campaign-{campaign.ident}.jsonl"
        _write(path, [events])
        files.append(str(path))
        incidents.append(Incident(campaign.ident, (LabelRange(path.name),), techniques, title))
    if singles:
        path = out / "single-technique.jsonl"
        singles.sort(key=lambda item: min(at for at, _ in item[1]))  # the file stays in event-time order
        line = 1
        with open(path, "wb") as f:
            for campaign, events in singles:
                events.sort(key=lambda item: item[0])
                for _, event in events:
                    f.write(orjson.dumps(event) + b"\n")
                techniques = tuple(dict.fromkeys(t for _, rec in campaign.steps for t in rec.techniques))
                incidents.append(Incident(campaign.ident, (LabelRange(path.name, line, line + len(events) - 1),),
                                          techniques, campaign.steps[0][1].title))
                line += len(events)
        files.append(str(path))
    write_labels(out / "labels.jsonl", incidents)
    (out / "criticality.csv").write_text(corp.criticality_csv(), encoding="utf-8")
    (out / "scenario.json").write_bytes(orjson.dumps({"spec": asdict(spec), "seed": seed, **summary},
                                                     option=orjson.OPT_INDENT_2))
    return ScenarioFiles(out, files, str(out / "labels.jsonl"), str(out / "criticality.csv"), spec, seed, summary)

