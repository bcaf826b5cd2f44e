"""Entity scores in the running cluster (real broker, real Ray) are exactly the offline scores
of the same per-partition streams: live, across a kill -9 (checkpoint restore), and across a
hot model swap."""

from __future__ import annotations

import os
import signal
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cluster.build import quiet_rules, scorer_config
from detectors.engine import SigmaEngine
from detectors.rulefiles import load_rules_from_paths
from models.datasets.generator import generate
from models.eventtime import event_time_ms
from models.scorer import EntityScorer
from tests.conftest import BOOTSTRAP, OTRF, ROOT

PARTITIONS = 3




def _partition(event: dict[str, Any]) -> int:
    return zlib.crc32(event["Computer"].encode()) % PARTITIONS  # entities stay on one partition


class Run:
    def __init__(self, broker: str, tmp_path: Path, models: dict[str, Any], batch_size: int = 200) -> None:
        from cluster.config import config_from_dict

        self.id = uuid.uuid4().hex[:8]
        self.topics = {"in": f"events-{self.id}", "out": f"detections-{self.id}", "dlq": f"dead-{self.id}",
                       "shadow": f"shadow-{self.id}"}
        admin = AdminClient({"bootstrap.servers": broker})
        sizes = {self.topics["in"]: PARTITIONS, self.topics["out"]: 1, self.topics["dlq"]: 1, self.topics["shadow"]: 1}
        for future in admin.create_topics([NewTopic(n, p, 1) for n, p in sizes.items()]).values():
            future.result(30)
        self.group = f"sigmaray-{self.id}"
        self.config = config_from_dict({
            "kafka": {"bootstrap_servers": broker, "input_topics": [self.topics["in"]],
                      "detections_topic": self.topics["out"], "dead_letter_topic": self.topics["dlq"],
                      "group_id": self.group},
            "processing": {"batch_size": batch_size},
            "rules": {"paths": [str(ROOT / "rules")]},
            "models": {"shadow_topic": self.topics["shadow"], "checkpoint_url": str(tmp_path / "checkpoints"),
                       "calibration_window": 300, **models},
            "workers": 2,
            "correlator": {"enabled": False},  # the workers are under test
        })
        self.producer = Producer({"bootstrap.servers": broker, "linger.ms": 20})
        self.sent: dict[int, list[dict[str, Any]]] = {p: [] for p in range(PARTITIONS)}

    def produce(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            partition = _partition(event)
            self.sent[partition].append(event)
            self.producer.produce(self.topics["in"], orjson.dumps(event), key=event["Computer"].encode(),
                                  partition=partition)
        assert self.producer.flush(60) == 0

    def committed(self) -> int:
        consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": self.group})
        offsets = consumer.committed([TopicPartition(self.topics["in"], p) for p in range(PARTITIONS)], timeout=10)
        consumer.close()
        return sum(max(o.offset, 0) for o in offsets)

    def wait_committed(self, count: int, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while self.committed() < count and time.monotonic() < deadline:
            time.sleep(0.5)
        assert self.committed() == count

    def read(self, topic: str) -> list[dict[str, Any]]:
        consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"reader-{uuid.uuid4()}",
                             "auto.offset.reset": "earliest"})
        consumer.assign([TopicPartition(self.topics[topic], 0, 0)])
        _low, high = consumer.get_watermark_offsets(TopicPartition(self.topics[topic], 0), timeout=10)
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while len(out) < high and time.monotonic() < deadline:
            message = consumer.poll(1)
            if message is not None and not message.error():
                out.append(orjson.loads(message.value()))
        consumer.close()
        return out


def _offline(run: Run, shadow: str, batch: int = 333) -> dict[tuple[int, int], tuple[dict[str, float], dict[str, float]]]:
    """(partition, offset) -> (active scores, shadow scores), replayed per partition offline."""
    ruleset = load_rules_from_paths([ROOT / "rules"])
    engine = SigmaEngine(ruleset.rules)
    quiet = quiet_rules(ruleset)  # as the workers: events only quiet base rules match are learned
    expected = {}
    for partition, events in run.sent.items():
        scorer = EntityScorer(scorer_config(run.config.models))
        if shadow:
            scorer.start_shadow(shadow)
        for start in range(0, len(events), batch):
            chunk = events[start:start + batch]
            alerting = [any(m.id not in quiet for m in engine.match(e)) for e in chunk]
            results = scorer.score_batch(chunk, [event_time_ms(e) for e in chunk], alerting)
            for offset, result in enumerate(results, start):
                expected[(partition, offset)] = (result.as_dict(), result.shadow)
    return expected


def _stream(count: int, seed: int) -> list[dict[str, Any]]:
    return list(generate(count, seed=seed, attack_share=0.02, otrf_root=OTRF))


def _check_scores(run: Run, shadow: str) -> tuple[int, int]:
    """Every shadow-topic record (one per processed event that names an entity; duplicates after
    a crash) carries exactly the offline scores of its event. Returns (records, distinct events)."""
    expected = {key: value for key, value in _offline(run, shadow).items() if value[1]}
    assert len(expected) > 0.9 * sum(len(e) for e in run.sent.values())
    records = run.read("shadow")
    seen = set()
    for record in records:
        key = (record["source"]["partition"], record["source"]["offset"])
        active, shadow_scores = expected[key]
        assert record["active"] == active, key
        assert record["scores"] == shadow_scores, key
        seen.add(key)
    assert seen == set(expected)
    return len(records), len(seen)


def test_cluster_entity_scores_equal_the_offline_replay_of_each_partition(broker: str, ray_local: Any, tmp_path: Path) -> None:
    from cluster.ray.actors import Supervisor, config_to_dict

    run = Run(broker, tmp_path, {"shadow": "loda"})
    events = _stream(6_000, seed=21)
    supervisor = Supervisor.remote(config_to_dict(run.config))
    try:
        ray_local.get(supervisor.start.remote(), timeout=120)
        run.produce(events)
        run.wait_committed(len(events))
        status = ray_local.get(supervisor.status.remote(), timeout=30)
    finally:
        ray_local.get(supervisor.shutdown.remote(), timeout=120)
    _check_scores(run, "loda")
    detections = run.read("out")
    assert any(d["kind"] == "anomaly" for d in detections)  # warm after 300 scores per type
    assert all(d["model_version"] == "hst@1" for d in detections)
    assert sum(r["models"]["entities"] for r in status["workers"]) > 10


def test_a_worker_killed_midstream_restores_its_model_state_and_scores_continue_identically(
    broker: str, ray_local: Any, tmp_path: Path
) -> None:
    from cluster.ray.actors import Supervisor, config_to_dict

    run = Run(broker, tmp_path, {"shadow": "loda", "checkpoint_interval_s": 0}, batch_size=100)
    events = _stream(6_000, seed=22)
    supervisor = Supervisor.remote(config_to_dict(run.config))
    try:
        ray_local.get(supervisor.start.remote(), timeout=120)
        run.produce(events[:3_000])
        deadline = time.monotonic() + 120
        while run.committed() < 1_000 and time.monotonic() < deadline:
            time.sleep(0.2)
        victim = ray_local.get(supervisor.worker_pids.remote(), timeout=30)["worker-1"]
        os.kill(victim, signal.SIGKILL)
        run.produce(events[3_000:])
        run.wait_committed(len(events))
        status = ray_local.get(supervisor.status.remote(), timeout=30)
    finally:
        ray_local.get(supervisor.shutdown.remote(), timeout=120)
    assert status["restarts"] >= 1
    assert sum(r["models"]["checkpoints_restored"] for r in status["workers"]) >= 1
    records, distinct = _check_scores(run, "loda")
    print(f"kill -9 with models: {records} shadow records for {distinct} events")


def test_promoting_a_model_on_a_running_cluster_swaps_it_between_batches_and_loses_no_event(
    broker: str, ray_local: Any, tmp_path: Path
) -> None:
    from cluster.ray.actors import Supervisor, config_to_dict

    run = Run(broker, tmp_path, {"shadow": "loda"})
    events = _stream(4_000, seed=23)
    supervisor = Supervisor.remote(config_to_dict(run.config))
    try:
        ray_local.get(supervisor.start.remote(), timeout=120)
        run.produce(events[:2_000])
        run.wait_committed(2_000)
        reply = ray_local.get(supervisor.model_command.remote("promote", ""), timeout=120)
        assert not reply["errors"] and {w["model"] for w in reply["workers"].values()} == {"loda@2"}
        bad = ray_local.get(supervisor.model_command.remote("promote", "no-such-model"), timeout=120)
        assert bad["errors"]  # refused with a reason; nothing changed
        run.produce(events[2_000:])
        run.wait_committed(len(events))
        rolled = ray_local.get(supervisor.model_command.remote("rollback", ""), timeout=120)
        assert {w["model"] for w in rolled["workers"].values()} == {"hst@1"}
    finally:
        ray_local.get(supervisor.shutdown.remote(), timeout=120)
    shadow = run.read("shadow")
    assert len({(r["source"]["partition"], r["source"]["offset"]) for r in shadow}) > 0.9 * len(events)
    by_version: dict[str, int] = {}
    for record in shadow:
        by_version[record["model_version"]] = by_version.get(record["model_version"], 0) + 1
    assert set(by_version) == {"loda@2", "hst@1"}  # the shadow was loda, then the old hst
    engine = SigmaEngine(load_rules_from_paths([ROOT / "rules"]).rules)
    offline = sorted((e["sigmaray_event_id"], m.id) for e in events for m in engine.match(e))
    got = sorted((d["event"]["sigmaray_event_id"], d["rule"]["id"]) for d in run.read("out") if d["kind"] == "sigma")
    assert got == offline
