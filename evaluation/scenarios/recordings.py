"""Real attack recordings (OTRF Security-Datasets, ../shared/datasets/otrf) re-timed and re-hosted
onto the simulated enterprise.

A recording keeps its events and their order; what changes is when (its first event lands at
the chosen time; pauses longer than `max_gap_ms` are shortened, so a recording stays one step
of a campaign) and where (the lab's computers, users and domains are renamed to the simulated
victim host, the other hosts and the domain controller, and the campaign's user). Events the
lab recorded without a time take the time of the event before them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from evaluation.scenarios.enterprise import DOMAIN, NETBIOS, Host, Person
from evaluation.scenarios.events import iso, sysmon_time
from models.eventtime import parse_time_ms

LAB_USERS = ("wardog", "pgustavo", "Administrator")
LAB_DOMAINS = (("theshire.local", DOMAIN), ("mordor.local", DOMAIN), ("shire.com", DOMAIN), ("blacksmith.local", DOMAIN),
               ("THESHIRE", NETBIOS), ("MORDOR", NETBIOS), ("SHIRE", NETBIOS), ("BLACKSMITH", NETBIOS))
SHIFTED = ("CreationUtcTime", "PreviousCreationUtcTime")
# The lab's own harness, not the attack: it clears the logs and (re)configures Sysmon before each
# recording. Kept, every injected step would open with "Security Eventlog Cleared" (high), which
# makes detection trivial and no real intruder does at every step.
HARNESS = frozenset({("security", 1102), ("system", 104), ("microsoft-windows-sysmon/operational", 16),
                     ("microsoft-windows-sysmon/operational", 4)})
# Campaign steps run in ATT&CK order: get code running, look around, take credentials, stay and spread.
STAGES = (("execution", "defense_evasion"), ("discovery",), ("credential_access",),
          ("persistence", "privilege_escalation", "lateral_movement"))


@dataclass(frozen=True, slots=True)
class Recording:
    path: str  # the JSON-lines file
    name: str  # tactic/dataset
    title: str
    tactic: str  # the OTRF folder
    techniques: tuple[str, ...]
    events: int


# A Sigma rule's first ATT&CK tactic tag, as the OTRF folder that holds that tactic.
TACTIC_FOLDERS = {"execution": "execution", "defense-evasion": "defense_evasion", "discovery": "discovery",
                  "credential-access": "credential_access", "persistence": "persistence",
                  "privilege-escalation": "privilege_escalation", "lateral-movement": "lateral_movement",
                  "command-and-control": "command_and_control", "collection": "collection",
                  "exfiltration": "exfiltration", "impact": "impact", "initial-access": "initial_access"}


def regression_catalog(sigma_root: str | Path) -> list[Recording]:
    """SigmaHQ's regression samples (real Windows events each rule must detect) as recordings:
    the technique and tactic come from the rule's own tags. Tactic names are the OTRF folders'
    (`regression/<tactic>`)."""
    root = Path(sigma_root)
    manifest_path = root / "regression" / "manifest.json"
    if not manifest_path.is_file():
        return []
    out = []
    for item in orjson.loads(manifest_path.read_bytes()):
        if (item.get("logsource") or {}).get("product") != "windows":
            continue
        path, rule_path = root / str(item.get("jsonl")), root / str(item.get("rule_path"))
        if not path.is_file() or not rule_path.is_file():
            continue
        try:
            rule = yaml.safe_load(rule_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        tags = [str(tag).lower() for tag in (rule or {}).get("tags") or ()]
        techniques = tuple(sorted({tag[7:].upper() for tag in tags if re.match(r"^attack\.t\d{4}", tag)}))
        tactic = next((TACTIC_FOLDERS[tag[7:]] for tag in tags if tag[7:] in TACTIC_FOLDERS), "")
        if techniques and tactic:
            out.append(Recording(str(path), f"regression/{item['rule_id']}", str(item.get("rule_title") or ""),
                                 f"regression/{tactic}", techniques, int(item.get("events") or 0)))
    return sorted(out, key=lambda rec: rec.name)


def catalog(otrf_root: str | Path) -> list[Recording]:
    """The recordings in `otrf_root`'s manifest that name an ATT&CK technique, smallest first."""
    root = Path(otrf_root)
    manifest = orjson.loads((root / "manifest.json").read_bytes())
    out = []
    for item in manifest.get("datasets", ()):
        techniques = tuple(sorted({str(m.get("technique")) for m in item.get("attack_mappings") or ()
                                   if str(m.get("technique", "")).startswith("T") and m.get("technique") != "T0000"}))
        path = root / item["jsonl"]
        if not techniques or not path.is_file():
            continue
        out.append(Recording(str(path), item["jsonl"].removeprefix("jsonl/").removesuffix(".jsonl"),
                             str(item.get("title") or item["dataset"]), str(item.get("tactic_folder", "")), techniques,
                             int(item.get("events", 0))))
    return sorted(out, key=lambda rec: (rec.events, rec.name))


@functools.lru_cache(maxsize=64)
def _events(path: str) -> tuple[dict[str, Any], ...]:
    with open(path, "rb") as f:
        return tuple(orjson.loads(line) for line in f if line.strip())


def _times(events: Sequence[dict[str, Any]]) -> list[int]:
    times: list[int | None] = []
    for event in events:
        value = event.get("TimeCreated_SystemTime") or event.get("UtcTime")
        times.append(parse_time_ms(value) if value is not None else None)
    known = next((t for t in times if t is not None), 0)
    out = []
    for value in times:
        known = value if value is not None else known
        out.append(known)
    return out


NOBODY = frozenset({"system", "local service", "network service", "anonymous logon", "-", "", "dwm-1", "umfd-0",
                    "umfd-1", "dwm-2", "umfd-2", "defaultapppool", "user", "users", "guest"})
USER_FIELDS = ("User", "SubjectUserName", "TargetUserName", "ParentUser", "SourceUser", "TargetUser")


def _people(events: Sequence[dict[str, Any]]) -> set[str]:
    """The lab's user names in the recording (machine accounts and built-in identities aside)."""
    names: set[str] = set()
    for event in events:
        for name in USER_FIELDS:
            value = event.get(name)
            if isinstance(value, str):
                short = value.rpartition("\\")[2].strip()
                if short and short.lower() not in NOBODY and not short.endswith("$") and " " not in short:
                    names.add(short)
    return names


BUILTIN_DOMAINS = frozenset({"nt authority", "builtin", "window manager", "font driver host", "nt service", "iis apppool"})


def _netbios(events: Sequence[dict[str, Any]]) -> set[str]:
    """The lab's NetBIOS domain names, as user fields qualify them (DOMAIN\\user)."""
    names: set[str] = set()
    for event in events:
        for name in USER_FIELDS:
            value = event.get(name)
            if isinstance(value, str) and "\\" in value:
                domain = value.partition("\\")[0].strip()
                if domain and domain.lower() not in BUILTIN_DOMAINS and " " not in domain:
                    names.add(domain)
        for name in ("SubjectDomainName", "TargetDomainName"):
            value = event.get(name)
            if isinstance(value, str) and value and value.lower() not in BUILTIN_DOMAINS and " " not in value:
                names.add(value)
    return names


def _event_id(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _renamer(pairs: Sequence[tuple[str, str]]) -> tuple[re.Pattern[str], dict[str, str]]:
    table: dict[str, str] = {}
    for old, new in pairs:  # the first pair for a name wins: hosts before domains
        table.setdefault(old.lower(), new)
    alternatives = "|".join(re.escape(old) for old in sorted(table, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", re.IGNORECASE), table


def _rename(value: Any, pattern: re.Pattern[str], table: dict[str, str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(lambda match: table[match.group(0).lower()], value)
    if isinstance(value, list):
        return [_rename(item, pattern, table) for item in value]
    return value


def replay(recording: Recording, start_ms: int, victim: Host, others: Sequence[Host], dc: Host, user: Person,
           max_gap_ms: int = 60_000) -> list[tuple[int, dict[str, Any]]]:
    """The recording's events (without the lab's harness events) re-timed to start at `start_ms`
    and re-hosted: its main computer becomes `victim`, a lab domain controller `dc`, other
    computers `others` in turn; lab users become `user`, lab domains the enterprise's."""
    events = tuple(event for event in _events(recording.path)
                   if (str(event.get("Channel") or "").lower(), _event_id(event.get("EventID"))) not in HARNESS)
    times = _times(events)
    order = sorted(range(len(events)), key=lambda index: times[index])
    computers: list[str] = []
    domains: set[str] = set()
    for event in events:
        full = str(event.get("Computer") or "")
        name, _, domain = full.partition(".")
        if domain:
            domains.add(domain)
        if name and name.upper() not in (c.upper() for c in computers):
            computers.append(name)
    # The computer with the most events is where the attack ran; in a recording of several
    # computers, a lab domain controller stays a domain controller.
    counts = {name: sum(1 for e in events if str(e.get("Computer") or "").split(".")[0].upper() == name.upper())
              for name in computers}
    mapping: dict[str, Host] = {}
    spare = [host for host in others if host not in (victim, dc)]
    for name in sorted(computers, key=lambda name: -counts[name]):
        if len(computers) > 1 and "DC" in name.upper() and dc not in mapping.values():
            mapping[name] = dc
        elif victim not in mapping.values():
            mapping[name] = victim
        elif spare:
            mapping[name] = spare.pop(0)
        else:
            mapping[name] = dc
    pairs: list[tuple[str, str]] = []
    for name, host in mapping.items():
        for domain in {*(lab for lab, _ in LAB_DOMAINS[:4]), *domains}:
            pairs.append((f"{name}.{domain}", host.fqdn))
        pairs.append((name, host.name))
    pairs += [(lab, user.name) for lab in sorted(set(LAB_USERS) | _people(events))]
    pairs += list(LAB_DOMAINS)
    pairs += [(domain, DOMAIN) for domain in domains]
    pairs += [(netbios, NETBIOS) for netbios in _netbios(events)]
    pattern, table = _renamer(pairs)
    out: list[tuple[int, dict[str, Any]]] = []
    offset = 0
    previous = times[order[0]] if order else 0
    for index in order:
        offset += min(max(times[index] - previous, 0), max_gap_ms)
        previous = times[index]
        at = start_ms + offset
        event = {key: _rename(value, pattern, table) for key, value in events[index].items()}
        delta = at - times[index]
        event["TimeCreated_SystemTime"] = iso(at)
        if "UtcTime" in event:
            event["UtcTime"] = sysmon_time(at)
        for name in SHIFTED:
            moment = parse_time_ms(event.get(name)) if isinstance(event.get(name), str) else None
            if moment is not None:
                event[name] = sysmon_time(moment + delta)
        out.append((at, event))
    return out
