"""A signed HTTP webhook for alerts: what a SOAR engineer expects at the receiving end.

Each alert (`correlator.fusion.Alert`, or anything with `alert_id`, `activity`, `priority`,
`count` and `ocsf`) is POSTed as its OCSF Detection Finding JSON (`Content-Type:
application/json`) with these headers:

- `X-Sigmaray-Timestamp`: unix seconds when this attempt was signed (each retry is re-signed);
- `X-Sigmaray-Signature`: `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`;
- `X-Sigmaray-Alert-Id`, `X-Sigmaray-Activity` (Create/Update/Close), `X-Sigmaray-Priority` (1..4);
- `Idempotency-Key`: `<alert id>:<activity>:<count>`. The fusion engine emits an alert's Create
  at count 1 and every Update at a higher count, so the key names one state of one alert and is
  the same on every retry (and on a replay after a restart): a receiver deduplicates by it.

Receivers verify with `verify_signature(secret, timestamp, body, signature, max_age_s=300)`: it
recomputes the HMAC over the raw body bytes (before any JSON parsing) and rejects a timestamp
older (or further in the future) than `max_age_s`. Rejecting stale timestamps is the replay
protection: a captured request cannot be re-sent later; within the window the idempotency key
makes a replayed request a duplicate.

Delivery semantics:

- `submit(alert)` never sends on the caller's thread. Alerts with a priority number above
  `min_priority` (P1 is the most urgent; `min_priority=2` delivers P1 and P2) are skipped and
  counted. Others go into a bounded FIFO queue (`max_queue`). When the queue is full, `submit`
  waits up to `enqueue_timeout_s`, then hands the alert to `on_undeliverable` with reason
  "queue full" (counted as `queue_full` and `undeliverable`): never an unbounded block, never a
  silent drop.
- One sender thread takes alerts from the queue in order and finishes each one (delivered, or
  handed to `on_undeliverable`) before taking the next. That is how order is kept: an Update is
  never sent before its Create (nor a Close before the Update). The price is head-of-line
  blocking while the endpoint is down, bounded by `max_attempts` and `backoff_max_s`; the queue
  absorbs the alerts arriving meanwhile. If a Create ends up undeliverable its later Updates are
  still sent: the dead letter holds the Create.
- Retried (exponential backoff from `backoff_initial_s`, doubled per attempt, capped at
  `backoff_max_s`, with jitter between half and all of it): connection errors, timeouts, HTTP 408,
  429 and 5xx. A `Retry-After` header (seconds or an HTTP date) on 429/503 replaces the computed
  delay, capped at `backoff_max_s`. Permanent, handed over at once: every other 4xx, 3xx
  (redirects are not followed: the body is signed for this URL), a TLS certificate failure.
  After `max_attempts` attempts the alert is handed over with the last error as the reason.
- `close(timeout_s)` stops accepting alerts, lets the sender drain the queue until the timeout,
  then hands everything not delivered (the alert being retried and the queued ones) to
  `on_undeliverable` with reason "shutdown". Alerts submitted after close get reason "closed".
- `on_undeliverable(payload, headers, reason)` gets the exact body bytes, the alert headers
  (`Content-Type`, `X-Sigmaray-Alert-Id`, `-Activity`, `-Priority`, `Idempotency-Key`: no
  signature, which a re-driver computes again) and a short reason. The cluster wires it to a
  dead-letter topic. An exception from it is logged (by type) and counted, never raised. It is
  called from the sender thread, from `submit`'s caller (queue full, closed) and from `close`'s
  caller (shutdown), so it must be thread-safe (a confluent_kafka Producer's `produce` is).

The secret appears in no log line, exception text, `repr` or `stats()`; the URL is shown without
its query string or user info (which may hold tokens). Proxies are not used (http.client talks
to the URL's host directly). The wall clock is used for timestamps and backoff (this is I/O at
the edge, not event processing); `clock`, `sleep` and `rng` are injectable for tests.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import queue
import random
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import orjson

log = logging.getLogger("sigmaray.sinks.webhook")

SIGNATURE_HEADER = "X-Sigmaray-Signature"
TIMESTAMP_HEADER = "X-Sigmaray-Timestamp"
ALERT_ID_HEADER = "X-Sigmaray-Alert-Id"
ACTIVITY_HEADER = "X-Sigmaray-Activity"
PRIORITY_HEADER = "X-Sigmaray-Priority"
IDEMPOTENCY_HEADER = "Idempotency-Key"
USER_AGENT = "sigmaray-webhook/1"
_RESPONSE_READ_LIMIT = 64 * 1024  # at most this much of a response body is read, then dropped

Undeliverable = Callable[[bytes, dict[str, str], str], None]


class AlertLike(Protocol):
    """What the sink reads of an alert (`correlator.fusion.Alert` fits)."""

    @property
    def alert_id(self) -> str: ...

    @property
    def activity(self) -> str: ...

    @property
    def priority(self) -> int: ...

    @property
    def count(self) -> int: ...

    @property
    def ocsf(self) -> dict[str, Any]: ...


def _secret_bytes(secret: str | bytes) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes) or not secret:
        raise ValueError("webhook secret must be a non-empty string")
    return secret


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The `X-Sigmaray-Signature` value: `sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>`."""
    message = str(timestamp).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(_secret_bytes(secret), message, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, timestamp: str | int | None, body: bytes, header: str | None,
                     max_age_s: float = 300.0, now: float | None = None) -> bool:
    """For receivers: True when `header` (the `X-Sigmaray-Signature` value) is the HMAC of
    `timestamp` (the `X-Sigmaray-Timestamp` value) and the raw `body`, and the timestamp is within
    `max_age_s` of `now` (default: the wall clock) either way. Anything malformed is False."""
    if header is None or timestamp is None or not header.startswith("sha256="):
        return False
    try:
        stamp = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - stamp) > max_age_s:
        return False
    expected = sign(secret, stamp, body)
    return hmac.compare_digest(expected.encode("ascii"), header.strip().encode("ascii", "replace"))


def redact_url(url: str) -> str:
    """The URL without user info, query or fragment, for logs and `repr`."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    suffix = "?…" if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{suffix}"


@dataclass
class _Item:
    body: bytes
    headers: dict[str, str]  # the alert headers (no signature or timestamp)
    label: str  # idempotency key, for logs


class _Permanent(Exception):
    pass


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class _Secret:
    """Holds the key; shows nothing of it."""

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes) -> None:
        self._value = _secret_bytes(value)

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickled into a Ray object or a log record
        raise TypeError("the webhook secret is not serializable")


class WebhookSink:
    """POSTs alerts to `url`, signed with `secret`; see the module docstring for the semantics."""

    def __init__(self, url: str, secret: str | bytes, *, min_priority: int = 4, timeout_s: float = 10.0,
                 max_queue: int = 10_000, max_attempts: int = 8, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 60.0, enqueue_timeout_s: float = 5.0,
                 on_undeliverable: Undeliverable | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] | None = None,
                 rng: random.Random | None = None, ssl_context: ssl.SSLContext | None = None,
                 start: bool = True) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook url must be http:// or https:// with a host, got {redact_url(url)!r}")
        if not 1 <= int(min_priority) <= 4:
            raise ValueError(f"webhook min_priority must be 1..4, got {min_priority!r}")
        if max_queue < 1 or max_attempts < 1 or timeout_s <= 0:
            raise ValueError("webhook max_queue, max_attempts and timeout_s must be positive")
        if backoff_initial_s < 0 or backoff_max_s < backoff_initial_s or enqueue_timeout_s < 0:
            raise ValueError("webhook backoff_initial_s <= backoff_max_s and enqueue_timeout_s must be non-negative")
        self._display_url = redact_url(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._secret = _Secret(secret)
        self.min_priority = int(min_priority)
        self.timeout_s = float(timeout_s)
        self.max_attempts = int(max_attempts)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.enqueue_timeout_s = float(enqueue_timeout_s)
        self._on_undeliverable = on_undeliverable
        self._clock = clock
        self._abort = threading.Event()  # close() ran out of time: stop retrying, hand over
        self._closing = threading.Event()  # no new alerts; the sender exits once the queue is empty
        self._sleep = sleep if sleep is not None else self._abort.wait
        self._rng = rng if rng is not None else random.Random()
        self._ssl_context = ssl_context
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=int(max_queue))
        self._lock = threading.Lock()
        self._counts = {"submitted": 0, "sent": 0, "retried": 0, "failed": 0, "undeliverable": 0, "skipped": 0,
                        "queue_full": 0, "callback_errors": 0}
        self._reasons: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, name="sigmaray-webhook", daemon=True)
        if start:
            self._thread.start()

    def __repr__(self) -> str:
        return f"WebhookSink(url={self._display_url!r}, min_priority={self.min_priority}, queued={self._queue.qsize()})"

    # -- the caller's side ---------------------------------------------------------------------

    def submit(self, alert: AlertLike) -> bool:
        """Queue one alert; True when queued. False when skipped (below `min_priority`) or handed
        to `on_undeliverable` (queue full after `enqueue_timeout_s`, or the sink is closed)."""
        if int(alert.priority) > self.min_priority:
            self._count("skipped")
            return False
        item = self._item(alert)
        self._count("submitted")
        if self._closing.is_set():
            self._undeliverable(item, "closed")
            return False
        try:
            self._queue.put(item, timeout=self.enqueue_timeout_s)
        except queue.Full:
            self._count("queue_full")
            log.warning("webhook %s: queue full (%d) for %.1f s, alert %s handed to the dead letter",
                        self._display_url, self._queue.maxsize, self.enqueue_timeout_s, item.label)
            self._undeliverable(item, "queue full")
            return False
        return True

    def stats(self) -> dict[str, Any]:
        """Counts: `sent` alerts (2xx), `retried` attempts after a failure, `failed` attempts,
        `undeliverable` alerts (by reason in `undeliverable_reasons`), `skipped` below
        `min_priority`, `queue_full`, `queued` now, `callback_errors` from `on_undeliverable`."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out["undeliverable_reasons"] = dict(self._reasons)
        out["queued"] = self._queue.qsize()
        return out

    def close(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Stop accepting alerts, deliver what the queue holds within `timeout_s`, hand the rest to
        `on_undeliverable` ("shutdown"). Returns `stats()`. Calling it again is harmless."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(max(0.0, timeout_s))
            if self._thread.is_alive():
                self._abort.set()  # wakes a backoff sleep; an attempt in flight ends within timeout_s
                self._thread.join(self.timeout_s + 1.0)
                if self._thread.is_alive():
                    log.warning("webhook %s: the sender is still in a request after close(); it hands its "
                                "alert to the dead letter when that ends", self._display_url)
        self._abort.set()
        self._drain("shutdown")
        return self.stats()

    # -- the sender thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if self._abort.is_set():
                return
            try:
                item = self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            try:
                self._deliver(item)
            except Exception as exc:  # noqa: BLE001 - the sender must survive anything one alert does
                log.error("webhook %s: unexpected %s delivering %s", self._display_url, type(exc).__name__, item.label)
                self._undeliverable(item, f"internal error: {type(exc).__name__}")
            finally:
                self._queue.task_done()

    def _deliver(self, item: _Item) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                self._post(item)
            except _Permanent as exc:
                self._count("failed")
                log.warning("webhook %s: %s for %s, not retried", self._display_url, exc, item.label)
                self._undeliverable(item, str(exc))
                return
            except _Retryable as exc:
                self._count("failed")
                if attempt >= self.max_attempts:
                    log.warning("webhook %s: %s for %s after %d attempts", self._display_url, exc, item.label, attempt)
                    self._undeliverable(item, f"{exc} after {attempt} attempts")
                    return
                delay = self._delay(attempt, exc.retry_after_s)
                log.info("webhook %s: %s for %s, attempt %d of %d, retrying in %.3f s", self._display_url, exc,
                         item.label, attempt, self.max_attempts, delay)
                if self._abort.is_set():
                    self._undeliverable(item, "shutdown")
                    return
                self._sleep(delay)
                if self._abort.is_set():
                    self._undeliverable(item, "shutdown")
                    return
                self._count("retried")
                continue
            self._count("sent")
            return

    def _delay(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(max(0.0, retry_after_s), self.backoff_max_s)
        base = min(self.backoff_max_s, self.backoff_initial_s * (2 ** (attempt - 1)))
        return base / 2 + self._rng.uniform(0, base / 2)

    def _post(self, item: _Item) -> None:
        timestamp = str(int(self._clock()))
        headers = dict(item.headers)
        headers[TIMESTAMP_HEADER] = timestamp
        headers[SIGNATURE_HEADER] = sign(self._secret._value, timestamp, item.body)
        headers["User-Agent"] = USER_AGENT
        connection: http.client.HTTPConnection
        if self._https:
            context = self._ssl_context or ssl.create_default_context()
            connection = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout_s, context=context)
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
        try:
            try:
                connection.request("POST", self._path, body=item.body, headers=headers)
                response = connection.getresponse()
                response.read(_RESPONSE_READ_LIMIT)
            except ssl.SSLCertVerificationError as exc:
                raise _Permanent(f"tls verification failed: {exc.verify_message}") from None
            except TimeoutError:
                raise _Retryable("timeout") from None
            except (OSError, http.client.HTTPException) as exc:
                raise _Retryable(f"connection error: {type(exc).__name__}") from None
        finally:
            connection.close()
        status = response.status
        if 200 <= status < 300:
            return
        if status in (408, 429) or status >= 500:
            raise _Retryable(f"http {status}", self._retry_after(response.getheader("Retry-After")))
        raise _Permanent(f"http {status}")

    def _retry_after(self, value: str | None) -> float | None:
        if not value:
            return None
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        return max(0.0, when.timestamp() - self._clock())

    # -- helpers --------------------------------------------------------------------------------

    def _item(self, alert: AlertLike) -> _Item:
        body = orjson.dumps(alert.ocsf)
        key = f"{alert.alert_id}:{alert.activity}:{alert.count}"
        headers = {
            "Content-Type": "application/json",
            ALERT_ID_HEADER: str(alert.alert_id),
            ACTIVITY_HEADER: str(alert.activity),
            PRIORITY_HEADER: str(int(alert.priority)),
            IDEMPOTENCY_HEADER: key,
        }
        return _Item(body, headers, key)

    def _drain(self, reason: str) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            self._undeliverable(item, reason)
            self._queue.task_done()

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _undeliverable(self, item: _Item, reason: str) -> None:
        with self._lock:
            self._counts["undeliverable"] += 1
            key = reason.split(" after ", 1)[0]
            self._reasons[key] = self._reasons.get(key, 0) + 1
        if self._on_undeliverable is None:
            log.error("webhook %s: alert %s undeliverable (%s) and no dead letter is configured",
                      self._display_url, item.label, reason)
            return
        try:
            self._on_undeliverable(item.body, dict(item.headers), reason)
        except Exception as exc:  # noqa: BLE001 - a failing dead letter must not stop the sender
            with self._lock:
                self._counts["callback_errors"] += 1
            log.error("webhook %s: on_undeliverable raised %s for %s (%s)", self._display_url, type(exc).__name__,
                      item.label, reason)

