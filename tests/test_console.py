"""The web console without a browser: the pure fold of alert and verdict records (alerts made by
the real correlator over real OTRF events), and the real app served by uvicorn on a free port,
asked over HTTP: login, refusals without a session, CSRF, escaping of hostile values, live rows.

No broker here: evidence and verdicts go through the app's `Services` (in-memory functions); the
browser test (tests/test_console_browser.py) runs the same app against the test run's Kafka.
"""

from __future__ import annotations

import http.cookiejar
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from cluster.config import config_from_dict
from cluster.console.app import Services
from cluster.console.auth import console_token
from cluster.console.cluster_view import ClusterView
from cluster.console.evidence import EvidenceEvent
from cluster.console.feed import SharedState
from cluster.console.redact import Redactor
from cluster.console.server import ConsoleServer
from cluster.console.state import ConsoleState
from cluster.console.verdicts import make_verdict
from cluster.sources.replay import replay_files
from correlator import Correlator
from correlator.fusion import Alert
from correlator.records import Verdict
from correlator.settings import PER_RULE_ALERTING, fusion_config_from_dict
from detectors.rulefiles import load_rules_from_paths
from tests.conftest import OTRF, ROOT

TOKEN = "test-token-" + uuid.uuid4().hex
# Six datasets of 2020-10-22, each with an audit log clearing on workstation5 (two rules fire).
INCIDENT = [OTRF / "jsonl" / "defense_evasion" / f"{name}.jsonl" for name in (
    "psh_control_panel_execution", "psh_cmstp_execution_bypassuac", "cmd_mshta_javascript_getobject_sct",
    "cmd_mshta_vbscript_execute_psh", "psh_mshta_html_application_execution", "psh_hh_local_html_payload")]
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'


def detections_of(files: Sequence[Path]) -> list[dict[str, Any]]:
    """The shipped rules' detection records over the files, as workers write them."""
    config = config_from_dict({"rules": {"paths": [str(ROOT / "rules")]}, "models": {"enabled": False}})
    out: list[dict[str, Any]] = []
    replay_files(config, [str(path) for path in files],
                 lambda record, dead: None if dead else out.append(orjson.loads(record.value)))
    return out


def correlate(detections: Sequence[dict[str, Any]], flush: bool = True) -> list[Alert]:
    # per-rule alerting: the console's views are checked on per-rule alerts (entity risk alerts, the
    # default, name their contributing rules in the explanation, not in rule_ids)
    correlator = Correlator.from_ruleset(load_rules_from_paths([ROOT / "rules"]),
                                         fusion_config_from_dict(PER_RULE_ALERTING))
    alerts = [alert for item in detections for alert in correlator.process(item)]
    return alerts + correlator.flush() if flush else alerts


def as_record(alert: Alert) -> Any:
    """The alert as the console reads it from the alerts topic: its OCSF value, through JSON."""
    return orjson.loads(orjson.dumps(alert.ocsf))


def hostile_detection(offset: int = 0, topic: str = "sigmaray.events") -> dict[str, Any]:
    """A real-shaped detection whose attacker-controlled fields (host, user, command line) carry markup."""
    event = {"Computer": f"ws-09{IMG}", "TargetUserName": SCRIPT, "CommandLine": f"cmd.exe /c {SCRIPT} {IMG}",
             "EventID": 4688, "Channel": "Security"}
    return {"schema_version": 1, "kind": "sigma",
            "rule": {"id": "r-hostile", "title": f"Suspicious {SCRIPT}", "level": "high",
                     "tags": ["attack.execution", "attack.t1059.001"]},
            "ruleset_version": "v1", "entity": event["Computer"], "event_time": "2026-11-30T10:00:00Z",
            "scores": {}, "model_version": None, "source": {"topic": topic, "partition": 0, "offset": offset},
            "event": event}


@pytest.fixture(scope="module")
def incident_alerts() -> list[Alert]:
    return correlate(detections_of(INCIDENT))


# -- the pure fold --------------------------------------------------------------------------------

def test_the_queue_holds_each_real_alert_once_as_its_latest_record(incident_alerts: list[Alert]) -> None:
    state = ConsoleState()
    for alert in incident_alerts:
        assert state.apply_alert(as_record(alert)) is not None
    latest = {alert.alert_id: alert for alert in incident_alerts}  # later records update in place
    assert len(incident_alerts) > len(latest) >= 2
    queue = state.queue()
    assert sorted(view.alert_id for view in queue) == sorted(latest)
    for view in queue:
        alert = latest[view.alert_id]
        assert (view.priority, view.count, view.host, view.status) == (alert.priority, alert.count, alert.entity, "closed")
        assert view.rule_ids == list(alert.rule_ids) and view.updates >= 1
        assert view.explanation == alert.explanation and view.evidence_refs  # (topic, partition, offset) refs
    assert [view.sort_key() for view in queue] == sorted(view.sort_key() for view in queue)
    assert [view.priority for view in queue] == sorted(view.priority for view in queue)
    assert state.summary()["open"] == 0 and state.summary()["total"] == len(latest)
    assert state.skipped == {}


def test_entity_risk_attack_and_rules_views_come_from_the_explanations(incident_alerts: list[Alert]) -> None:
    state = ConsoleState()
    for alert in incident_alerts:
        state.apply_alert(as_record(alert))
    board = state.riskiest()
    host = next(entity for entity in board if (entity.entity_type, entity.name) == ("host", "workstation5"))
    terms = [term for alert in incident_alerts for term in alert.explanation["last_contribution"]
             if term["entity"] == "workstation5"]
    assert host.peak == pytest.approx(max(term["risk_after"] for term in terms), abs=0.01)
    assert [time for time, _ in host.points] == sorted(time for time, _ in host.points) and len(host.points) > 2
    titles = {rule["title"] for alert in incident_alerts for rule in alert.explanation["rules"]}
    assert {title for title, _ in host.raised_by()} == titles
    assert host.best_priority == min(alert.priority for alert in incident_alerts)

    matrix = state.attack_matrix(hours=24)
    assert matrix.entities[0] == "workstation5" and matrix.types["workstation5"] == "host"
    seen = {tactic for alert in incident_alerts for tactic in alert.explanation["tactics"]}
    assert {tactic for (_, tactic) in matrix.cells} == seen and matrix.hit_tactics("workstation5") == len(seen)
    assert matrix.tactics[:3] == ["reconnaissance", "resource-development", "initial-access"]  # the kill chain
    assert set(matrix.tactics) >= seen
    assert all(cell["alerts"] >= 1 and 1 <= cell["priority"] <= 4 for cell in matrix.cells.values())
    stale = ConsoleState()
    stale.apply_alert(as_record(incident_alerts[0]))
    stale.watermark_ms += 48 * 3_600_000  # two days later in event time: outside a 24 h window
    assert stale.attack_matrix(hours=24).entities == [] and stale.attack_matrix(hours=72).entities

    rows = state.rule_rows()
    assert {row.title for row in rows} == titles and all(row.alerts >= 1 and row.hits >= 1 for row in rows)
    target = next(view for view in state.queue() if view.priority <= 2)
    verdict = make_verdict(target.alert_id, "fp", "admin script", "ana", True, 4)
    assert state.apply_verdict(verdict.to_dict()) == verdict
    assert state.apply_verdict(verdict.to_dict()) is None  # the topic's echo of our own verdict
    row = next(row for row in state.rule_rows() if row.rule_id == target.rule_ids[0])
    assert row.fp == 1 and 0 < row.fp_share <= 1 and row.high_share > 0
    assert state.alerts[target.alert_id].verdict == "fp"


def test_filters_verdicts_before_their_alert_bad_records_and_the_change_log(incident_alerts: list[Alert]) -> None:
    state = ConsoleState(max_changes=4)
    early = Verdict(incident_alerts[0].alert_id, "benign", str(uuid.uuid4()), reason="known")
    state.apply_verdict(early.to_dict())  # read before its alert (another partition): kept for it
    for alert in incident_alerts:
        state.apply_alert(as_record(alert))
    assert state.alerts[early.alert_id].verdict == "benign"
    some = incident_alerts[0]
    assert [view.alert_id for view in state.queue(entity="WORKSTATION")] == [view.alert_id for view in state.queue()]
    assert state.queue(entity="nobody") == []
    tactic = some.explanation["tactics"][0]
    assert some.alert_id in [view.alert_id for view in state.queue(tactic=tactic)]
    assert all(view.priority == some.priority for view in state.queue(priority=some.priority))

    for bad in ({"finding_info": {}}, [1], {"finding_info": {"uid": "x"}},
                {**as_record(some), "priority": "P9", "unmapped": {"sigmaray": {"explanation": {}}}}):
        assert state.apply_alert(bad) is None
    assert state.apply_verdict({"alert_id": "a", "verdict": "maybe", "verdict_id": "v"}) is None
    assert sum(state.skipped.values()) == 5
    version = state.version
    assert state.changes_since(version) == []
    state.apply_alert(as_record(some))
    assert state.changes_since(version) == [some.alert_id]
    assert state.changes_since(0) is None  # the log keeps 4 changes: a page that old reloads


def test_the_state_stays_bounded(incident_alerts: list[Alert]) -> None:
    state = ConsoleState(max_alerts=2)
    for alert in incident_alerts:
        state.apply_alert(as_record(alert))
    for index in range(5):
        record = as_record(incident_alerts[0])
        record["finding_info"]["uid"] = f"extra-{index}"
        state.apply_alert(record)
    assert len(state.alerts) == 2 and list(state.alerts) == ["extra-3", "extra-4"]
    assert all(entity.alerts <= set(state.alerts) for entity in state.entities.values())


def test_cluster_view_rows_rates_and_no_cluster() -> None:
    samples = iter([{"workers": [{"worker": "w0", "events_in": 100, "lag": {"t[0]": 5}, "partitions": ["t[0]"],
                                  "ruleset_version": "abc", "models": {"model": "hst@1"}, "dead_letters": 1,
                                  "dead_letters_by_stage": {"decode": 1}}], "restarts": 0, "last_error": ""},
                    {"workers": [{"worker": "w0", "events_in": 300, "lag": {"t[0]": 2}, "partitions": ["t[0]"],
                                  "ruleset_version": "abc", "models": {"model": "hst@1"}}], "restarts": 1,
                     "last_error": "worker w1 died: password=hunter22"}])
    view = ClusterView(lambda: next(samples), Redactor(("hunter22",)), min_interval_s=0)
    first = view.snapshot()
    assert first["connected"] and first["totals"]["partitions"] == 1 and first["totals"]["lag"] == 5
    assert first["totals"]["rulesets"] == ["abc"] and first["totals"]["models"] == ["hst@1"]
    time.sleep(0.05)
    second = view.snapshot()
    assert second["workers"][0].events_per_s and second["workers"][0].events_per_s > 0
    assert "hunter22" not in second["last_error"] and "***" in second["last_error"]
    assert not ClusterView(None).snapshot()["connected"]

    def broken() -> dict[str, Any]:
        raise RuntimeError("supervisor gone")

    down = ClusterView(broken).snapshot()
    assert not down["connected"] and "supervisor gone" in down["error"]


def test_the_token_comes_from_the_environment_or_is_generated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGMARAY_TEST_CONSOLE_TOKEN", "from-the-env-123")
    assert console_token("SIGMARAY_TEST_CONSOLE_TOKEN") == ("from-the-env-123", False)
    monkeypatch.delenv("SIGMARAY_TEST_CONSOLE_TOKEN")
    token, generated = console_token("SIGMARAY_TEST_CONSOLE_TOKEN")
    assert generated and len(token) >= 24 and token != console_token("SIGMARAY_TEST_CONSOLE_TOKEN")[0]


# -- the app over HTTP ------------------------------------------------------------------------------

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Client:
    """A cookie-keeping HTTP client that does not follow redirects (the test looks at them)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def request(self, path: str, form: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                ) -> tuple[int, dict[str, str], str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.base + path.lstrip("/"), data=data, headers=headers or {})
        if data is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()

    def login(self, token: str = TOKEN) -> tuple[int, dict[str, str], str]:
        return self.request("/login", {"token": token, "analyst": "ana"})


@pytest.fixture()
def console(incident_alerts: list[Alert]) -> Iterator[tuple[ConsoleServer, list[Verdict]]]:
    shared = SharedState()
    for alert in incident_alerts:
        shared.state.apply_alert(as_record(alert))
    hostile = correlate([hostile_detection()], flush=False)
    assert hostile and SCRIPT in hostile[0].ocsf["finding_info"]["title"]
    shared.state.apply_alert(as_record(hostile[0]))
    sent: list[Verdict] = []

    def evidence(refs: list[tuple[str, int, int]]) -> list[EvidenceEvent]:
        return [EvidenceEvent(*ref, event=hostile_detection()["event"]) for ref in refs]

    server = ConsoleServer(Services(shared=shared, fetch_evidence=evidence, send_verdict=sent.append, poll_s=0.05),
                           TOKEN, host="127.0.0.1", port=0)
    server.start()
    try:
        yield server, sent
    finally:
        server.stop()


def _alert_id(server: ConsoleServer, hostile: bool = False) -> str:
    views = server.services.shared.state.queue()
    return next(view.alert_id for view in views if (SCRIPT in view.title) == hostile)


def test_every_route_but_login_refuses_without_a_session(console: tuple[ConsoleServer, list[Verdict]]) -> None:
    server, sent = console
    client = Client(server.url)
    alert_id = _alert_id(server)
    html = {"Accept": "text/html"}
    for path in ("/", f"/alerts/{alert_id}", "/entities", "/attack", "/rules", "/cluster", "/?fragment=1"):
        status, headers, body = client.request(path, headers=html)
        assert status == 303 and headers["location"] == "/login" and alert_id not in body, path
        status, _, body = client.request(path)
        assert status == 401 and body == "login required", path
    status, _, body = client.request("/events?view=queue")
    assert status == 401 and "event:" not in body
    status, _, _ = client.request(f"/alerts/{alert_id}/verdict", {"verdict": "fp", "csrf": "x"})
    assert status == 401 and not sent
    assert client.request("/login")[0] == 200 and client.request("/static/console.css")[0] == 200

    status, headers, body = client.login("wrong-token-000")
    assert status == 401 and "Wrong token" in body and "set-cookie" not in {k.lower() for k in headers}
    cookie = Client(server.url)
    status, headers, _ = cookie.request("/", headers={"Cookie": "sigmaray_console=forged"})
    assert status == 401
    for _ in range(12):  # guessing is braked per address
        status, _, _ = client.login("wrong-token-000")
    assert status == 429


def test_login_sets_a_strict_httponly_session_cookie_and_logout_ends_it(console: tuple[ConsoleServer, list[Verdict]]) -> None:
    server, _ = console
    client = Client(server.url)
    status, headers, _ = client.login()
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie
    assert TOKEN not in cookie
    status, headers, body = client.request("/")
    assert status == 200 and "Alert queue" in body and TOKEN not in body
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    for path in ("/entities", "/attack", "/rules", "/cluster", f"/alerts/{_alert_id(server)}"):
        status, _, page = client.request(path)
        assert status == 200 and TOKEN not in page, path
    csrf = _csrf(body)
    assert client.request("/logout", {"csrf": "nope"})[0] == 403
    assert client.request("/logout", {"csrf": csrf})[0] == 303
    assert client.request("/")[0] == 401


def _csrf(page: str) -> str:
    marker = 'name="csrf" value="'
    start = page.index(marker) + len(marker)
    return page[start: page.index('"', start)]


def test_a_verdict_post_needs_the_csrf_token_and_its_own_origin(console: tuple[ConsoleServer, list[Verdict]]) -> None:
    server, sent = console
    client = Client(server.url)
    client.login()
    alert_id = _alert_id(server)
    status, _, page = client.request(f"/alerts/{alert_id}")
    assert status == 200
    csrf = _csrf(page)
    path = f"/alerts/{alert_id}/verdict"
    assert client.request(path, {"verdict": "fp", "reason": "no token"})[0] == 403
    assert client.request(path, {"verdict": "fp", "csrf": "forged"})[0] == 403
    other_origin = {"Origin": "http://evil.example"}
    assert client.request(path, {"verdict": "fp", "csrf": csrf}, headers=other_origin)[0] == 403
    assert not sent
    status, _, body = client.request(path, {"verdict": "maybe", "csrf": csrf})
    assert status == 400 and "unknown verdict" in body and not sent

    status, headers, _ = client.request(path, {"verdict": "fp", "reason": "backup job", "csrf": csrf, "suppress": "1",
                                               "suppress_hours": "8"}, headers={"Origin": server.url.rstrip("/")})
    assert status == 303 and headers["location"] == f"/alerts/{alert_id}?recorded=fp"
    [verdict] = sent
    assert (verdict.alert_id, verdict.verdict, verdict.reason, verdict.analyst) == (alert_id, "fp", "backup job", "ana")
    assert verdict.suppress and verdict.suppress_hours == 8 and verdict.time.endswith("Z")
    assert Verdict.from_dict(orjson.loads(verdict.to_json())) == verdict
    status, _, page = client.request(headers["location"])
    assert "Verdict fp recorded" in page and "backup job" in page


def test_hostile_event_values_render_inert_everywhere(console: tuple[ConsoleServer, list[Verdict]]) -> None:
    server, _ = console
    client = Client(server.url)
    client.login()
    alert_id = _alert_id(server, hostile=True)
    pages = {path: client.request(path)[2] for path in (
        "/", f"/alerts/{alert_id}", f"/alerts/{alert_id}?fragment=1", f"/alerts/{alert_id}?fragment=head",
        "/entities", "/attack", "/rules",
        "/?entity=" + urllib.parse.quote(IMG), "/entities?focus=" + urllib.parse.quote(SCRIPT))}
    for path, page in pages.items():
        assert "<script>alert" not in page and "<img" not in page and "onerror=alert(1)>" not in page, path
    alert_page = pages[f"/alerts/{alert_id}"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in alert_page  # shown, as text
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in alert_page
    assert "cmd.exe /c &lt;script&gt;" in alert_page  # the evidence event's command line
    assert "&lt;script&gt;" in pages["/"] and "&lt;script&gt;" in pages["/rules"]


def _read_events(server: ConsoleServer, client: Client, path: str, until: str, timeout: float = 20) -> str:
    """Reads an event stream until `until` appears (or the timeout)."""
    request = urllib.request.Request(server.url + path.lstrip("/"))
    seen = ""
    deadline = time.monotonic() + timeout
    with client.opener.open(request, timeout=timeout) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        while until not in seen and time.monotonic() < deadline:
            line = response.readline().decode()
            if not line:
                break
            seen += line
    return seen


def test_the_live_stream_sends_a_new_alert_as_an_escaped_row(console: tuple[ConsoleServer, list[Verdict]]) -> None:
    server, _ = console
    client = Client(server.url)
    client.login()
    shared = server.services.shared
    version = shared.state.version
    record = as_record(correlate([hostile_detection(offset=7)], flush=False)[0])
    record["finding_info"]["uid"] = "live-1"

    def later() -> None:
        time.sleep(0.5)
        with shared.lock:
            shared.state.apply_alert(record)

    threading.Thread(target=later, daemon=True).start()
    seen = _read_events(server, client, f"/events?view=queue&since={version}", '"id":"live-1"')
    row = next(json.loads(line[len("data: "):]) for line in seen.splitlines() if '"id":"live-1"' in line)
    assert row["html"].startswith('<tr id="a-live-1"') and "&lt;script&gt;" in row["html"] and "<script>" not in row["html"]
    seen = _read_events(server, client, f"/events?view=queue&since={version}&priority=4", '"id":"live-1"')
    assert "event: remove" in seen  # filtered out (it is not P4): the page drops it


def test_the_cluster_page_shows_workers_and_correlators_from_the_real_status_rows() -> None:
    """Rows in the shape the workers and correlators report (their metrics classes' to_dict), not a
    hand-made imitation: a change there that the page no longer reads fails here."""
    from collections import Counter

    from cluster.kafka.correlator_loop import CorrelatorMetrics
    from cluster.kafka.partition_loop import LoopMetrics

    events = {"count": 1000}

    def status() -> dict[str, Any]:
        events["count"] += 500
        worker = LoopMetrics("worker-0", events_in=events["count"], detections_out=42, dead_letters=3,
                             dead_letters_by_stage=Counter({"decode": 3}), partitions=[("sigmaray.events", 0)],
                             lag={"sigmaray.events[0]": 17}, ruleset_version="rules-abc123").to_dict()
        worker["models"] = {"model": "hst@v7", "entities": 12}
        correlator = CorrelatorMetrics("correlator-0", detections_in=40, alerts_out=9,
                                       alerts_by_priority=Counter({"P1": 2, "P3": 7}), partitions=[("sigmaray.detections", 0)],
                                       lag={"sigmaray.detections[0]": 4}, verdicts=Counter({"applied": 1})).to_dict()
        return {"workers": [worker], "correlators": [correlator], "restarts": 0, "last_error": ""}

    server = ConsoleServer(Services(shared=SharedState(), fetch_evidence=lambda refs: [], send_verdict=lambda v: None,
                                    cluster=ClusterView(status, min_interval_s=0)), TOKEN, host="127.0.0.1", port=0)
    server.start()
    try:
        client = Client(server.url)
        client.login()
        client.request("/cluster")
        time.sleep(0.2)
        status_code, _, page = client.request("/cluster")
    finally:
        server.stop()
    assert status_code == 200
    for text in ("worker-0", "sigmaray.events[0]", "rules-abc123", "hst@v7", "decode 3", "events/s", "correlator-0",
                 "sigmaray.detections[0]", "applied 1", ">P1</span> 2"):
        assert text in page, text
    assert "no cluster connected" not in page


def test_start_console_beside_a_cluster_is_off_when_disabled_and_never_fatal(capsys: pytest.CaptureFixture[str]) -> None:
    """What `sigmaray run` calls: nothing when console.enabled is false; a taken port is a warning."""
    import socket

    from cluster.console.server import start_console

    assert start_console(config_from_dict({"console": {"enabled": False}})) is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = config_from_dict({"kafka": {"bootstrap_servers": "127.0.0.1:1"}, "console": {"port": port}})
        assert start_console(config) is None
    assert "the console could not start" in capsys.readouterr().err
    server = start_console(config_from_dict({"kafka": {"bootstrap_servers": "127.0.0.1:1"}, "console": {"port": 0}}))
    assert server is not None
    try:
        err = capsys.readouterr().err
        assert f"console at {server.url}" in err and "token (shown once" in err
        status, _, page = Client(server.url).request("/cluster")
        assert status == 401
    finally:
        server.stop()


@pytest.mark.parametrize("name", ["cluster.console.state", "cluster.console.redact"])
def test_console_docstring_examples(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted and not result.failed


def test_a_verdict_the_broker_refuses_is_reported_not_shown_as_recorded(incident_alerts: list[Alert]) -> None:
    from cluster.console.verdicts import VerdictError

    shared = SharedState()
    shared.state.apply_alert(as_record(incident_alerts[0]))

    def refuse(verdict: Verdict) -> None:
        raise VerdictError("the broker did not acknowledge the verdict within 10 s (it may still arrive)")

    server = ConsoleServer(Services(shared=shared, fetch_evidence=lambda refs: [], send_verdict=refuse), TOKEN,
                           host="127.0.0.1", port=0)
    server.start()
    try:
        client = Client(server.url)
        client.login()
        alert_id = incident_alerts[0].alert_id
        csrf = _csrf(client.request(f"/alerts/{alert_id}")[2])
        status, _, page = client.request(f"/alerts/{alert_id}/verdict", {"verdict": "tp", "csrf": csrf})
    finally:
        server.stop()
    assert status == 400 and "did not acknowledge the verdict" in page and "recorded" not in page
    assert shared.state.alerts[alert_id].verdicts == []


def test_the_risk_board_ranks_entities_by_their_risk_decayed_to_the_latest_event_time() -> None:
    from cluster.console.state import ConsoleState, EntityRisk

    state = ConsoleState(half_life_ms=3_600_000)
    yesterday = EntityRisk("host", "dc-01", points=[(0, 120.0)])  # risky a day ago, quiet since
    now = EntityRisk("host", "ws-07", points=[(24 * 3_600_000, 40.0)])
    state.entities = {("host", "dc-01"): yesterday, ("host", "ws-07"): now}
    state.watermark_ms = 24 * 3_600_000
    board = state.riskiest()
    assert [entity.name for entity in board] == ["ws-07", "dc-01"]
    assert board[0].current == 40.0 and board[1].current == pytest.approx(120.0 * 2 ** -24)
    assert board[1].peak == 120.0  # the peak stays visible


@pytest.fixture(scope="module")
def risk_alerts() -> list[Alert]:
    """The incident under the default, risk-based alerting, left open: workstation5's case (an
    entity risk alert, P2) and the P4 records of the rules behind it."""
    correlator = Correlator.from_ruleset(load_rules_from_paths([ROOT / "rules"]))
    return [alert for item in detections_of(INCIDENT) for alert in correlator.process(item)]


def test_the_queue_folds_a_hosts_p4_rule_records_under_its_open_case(risk_alerts: list[Alert]) -> None:
    state = ConsoleState()
    for alert in risk_alerts:
        state.apply_alert(as_record(alert))
    everything = state.queue(fold=False)
    cases = [view for view in everything if view.is_case and view.status == "open"]
    assert len(cases) == 1 and cases[0].priority <= 3
    case = cases[0]
    records = sorted(view.alert_id for view in everything if view.host == case.host and view.priority == 4)
    assert len(records) >= 2
    assert case.alert_id in [view.alert_id for view in state.queue()]
    assert not set(records) & {view.alert_id for view in state.queue()}  # folded: not rows of their own
    assert sorted(view.alert_id for view in state.folded_under(case)) == records
    assert sorted(view.alert_id for view in state.queue(priority=4)) == records  # asked for: shown
    assert state.summary()["P4"] == sum(view.status == "open" for view in everything if view.alert_id in records)

    closing = as_record(next(alert for alert in reversed(risk_alerts) if alert.alert_id == case.alert_id))
    closing["activity_id"] = 3  # the case closes: its records are rows again
    state.apply_alert(closing)
    assert state.case_of(case.host) is None and not state.folded_under(case)
    assert set(records) <= {view.alert_id for view in state.queue()}


def test_the_queue_page_and_its_stream_show_folded_records_under_the_case(risk_alerts: list[Alert]) -> None:
    shared = SharedState()
    for alert in risk_alerts:
        shared.state.apply_alert(as_record(alert))
    case = next(view for view in shared.state.queue() if view.is_case)
    folded = len(shared.state.folded_under(case))
    server = ConsoleServer(Services(shared=shared, fetch_evidence=lambda refs: [], send_verdict=lambda v: None,
                                    poll_s=0.05), TOKEN, host="127.0.0.1", port=0)
    server.start()
    try:
        client = Client(server.url)
        client.login()
        _, _, page = client.request("/")
        assert f"+{folded} rule records on this host (P4)" in page
        assert page.count('<tr id="a-') == len(shared.state.queue())
        _, _, page = client.request("/?priority=4")
        assert page.count('<tr id="a-') == folded and "rule records on this host" not in page

        # a new P4 record on the host folds live: the stream removes its row and redraws the case's count
        version = shared.state.version
        record = as_record(next(alert for alert in risk_alerts if alert.label == "P4" and alert.entity == case.host))
        record["finding_info"]["uid"] = "live-p4"

        def later() -> None:
            time.sleep(0.5)
            with shared.lock:
                shared.state.apply_alert(record)

        threading.Thread(target=later, daemon=True).start()
        seen = _read_events(server, client, f"/events?view=queue&since={version}", f"+{folded + 1} rule records")
        assert "event: remove" in seen and '"id":"live-p4"' in seen and f"+{folded + 1} rule records" in seen
        assert '<tr id="a-live-p4"' not in seen
    finally:
        server.stop()
