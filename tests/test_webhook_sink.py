"""The webhook sink against a real HTTP receiver on 127.0.0.1: signatures verify, failures are
retried until the endpoint recovers (the receiver deduplicates by Idempotency-Key and nothing is
lost, order per alert kept), permanent failures and exhausted retries reach the dead letter,
priority filtering, a full queue, close(), and the secret never shows.

Every wait is a bounded loop (count and time); backoffs are milliseconds.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cluster.sinks import WebhookSink, sign, verify_signature
from cluster.sinks.webhook import (
    ACTIVITY_HEADER,
    ALERT_ID_HEADER,
    IDEMPOTENCY_HEADER,
    PRIORITY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)
from correlator import Alert, FusionEngine
from correlator.settings import PER_RULE_ALERTING, fusion_config_from_dict

SECRET = "whsec-7Hq2-do-not-log-Zp91"


def _detection(offset: int, minute: int, host: str) -> dict[str, Any]:
    return {"kind": "sigma", "entity": host, "event_time": f"2026-11-30T10:{minute:02d}:00Z",
            "rule": {"id": "r1", "title": "Encoded PowerShell", "level": "high",
                     "tags": ["attack.execution", "attack.t1059.001"]},
            "scores": {}, "source": {"topic": "events", "partition": 0, "offset": offset},
            "event": {"Computer": host.upper() + ".corp", "User": "CORP\\alice"}}


def _alerts(hosts: int = 3, minutes: int = 4) -> list[Alert]:
    """Real fusion output: per host a Create (P3) then Updates at counts 2 and 4 (P2)."""
    fusion = FusionEngine(fusion_config_from_dict(PER_RULE_ALERTING))  # per-rule alerts: P3, then P2
    out: list[Alert] = []
    offset = 0
    for minute in range(minutes):
        for h in range(hosts):
            offset += 1
            out += fusion.process(_detection(offset, minute, f"ws-{h:02d}"))
    return out


def _key(alert: Alert) -> str:
    return f"{alert.alert_id}:{alert.activity}:{alert.count}"


class Receiver:
    """A ThreadingHTTPServer on 127.0.0.1 whose answers follow a script, then 200. It records
    every request and keeps the accepted (2xx) ones in arrival order."""

    def __init__(self, port: int = 0) -> None:
        self.script: list[tuple[int, dict[str, str], bool]] = []  # (status, headers, record as accepted anyway)
        self.requests: list[dict[str, Any]] = []
        self.default_status = 200  # once the script is used up
        self.accepted: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.port = port
        self.server: http.server.ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.holder: socket.socket | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=abc"

    def start(self) -> None:
        receiver = self
        if self.holder is not None:
            self.holder.close()
            self.holder = None

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = {"headers": dict(self.headers.items()), "body": body, "path": self.path,
                           "verified": verify_signature(SECRET, self.headers.get(TIMESTAMP_HEADER), body,
                                                        self.headers.get(SIGNATURE_HEADER), max_age_s=60)}
                with receiver.lock:
                    receiver.requests.append(request)
                    status, headers, keep = receiver.script.pop(0) if receiver.script else (receiver.default_status, {}, False)
                    if 200 <= status < 300 or keep:
                        receiver.accepted.append(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def stop(self, hold: bool = False) -> None:
        """Stop serving; with `hold`, keep the port bound but not listening (connections are
        refused and no other test takes the port) until `start()`."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(5)
        if hold:
            self.holder = socket.socket()
            self.holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.holder.bind(("127.0.0.1", self.port))

    def keys(self) -> list[str]:
        with self.lock:
            return [r["headers"][IDEMPOTENCY_HEADER] for r in self.accepted]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.stop()


def _wait(predicate: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    for _ in range(10_000):
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return bool(predicate())


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound but not listening: connecting is refused, and nothing else can take it meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def _sink(url: str, dead: list[tuple[bytes, dict[str, str], str]], **kwargs: Any) -> WebhookSink:
    options: dict[str, Any] = {"timeout_s": 2.0, "max_attempts": 5, "backoff_initial_s": 0.002, "backoff_max_s": 0.02,
                               "enqueue_timeout_s": 0.05}
    options.update(kwargs)
    return WebhookSink(url, SECRET, on_undeliverable=lambda body, headers, reason: dead.append((body, headers, reason)),
                       **options)


def test_the_signature_verifies_and_a_wrong_secret_a_stale_time_or_a_changed_body_do_not() -> None:
    body = b'{"class_uid":2004}'
    header = sign(SECRET, 1_800_000_000, body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature(SECRET, "1800000000", body, header, max_age_s=300, now=1_800_000_100)
    assert not verify_signature("another-secret", "1800000000", body, header, max_age_s=300, now=1_800_000_100)
    assert not verify_signature(SECRET, "1800000000", body, header, max_age_s=300, now=1_800_000_301)  # stale
    assert not verify_signature(SECRET, "1800000000", body, header, max_age_s=300, now=1_799_999_699)  # future
    assert not verify_signature(SECRET, "1800000000", body + b" ", header, max_age_s=300, now=1_800_000_000)
    assert not verify_signature(SECRET, "1800000001", body, header, max_age_s=300, now=1_800_000_000)
    assert not verify_signature(SECRET, None, body, header)
    assert not verify_signature(SECRET, "x", body, header)
    assert not verify_signature(SECRET, "1800000000", body, "sha1=" + header[7:], now=1_800_000_000)


def test_a_delivered_alert_is_its_ocsf_json_with_signed_headers_the_receiver_verifies(receiver: Receiver) -> None:
    dead: list[tuple[bytes, dict[str, str], str]] = []
    alert = _alerts(hosts=1, minutes=1)[0]
    sink = _sink(receiver.url, dead)
    assert sink.submit(alert)
    stats = sink.close(5)
    assert stats["sent"] == 1 and stats["undeliverable"] == 0 and not dead
    (request,) = receiver.accepted
    assert request["verified"]
    assert request["path"] == "/hook?token=abc"
    headers = request["headers"]
    assert headers["Content-Type"] == "application/json"
    assert headers[ALERT_ID_HEADER] == alert.alert_id
    assert headers[ACTIVITY_HEADER] == "Create"
    assert headers[PRIORITY_HEADER] == str(alert.priority)
    assert headers[IDEMPOTENCY_HEADER] == _key(alert)
    assert abs(int(headers[TIMESTAMP_HEADER]) - time.time()) < 60
    assert json.loads(request["body"]) == json.loads(json.dumps(alert.ocsf))
    assert json.loads(request["body"])["class_uid"] == 2004


def test_failures_then_an_outage_then_recovery_deliver_every_alert_once_per_key_in_order(receiver: Receiver) -> None:
    alerts = _alerts()
    assert {a.activity for a in alerts} == {"Create", "Update"} and len(alerts) == 9
    dead: list[tuple[bytes, dict[str, str], str]] = []
    # 500 and 503 (with Retry-After), and one 503 after the receiver stored it: the retry repeats that POST.
    receiver.script = [(500, {}, False), (503, {"Retry-After": "0"}, False), (500, {}, False),
                       (503, {}, True), (503, {"Retry-After": "0"}, False)]
    receiver.default_status = 503  # then 503 until the receiver goes down
    sink = _sink(receiver.url, dead, max_attempts=1000, backoff_max_s=0.03)
    for alert in alerts:
        assert sink.submit(alert)
    assert _wait(lambda: len(receiver.requests) >= 8)
    receiver.stop(hold=True)  # connection refused for a while
    failed = sink.stats()["failed"]
    assert _wait(lambda: sink.stats()["failed"] >= failed + 3)
    time.sleep(0.1)
    receiver.default_status = 200
    receiver.start()
    stats = sink.close(20)
    assert not dead, [reason for _, _, reason in dead]
    keys = receiver.keys()
    assert set(keys) == {_key(a) for a in alerts}  # nothing lost
    assert len(keys) > len(set(keys))  # the stored-then-503 one came twice: the key is what dedups
    assert all(r["verified"] for r in receiver.requests)
    first_seen = list(dict.fromkeys(keys))
    assert first_seen == [_key(a) for a in alerts]  # one sender, FIFO: submission order, so per alert id too
    for alert_id in {a.alert_id for a in alerts}:
        mine = [k for k in first_seen if k.startswith(alert_id + ":")]
        assert mine[0].split(":")[1] == "Create" and [int(k.split(":")[2]) for k in mine] == [1, 2, 4]
    assert stats["sent"] == len(alerts) and stats["undeliverable"] == 0 and stats["queued"] == 0
    assert stats["retried"] == stats["failed"] >= 11


def test_a_400_is_undeliverable_at_once_and_exhausted_retries_are_undeliverable(receiver: Receiver) -> None:
    alerts = _alerts(hosts=2, minutes=1)
    dead: list[tuple[bytes, dict[str, str], str]] = []
    receiver.script = [(400, {}, False)] + [(503, {}, False)] * 3
    sink = _sink(receiver.url, dead, max_attempts=3)
    for alert in alerts:
        sink.submit(alert)
    stats = sink.close(10)
    assert [reason for _, _, reason in dead] == ["http 400", "http 503 after 3 attempts"]
    assert len(receiver.requests) == 4  # 1 for the 400, 3 for the 503s
    body, headers, _ = dead[0]
    assert json.loads(body)["class_uid"] == 2004
    assert headers[IDEMPOTENCY_HEADER] == _key(alerts[0]) and SIGNATURE_HEADER not in headers
    assert stats["undeliverable"] == 2 and stats["sent"] == 0 and stats["failed"] == 4 and stats["retried"] == 2
    assert stats["undeliverable_reasons"] == {"http 400": 1, "http 503": 1}


def test_a_refused_connection_is_retried_then_undeliverable(refused_port: int) -> None:
    dead: list[tuple[bytes, dict[str, str], str]] = []
    sink = _sink(f"http://127.0.0.1:{refused_port}/hook", dead, max_attempts=3)
    sink.submit(_alerts(hosts=1, minutes=1)[0])
    sink.close(10)
    assert [reason for _, _, reason in dead] == ["connection error: ConnectionRefusedError after 3 attempts"]


def test_alerts_below_min_priority_are_skipped_and_counted(receiver: Receiver) -> None:
    alerts = _alerts()  # P3 and P2 (a Create starts at P3; risk raises later Updates)
    dead: list[tuple[bytes, dict[str, str], str]] = []
    sink = _sink(receiver.url, dead, min_priority=2)
    queued = [sink.submit(a) for a in alerts]
    stats = sink.close(10)
    assert queued == [a.priority <= 2 for a in alerts]
    assert set(receiver.keys()) == {_key(a) for a in alerts if a.priority <= 2}
    urgent_count = sum(a.priority <= 2 for a in alerts)
    assert 0 < urgent_count < len(alerts)
    assert stats["skipped"] == len(alerts) - urgent_count and stats["sent"] == urgent_count and not dead
    urgent = dataclasses.replace(alerts[0], priority=1)
    only_p1 = _sink(receiver.url, dead, min_priority=1)
    assert not only_p1.submit(alerts[-1]) and only_p1.submit(urgent)
    assert only_p1.close(10)["sent"] == 1
    assert receiver.keys()[-1] == _key(urgent) and receiver.accepted[-1]["headers"][PRIORITY_HEADER] == "1"


def test_a_full_queue_hands_the_alert_over_after_a_bounded_wait_and_close_hands_over_the_rest(receiver: Receiver) -> None:
    alerts = _alerts(hosts=3, minutes=1)
    dead: list[tuple[bytes, dict[str, str], str]] = []
    sink = _sink(receiver.url, dead, max_queue=2, enqueue_timeout_s=0.05, start=False)  # the sender never runs
    began = time.monotonic()
    assert [sink.submit(a) for a in alerts] == [True, True, False]
    assert time.monotonic() - began < 5  # 0.05 s in fact: bounded, not forever
    assert dead[0][2] == "queue full" and dead[0][1][IDEMPOTENCY_HEADER] == _key(alerts[2])
    assert sink.stats()["queued"] == 2 and sink.stats()["queue_full"] == 1
    stats = sink.close(0.1)
    assert [reason for _, _, reason in dead] == ["queue full", "shutdown", "shutdown"]
    assert [h[IDEMPOTENCY_HEADER] for _, h, _ in dead[1:]] == [_key(a) for a in alerts[:2]]
    assert stats["undeliverable"] == 3 and stats["queued"] == 0 and not receiver.requests
    assert not sink.submit(alerts[0]) and dead[-1][2] == "closed"


def test_close_while_the_endpoint_is_down_hands_the_retried_and_the_queued_alerts_over(refused_port: int) -> None:
    alerts = _alerts(hosts=3, minutes=1)
    dead: list[tuple[bytes, dict[str, str], str]] = []
    sink = _sink(f"http://127.0.0.1:{refused_port}/hook", dead, max_attempts=10_000, backoff_initial_s=0.01,
                 backoff_max_s=0.05)
    for alert in alerts:
        assert sink.submit(alert)
    assert _wait(lambda: sink.stats()["failed"] >= 2)
    began = time.monotonic()
    stats = sink.close(0.2)
    assert time.monotonic() - began < 8  # 0.2 s, then at most the request timeout and a second
    assert sorted(h[IDEMPOTENCY_HEADER] for _, h, _ in dead) == sorted(_key(a) for a in alerts)
    assert {reason for _, _, reason in dead} == {"shutdown"}
    assert stats["undeliverable"] == 3 and stats["sent"] == 0 and stats["queued"] == 0


def test_the_secret_is_in_no_log_line_stats_repr_or_error(receiver: Receiver, refused_port: int,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sigmaray")
    dead: list[tuple[bytes, dict[str, str], str]] = []
    receiver.script = [(503, {}, False), (503, {}, False), (401, {}, False)]
    sink = _sink(receiver.url, dead, max_attempts=2)

    def failing_dead_letter(body: bytes, headers: dict[str, str], reason: str) -> None:
        raise RuntimeError("dead letter down")

    noisy = WebhookSink(f"http://user:{SECRET}@127.0.0.1:{refused_port}/h?key={SECRET}", SECRET, max_attempts=1,
                        backoff_initial_s=0.001, backoff_max_s=0.001, on_undeliverable=failing_dead_letter)
    for alert in _alerts(hosts=2, minutes=1):
        sink.submit(alert)
        noisy.submit(alert)
    stats = sink.close(10)
    noisy_stats = noisy.close(10)
    assert [reason for _, _, reason in dead] == ["http 503 after 2 attempts", "http 401"]
    assert noisy_stats["callback_errors"] == 2
    with pytest.raises(ValueError) as bad_url:
        WebhookSink(f"ftp://u:{SECRET}@host/x", SECRET)
    with pytest.raises(ValueError) as bad_secret:
        WebhookSink(receiver.url, "")
    shown = [caplog.text, repr(sink), str(stats), repr(noisy), str(noisy_stats), str(bad_url.value),
             str(bad_secret.value), str(dead), repr(vars(sink))]
    assert "webhook" in caplog.text and "attempt" in caplog.text  # the logs did say something
    for text in shown:
        assert SECRET not in text
