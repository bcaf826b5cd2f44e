"""The cluster page's data: the supervisor's status (what `sigmaray status` prints) made into rows,
with events/s from successive samples. The console works without a cluster: no status function,
or one that fails, is "no cluster connected" with the reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cluster.console.redact import Redactor

__all__ = ["ClusterView", "CorrelatorRow", "WorkerRow", "correlator_rows", "worker_rows"]

StatusSource = Callable[[], dict[str, Any]]


@dataclass(slots=True)
class WorkerRow:
    worker: str
    events_in: int = 0
    events_per_s: float | None = None
    detections_out: int = 0
    anomalies_out: int = 0
    dead_letters: int = 0
    dead_letters_by_stage: dict[str, int] = field(default_factory=dict)
    lag: int = 0
    last_batch_ms: float = 0.0
    partitions: list[str] = field(default_factory=list)
    ruleset_version: str = ""
    model: str = ""
    error: str = ""
    degraded_rules: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class CorrelatorRow:
    """A Correlator actor's row (`status()["correlators"]`)."""

    worker: str
    detections_in: int = 0
    alerts_out: int = 0
    alerts_by_priority: dict[str, int] = field(default_factory=dict)
    correlations_out: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    lag: int = 0
    partitions: list[str] = field(default_factory=list)
    ruleset_version: str = ""
    error: str = ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def worker_rows(status: dict[str, Any], rates: dict[str, float] | None = None) -> list[WorkerRow]:
    """The supervisor's `status()["workers"]` as rows (a worker that did not answer keeps its error)."""
    rows = []
    for raw in status.get("workers") or []:
        if not isinstance(raw, dict):
            continue
        models: dict[str, Any] = raw["models"] if isinstance(raw.get("models"), dict) else {}
        lag: dict[str, Any] = raw["lag"] if isinstance(raw.get("lag"), dict) else {}
        name = str(raw.get("worker", "?"))
        rows.append(WorkerRow(
            worker=name, events_in=_int(raw.get("events_in")), events_per_s=(rates or {}).get(name),
            detections_out=_int(raw.get("detections_out")), anomalies_out=_int(raw.get("anomalies_out")),
            dead_letters=_int(raw.get("dead_letters")),
            dead_letters_by_stage={str(k): _int(v) for k, v in (raw.get("dead_letters_by_stage") or {}).items()},
            lag=sum(_int(v) for v in lag.values()), last_batch_ms=float(raw.get("last_batch_ms") or 0.0),
            partitions=[str(p) for p in raw.get("partitions") or []], ruleset_version=str(raw.get("ruleset_version") or ""),
            model=str(models.get("model") or ""), error=str(raw.get("error") or raw.get("last_error") or ""),
            degraded_rules={str(k): str(v) for k, v in (raw.get("degraded_rules") or {}).items()}))
    return rows


def correlator_rows(status: dict[str, Any]) -> list[CorrelatorRow]:
    rows = []
    for raw in status.get("correlators") or []:
        if not isinstance(raw, dict):
            continue
        lag: dict[str, Any] = raw["lag"] if isinstance(raw.get("lag"), dict) else {}
        by_priority: dict[str, Any] = raw["alerts_by_priority"] if isinstance(raw.get("alerts_by_priority"), dict) else {}
        verdicts: dict[str, Any] = raw["verdicts"] if isinstance(raw.get("verdicts"), dict) else {}
        rows.append(CorrelatorRow(
            worker=str(raw.get("worker", "?")), detections_in=_int(raw.get("detections_in")),
            alerts_out=_int(raw.get("alerts_out")), alerts_by_priority={str(k): _int(v) for k, v in by_priority.items()},
            correlations_out=_int(raw.get("correlations_out")), verdicts={str(k): _int(v) for k, v in verdicts.items()},
            dead_letters=_int(raw.get("dead_letters")), lag=sum(_int(v) for v in lag.values()),
            partitions=[str(p) for p in raw.get("partitions") or []], ruleset_version=str(raw.get("ruleset_version") or ""),
            error=str(raw.get("error") or raw.get("last_error") or "")))
    return rows


class ClusterView:
    """Samples the status at most every `min_interval_s` (pages and live updates share a sample)."""

    def __init__(self, source: StatusSource | None, redact: Redactor | None = None, timeout_s: float = 10,
                 min_interval_s: float = 2.0) -> None:
        self.source = source
        self.redact = redact or Redactor()
        self.timeout_s = timeout_s
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._sample: tuple[float, dict[str, Any] | None, str] | None = None  # (monotonic, status, error)
        self._previous: dict[str, tuple[float, int]] = {}  # worker -> (monotonic, events_in)
        self._rates: dict[str, float] = {}

    def snapshot(self) -> dict[str, Any]:
        """{"connected": bool, "error": str, "workers": [WorkerRow], "restarts", "last_error", totals}."""
        with self._lock:
            now = time.monotonic()
            if self._sample is None or now - self._sample[0] >= self.min_interval_s:
                self._sample = (now, *self._read())
                if self._sample[1] is not None:
                    self._update_rates(now, self._sample[1])
            _, status, error = self._sample
            rates = dict(self._rates)
        if status is None:
            return {"connected": False, "error": error, "workers": [], "correlators": [], "totals": {}}
        rows = worker_rows(status, rates)
        known = [row.events_per_s for row in rows if row.events_per_s is not None]
        totals = {"workers": len(rows), "partitions": sum(len(row.partitions) for row in rows),
                  "events_in": sum(row.events_in for row in rows), "events_per_s": round(sum(known), 1) if known else None,
                  "lag": sum(row.lag for row in rows), "dead_letters": sum(row.dead_letters for row in rows),
                  "rulesets": sorted({row.ruleset_version for row in rows if row.ruleset_version}),
                  "models": sorted({row.model for row in rows if row.model})}
        correlators = correlator_rows(status)
        for row in correlators:
            row.error = self.redact(row.error)
        for worker in rows:
            worker.error = self.redact(worker.error)
        totals["correlator_lag"] = sum(row.lag for row in correlators)
        totals["alerts_out"] = sum(row.alerts_out for row in correlators)
        return {"connected": True, "error": "", "workers": rows, "correlators": correlators, "totals": totals,
                "restarts": _int(status.get("restarts")), "last_error": self.redact(str(status.get("last_error") or ""))}

    def _read(self) -> tuple[dict[str, Any] | None, str]:
        if self.source is None:
            return None, "no cluster connected (the console reads Kafka only: start it with `sigmaray run`, or pass --address)"
        try:
            return dict(self.source()), ""
        except Exception as error:  # noqa: BLE001 - a stopped supervisor is a state to show, not a crash
            return None, self.redact(f"no cluster connected: {type(error).__name__}: {error}")[:500]

    def _update_rates(self, now: float, status: dict[str, Any]) -> None:
        for row in worker_rows(status):
            before = self._previous.get(row.worker)
            if before is not None and now > before[0] and row.events_in >= before[1]:
                self._rates[row.worker] = round((row.events_in - before[1]) / (now - before[0]), 1)
            self._previous[row.worker] = (now, row.events_in)
