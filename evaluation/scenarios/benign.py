"""Benign activity of the simulated enterprise: everyday work, and the benign work that makes
SigmaHQ rules noisy (the noise the correlator has to learn to discount).

Each `Activity` builds the events of one occurrence (a list of events, each with its time) on a
host; `ACTIVITIES` says where it happens and how often. The noisy ones follow what SigmaHQ's own
`falsepositives` fields and known-FPs.csv list: administrators using PsExec, WMI and PowerShell
remoting, installers and updaters (msiexec, Squirrel's Update.exe), scheduled tasks, backup and
management agents (VSS, SCCM running PowerShell with -ExecutionPolicy Bypass), developers' tools
(curl, pip, python opening connections) and security tools (Sysmon config updates, scanners).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evaluation.scenarios.enterprise import NETBIOS, Enterprise, Host, Person
from evaluation.scenarios.events import EventFactory

MINUTE = 60_000
SYSTEM = "NT AUTHORITY\\SYSTEM"
PS = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
CMD = "C:\\Windows\\System32\\cmd.exe"
SVCHOST = "C:\\Windows\\System32\\svchost.exe"
SERVICES = "C:\\Windows\\System32\\services.exe"
EXPLORER = "C:\\Windows\\explorer.exe"
WEB = ["142.250.185.78", "52.97.146.194", "13.107.42.14", "151.101.1.69", "140.82.121.4", "104.16.123.96"]


@dataclass(slots=True)
class Context:
    """Where and by whom an activity runs."""

    factory: EventFactory
    rng: random.Random
    corp: Enterprise
    host: Host
    person: Person | None  # the acting user (None: the system)

    @property
    def user(self) -> str:
        return self.person.qualified if self.person else SYSTEM

    @property
    def home(self) -> str:
        name = self.person.name if self.person else "Default"
        return f"C:\\Users\\{name}"

    def other(self, role: str) -> Host:
        hosts = [host for host in self.corp.hosts if host.role == role and host != self.host] or \
            [host for host in self.corp.hosts if host != self.host]
        return self.rng.choice(hosts)


Events = list[tuple[int, dict[str, Any]]]
Builder = Callable[[Context, int], Events]


@dataclass(frozen=True, slots=True)
class Activity:
    name: str
    where: str  # workstation | developer | server | dc | admin (on an admin's workstation) | any
    per_day: float  # expected occurrences per host (per admin for "admin") per day
    noisy: bool  # benign, but SigmaHQ rules fire on it
    build: Builder
    hours: tuple[int, int] = (8, 18)  # UTC hours it happens in (office hours by default)


def _proc(ctx: Context, ms: int, image: str, command_line: str, twin: bool = False, **options: Any) -> Events:
    event = ctx.factory.process(ms, ctx.host, ctx.user, image, command_line, **options)
    out: Events = [(ms, event)]
    if twin:
        out.append((ms + 1, ctx.factory.security_process(event, ctx.host)))
    return out


# ---------------------------------------------------------------- everyday work (the models' baseline)


def browse(ctx: Context, ms: int) -> Events:
    image = ctx.rng.choice(["C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
                            "C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe"])
    out = _proc(ctx, ms, image, f'"{image}" --type=renderer --lang=en-US')
    for step in range(ctx.rng.randint(2, 5)):
        out.append((ms + 500 + step * 2000, ctx.factory.network(ms + 500 + step * 2000, ctx.host, ctx.user, image,
                                                                 ctx.rng.choice(WEB), 443)))
    return out


def office(ctx: Context, ms: int) -> Events:
    app, image = ctx.rng.choice([("WINWORD", "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE"),
                                 ("EXCEL", "C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE"),
                                 ("OUTLOOK", "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE")])
    document = ctx.rng.choice(["Q3 forecast.xlsx", "budget.xlsx", "minutes.docx", "contract.docx", "plan.docx"])
    out = _proc(ctx, ms, image, f'"{image}" /n "{ctx.home}\\Documents\\{document}"')
    out.append((ms + 3000, ctx.factory.file(ms + 3000, ctx.host, ctx.user, image, f"{ctx.home}\\Documents\\~${document}")))
    return out


def logon(ctx: Context, ms: int) -> Events:
    server = ctx.other("server")
    dc = ctx.other("dc")
    user = ctx.person.name if ctx.person else f"{ctx.host.name}$"
    return [(ms, ctx.factory.logon(ms, ctx.host, user, 2 if ctx.rng.random() < 0.3 else 11)),
            (ms + 400, ctx.factory.logon(ms + 400, dc, user, 3, ctx.host.ip, ctx.host.name)),
            (ms + 900, ctx.factory.logon(ms + 900, server, user, 3, ctx.host.ip, ctx.host.name))]


def service_work(ctx: Context, ms: int) -> Events:
    image, command = ctx.rng.choice([
        (SVCHOST, "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule"),
        ("C:\\Windows\\System32\\taskhostw.exe", "taskhostw.exe"),
        ("C:\\Windows\\System32\\SearchProtocolHost.exe", "SearchProtocolHost.exe Global\\UsGthrFltPipeMssGthrPipe1"),
        ("C:\\Windows\\System32\\wbem\\WmiPrvSE.exe", "C:\\Windows\\system32\\wbem\\wmiprvse.exe -Embedding")])
    ctx = Context(ctx.factory, ctx.rng, ctx.corp, ctx.host, None)
    return _proc(ctx, ms, image, command, parent_image=SERVICES, parent_command_line=SERVICES, integrity="System")


def server_logons(ctx: Context, ms: int) -> Events:
    out: Events = []
    for step in range(ctx.rng.randint(2, 6)):
        client = ctx.other("workstation")
        out.append((ms + step * 700, ctx.factory.logon(ms + step * 700, ctx.host, client.owner or "svc-sql", 3,
                                                      client.ip, client.name)))
    return out


# ---------------------------------------------------------------- noisy: administrators


def _admin(ctx: Context) -> Context:
    admins = [person for person in ctx.corp.admins if ctx.corp.admin_of.get(person.name) == (ctx.host.owner or "")]
    return Context(ctx.factory, ctx.rng, ctx.corp, ctx.host, admins[0] if admins else ctx.corp.admins[0])


def psexec(ctx: Context, ms: int) -> Events:
    ctx = _admin(ctx)
    target = ctx.other(ctx.rng.choice(["server", "server", "workstation"]))
    chore = ctx.rng.choice(["ipconfig /flushdns", "gpupdate /force", "net stop spooler", "shutdown /r /t 60"])
    tool = "C:\\Tools\\SysinternalsSuite\\PsExec64.exe"
    out = _proc(ctx, ms, tool, f'{tool} \\\\{target.name} -accepteula -s cmd /c "{chore}"', integrity="High",
                original="psexec.c", description="Execute processes remotely", company="Sysinternals - www.sysinternals.com")
    remote = Context(ctx.factory, ctx.rng, ctx.corp, target, None)
    out.append((ms + 300, ctx.factory.logon(ms + 300, target, ctx.person.name if ctx.person else "", 3, ctx.host.ip,
                                           ctx.host.name, "NTLM")))
    out.append((ms + 600, ctx.factory.file(ms + 600, target, SYSTEM, "System", "C:\\Windows\\PSEXESVC.exe")))
    out.append((ms + 800, ctx.factory.service_install(ms + 800, target, "PSEXESVC", "%SystemRoot%\\PSEXESVC.exe")))
    out += _proc(remote, ms + 1000, "C:\\Windows\\PSEXESVC.exe", "C:\\Windows\\PSEXESVC.exe", parent_image=SERVICES,
                 parent_command_line=SERVICES, integrity="System", original="psexesvc.exe")
    out += _proc(remote, ms + 1300, CMD, f'cmd /c "{chore}"', parent_image="C:\\Windows\\PSEXESVC.exe",
                 parent_command_line="C:\\Windows\\PSEXESVC.exe", integrity="System")
    return out


def wmi_remote(ctx: Context, ms: int) -> Events:
    ctx = _admin(ctx)
    target = ctx.other("server")
    chore = ctx.rng.choice(["gpupdate /force", "ipconfig /registerdns", "net stop w32time && net start w32time"])
    out = _proc(ctx, ms, "C:\\Windows\\System32\\wbem\\WMIC.exe",
                f'wmic /node:"{target.name}" process call create "cmd.exe /c {chore}"', integrity="High",
                original="wmic.exe", twin=True)
    remote = Context(ctx.factory, ctx.rng, ctx.corp, target, ctx.person)
    out += _proc(remote, ms + 700, CMD, f"cmd.exe /c {chore}", parent_image="C:\\Windows\\System32\\wbem\\WmiPrvSE.exe",
                 parent_command_line="C:\\Windows\\system32\\wbem\\wmiprvse.exe -secured -Embedding", integrity="High")
    return out


def ps_remoting(ctx: Context, ms: int) -> Events:
    ctx = _admin(ctx)
    target = ctx.other(ctx.rng.choice(["server", "dc"]))
    command = ctx.rng.choice(["Get-Service -Name Spooler | Restart-Service", "Get-EventLog -LogName System -Newest 20",
                              "Get-ADUser -Filter * -Properties LastLogonDate", "Get-HotFix | Sort-Object InstalledOn"])
    out = _proc(ctx, ms, PS, f'powershell.exe -Command "Invoke-Command -ComputerName {target.name} -ScriptBlock {{ {command} }}"',
                integrity="High", original="PowerShell.EXE")
    remote = Context(ctx.factory, ctx.rng, ctx.corp, target, ctx.person)
    out.append((ms + 400, ctx.factory.logon(ms + 400, target, ctx.person.name if ctx.person else "", 3, ctx.host.ip,
                                           ctx.host.name)))
    out += _proc(remote, ms + 800, "C:\\Windows\\System32\\wsmprovhost.exe", "C:\\Windows\\system32\\wsmprovhost.exe -Embedding",
                 parent_image=SVCHOST, parent_command_line="C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p",
                 integrity="High", original="wsmprovhost.exe")
    out.append((ms + 1200, ctx.factory.script_block(ms + 1200, target, command)))
    return out


def admin_discovery(ctx: Context, ms: int) -> Events:
    ctx = _admin(ctx)
    out: Events = []
    commands = [("C:\\Windows\\System32\\whoami.exe", "whoami /all"),
                ("C:\\Windows\\System32\\net.exe", 'net group "Domain Admins" /domain'),
                ("C:\\Windows\\System32\\nltest.exe", f"nltest /dclist:{NETBIOS.lower()}.example"),
                ("C:\\Windows\\System32\\net.exe", "net user svc-backup /domain"),
                ("C:\\Windows\\System32\\quser.exe", f"quser /server:{ctx.other('server').name}"),
                ("C:\\Windows\\System32\\net.exe", "net localgroup administrators")]
    for step, (image, command) in enumerate(ctx.rng.sample(commands, ctx.rng.randint(1, 3))):
        out += _proc(ctx, ms + step * 20_000, image, command, parent_image=CMD,
                     parent_command_line="C:\\Windows\\system32\\cmd.exe",
                     integrity="High", twin=True)
    return out


def admin_tasks(ctx: Context, ms: int) -> Events:
    ctx = _admin(ctx)
    target = ctx.other("server")
    remote = Context(ctx.factory, ctx.rng, ctx.corp, target, ctx.person)
    choice = ctx.rng.randrange(4)
    if choice == 0:
        name = ctx.rng.choice(["Maintenance\\Cleanup", "Reports\\Nightly", "IT\\LogRotate"])
        return _proc(remote, ms, "C:\\Windows\\System32\\schtasks.exe",
                     f'schtasks /create /tn "{name}" '
                     f'/tr "C:\\Scripts\\{name.split(chr(92))[-1].lower()}.cmd" /sc daily /st 02:00 /ru SYSTEM /f',
                     parent_image=CMD, integrity="High", twin=True)
    if choice == 1:
        return _proc(remote, ms, "C:\\Windows\\System32\\netsh.exe",
                     'netsh advfirewall firewall add rule name="Allow SQL 1433" dir=in action=allow protocol=TCP localport=1433',
                     parent_image=CMD, integrity="High")
    if choice == 2:
        return _proc(remote, ms, "C:\\Windows\\System32\\sc.exe", "sc.exe config Spooler start= disabled",
                     parent_image=CMD, integrity="High")
    return _proc(remote, ms, "C:\\Windows\\System32\\reg.exe",
                 'reg add "HKLM\\SOFTWARE\\Policies\\Microsoft\\Windows\\WindowsUpdate\\AU" /v NoAutoUpdate /t REG_DWORD /d 1 /f',
                 parent_image=CMD, integrity="High")


# ---------------------------------------------------------------- noisy: installers, updaters, tasks


def squirrel_update(ctx: Context, ms: int) -> Events:
    image = f"{ctx.home}\\AppData\\Local\\Microsoft\\Teams\\Update.exe"
    return _proc(ctx, ms, image, f'"{image}" --processStart "Teams.exe" --process-start-args "--profile=AAD"',
                 original="Update.exe", company="GitHub")


def msi_install(ctx: Context, ms: int) -> Events:
    package = ctx.rng.choice(["7z2408-x64.msi", "GoogleChromeStandaloneEnterprise64.msi", "npp.8.7.Installer.x64.msi",
                              "zoom_x64.msi", "AcroRdrDCx642400320112_MUI.msi"])
    out = _proc(ctx, ms, "C:\\Windows\\System32\\msiexec.exe",
                f'"C:\\Windows\\System32\\msiexec.exe" /i "{ctx.home}\\Downloads\\{package}" /qn',
                integrity="High", original="msiexec.exe")
    system = Context(ctx.factory, ctx.rng, ctx.corp, ctx.host, None)
    out.append((ms + 2000, ctx.factory.network(ms + 2000, ctx.host, SYSTEM, "C:\\Windows\\System32\\msiexec.exe",
                                               ctx.rng.choice(WEB), 443)))
    out += _proc(system, ms + 4000, "C:\\Windows\\System32\\msiexec.exe", "C:\\Windows\\system32\\msiexec.exe /V",
                 parent_image=SERVICES, integrity="System")
    if ctx.rng.random() < 0.5:
        out.append((ms + 6000, ctx.factory.registry(ms + 6000, ctx.host, SYSTEM, "C:\\Windows\\System32\\msiexec.exe",
                                                    "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\\"
                                                    + package.split(".")[0],
                                                    f"C:\\Program Files\\{package.split('.')[0]}\\updater.exe /silent")))
    return out


def temp_installer(ctx: Context, ms: int) -> Events:
    name = ctx.rng.choice(["TeamViewer_Setup_x64.exe", "ZoomInstallerFull.exe", "SpotifySetup.exe", "DropboxInstaller.exe"])
    setup = f"{ctx.home}\\AppData\\Local\\Temp\\is-{ctx.rng.randrange(10**5):05d}.tmp\\{name.replace('.exe', '.tmp')}"
    out = _proc(ctx, ms, setup, f'"{setup}" /SL5="$40B2C,1234567,832512,{ctx.home}\\Downloads\\{name}" /VERYSILENT',
                parent_image=f"{ctx.home}\\Downloads\\{name}")
    out += _proc(ctx, ms + 3000, "C:\\Windows\\System32\\schtasks.exe",
                 f'schtasks.exe /Create /TN "{name.split("_")[0].split(".")[0]}Update" '
                 f'/TR "{ctx.home}\\AppData\\Local\\Temp\\updater.exe" /SC DAILY /F',
                 parent_image=setup, parent_command_line=f'"{setup}"')
    return out


def scheduled_maintenance(ctx: Context, ms: int) -> Events:
    system = Context(ctx.factory, ctx.rng, ctx.corp, ctx.host, None)
    choice = ctx.rng.randrange(3)
    if choice == 0:
        return _proc(system, ms, CMD, 'C:\\Windows\\system32\\cmd.exe /c "C:\\ProgramData\\Vendor\\Scripts\\inventory.cmd"',
                     parent_image=SVCHOST, parent_command_line="C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule",
                     integrity="System")
    if choice == 1:
        return _proc(system, ms, "C:\\Program Files (x86)\\Google\\Update\\GoogleUpdate.exe",
                     '"C:\\Program Files (x86)\\Google\\Update\\GoogleUpdate.exe" /ua /installsource scheduler',
                     parent_image=SVCHOST, integrity="System")
    return _proc(system, ms, "C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.25100.9-0\\MpCmdRun.exe",
                 '"C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.25100.9-0\\MpCmdRun.exe" -SignatureUpdate -MMPC',
                 parent_image=SVCHOST, integrity="System")


# ---------------------------------------------------------------- noisy: agents on servers


def backup_agent(ctx: Context, ms: int) -> Events:
    agent = Context(ctx.factory, ctx.rng, ctx.corp, ctx.host, ctx.corp.person("svc-backup"))
    parent = "C:\\Program Files\\Veeam\\Endpoint Backup\\Veeam.EndPoint.Service.exe"
    out = _proc(agent, ms, "C:\\Windows\\System32\\vssadmin.exe", "vssadmin.exe create shadow /for=C:",
                parent_image=parent, parent_command_line=f'"{parent}"', integrity="High", twin=True)
    out += _proc(agent, ms + 60_000, "C:\\Windows\\System32\\vssadmin.exe", "vssadmin.exe list shadows",
                 parent_image=parent, parent_command_line=f'"{parent}"', integrity="High")
    out += _proc(agent, ms + 120_000, "C:\\Windows\\System32\\wbadmin.exe",
                 "wbadmin start backup -backupTarget:\\\\SRV-BKP-01\\backups -include:C: -allCritical -quiet",
                 parent_image=parent, parent_command_line=f'"{parent}"', integrity="High")
    return out


def sccm_agent(ctx: Context, ms: int) -> Events:
    system = Context(ctx.factory, ctx.rng, ctx.corp, ctx.host, None)
    ccm = "C:\\Windows\\CCM\\CcmExec.exe"
    script = f"C:\\Windows\\CCM\\SystemTemp\\{ctx.factory.guid()[1:-1]}.ps1"
    out = _proc(system, ms, PS, f'"{PS}" -NoLogo -NonInteractive -NoProfile -ExecutionPolicy Bypass -File "{script}"',
                parent_image=ccm, parent_command_line=f'"{ccm}"', integrity="System", original="PowerShell.EXE")
    out.append((ms + 500, ctx.factory.file(ms + 500, ctx.host, SYSTEM, ccm, script)))
    return out


def monitoring_agent(ctx: Context, ms: int) -> Events:
    system = Context(ctx.factory, ctx.rng, ctx.corp, ctx.host, None)
    agent = "C:\\Program Files\\Zabbix Agent 2\\zabbix_agent2.exe"
    image, command = ctx.rng.choice([("C:\\Windows\\System32\\NETSTAT.EXE", "netstat -ano"),
                                     ("C:\\Windows\\System32\\tasklist.exe", "tasklist /v /fo csv"),
                                     ("C:\\Windows\\System32\\systeminfo.exe", "systeminfo /fo csv"),
                                     ("C:\\Windows\\System32\\ipconfig.exe", "ipconfig /all")])
    return _proc(system, ms, CMD, f'cmd /C "{command}"', parent_image=agent, parent_command_line=f'"{agent}" -c zabbix.conf',
                 integrity="System") + _proc(system, ms + 50, image, command, parent_image=CMD,
                                             parent_command_line=f'cmd /C "{command}"', integrity="System")


def vuln_scanner(ctx: Context, ms: int) -> Events:
    scanner = ctx.corp.person("svc-scan")
    out: Events = []
    for step, target in enumerate(ctx.rng.sample(ctx.corp.hosts, min(8, len(ctx.corp.hosts)))):
        at = ms + step * 1500
        out.append((at, ctx.factory.logon(at, target, scanner.name, 3, ctx.host.ip, ctx.host.name, "NTLM")))
    agent = Context(ctx.factory, ctx.rng, ctx.corp, ctx.host, scanner)
    out += _proc(agent, ms + 100, "C:\\Program Files (x86)\\Nmap\\nmap.exe", "nmap.exe -sS -sV -T3 -p 1-1024 10.20.0.0/24",
                 parent_image="C:\\Program Files\\Tenable\\Nessus\\nessusd.exe", integrity="High")
    return out


def sysmon_update(ctx: Context, ms: int) -> Events:
    system = Context(ctx.factory, ctx.rng, ctx.corp, ctx.host, None)
    return _proc(system, ms, "C:\\Windows\\Sysmon64.exe",
                 "C:\\Windows\\Sysmon64.exe -c C:\\ProgramData\\sysmon\\sysmonconfig.xml",
                 parent_image=CMD, integrity="System", original="Sysmon.exe")


# ---------------------------------------------------------------- noisy: developers


def dev_tools(ctx: Context, ms: int) -> Events:
    choice = ctx.rng.randrange(5)
    if choice == 0:
        curl = "C:\\Windows\\System32\\curl.exe"
        return _proc(ctx, ms, curl, f"curl.exe -L -o {ctx.home}\\Downloads\\release.zip "
                     "https://github.com/org/tool/releases/download/v1.2/tool.zip",
                     parent_image=PS)
    if choice == 1:
        python = f"{ctx.home}\\AppData\\Local\\Programs\\Python\\Python311\\python.exe"
        return _proc(ctx, ms, python, f'"{python}" -m pip install --upgrade requests', parent_image=PS) + \
            [(ms + 800, ctx.factory.network(ms + 800, ctx.host, ctx.user, python, "151.101.64.223", 443))]
    if choice == 2:
        code = f"{ctx.home}\\AppData\\Local\\Programs\\Microsoft VS Code\\Code.exe"
        return _proc(ctx, ms, PS, f'"{PS}" -NoProfile -ExecutionPolicy Bypass -Command "& {{ dotnet build }}"',
                     parent_image=code, parent_command_line=f'"{code}"')
    if choice == 3:
        git = "C:\\Program Files\\Git\\cmd\\git.exe"
        return _proc(ctx, ms, git, "git.exe clone https://github.com/org/service.git", parent_image=PS)
    certutil = "C:\\Windows\\System32\\certutil.exe"
    return _proc(ctx, ms, certutil, f"certutil -hashfile {ctx.home}\\Downloads\\release.zip SHA256", parent_image=PS)


ACTIVITIES: tuple[Activity, ...] = (
    Activity("browse", "workstation", 40, False, browse),
    Activity("office", "workstation", 10, False, office),
    Activity("logon", "workstation", 3, False, logon),
    Activity("service-work", "any", 16, False, service_work, (0, 24)),
    Activity("server-logons", "server", 12, False, server_logons),
    Activity("server-logons", "dc", 30, False, server_logons, (0, 24)),
    Activity("psexec", "admin", 1.5, True, psexec),
    Activity("wmi-remote", "admin", 1.0, True, wmi_remote),
    Activity("ps-remoting", "admin", 1.5, True, ps_remoting),
    Activity("admin-discovery", "admin", 1.5, True, admin_discovery),
    Activity("admin-tasks", "admin", 1.0, True, admin_tasks),
    Activity("squirrel-update", "workstation", 0.8, True, squirrel_update),
    Activity("msi-install", "workstation", 0.08, True, msi_install),
    Activity("temp-installer", "workstation", 0.05, True, temp_installer),
    Activity("scheduled-maintenance", "any", 1.0, True, scheduled_maintenance, (0, 24)),
    Activity("backup-agent", "server", 1.0, True, backup_agent, (0, 5)),
    Activity("sccm-agent", "any", 0.3, True, sccm_agent, (0, 24)),
    Activity("monitoring-agent", "server", 2.0, True, monitoring_agent, (0, 24)),
    Activity("vuln-scanner", "scanner", 2.0, True, vuln_scanner, (0, 24)),
    Activity("sysmon-update", "any", 0.05, True, sysmon_update, (0, 24)),
    Activity("dev-tools", "developer", 4.0, True, dev_tools),
)
