"""Writing an analyst's verdict to the verdicts topic the correlator consumes (key = alert id,
value = `correlator.records.Verdict.to_json()`), acknowledged before the page says it is recorded."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

from cluster.config import ClusterConfig
from cluster.console.redact import Redactor
from cluster.kafka import client as kafka_client
from correlator.records import VERDICTS, Verdict

__all__ = ["KafkaVerdicts", "VerdictError", "make_verdict"]


class VerdictError(Exception):
    """The verdict was not recorded; the text (already free of credentials) says why."""


def make_verdict(alert_id: str, verdict: str, reason: str, analyst: str, suppress: bool,
                 suppress_hours: float | None) -> Verdict:
    """A new Verdict, stamped now (UTC) with a fresh verdict id; ValueError for a bad one."""
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r} (expected one of {', '.join(VERDICTS)})")
    if suppress_hours is not None and not 0 < suppress_hours <= 24 * 365:
        raise ValueError("suppress hours must be between 0 and 8760")
    time = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return Verdict(alert_id=alert_id, verdict=verdict, verdict_id=str(uuid.uuid4()), reason=reason[:2000],
                   analyst=analyst[:200], time=time, suppress=suppress and verdict == "fp",
                   suppress_hours=suppress_hours if verdict == "fp" else None)


class KafkaVerdicts:
    """`send(verdict)`: produce and wait for the broker's acknowledgement (VerdictError otherwise)."""

    def __init__(self, config: ClusterConfig, timeout_s: float = 10.0) -> None:
        self.config = config
        self.topic = config.correlator.verdicts_topic
        self.timeout_s = timeout_s
        self.redact = Redactor.from_config(config)
        self._producer: kafka_client.Producer | None = None
        self._lock = threading.Lock()

    def send(self, verdict: Verdict) -> None:
        failures: list[str] = []

        def delivered(error: object, _message: object) -> None:
            if error is not None:
                failures.append(str(error))

        with self._lock:  # one producer, made on first use: a console that gives no verdict needs none
            try:
                if self._producer is None:
                    self._producer = kafka_client.producer(self.config.kafka, **{"enable.idempotence": True})
                self._producer.produce(self.topic, verdict.to_json(), key=verdict.alert_id.encode(), on_delivery=delivered)
                left = self._producer.flush(self.timeout_s)
            except Exception as error:  # noqa: BLE001 - BufferError, KafkaException: shown, not raised raw
                raise VerdictError(self.redact(f"the verdict was not written: {error}")) from None
        if failures:
            raise VerdictError(self.redact(f"the broker refused the verdict: {failures[0]}"))
        if left:
            raise VerdictError(f"the broker did not acknowledge the verdict within {self.timeout_s:g} s (it may still arrive)")
