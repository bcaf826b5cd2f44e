"""Logsource routing (detectors/routing.py + detectors/logsources/windows.yml) against real data:
SigmaHQ's thor.yml mapping, the regression samples, the SigmaHQ rule set and the OTRF events."""

from __future__ import annotations

import collections
import itertools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from detectors.routing import DEFAULT_MAPPING_PATH, LogSource, LogsourceMapping, MappingError, Route, rule_applies
from tests.conftest import SIGMA, otrf_files

THOR = SIGMA / "reference" / "thor.yml"
WINLOG = "WinEventLog:"

# Where our default mapping deliberately routes more than thor.yml (each is explained in windows.yml):
# the taxonomy's name for Sysmon 24, Sysmon 26 as a file deletion, and the service spelling that
# SigmaHQ's rule still uses for the ServiceBus channels.
DELIBERATE_EXTRAS = {
    LogSource("windows", "clipboard_capture", "sysmon"),
    LogSource("windows", "file_delete", "sysmon"),
    LogSource("windows", None, "microsoft-servicebus-client"),
}
# Windows categories that SigmaHQ rules use but that come from ETW (Microsoft-Windows-Kernel-File),
# not from an event-log channel: only events with explicit logsource hints reach these rules.
KNOWN_UNMAPPED_CATEGORIES = {"file_access", "file_rename"}


@pytest.fixture(scope="module")
def mapping() -> LogsourceMapping:
    return LogsourceMapping.default()


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _sorted(logsources: frozenset[LogSource]) -> list[LogSource]:
    return sorted(logsources, key=LogSource.sort_key)


# --- (a) thor.yml equivalence -----------------------------------------------------------------


class _Thor:
    """SigmaHQ's thor.yml read independently of our mapping: its Windows services and categories."""

    def __init__(self, path: Path) -> None:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))["logsources"]
        self.service_channels: dict[str, list[str]] = {}
        self.categories: list[dict[str, Any]] = []
        for name, entry in entries.items():
            rewrite = entry.get("rewrite", {})
            product = rewrite.get("product", entry.get("product"))
            if product != "windows":
                continue
            if "sources" in entry:
                assert all(s.startswith(WINLOG) for s in entry["sources"]), name
                channels = [s[len(WINLOG):] for s in entry["sources"]]
                self.service_channels.setdefault(entry["service"], []).extend(channels)
            else:
                self.categories.append(
                    {
                        "name": name,
                        "logsource": LogSource(product, entry["category"], rewrite["service"]),
                        "conditions": entry["conditions"],
                        "fieldmappings": entry.get("fieldmappings", {}),
                    }
                )

    def route(self, event: Mapping[str, Any]) -> tuple[set[LogSource], set[tuple[str, str]]]:
        """What thor.yml says `event` belongs to, and the field mappings that apply."""
        logsources: set[LogSource] = set()
        aliases: set[tuple[str, str]] = set()
        services = {s for s, channels in self.service_channels.items() if event["Channel"] in channels}
        logsources.update(LogSource("windows", None, s) for s in services)
        for cat in self.categories:
            if cat["logsource"].service not in services:
                continue
            if all(event.get(f) in (v if isinstance(v, list) else [v]) for f, v in cat["conditions"].items()):
                logsources.add(cat["logsource"])
                aliases.update(cat["fieldmappings"].items())
        return logsources, aliases

    def probe_events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """One event per channel of every service, and one per condition combination and channel."""
        for service, channels in self.service_channels.items():
            for channel in channels:
                yield service, {"Channel": channel, "EventID": 999999}
        for cat in self.categories:
            fields = list(cat["conditions"])
            choices = [v if isinstance(v, list) else [v] for v in cat["conditions"].values()]
            for channel in self.service_channels[cat["logsource"].service]:
                for combo in itertools.product(*choices):
                    yield cat["name"], {"Channel": channel, **dict(zip(fields, combo, strict=True))}


def test_default_mapping_routes_every_thor_windows_entry_to_the_same_logsource_and_fieldmappings(
    mapping: LogsourceMapping,
) -> None:
    thor = _Thor(THOR)
    assert len(thor.service_channels) >= 40 and len(thor.categories) >= 40  # the parse found thor's entries
    probed: set[str] = set()
    problems = []
    for entry, event in thor.probe_events():
        probed.add(entry)
        expected, expected_aliases = thor.route(event)
        route = mapping.route(event)
        missing = expected - route.logsources
        extra = route.logsources - expected - DELIBERATE_EXTRAS
        if missing or extra or set(route.field_aliases) != expected_aliases:
            problems.append(
                f"{entry} {event}: missing={_sorted(frozenset(missing))} extra={_sorted(frozenset(extra))} "
                f"aliases={route.field_aliases} expected={sorted(expected_aliases)}"
            )
    assert not problems, "\n".join(problems)
    assert probed == set(thor.service_channels) | {c["name"] for c in thor.categories}


def test_security_4688_is_process_creation_with_thor_fieldmappings(mapping: LogsourceMapping) -> None:
    route = mapping.route({"Channel": "Security", "EventID": 4688})
    assert route.logsources == {
        LogSource("windows", "process_creation", "security"),
        LogSource("windows", None, "security"),
    }
    assert route.field_aliases == (("Image", "NewProcessName"), ("ParentImage", "ParentProcessName"))
    assert rule_applies(LogSource("windows", "process_creation"), route)
    assert not rule_applies(LogSource("windows", "process_creation", "sysmon"), route)


def test_sysmon_registry_subcategories_follow_event_type(mapping: LogsourceMapping) -> None:
    sysmon = "Microsoft-Windows-Sysmon/Operational"

    def categories(event: dict[str, Any]) -> set[str | None]:
        return {ls.category for ls in mapping.route({"Channel": sysmon, **event}).logsources}

    assert categories({"EventID": 12, "EventType": "CreateKey"}) == {None, "registry_event", "registry_add"}
    assert categories({"EventID": 12, "EventType": "DeleteValue"}) == {None, "registry_event", "registry_delete"}
    # OTRF lost EventType on some captures: such an event is only known to be a registry event.
    assert categories({"EventID": 12}) == {None, "registry_event"}
    assert categories({"EventID": 13, "EventType": "SetValue"}) == {None, "registry_event", "registry_set"}


def test_unknown_windows_channel_routes_to_product_only(mapping: LogsourceMapping) -> None:
    route = mapping.route({"Channel": "Microsoft-Windows-Something/Operational", "EventID": 1})
    assert route == Route(frozenset({LogSource("windows")}))
    assert rule_applies(LogSource("windows"), route)
    assert not rule_applies(LogSource("windows", "process_creation"), route)


def test_channel_names_match_case_insensitively(mapping: LogsourceMapping) -> None:
    # OTRF has Security events with Channel "security"; Windows treats channel names case-insensitively.
    assert mapping.route({"Channel": "security", "EventID": 4688}) == mapping.route(
        {"Channel": "Security", "EventID": 4688}
    )


def test_covers_requires_every_set_field_of_the_rule_logsource() -> None:
    event_ls = LogSource("windows", "process_creation", "sysmon")
    assert LogSource().covers(event_ls)
    assert LogSource("windows").covers(event_ls)
    assert LogSource(category="process_creation").covers(event_ls)
    assert LogSource("windows", None, "sysmon").covers(event_ls)
    assert not LogSource("linux", "process_creation").covers(event_ls)
    assert not LogSource("windows", "process_creation").covers(LogSource("windows", None, "sysmon"))


# --- SigmaHQ rules: every Windows logsource they use is reachable -------------------------------


_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster over 3,700 rules


def _rule_logsources() -> collections.Counter[LogSource]:
    found: collections.Counter[LogSource] = collections.Counter()
    for rule_dir in ("rules", "rules-emerging-threats", "rules-threat-hunting", "rules-compliance", "rules-placeholder"):
        for path in (SIGMA / rule_dir).rglob("*.yml"):
            for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=_FAST_LOADER):
                if isinstance(doc, dict) and isinstance(doc.get("logsource"), dict):
                    ls = doc["logsource"]
                    found[LogSource(ls.get("product"), ls.get("category"), ls.get("service"))] += 1
    return found


def _default_mapping_triples() -> set[LogSource]:
    """Every triple the default mapping can produce, read from the YAML itself."""
    doc = yaml.safe_load(DEFAULT_MAPPING_PATH.read_text(encoding="utf-8"))
    triples = {LogSource(doc["product"])}
    for service, body in doc["services"].items():
        triples.add(LogSource(doc["product"], None, service))
        triples.update(LogSource(doc["product"], c, service) for c in (body.get("categories") or {}))
    return triples


def test_every_windows_logsource_used_by_sigmahq_rules_is_routable_except_etw_categories() -> None:
    triples = _default_mapping_triples()
    unreachable = {
        ls: n
        for ls, n in _rule_logsources().items()
        if (ls.product == "windows" or ls.category == "antivirus") and not any(ls.covers(t) for t in triples)
    }
    assert {ls.category for ls in unreachable} <= KNOWN_UNMAPPED_CATEGORIES, unreachable
    assert all(ls.service is None for ls in unreachable), unreachable


# --- (b) regression samples -------------------------------------------------------------------


def _manifest() -> list[dict[str, Any]]:
    path = SIGMA / "regression" / "manifest.json"
    # Without ../shared there is nothing to parametrize over (conftest skips the data tests).
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


@pytest.mark.parametrize("sample", _manifest(), ids=lambda s: s["rule_id"])
def test_regression_sample_events_route_to_their_rule_logsource(
    mapping: LogsourceMapping, sample: dict[str, Any]
) -> None:
    rule = yaml.safe_load((SIGMA / sample["rule_path"]).read_text(encoding="utf-8"))
    rule_ls = LogSource(*(rule["logsource"].get(k) for k in ("product", "category", "service")))
    events = list(_read_jsonl(SIGMA / sample["jsonl"]))
    routed = sum(rule_applies(rule_ls, mapping.route(e)) for e in events)
    needed = sample["expected_match_count"] or 1
    assert routed >= needed, (
        f"{sample['rule_path']} ({rule_ls}): {routed}/{len(events)} events routed, need {needed}; "
        f"routes: {[_sorted(mapping.route(e).logsources) for e in events[:3]]}"
    )


# --- (c) numeric-string EventIDs --------------------------------------------------------------


def test_numeric_string_event_ids_route_like_integers(mapping: LogsourceMapping) -> None:
    combos = {(e["Channel"], e["EventID"], e.get("EventType")) for path in otrf_files() for e in _read_jsonl(path)}
    combos |= {(e["Channel"], e["EventID"], e.get("EventType")) for _, e in _Thor(THOR).probe_events()}
    assert len(combos) > 150
    for channel, event_id, event_type in combos:
        as_int = {"Channel": channel, "EventID": int(event_id), "EventType": event_type}
        for variant in (str(event_id), f" {event_id}", float(event_id)):
            assert mapping.route({**as_int, "EventID": variant}) == mapping.route(as_int), (channel, variant)
    sysmon_1 = mapping.route({"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": "1"})
    assert LogSource("windows", "process_creation", "sysmon") in sysmon_1.logsources


# --- (d) explicit logsource hints -------------------------------------------------------------


def test_flat_logsource_hint_fields_route_non_windows_events(mapping: LogsourceMapping) -> None:
    event = {"logsource_product": "linux", "logsource_category": "process_creation", "Image": "/usr/bin/curl"}
    route = mapping.route(event)
    assert route.logsources == {LogSource("linux", "process_creation")}
    assert rule_applies(LogSource("linux", "process_creation"), route)
    assert rule_applies(LogSource("linux"), route)
    assert not rule_applies(LogSource("windows", "process_creation"), route)
    assert not rule_applies(LogSource("linux", None, "auditd"), route)


def test_nested_logsource_object_routes_like_flat_hints(mapping: LogsourceMapping) -> None:
    nested = mapping.route({"logsource": {"product": "aws", "service": "cloudtrail"}, "eventName": "x"})
    flat = mapping.route({"logsource_product": "aws", "logsource_service": "cloudtrail"})
    assert nested == flat == Route(frozenset({LogSource("aws", None, "cloudtrail")}))
    proxy = mapping.route({"logsource": {"category": " Proxy "}})  # trimmed and lower-cased
    assert proxy.logsources == {LogSource(None, "proxy", None)}
    assert rule_applies(LogSource(category="proxy"), proxy)


def test_event_without_channel_or_hints_reaches_no_rule(mapping: LogsourceMapping) -> None:
    route = mapping.route({"message": "hello", "EventID": 1})
    assert route.logsources == frozenset()
    assert not rule_applies(LogSource(), route)


def test_hints_add_to_channel_routing_and_read_configured_fields(tmp_path: Path) -> None:
    path = tmp_path / "custom.yml"
    path.write_text(
        "version: 1\n"
        "hints: {product: [meta.os], category: [kind]}\n"
        "services:\n"
        "  sysmon:\n"
        "    channels: [Microsoft-Windows-Sysmon/Operational]\n"
        "    categories:\n"
        "      file_event: {when: [{EventID: 11}, {EventID: 29, Extra: [a, B]}]}\n",
        encoding="utf-8",
    )
    custom = LogsourceMapping.from_yaml(path)
    assert custom.key_fields == ("Channel", "EventID", "Extra", "kind", "meta")
    assert custom.route({"meta": {"os": "macOS"}, "kind": "file_event"}).logsources == {LogSource("macos", "file_event")}
    assert custom.route({"logsource_product": "linux"}).logsources == frozenset()  # default hints replaced
    sysmon = "Microsoft-Windows-Sysmon/Operational"
    assert LogSource("windows", "file_event", "sysmon") in custom.route(
        {"Channel": sysmon, "EventID": 29, "Extra": "b"}).logsources
    assert LogSource("windows", "file_event", "sysmon") not in custom.route({"Channel": sysmon, "EventID": 29}).logsources
    etw = custom.route({"Channel": "Microsoft-Windows-Kernel-File/Analytic", "meta": {"os": "windows"}, "kind": "file_access"})
    assert etw.logsources == {LogSource("windows"), LogSource("windows", "file_access")}


# --- (e) invalid mapping files ----------------------------------------------------------------

_VALID_SERVICE = "services:\n  sysmon:\n    channels: [Microsoft-Windows-Sysmon/Operational]\n"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("- just\n- a list\n", "<top level>"),
        ("services: {}\nchanel_field: Channel\n", "<top level>"),  # typo in a key
        ("version: 2\n" + _VALID_SERVICE, "version"),
        ("product: windows\n", "services"),
        ("services:\n  sysmon: {}\n", "services.sysmon.channels"),
        ("services:\n  sysmon:\n    channels: Microsoft-Windows-Sysmon/Operational\n", "services.sysmon.channels"),
        (_VALID_SERVICE + "    categories:\n      process_creation: {EventID: 1}\n",
         "services.sysmon.categories.process_creation"),
        (_VALID_SERVICE + "    categories:\n      process_creation: {when: {}}\n",
         "services.sysmon.categories.process_creation.when"),
        (_VALID_SERVICE + "    categories:\n      x: {when: {EventID: [1, {a: b}]}}\n",
         "services.sysmon.categories.x.when.EventID"),
        (_VALID_SERVICE + "    categories:\n      x: {when: {EventID: 1}, fieldmappings: [Image]}\n",
         "services.sysmon.categories.x.fieldmappings"),
        ("hints: {product: [logsource.]}\n" + _VALID_SERVICE, "hints.product[0]"),
    ],
)
def test_invalid_mapping_raises_error_naming_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError) as caught:
        LogsourceMapping.from_yaml(path)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert str(path) in message and repr(key) in message, message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("services: [unclosed\n", "invalid YAML"),
        (_VALID_SERVICE + "    categories:\n      a: {when: {EventID: 1}}\n      a: {when: {EventID: 2}}\n", "duplicate key 'a'"),
    ],
)
def test_unparsable_or_duplicate_key_yaml_raises_error_naming_file(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError, match=needle) as caught:
        LogsourceMapping.from_yaml(path)
    assert str(path) in str(caught.value)


# --- (f) OTRF: every event routes; report the combos without a category -------------------------


def test_every_otrf_event_routes_and_route_depends_only_on_key_fields(
    mapping: LogsourceMapping, capsys: pytest.CaptureFixture[str]
) -> None:
    by_key: dict[tuple[Any, ...], Route] = {}
    # (channel as compared, services) -> EventID -> count, plus the channel spellings seen
    no_category: dict[tuple[str, str], collections.Counter[int]] = collections.defaultdict(collections.Counter)
    spellings: dict[str, set[str]] = collections.defaultdict(set)
    routed_events = 0
    for path in otrf_files():
        for event in _read_jsonl(path):
            route = mapping.route(event)
            assert any(ls.product == "windows" for ls in route.logsources), event
            # Purity: the same key gives the same route, and the key fields alone give it too.
            key = mapping.route_key(event)
            hash(key)
            assert by_key.setdefault(key, route) == route
            assert mapping.route({f: event[f] for f in mapping.key_fields if f in event}) == route
            if not any(ls.category for ls in route.logsources):
                services = ",".join(sorted(ls.service or "<none>" for ls in route.logsources))
                no_category[(event["Channel"].casefold(), services)][int(event["EventID"])] += 1
                spellings[event["Channel"].casefold()].add(event["Channel"])
            routed_events += 1
    assert routed_events > 50_000
    with capsys.disabled():
        print(
            f"\nOTRF routing report: {routed_events} events, {len(by_key)} distinct route keys. "
            "(Channel, EventID) combos that route to a service but to no category (EventID:events):"
        )
        for (channel, services), counts in sorted(no_category.items()):
            names = "/".join(sorted(spellings[channel]))
            ids = " ".join(f"{eid}:{n}" for eid, n in sorted(counts.items()))
            print(f"  {names} [service {services}, {sum(counts.values())} events] {ids}")
