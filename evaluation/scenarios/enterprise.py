"""The simulated enterprise: hosts with roles, people with accounts, and their criticality.

Seeded and pure: the same (seed, sizes) give the same enterprise. Names follow the usual
conventions (WS-FIN-014, SRV-SQL-02, DC-01; j.doe, adm-jdoe, svc-backup) so that the events,
the alerts and the criticality table read like a real estate.

>>> import random
>>> corp = build_enterprise(random.Random(1), workstations=6, servers=3, dcs=1)
>>> [host.role for host in corp.hosts].count("workstation"), corp.dcs[0].name, corp.dcs[0].criticality
(6, 'DC-01', 'critical')
>>> corp.criticality_csv().splitlines()[0]
'type,name,criticality,role,owner'
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

DOMAIN, NETBIOS = "corp.example", "CORP"
DOMAIN_SID = "S-1-5-21-2214096512-3127719841-1180227765"
DEPARTMENTS = ("FIN", "HR", "SALES", "MKT", "DEV", "OPS", "LEGAL", "IT")
SERVER_KINDS = (("FILE", "file server", "high"), ("SQL", "database", "critical"), ("APP", "application server", "high"),
                ("WEB", "web server", "medium"), ("BKP", "backup server", "critical"), ("MGMT", "management server", "high"),
                ("PRINT", "print server", "low"), ("EXCH", "mail server", "high"))
FIRST = ("anna", "ben", "carla", "dmitri", "elif", "farid", "grace", "hiro", "ines", "jonas", "kofi", "lena", "marco",
         "nadia", "omar", "priya", "quinn", "rosa", "sven", "tara", "umar", "vera", "wei", "ximena", "yusuf", "zoe")
LAST = ("nguyen", "schmidt", "diaz", "okafor", "larsen", "kowalski", "tanaka", "haddad", "silva", "murphy", "rossi",
        "novak", "ivanova", "moreau", "kim", "patel", "berg", "costa", "jensen", "fischer")
SERVICE_ACCOUNTS = (("svc-backup", "backup agent"), ("svc-sccm", "configuration management agent"),
                    ("svc-sql", "database engine"), ("svc-scan", "vulnerability scanner"))


@dataclass(frozen=True, slots=True)
class Host:
    name: str  # short NetBIOS name, upper case
    role: str  # workstation | server | dc
    ip: str
    kind: str  # department (workstations) or server kind
    criticality: str
    owner: str = ""  # the workstation's primary user

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{DOMAIN}"


@dataclass(frozen=True, slots=True)
class Person:
    name: str  # sAMAccountName
    kind: str  # user | admin | service
    rid: int
    criticality: str
    description: str = ""
    developer: bool = False

    @property
    def sid(self) -> str:
        return f"{DOMAIN_SID}-{self.rid}"

    @property
    def qualified(self) -> str:
        return f"{NETBIOS}\\{self.name}"


@dataclass(slots=True)
class Enterprise:
    hosts: list[Host]
    people: list[Person]
    admin_of: dict[str, str] = field(default_factory=dict)  # admin account -> the person's everyday account

    @property
    def workstations(self) -> list[Host]:
        return [host for host in self.hosts if host.role == "workstation"]

    @property
    def servers(self) -> list[Host]:
        return [host for host in self.hosts if host.role == "server"]

    @property
    def dcs(self) -> list[Host]:
        return [host for host in self.hosts if host.role == "dc"]

    @property
    def admins(self) -> list[Person]:
        return [person for person in self.people if person.kind == "admin"]

    @property
    def services(self) -> list[Person]:
        return [person for person in self.people if person.kind == "service"]

    def person(self, name: str) -> Person:
        return next(person for person in self.people if person.name == name)

    def host(self, name: str) -> Host:
        return next(host for host in self.hosts if host.name == name)

    def workstation_of(self, user: str) -> Host | None:
        return next((host for host in self.workstations if host.owner == user), None)

    def criticality_csv(self) -> str:
        """The table `correlator.criticality` reads: hosts and identities above the default."""
        lines = ["type,name,criticality,role,owner"]
        for host in self.hosts:
            lines.append(f"host,{host.name.lower()},{host.criticality},{host.kind if host.role != 'dc' else 'domain controller'},"
                         f"{host.owner}")
        for person in self.people:
            if person.kind != "user" or person.criticality != "low":
                lines.append(f"user,{person.name},{person.criticality},{person.kind},")
        return "\n".join(lines) + "\n"


def build_enterprise(rng: random.Random, workstations: int, servers: int, dcs: int, admins: int = 3) -> Enterprise:
    """An enterprise of the given size: one primary user per workstation (a fifth of them
    developers), `admins` IT staff with a separate admin account, service accounts, servers of
    mixed kinds and criticality, domain controllers (critical)."""
    people: list[Person] = []
    names: set[str] = set()
    rid = 1104
    while len(people) < workstations:
        name = f"{rng.choice(FIRST)}.{rng.choice(LAST)}"
        if name in names:
            continue
        names.add(name)
        rid += 1
        people.append(Person(name, "user", rid, "low", developer=rng.random() < 0.2))
    hosts: list[Host] = []
    for index, person in enumerate(people):
        others = [name for name in DEPARTMENTS if name != "DEV"]
        department = "DEV" if person.developer else others[index % len(others)]
        criticality = "medium" if department in ("FIN", "LEGAL", "HR") else "low"
        hosts.append(Host(f"WS-{department}-{index + 1:03d}", "workstation", f"10.20.{1 + index // 250}.{10 + index % 250}",
                          department, criticality, person.name))
    # IT staff: their everyday account is a workstation user; the admin account is separate.
    admin_of: dict[str, str] = {}
    departments = {host.owner: host.kind for host in hosts}
    it_people = sorted((person for person in people if not person.developer),
                       key=lambda person: departments[person.name] != "IT")[:admins]
    for person in it_people:
        rid += 1
        account = f"adm-{person.name.replace('.', '')}"
        people.append(Person(account, "admin", rid, "high", "IT administrator"))
        admin_of[account] = person.name
    for name, description in SERVICE_ACCOUNTS:
        rid += 1
        people.append(Person(name, "service", rid, "medium", description))
    for index in range(servers):
        kind, description, criticality = SERVER_KINDS[index % len(SERVER_KINDS)]
        number = index // len(SERVER_KINDS) + 1
        hosts.append(Host(f"SRV-{kind}-{number:02d}", "server", f"10.20.0.{20 + index}", description, criticality))
    for index in range(dcs):
        hosts.append(Host(f"DC-{index + 1:02d}", "dc", f"10.20.0.{10 + index}", "domain controller", "critical"))
    return Enterprise(hosts, people, admin_of)
