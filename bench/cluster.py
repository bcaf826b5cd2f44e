"""Cluster benchmark: Kafka in -> 2 PartitionWorkers on Ray -> detections out, all SigmaHQ rules.

1. Throughput: preload the input topic with the OTRF events (repeated), start the cluster, and
   time from the first committed batch to the last (worker start-up and rule compilation are
   excluded and reported apart).
2. Latency: produce at a fixed rate (default: half the measured throughput) and measure, for each
   detection, consumer receive time minus the input record's CreateTime.

With --models both (the default) it runs the whole measurement with the entity anomaly models
off, then on, and reports the throughput ratio.

Usage: .venv/bin/python bench/cluster.py [--copies 2] [--rate R] [--seconds 30] [--models both|on|off]
Needs the dev broker (`sigmaray kafka up`). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
import ray
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cluster.config import config_from_dict  # noqa: E402
from cluster.ray.actors import Supervisor, config_to_dict  # noqa: E402

SHARED = ROOT.parent / "shared"
RULES = [str(SHARED / "sigma" / d) for d in ("rules", "rules-emerging-threats", "rules-threat-hunting", "rules-compliance")]
BOOTSTRAP = "127.0.0.1:9092"


def otrf_lines() -> list[bytes]:
    lines = []
    for path in sorted((SHARED / "datasets" / "otrf" / "jsonl").rglob("*.jsonl")):
        lines.extend(line for line in path.read_bytes().splitlines() if line.strip())
    return lines


def committed(group: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group})
    offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    consumer.close()
    return sum(max(o.offset, 0) for o in offsets)


def create_topics(run: str, partitions: int) -> dict[str, str]:
    topics = {"in": f"bench-in-{run}", "out": f"bench-out-{run}", "dlq": f"bench-dlq-{run}"}
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for future in admin.create_topics(
        [NewTopic(topics["in"], partitions, 1), NewTopic(topics["out"], partitions, 1), NewTopic(topics["dlq"], 1, 1)]
    ).values():
        future.result(30)
    return topics


def make_supervisor(topics: dict[str, str], group: str, models: bool) -> object:
    config = config_from_dict({
        "models": {"enabled": models, "checkpoint_url": str(Path("/tmp") / f"sigmaray-bench-{group}")},
        "kafka": {"bootstrap_servers": BOOTSTRAP, "input_topics": [topics["in"]], "detections_topic": topics["out"],
                  "dead_letter_topic": topics["dlq"], "group_id": group},
        "processing": {"batch_size": 2000, "batch_timeout_ms": 100},
        "rules": {"paths": RULES, "placeholders": {"known_cdcs": ["DC01.corp.example"]}},
        "workers": 2,
    })
    return Supervisor.remote(config_to_dict(config))


def throughput(lines: list[bytes], copies: int, partitions: int, models: bool) -> dict[str, float]:
    run = uuid.uuid4().hex[:8]
    topics = create_topics(run, partitions)
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 20, "batch.num.messages": 10000})
    total = 0
    for _ in range(copies):
        for line in lines:
            while True:
                try:
                    producer.produce(topics["in"], line)
                    break
                except BufferError:
                    producer.poll(0.1)
            total += 1
    producer.flush(120)
    group = f"bench-{run}"
    supervisor = make_supervisor(topics, group, models)
    started = time.monotonic()
    ray.get(supervisor.start.remote(), timeout=300)
    first = None
    while True:
        done = committed(group, topics["in"], partitions)
        if first is None and done > 0:
            first = (time.monotonic(), done)
        if done >= total:
            break
        time.sleep(0.2)
    end = time.monotonic()
    ray.get(supervisor.shutdown.remote(), timeout=120)
    assert first is not None
    measured = total - first[1]
    return {"events": total, "startup_s": round(first[0] - started, 1),
            "events_per_s": round(measured / (end - first[0]), 1)}


def latency(lines: list[bytes], rate: float, seconds: float, partitions: int, models: bool) -> dict[str, float]:
    run = uuid.uuid4().hex[:8]
    topics = create_topics(run, partitions)
    group = f"bench-{run}"
    supervisor = make_supervisor(topics, group, models)
    ray.get(supervisor.start.remote(), timeout=300)
    time.sleep(10)  # let both workers finish compiling before the clock starts
    samples: list[float] = []
    stop = threading.Event()

    def read() -> None:
        consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"lat-{run}", "auto.offset.reset": "earliest"})
        consumer.subscribe([topics["out"]])
        while not stop.is_set():
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            now_ms = time.time() * 1000
            source = orjson.loads(message.value())["source"]
            if source.get("timestamp_ms"):
                samples.append(now_ms - source["timestamp_ms"])
        consumer.close()

    reader = threading.Thread(target=read)
    reader.start()
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 1})
    sent = 0
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        due = int((time.monotonic() - began) * rate)
        while sent < due:
            producer.produce(topics["in"], lines[sent % len(lines)])
            sent += 1
        producer.poll(0)
        time.sleep(0.005)
    producer.flush(60)
    time.sleep(5)
    stop.set()
    reader.join()
    ray.get(supervisor.shutdown.remote(), timeout=120)
    samples.sort()
    return {
        "rate": rate, "sent": sent, "detections": len(samples),
        "p50_ms": round(statistics.median(samples), 1) if samples else None,
        "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 1) if samples else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=2, help="OTRF passes preloaded for the throughput run")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0, help="latency run rate (default: half the throughput)")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--models", choices=("on", "off", "both"), default="both",
                        help="entity anomaly models in the workers (both: off then on, in one run)")
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    lines = otrf_lines()
    result: dict[str, object] = {"rules": "SigmaHQ rules + emerging + hunting + compliance", "workers": 2}
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.models]
    for models in modes:
        name = "models_on" if models else "models_off"
        measured = throughput(lines, args.copies, args.partitions, models)
        rate = args.rate or measured["events_per_s"] / 2
        result[name] = {"throughput": measured, "latency": latency(lines, rate, args.seconds, args.partitions, models)}
    if len(modes) == 2:
        result["throughput_ratio_on_to_off"] = round(
            result["models_on"]["throughput"]["events_per_s"] / result["models_off"]["throughput"]["events_per_s"], 3)  # type: ignore[index]
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
