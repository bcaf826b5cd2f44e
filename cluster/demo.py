"""The demo as a library function: the development broker, a local Ray, the cluster with the
project's rules, and a live Windows event stream with attacks; detections shown as they arrive.

`sigmaray demo` wraps it; a notebook can call `run_demo(events=2000, rate=0)` and get the summary.
Kafka and Ray are reached through their packages (cluster.kafka, cluster.ray).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import orjson

from cluster.config import config_from_dict
from cluster.console.server import start_console
from cluster.kafka import client as kafka
from cluster.kafka import dev_broker
from cluster.ray.connect import SupervisorHandle, init_local_ray, is_connected, shutdown
from correlator.summary import AlertRecord, alert_line, decode_alert
from detectors.shipped import shipped_rules_path
from models.datasets.generator import generate

DEFAULT_OTRF = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "otrf"


def run_demo(events: int = 20000, rate: float = 2000, seconds: float = 0, attack_share: float = 0.02,
             shared: Path | None = DEFAULT_OTRF, seed: int = 0, keep: bool = False, port: int | None = None,
             data_dir: str | None = None, out: TextIO | None = None, console_port: int | None = None) -> dict[str, Any]:
    """Runs the demo; returns the summary (also printed). `out` receives the live lines."""
    out = out or sys.stdout
    broker = dev_broker.up(data_dir, port or dev_broker.DEFAULT_PORT)
    bootstrap = broker.bootstrap
    run = uuid.uuid4().hex[:6]
    topics = {"in": f"sigmaray-demo-{run}-events", "out": f"sigmaray-demo-{run}-detections", "dlq": f"sigmaray-demo-{run}-dead",
              "alerts": f"sigmaray-demo-{run}-alerts", "verdicts": f"sigmaray-demo-{run}-verdicts",
              "repartition": f"sigmaray-demo-{run}-repartition", "alerts_dlq": f"sigmaray-demo-{run}-alerts-dead"}
    kafka.create_topics(bootstrap, {topics["in"]: 4, topics["out"]: 2, topics["dlq"]: 1}, exist_ok=False)
    otrf = shared if shared and Path(shared).is_dir() else None
    stream = list(generate(events, seed, attack_share, otrf, attacks="auto"))
    group = f"sigmaray-demo-{run}"
    rules = shipped_rules_path()
    config = config_from_dict({
        "kafka": {"bootstrap_servers": bootstrap, "input_topics": [topics["in"]], "detections_topic": topics["out"],
                  "dead_letter_topic": topics["dlq"], "group_id": group},
        "rules": {"paths": [str(rules)]},
        # the demo's model state lives and dies with its topics
        "models": {"checkpoint_url": str(Path(tempfile.gettempdir()) / f"sigmaray-demo-{run}")},
        "workers": 2,
        "correlator": {"alerts_topic": topics["alerts"], "verdicts_topic": topics["verdicts"],
                       "repartition_topic": topics["repartition"], "alerts_dead_letter_topic": topics["alerts_dlq"]},
        **({"console": {"port": console_port}} if console_port is not None else {}),
    })
    started_ray = not is_connected()
    if started_ray:
        init_local_ray(config.ray.host, include_dashboard=False, logging_level="ERROR", namespace=f"sigmaray-demo-{run}")
    print(f"sigmaray demo: broker {bootstrap}, Ray up, starting 2 workers and a correlator with the rules in {rules} ...",
          file=out)
    supervisor, _workers = SupervisorHandle.start(config)
    console = start_console(config, status=lambda: supervisor.status(timeout=10), out=out)
    shown: dict[str, int] = {}  # alert id -> the highest priority it reached (1 = P1)
    began = time.monotonic()

    def produce() -> None:
        producer = kafka.producer(bootstrap, **{"linger.ms": 5})
        for number, event in enumerate(stream):
            if rate:
                delay = number / rate - (time.monotonic() - began)
                if delay > 0:
                    time.sleep(delay)
            producer.produce(topics["in"], orjson.dumps(event), key=event["Computer"].encode())
            producer.poll(0)
        producer.flush(60)

    producer_thread = threading.Thread(target=produce, daemon=True)
    producer_thread.start()
    # The viewer reads the detections (to count them) and the correlator's alerts (to show them):
    # the demo shows prioritized alerts, not every raw detection.
    viewer = kafka.consumer(bootstrap, f"{group}-viewer", **{"auto.offset.reset": "earliest"})
    viewer.subscribe([topics["out"], topics["alerts"]])
    by_rule: Counter[str] = Counter()
    seen: list[dict[str, Any]] = []
    quiet_since = time.monotonic()
    try:
        while True:
            message = viewer.poll(0.3)
            if message is not None and not message.error():
                value = message.value()
                assert value is not None  # a detection or an alert, never a tombstone
                quiet_since = time.monotonic()
                if message.topic() == topics["alerts"]:
                    try:
                        _show(decode_alert(value, message.headers()), shown, out)
                    except ValueError as error:
                        print(f"sigmaray demo: not an alert: {error}", file=out)
                    continue
                detection = orjson.loads(value)
                if detection.get("kind") == "correlation":
                    continue  # a correlation hit on its way to its entity's owner
                seen.append(detection)
                by_rule[detection["rule"]["title"]] += 1
            if seconds and time.monotonic() - began > seconds:
                break
            if not producer_thread.is_alive() and time.monotonic() - quiet_since > 3 \
                    and kafka.committed_total(bootstrap, group, topics["in"], 4) >= len(stream) \
                    and _correlated(supervisor):
                break
    finally:
        viewer.close()
        if console is not None:
            console.stop()
        status = supervisor.status(timeout=60)
        supervisor.shutdown(timeout=120)
        supervisor.kill()
        if started_ray:
            shutdown()
        if not keep:
            kafka.delete_topics(bootstrap, list(topics.values()))
            shutil.rmtree(Path(tempfile.gettempdir()) / f"sigmaray-demo-{run}", ignore_errors=True)
    summary = {
        "events": len(stream),
        "processed": sum(row.get("events_in", 0) for row in status["workers"]),
        "detections": len(seen),
        "by_rule": dict(by_rule.most_common()),
        "seconds": round(time.monotonic() - began, 1),
        "topics": topics,
        "detected_event_ids": sorted(d["event"]["sigmaray_event_id"] + "|" + d["rule"]["id"] for d in seen
                                     if d["kind"] == "sigma"),
        "anomalies": sum(1 for d in seen if d["kind"] == "anomaly"),
        "events_list": stream,
        "alerts": {f"P{p}": sum(1 for best in shown.values() if best == p) for p in (1, 2, 3, 4)},
    }
    print(f"\nsigmaray demo: {summary['events']} events sent, {summary['processed']} processed, "
          f"{summary['detections']} detections in {summary['seconds']}s "
          f"({summary['anomalies']} of them entity anomalies from the models)", file=out)
    by_priority = ", ".join(f"{label} {count}" for label, count in summary["alerts"].items())
    print(f"sigmaray demo: {summary['events']} events → {summary['detections']} detections → "
          f"{len(shown)} alerts ({by_priority})", file=out)
    for title, count in by_rule.most_common():
        print(f"  {count:5d}  {title}", file=out)
    return summary


def _correlated(supervisor: SupervisorHandle) -> bool:
    """The correlators have read every detection (their lag, updated every few seconds, is 0)."""
    rows = supervisor.status(timeout=30).get("correlators") or []
    return bool(rows) and all(row.get("lag") and sum(row["lag"].values()) == 0 for row in rows)


def _show(alert: AlertRecord, shown: dict[str, int], out: TextIO) -> None:
    """One line per new or raised alert (`sigmaray alerts tail`'s line). Each alert is counted
    once in the summary, at the highest priority it reached."""
    if alert.activity == "Close":
        return
    print(alert_line(alert), file=out)
    shown[alert.alert_id] = min(shown.get(alert.alert_id, alert.priority), alert.priority)

