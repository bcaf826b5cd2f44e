"""The correlator actors under the supervisor, on a real Ray and a real broker: a correlator killed
with kill -9 mid-stream is replaced, its successor restores the partitions' state from their
checkpoints (replaying to the committed offsets), and no alert is lost: the alerts topic ends with
exactly the alert ids that the same correlator code gives over the same detections, partition by
partition, without a kill; an alert emitted twice is the same id (an idempotent update). The
supervisor's webhook forwarder POSTs every one of them, signed, to a local HTTP server."""

from __future__ import annotations

import http.server
import os
import signal
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import TopicPartition

from cluster.build import build_correlator, load_rules
from cluster.config import config_from_dict
from cluster.kafka import client as kafka
from models.datasets.generator import generate
from tests.conftest import OTRF, ROOT

SECRET_ENV = "SIGMARAY_TEST_WEBHOOK_SECRET"
# Set before the module's Ray starts: its worker processes inherit the environment then.
os.environ.setdefault(SECRET_ENV, uuid.uuid4().hex)

pytestmark = [pytest.mark.ray, pytest.mark.skipif(not OTRF.exists(), reason="needs ../shared/datasets/otrf")]


def _read(bootstrap: str, topic: str, partitions: int) -> dict[int, list[tuple[bytes | None, bytes | None]]]:
    """Every record of the topic, per partition, in offset order."""
    consumer = kafka.consumer(bootstrap, f"reader-{uuid.uuid4().hex[:6]}", **{"enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: dict[int, list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
    ended: set[int] = set()
    deadline = time.monotonic() + 60
    while len(ended) < partitions and time.monotonic() < deadline:
        for message in consumer.consume(1000, 1):
            partition = message.partition()
            assert partition is not None
            if message.error() is not None:
                ended.add(partition)
                continue
            out[partition].append((message.key(), message.value()))
    consumer.close()
    return out


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((dict(self.headers.items()), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_correlator_killed_mid_stream_loses_no_alert_and_duplicates_are_updates_of_the_same_id(
    broker: str, ray_local: Any, tmp_path: Path
) -> None:
    from cluster.ray.actors import Supervisor, config_to_dict

    run = uuid.uuid4().hex[:8]
    topics = {"in": f"events-{run}", "det": f"det-{run}", "dlq": f"dlq-{run}", "alerts": f"alerts-{run}",
              "rep": f"rep-{run}"}
    kafka.create_topics(broker, {topics["in"]: 2, topics["det"]: 2, topics["dlq"]: 1})
    settings = {
        "kafka": {"bootstrap_servers": broker, "input_topics": [topics["in"]], "detections_topic": topics["det"],
                  "dead_letter_topic": topics["dlq"], "group_id": f"g-{run}"},
        "processing": {"batch_size": 100, "batch_timeout_ms": 100},
        "rules": {"paths": [str(ROOT / "rules")]},
        "models": {"enabled": False, "checkpoint_url": str(tmp_path / "checkpoints")},
        "workers": 1,
        "correlator": {"instances": 1, "alerts_topic": topics["alerts"], "verdicts_topic": f"verdicts-{run}",
                       "repartition_topic": topics["rep"], "alerts_dead_letter_topic": f"adlq-{run}",
                       "checkpoint_interval_s": 2},
    }
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings["correlator"]["webhook"] = {"url": f"http://127.0.0.1:{server.server_address[1]}/alerts",  # type: ignore[index]
                                         "secret_env": SECRET_ENV, "min_priority": 4}
    config = config_from_dict(settings)
    events = list(generate(6000, seed=11, attack_share=0.05, otrf_root=OTRF))
    supervisor = Supervisor.remote(config_to_dict(config))
    try:
        ray_local.get(supervisor.start.remote(), timeout=180)
        producer = kafka.producer(broker, **{"linger.ms": 5})
        half = len(events) // 2
        kafka.produce_all(producer, topics["in"], [(e["Computer"].encode(), orjson.dumps(e)) for e in events[:half]])

        def correlated() -> int:
            rows = ray_local.get(supervisor.status.remote(), timeout=30)["correlators"]
            return sum(r.get("detections_in", 0) for r in rows)

        assert kafka.wait_until(lambda: correlated() > 50, 120)
        pids = ray_local.get(supervisor.worker_pids.remote(), timeout=30)
        (killed,) = [name for name in pids if name.startswith("correlator-")]
        os.kill(pids[killed], signal.SIGKILL)
        kafka.produce_all(producer, topics["in"], [(e["Computer"].encode(), orjson.dumps(e)) for e in events[half:]])

        # Done when the workers have committed every event and the correlator's lag is zero.
        def settled() -> bool:
            status = ray_local.get(supervisor.status.remote(), timeout=30)
            rows = status["correlators"]
            return (kafka.committed_total(broker, f"g-{run}", topics["in"], 2) >= len(events) and len(rows) == 1
                    and rows[0].get("worker") not in (None, killed) and bool(rows[0].get("lag"))
                    and sum(rows[0]["lag"].values()) == 0 and rows[0]["batches"] > 0)

        assert kafka.wait_until(settled, 240, every=2)
        time.sleep(6)  # a last lag update, then nothing new may arrive
        status = ray_local.get(supervisor.status.remote(), timeout=30)
        assert status["restarts"] == 1 and killed in status["replaced"][0]
        assert status["correlators"][0]["state"]["checkpoints_restored"] + \
            status["correlators"][0]["state"]["replayed_for_state"] > 0

        def forwarded() -> bool:
            written = {(key or b"").decode() for rows in _read(broker, topics["alerts"], 2).values() for key, _ in rows}
            return written == {headers["X-Sigmaray-Alert-Id"] for headers, _body in list(_Receiver.received)}

        assert kafka.wait_until(forwarded, 120, every=3), ray_local.get(supervisor.status.remote())["webhook"]
    finally:
        ray_local.get(supervisor.shutdown.remote(), timeout=180)
        ray_local.kill(supervisor)

    # The reference: the same correlator code over the same detections topic, partition by
    # partition (the state is per partition), with no kill.
    detections = _read(broker, topics["det"], 2)
    expected: set[str] = set()
    ruleset = load_rules(config.rules)
    for partition, records in detections.items():
        correlator = build_correlator(config, ruleset)
        for _key, value in records:
            alerts, _routed = correlator.route(orjson.loads(value or b"null"), partition=partition)
            expected.update(alert.alert_id for alert in alerts)
    assert expected, "the stream raised no alert at all"
    emitted = _read(broker, topics["alerts"], 2)
    got = [(key or b"").decode() for records in emitted.values() for key, _value in records]
    assert set(got) == expected, (f"lost: {sorted(expected - set(got))[:5]}, "
                                  f"unexpected: {sorted(set(got) - expected)[:5]}")
    activities: dict[tuple[str, int, int], set[bytes]] = defaultdict(set)
    for records in emitted.values():
        for key, value in records:
            ocsf = orjson.loads(value or b"{}")
            explanation = ocsf["unmapped"]["sigmaray"]["explanation"]
            activities[((key or b"").decode(), ocsf["activity_id"], explanation["count"])].add(value or b"")
    # A record emitted twice (the batches after the last checkpoint, processed again) is the
    # same alert in the same state: same id, activity and count.
    assert len(got) >= len(activities)
    from correlator.fusion import Alert
    from tests.ocsf_validation import detection_finding_validator, valid

    valid(detection_finding_validator(), [
        Alert((key or b"").decode(), ocsf["activity_id"], 0, "", (), 0, ocsf)
        for records in emitted.values() for key, ocsf in ((k, orjson.loads(v or b"{}")) for k, v in records)])

    # The webhook got every alert, signed with the secret the forwarder read from its environment.
    from cluster.sinks.webhook import verify_signature

    server.shutdown()
    posted = {headers["X-Sigmaray-Alert-Id"] for headers, _body in _Receiver.received}
    assert posted == expected
    for headers, body in _Receiver.received:
        assert verify_signature(os.environ[SECRET_ENV], headers["X-Sigmaray-Timestamp"], body,
                                headers["X-Sigmaray-Signature"])
