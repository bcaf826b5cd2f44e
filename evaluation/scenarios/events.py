"""Windows events in the flattened shape of ../shared/README.md, built for simulated hosts.

`EventFactory` keeps what must stay consistent per host (record ids, process ids and GUIDs) and
is seeded; it never reads a clock: every builder takes the event time in ms.

>>> import random
>>> from evaluation.scenarios.enterprise import Host
>>> factory = EventFactory(random.Random(0))
>>> host = Host("WS-FIN-001", "workstation", "10.20.1.10", "FIN", "medium", "anna.kim")
>>> event = factory.process(0, host, "CORP\\\\anna.kim", "C:\\\\Windows\\\\System32\\\\whoami.exe", "whoami /all")
>>> event["Channel"], event["EventID"], event["TimeCreated_SystemTime"], event["OriginalFileName"]
('Microsoft-Windows-Sysmon/Operational', 1, '1970-01-01T00:00:00.000Z', 'whoami.exe')
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime
from typing import Any

from evaluation.scenarios.enterprise import DOMAIN_SID, NETBIOS, Host

SYSMON = "Microsoft-Windows-Sysmon/Operational"
SYSMON_GUID = "{5770385f-c22a-43e0-bf4c-06f5698ffbd9}"
SECURITY_GUID = "{54849625-5478-4994-a5ba-3e3b0328c30d}"
POWERSHELL = "Microsoft-Windows-PowerShell/Operational"


def iso(ms: int) -> str:
    """Event time as Windows renders TimeCreated_SystemTime (ms, Z)."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def sysmon_time(ms: int) -> str:
    """Event time as Sysmon renders UtcTime."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


def _hashes(path: str) -> str:
    # The same binary has the same hashes everywhere: derived from the path, not the seed.
    raw = path.lower().encode()
    return (f"SHA1={hashlib.sha1(raw).hexdigest().upper()},MD5={hashlib.md5(raw).hexdigest().upper()},"
            f"SHA256={hashlib.sha256(raw).hexdigest().upper()}")


def _basename(path: str) -> str:
    return path.rsplit("\\", 1)[-1]


class EventFactory:
    """Builders for the event kinds the scenarios use; consistent ids per host, seeded."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.records: dict[tuple[str, str], int] = {}

    def _record(self, host: Host, channel: str) -> int:
        key = (host.name, channel)
        value = self.records.get(key) or self.rng.randrange(100_000, 900_000)
        self.records[key] = value + 1
        return value

    def guid(self) -> str:
        bits = self.rng.getrandbits(128)
        text = f"{bits:032x}"
        return f"{{{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}}}"

    def pid(self) -> int:
        return self.rng.randrange(300, 16000) * 4

    def _base(self, ms: int, host: Host, channel: str, event_id: int) -> dict[str, Any]:
        event: dict[str, Any] = {"EventID": event_id, "Channel": channel, "Computer": host.fqdn,
                                 "TimeCreated_SystemTime": iso(ms), "EventRecordID": self._record(host, channel),
                                 "Level": "4", "Task": event_id if channel == SYSMON else 0}
        if channel == SYSMON:
            event.update({"Provider_Name": "Microsoft-Windows-Sysmon", "Provider_Guid": SYSMON_GUID,
                          "UtcTime": sysmon_time(ms), "RuleName": "-"})
        elif channel == "Security":
            event.update({"Provider_Name": "Microsoft-Windows-Security-Auditing", "Provider_Guid": SECURITY_GUID,
                          "Level": "0", "Keywords": "0x8020000000000000"})
        elif channel == POWERSHELL:
            event["Provider_Name"] = "Microsoft-Windows-PowerShell"
        elif channel == "System":
            event["Provider_Name"] = "Service Control Manager"
        return event

    def process(self, ms: int, host: Host, user: str, image: str, command_line: str, *,
                parent_image: str = "C:\\Windows\\explorer.exe", parent_command_line: str = "C:\\Windows\\Explorer.EXE",
                integrity: str = "Medium", original: str | None = None, cwd: str = "C:\\Windows\\system32\\",
                description: str = "", company: str = "Microsoft Corporation", twin: bool = False) -> dict[str, Any]:
        """Sysmon 1 (process creation); with `twin`, the caller also emits `security_process`."""
        event = self._base(ms, host, SYSMON, 1)
        event.update({
            "ProcessGuid": self.guid(), "ProcessId": str(self.pid()), "Image": image,
            "OriginalFileName": original or _basename(image), "Description": description or _basename(image),
            "Company": company, "Product": "-", "FileVersion": "-", "CommandLine": command_line,
            "CurrentDirectory": cwd, "User": user, "LogonGuid": self.guid(),
            "LogonId": f"0x{self.rng.randrange(0x20000, 0x3000000):x}",
            "TerminalSessionId": "1" if integrity != "System" else "0", "IntegrityLevel": integrity,
            "Hashes": _hashes(image), "ParentProcessGuid": self.guid(), "ParentProcessId": str(self.pid()),
            "ParentImage": parent_image, "ParentCommandLine": parent_command_line, "ParentUser": user})
        return event

    def security_process(self, sysmon: dict[str, Any], host: Host) -> dict[str, Any]:
        """The Security 4688 twin of a Sysmon 1 event."""
        ms = _ms(sysmon["TimeCreated_SystemTime"])
        event = self._base(ms, host, "Security", 4688)
        domain, _, name = str(sysmon["User"]).rpartition("\\")
        event.update({"SubjectUserName": name, "SubjectDomainName": domain or NETBIOS,
                      "SubjectUserSid": "S-1-5-18" if name == "SYSTEM" else f"{DOMAIN_SID}-{1000 + len(name)}",
                      "NewProcessName": sysmon["Image"], "NewProcessId": hex(int(sysmon["ProcessId"])),
                      "CommandLine": sysmon["CommandLine"], "ParentProcessName": sysmon["ParentImage"],
                      "TokenElevationType": "%%1937" if sysmon["IntegrityLevel"] != "Medium" else "%%1938",
                      "MandatoryLabel": "S-1-16-12288" if sysmon["IntegrityLevel"] != "Medium" else "S-1-16-8192"})
        return event

    def network(self, ms: int, host: Host, user: str, image: str, destination: str, port: int,
                hostname: str = "-") -> dict[str, Any]:
        event = self._base(ms, host, SYSMON, 3)
        event.update({"ProcessGuid": self.guid(), "ProcessId": str(self.pid()), "Image": image, "User": user,
                      "Protocol": "tcp", "Initiated": "true", "SourceIsIpv6": "false", "SourceIp": host.ip,
                      "SourceHostname": host.fqdn, "SourcePort": str(self.rng.randrange(49152, 65535)),
                      "DestinationIsIpv6": "false", "DestinationIp": destination, "DestinationHostname": hostname,
                      "DestinationPort": str(port)})
        return event

    def file(self, ms: int, host: Host, user: str, image: str, target: str) -> dict[str, Any]:
        event = self._base(ms, host, SYSMON, 11)
        event.update({"ProcessGuid": self.guid(), "ProcessId": str(self.pid()), "Image": image, "User": user,
                      "TargetFilename": target, "CreationUtcTime": sysmon_time(ms)})
        return event

    def registry(self, ms: int, host: Host, user: str, image: str, target: str, details: str) -> dict[str, Any]:
        event = self._base(ms, host, SYSMON, 13)
        event.update({"EventType": "SetValue", "ProcessGuid": self.guid(), "ProcessId": str(self.pid()),
                      "Image": image, "User": user, "TargetObject": target, "Details": details})
        return event

    def image_load(self, ms: int, host: Host, user: str, image: str, loaded: str) -> dict[str, Any]:
        event = self._base(ms, host, SYSMON, 7)
        event.update({"ProcessGuid": self.guid(), "ProcessId": str(self.pid()), "Image": image, "User": user,
                      "ImageLoaded": loaded, "Signed": "true", "Signature": "Microsoft Windows",
                      "SignatureStatus": "Valid", "Hashes": _hashes(loaded)})
        return event

    def logon(self, ms: int, host: Host, user: str, logon_type: int, source_ip: str = "-",
              source_host: str = "-", package: str = "Kerberos") -> dict[str, Any]:
        event = self._base(ms, host, "Security", 4624)
        event.update({"SubjectUserSid": "S-1-5-18", "SubjectUserName": f"{host.name}$", "SubjectDomainName": NETBIOS,
                      "TargetUserSid": f"{DOMAIN_SID}-{1000 + len(user)}", "TargetUserName": user,
                      "TargetDomainName": NETBIOS, "TargetLogonId": f"0x{self.rng.randrange(0x20000, 0x3000000):x}",
                      "LogonType": str(logon_type), "LogonProcessName": "Kerberos" if package == "Kerberos" else "NtLmSsp ",
                      "AuthenticationPackageName": package, "WorkstationName": source_host, "IpAddress": source_ip,
                      "IpPort": "0" if source_ip == "-" else str(self.rng.randrange(49152, 65535)),
                      "ElevatedToken": "%%1842", "ImpersonationLevel": "%%1833"})
        return event

    def service_install(self, ms: int, host: Host, name: str, path: str, account: str = "LocalSystem") -> dict[str, Any]:
        event = self._base(ms, host, "System", 7045)
        event.update({"ServiceName": name, "ImagePath": path, "ServiceType": "user mode service",
                      "StartType": "demand start", "AccountName": account})
        return event

    def script_block(self, ms: int, host: Host, text: str) -> dict[str, Any]:
        event = self._base(ms, host, POWERSHELL, 4104)
        event.update({"MessageNumber": "1", "MessageTotal": "1", "ScriptBlockText": text,
                      "ScriptBlockId": self.guid()[1:-1], "Path": ""})
        return event


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
