"""The Kafka reader thread: alerts and verdicts topics -> ConsoleState.

The console reads both topics from the beginning under a group id of its own that commits
nothing, so every console (and every restart) rebuilds the whole picture from the topics, and it
never moves the correlator's offsets. Consumers come from `cluster.kafka.client` (the one place
clients are made), so a secured cluster's `kafka.client` settings apply.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from cluster.config import ClusterConfig
from cluster.console.redact import Redactor
from cluster.console.state import ConsoleState
from cluster.kafka import client as kafka_client

__all__ = ["AlertFeed", "SharedState"]


@dataclass
class SharedState:
    """The state and the lock the feed thread and the web handlers share."""

    state: ConsoleState = field(default_factory=ConsoleState)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, func: Callable[[ConsoleState], Any]) -> Any:
        with self.lock:
            return func(self.state)


class AlertFeed:
    """Reads the alerts and verdicts topics into `shared` until `stop()`."""

    def __init__(self, config: ClusterConfig, shared: SharedState, poll_s: float = 0.5) -> None:
        self.config = config
        self.shared = shared
        self.poll_s = poll_s
        self.topics = [config.correlator.alerts_topic, config.correlator.verdicts_topic]
        self.redact = Redactor.from_config(config)
        self.counts: Counter[str] = Counter()
        self.last_error = ""
        self.last_record_s: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sigmaray-console-feed", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        return {"topics": list(self.topics), "counts": dict(self.counts), "last_error": self.last_error,
                "seconds_since_record": None if self.last_record_s is None else round(time.monotonic() - self.last_record_s, 1),
                "running": bool(self._thread and self._thread.is_alive())}

    def _run(self) -> None:
        # Outer loop: a consumer that fails to build (broker down at start) is built again.
        while not self._stop.is_set():
            try:
                consumer = kafka_client.consumer(
                    self.config.kafka, f"{self.config.kafka.group_id}-console-{uuid.uuid4().hex[:12]}",
                    **{"enable.auto.commit": False, "auto.offset.reset": "earliest",
                       # topics the correlator creates after the console started are found soon
                       "topic.metadata.refresh.interval.ms": 5000})
            except Exception as error:  # noqa: BLE001 - a bad setting or no broker: report, retry
                self.last_error = self.redact(f"consumer: {error}")
                self._stop.wait(5)
                continue
            try:
                consumer.subscribe(self.topics)
                self._consume(consumer)
            finally:
                consumer.close()

    def _consume(self, consumer: Any) -> None:
        alerts_topic = self.config.correlator.alerts_topic
        while not self._stop.is_set():
            messages = consumer.consume(500, self.poll_s)
            if not messages:
                continue
            decoded: list[tuple[bool, Any]] = []
            for message in messages:
                error = message.error()
                if error is not None:
                    if not error.retriable() and "UNKNOWN_TOPIC" not in error.name():
                        self.last_error = self.redact(f"{message.topic()}: {error.str()}")
                    self.counts["errors"] += 1
                    continue
                try:
                    value = orjson.loads(message.value() or b"null")
                except orjson.JSONDecodeError:
                    self.counts["undecodable"] += 1
                    continue
                decoded.append((message.topic() == alerts_topic, value))
            with self.shared.lock:  # one lock per batch: the pages wait at most one batch
                for is_alert, value in decoded:
                    if is_alert:
                        self.shared.state.apply_alert(value)
                    else:
                        self.shared.state.apply_verdict(value)
            self.counts["records"] += len(decoded)
            self.last_record_s = time.monotonic()
            self.last_error = ""
