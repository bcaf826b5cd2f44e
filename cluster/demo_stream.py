"""A realistic Windows event stream for the demo: benign background with attacks mixed in.

Benign events are synthesized (Sysmon process, network, file and registry events and Security
logons across a few hosts and users); attacks are real OTRF recordings, re-timed into the
stream's timeline and moved onto a demo host. Pure and deterministic for a seed: event time
advances with the stream, never with the wall clock.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cluster.files import read_events

HOSTS = ["WKS-0142", "WKS-0178", "WKS-0203", "FIN-LAPTOP-07", "SRV-FILE-01"]
USERS = ["CORP\\alice", "CORP\\bob", "CORP\\carol", "CORP\\svc_backup", "NT AUTHORITY\\SYSTEM"]
SYSMON = "Microsoft-Windows-Sysmon/Operational"
BENIGN_PROCESSES = [
    ("C:\\Windows\\explorer.exe", "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
     '"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe" --profile-directory=Default'),
    ("C:\\Windows\\explorer.exe", "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE",
     '"C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE"'),
    ("C:\\Windows\\System32\\services.exe", "C:\\Windows\\System32\\svchost.exe",
     "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule"),
    ("C:\\Windows\\explorer.exe", "C:\\Windows\\System32\\notepad.exe", '"C:\\Windows\\system32\\notepad.exe" C:\\Users\\alice\\todo.txt'),
    ("C:\\Windows\\System32\\svchost.exe", "C:\\Windows\\System32\\taskhostw.exe", "taskhostw.exe SYSTEM"),
    ("C:\\Program Files\\Microsoft VS Code\\Code.exe", "C:\\Program Files\\Git\\cmd\\git.exe", "git fetch --all"),
]
# OTRF recordings that the project's rules detect (see tests/test_shipped_rules.py).
ATTACK_DATASETS = [
    "credential_access/cmd_lsass_memory_dumpert_syscalls.jsonl",
    "credential_access/psh_lsass_memory_dump_comsvcs.jsonl",
    "credential_access/empire_shell_reg_dump_sam.jsonl",
    "credential_access/covenant_dcsync_dcerpc_drsuapi_DsGetNCChanges.jsonl",
    "execution/empire_launcher_vbs.jsonl",
    "lateral_movement/covenant_sharpwmi_create_dcerpc_wmi.jsonl",
]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def benign_event(rng: random.Random, moment: datetime) -> dict[str, Any]:
    host = rng.choice(HOSTS)
    user = rng.choice(USERS)
    kind = rng.random()
    base = {"Computer": host, "TimeCreated_SystemTime": _iso(moment), "Level": "4"}
    if kind < 0.45:
        parent, image, command = rng.choice(BENIGN_PROCESSES)
        return {**base, "Channel": SYSMON, "EventID": 1, "Provider_Name": "Microsoft-Windows-Sysmon",
                "UtcTime": _iso(moment), "Image": image, "CommandLine": command, "ParentImage": parent,
                "User": user, "ProcessId": str(rng.randint(1000, 30000)), "IntegrityLevel": "Medium"}
    if kind < 0.65:
        return {**base, "Channel": SYSMON, "EventID": 3, "Provider_Name": "Microsoft-Windows-Sysmon",
                "UtcTime": _iso(moment), "Image": "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
                "User": user, "Protocol": "tcp", "DestinationIp": f"142.250.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                "DestinationPort": "443", "SourceIp": f"10.0.{rng.randint(0, 3)}.{rng.randint(10, 200)}"}
    if kind < 0.8:
        return {**base, "Channel": SYSMON, "EventID": 11, "Provider_Name": "Microsoft-Windows-Sysmon",
                "UtcTime": _iso(moment), "Image": "C:\\Windows\\explorer.exe", "User": user,
                "TargetFilename": f"C:\\Users\\{user.split(chr(92))[-1]}\\Downloads\\report-{rng.randint(1, 999)}.pdf"}
    if kind < 0.9:
        return {**base, "Channel": SYSMON, "EventID": 13, "Provider_Name": "Microsoft-Windows-Sysmon",
                "UtcTime": _iso(moment), "EventType": "SetValue", "Image": "C:\\Windows\\System32\\svchost.exe",
                "TargetObject": "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\LastOnlineScanTimeForAppCategory",
                "Details": "DWORD (0x00000001)"}
    return {**base, "Channel": "Security", "EventID": 4624, "Provider_Name": "Microsoft-Windows-Security-Auditing",
            "TargetUserName": user.split("\\")[-1], "TargetDomainName": "CORP", "LogonType": str(rng.choice([2, 3, 10])),
            "IpAddress": f"10.0.{rng.randint(0, 3)}.{rng.randint(10, 200)}", "AuthenticationPackageName": "Kerberos"}


def attack_sequences(otrf_root: Path | None) -> list[list[dict[str, Any]]]:
    """The attack recordings that exist under `otrf_root` (jsonl/<tactic>/<name>.jsonl)."""
    if otrf_root is None:
        return []
    sequences = []
    for name in ATTACK_DATASETS:
        path = otrf_root / "jsonl" / name
        if path.is_file():
            sequences.append([r.event for r in read_events(path) if r.event is not None])
    return sequences


def generate(
    count: int,
    seed: int = 0,
    attack_share: float = 0.02,
    otrf_root: Path | None = None,
    start: datetime = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc),
) -> Iterator[dict[str, Any]]:
    """`count` events with unique `sigmaray_event_id`s and increasing event time."""
    rng = random.Random(seed)
    attacks = attack_sequences(otrf_root)
    pending: list[dict[str, Any]] = []
    moment = start
    attack_number = 0
    for number in range(count):
        moment += timedelta(milliseconds=rng.randint(1, 40))
        if not pending and attacks and rng.random() < attack_share / 50:
            # A whole recording at once: the attack's events stay in order, on one victim host.
            sequence = attacks[attack_number % len(attacks)]
            attack_number += 1
            victim = rng.choice(HOSTS)
            pending = [dict(e, Computer=victim) for e in sequence]
        if pending:
            event = pending.pop(0)
            for key in ("TimeCreated_SystemTime", "UtcTime"):
                if key in event:
                    event[key] = _iso(moment)
            event.setdefault("TimeCreated_SystemTime", _iso(moment))
        else:
            event = benign_event(rng, moment)
        event["sigmaray_event_id"] = f"demo-{seed}-{number}"
        yield event
