"""The operator's commands against a running cluster: `sigmaray run` in its own process, then
`sigmaray status`, `sigmaray scale` and `sigmaray models promote` from others, and the
Prometheus metrics endpoint of the Ray node."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from models.datasets.generator import generate
from tests.conftest import OTRF, ROOT

SIGMARAY = [sys.executable, "-m", "cluster.cli"]
pytestmark = pytest.mark.ray  # `sigmaray run` starts a Ray of its own



def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SIGMARAY, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_run_status_scale_promote_and_metrics_of_a_running_cluster(broker: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    topics = {"in": f"events-{run}", "out": f"detections-{run}", "dlq": f"dead-{run}"}
    admin = AdminClient({"bootstrap.servers": broker})
    for future in admin.create_topics([NewTopic(topics["in"], 3, 1), NewTopic(topics["out"], 1, 1),
                                       NewTopic(topics["dlq"], 1, 1)]).values():
        future.result(30)
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": broker, "input_topics": [topics["in"]], "detections_topic": topics["out"],
                  "dead_letter_topic": topics["dlq"], "group_id": f"sigmaray-{run}"},
        "rules": {"paths": [str(ROOT / "rules")]},
        "models": {"checkpoint_url": str(tmp_path / "checkpoints"), "shadow": "sad-rate"},
        "workers": 2,
        "correlator": {"alerts_topic": f"alerts-{run}", "verdicts_topic": f"verdicts-{run}",
                       "repartition_topic": f"repartition-{run}", "alerts_dead_letter_topic": f"alerts-dead-{run}"},
        "console": {"port": 0},  # any free port: never the one a person's demo uses
    }))
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen([*SIGMARAY, "run", "--config", str(config), "--for-seconds", "600"],
                               stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT)
    try:
        deadline = time.monotonic() + 180
        address = metrics_url = None
        while time.monotonic() < deadline and address is None:
            time.sleep(1)
            found = re.search(r"Ray at (\S+) .*Prometheus metrics at (\S+)", (tmp_path / "run.log").read_text())
            if found:
                address, metrics_url = found.groups()
            assert process.poll() is None, (tmp_path / "run.log").read_text()
        assert address and metrics_url, (tmp_path / "run.log").read_text()
        console = None
        deadline = time.monotonic() + 60  # printed just after the Ray line, once the console listens
        while console is None and time.monotonic() < deadline:
            console = re.search(r"console at (http://\S+)", (tmp_path / "run.log").read_text())
            time.sleep(0.5)
        assert console, (tmp_path / "run.log").read_text()
        assert urllib.request.urlopen(console.group(1).rstrip("/") + "/login", timeout=10).status == 200

        events = list(generate(3_000, seed=5, attack_share=0.03, otrf_root=OTRF))
        producer = Producer({"bootstrap.servers": broker})
        for event in events:
            producer.produce(topics["in"], orjson.dumps(event), key=event["Computer"].encode())
        assert producer.flush(60) == 0

        def status() -> dict[str, Any]:
            result = _cli("status", "--address", address, "--json")
            assert result.returncode == 0, result.stderr
            return json.loads(result.stdout)

        deadline = time.monotonic() + 180
        while sum(r.get("events_in", 0) for r in status()["workers"]) < len(events) and time.monotonic() < deadline:
            time.sleep(2)
        current = status()
        assert sum(r["events_in"] for r in current["workers"]) == len(events)
        assert sum(r["detections_out"] for r in current["workers"]) > 0
        assert all(r["models"]["model"] == "hst@1" and r["models"]["shadow"] == "sad-rate@2" for r in current["workers"])
        # The correlator (one by default) read every detection, created its topics and alerted.
        deadline = time.monotonic() + 120
        detections = sum(r["detections_out"] + r["anomalies_out"] for r in current["workers"])
        while time.monotonic() < deadline and \
                sum(r.get("detections_in", 0) for r in status()["correlators"]) < detections:
            time.sleep(2)
        correlators = status()["correlators"]
        assert [r["worker"] for r in correlators] == ["correlator-3"]
        assert sum(r["detections_in"] for r in correlators) >= detections
        assert sum(r["alerts_out"] for r in correlators) > 0
        assert f"repartition-{run}" in str(correlators[0]["partitions"])

        table = _cli("status")  # no --address: `run` wrote where its own Ray is
        assert table.returncode == 0, table.stderr
        assert "worker-1" in table.stdout and "hst@1" in table.stdout

        scaled = _cli("scale", "3", "--correlators", "2", "--address", address)
        assert scaled.returncode == 0, scaled.stderr
        assert "5 actors" in scaled.stdout
        owners = [p for r in status()["workers"] for p in r["partitions"]]
        assert sorted(owners) == sorted(f"{topics['in']}[{p}]" for p in range(3))  # one owner each
        owned = [p for r in status()["correlators"] for p in r["partitions"]]
        assert sorted(owned) == sorted([f"{topics['out']}[0]", f"repartition-{run}[0]"])  # one owner each

        promoted = _cli("models", "promote", "--address", address, "--json")
        assert promoted.returncode == 0, promoted.stderr
        assert {w["model"] for w in json.loads(promoted.stdout)["workers"].values() if w["partitions"]} == {"sad-rate@2"}
        refused = _cli("models", "promote", "no-such-model", "--address", address)
        assert refused.returncode == 2 and "unknown anomaly model" in refused.stdout + refused.stderr

        # Ray exports the workers' counters every few seconds; the node's endpoint serves them.
        deadline = time.monotonic() + 90
        text = ""
        while time.monotonic() < deadline and "sigmaray_events_in_total" not in text:
            time.sleep(3)
            try:
                text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
            except OSError:
                continue
        assert "sigmaray_events_in_total" in text
        assert "sigmaray_consumer_lag" in text and "sigmaray_rule_hits_total" in text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "sigmaray_alerts_out_total" not in text:
            time.sleep(3)
            text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
        assert "sigmaray_alerts_out_total" in text and "sigmaray_correlator_lag" in text
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
    assert process.returncode == 0, (tmp_path / "run.log").read_text()[-3000:]


def test_run_refuses_to_start_when_an_output_topic_is_missing(broker: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    admin = AdminClient({"bootstrap.servers": broker})
    for future in admin.create_topics([NewTopic(f"events-{run}", 1, 1), NewTopic(f"dead-{run}", 1, 1)]).values():
        future.result(30)
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": broker, "input_topics": [f"events-{run}"], "detections_topic": f"missing-{run}",
                  "dead_letter_topic": f"dead-{run}", "group_id": f"sigmaray-{run}"},
        "rules": {"paths": [str(ROOT / "rules")]},
    }))
    result = _cli("run", "--config", str(config), "--for-seconds", "5")
    assert result.returncode == 2
    assert f"missing-{run} do not exist" in result.stderr and "Traceback" not in result.stderr
