"""Cluster benchmark: Kafka in -> 2 PartitionWorkers on Ray -> detections -> correlator -> alerts,
all SigmaHQ rules.

1. Throughput: preload the input topic with the OTRF events (repeated), start the cluster, and
   time from the first committed batch to the last (worker start-up and rule compilation are
   excluded and reported apart). With the correlator on, the run ends when the correlator has
   also committed every detection (and correlation record) the workers wrote.
2. Latency: produce at a fixed rate (default: half the measured throughput) and measure, for each
   detection, consumer receive time minus the input record's CreateTime; with the correlator on,
   also for each new alert (Create: its one evidence event is the input that opened it).

`--compare models` runs the whole measurement with the entity anomaly models off, then on;
`--compare correlator` (the default) with the correlator off, then on (models on in both); each
reports the throughput ratio of the two modes measured in the same run.

Usage: .venv/bin/python bench/cluster.py [--copies 2] [--rate R] [--seconds 30] [--compare correlator|models]
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


def end_offsets(topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "bench-watermarks"})
    total = sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions))
    consumer.close()
    return total


def create_topics(run: str, partitions: int) -> dict[str, str]:
    topics = {"in": f"bench-in-{run}", "out": f"bench-out-{run}", "dlq": f"bench-dlq-{run}",
              "alerts": f"bench-alerts-{run}", "verdicts": f"bench-verdicts-{run}", "rep": f"bench-rep-{run}",
              "alerts_dlq": f"bench-alerts-dlq-{run}", "rules": f"bench-rules-{run}"}
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for future in admin.create_topics(
        [NewTopic(topics["in"], partitions, 1), NewTopic(topics["out"], partitions, 1), NewTopic(topics["dlq"], 1, 1)]
    ).values():
        future.result(30)
    return topics


def make_supervisor(topics: dict[str, str], group: str, models: bool, correlator: bool) -> object:
    config = config_from_dict({
        "correlator": {"enabled": correlator, "alerts_topic": topics["alerts"], "verdicts_topic": topics["verdicts"],
                       "repartition_topic": topics["rep"], "alerts_dead_letter_topic": topics["alerts_dlq"]},
        "console": {"enabled": False},
        "models": {"enabled": models, "checkpoint_url": str(Path("/tmp") / f"sigmaray-bench-{group}")},
        "kafka": {"bootstrap_servers": BOOTSTRAP, "input_topics": [topics["in"]], "detections_topic": topics["out"],
                  "dead_letter_topic": topics["dlq"], "group_id": group},
        "processing": {"batch_size": 2000, "batch_timeout_ms": 100},
        "rules": {"paths": RULES, "placeholders": {"known_cdcs": ["DC01.corp.example"]}, "topic": topics["rules"]},
        "workers": 2,
    })
    return Supervisor.remote(config_to_dict(config))


def wait_ready(supervisor: object, correlator: bool, timeout: float = 300) -> None:
    """Until every worker (and correlator) answers with partitions assigned. Each compiles its
    rules in its constructor, which `start()` does not wait for: a compile still running in the
    timed run would take a core from the workers and be counted as their throughput."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = ray.get(supervisor.status.remote(), timeout=120)  # type: ignore[attr-defined]
        members = status["workers"] + (status["correlators"] if correlator else [])
        if (status["workers"] and (status["correlators"] or not correlator)
                and all("error" not in member and member.get("partitions") for member in members)):
            time.sleep(2)  # the first batches' one-off work (models' first compile from their cache)
            return
        time.sleep(0.5)
    raise TimeoutError(f"actors not ready after {timeout} s: {status}")


def throughput(lines: list[bytes], copies: int, partitions: int, models: bool, correlator: bool) -> dict[str, float]:
    """Events/s from the first committed batch to the last, with every actor started first (rule
    compilation is reported apart, as `startup_s`), then the events produced as fast as the
    producer goes; with the correlator, until it has committed every record the workers wrote."""
    run = uuid.uuid4().hex[:8]
    topics = create_topics(run, partitions)
    group = f"bench-{run}"
    supervisor = make_supervisor(topics, group, models, correlator)
    started = time.monotonic()
    ray.get(supervisor.start.remote(), timeout=300)
    wait_ready(supervisor, correlator)
    startup = time.monotonic() - started
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
    first = None
    while True:
        done = committed(group, topics["in"], partitions)
        if first is None and done > 0:
            first = (time.monotonic(), done)
        if done >= total:
            break
        time.sleep(0.2)
    workers_end = time.monotonic()
    while correlator:  # the correlator has read every detection and correlation record written
        if committed(f"{group}.correlator", topics["out"], partitions) >= end_offsets(topics["out"], partitions):
            time.sleep(1)  # a correlation record written back during the last batch
            if committed(f"{group}.correlator", topics["out"], partitions) >= end_offsets(topics["out"], partitions):
                break
        time.sleep(0.2)
    end = time.monotonic()
    ray.get(supervisor.shutdown.remote(), timeout=120)
    assert first is not None
    measured = total - first[1]
    return {"events": total, "startup_s": round(startup, 1),
            "events_per_s": round(measured / (end - first[0]), 1),
            "workers_events_per_s": round(measured / (workers_end - first[0]), 1),
            "alerts": end_offsets(topics["alerts"], partitions) if correlator else 0}


def push_to_swap(supervisor: object, topic: str) -> dict[str, float | None]:
    """Seconds from `sigmaray rules push` to every worker running the pushed ruleset (its version
    in their status), measured while the cluster is loaded: a new rule (a SigmaHQ rule under a
    new id), then a change of it. A pushed rule whose id a file rule already has would need a
    full load (which copy stays depends on all of them): live rules are rules of the topic."""
    import uuid as _uuid

    from cluster.kafka.live_rules import push, rule_documents

    path = next(Path(RULES[0]).rglob("proc_creation_win_whoami_execution.yml"), None) or \
        next(Path(RULES[0]).rglob("*.yml"))
    old_id, text = rule_documents([str(path)])[0]
    new_id = str(_uuid.uuid4())
    added = text.replace(old_id, new_id).replace("title: ", "title: (pushed) ", 1)
    changed = added.replace("title: (pushed) ", "title: (pushed, changed) ", 1)

    def versions() -> set[str]:
        rows = ray.get(supervisor.status.remote(), timeout=30)["workers"]  # type: ignore[attr-defined]
        return {row.get("ruleset_version", "") for row in rows}

    def timed(rule_text: str) -> float | None:
        before = versions()
        started = time.monotonic()
        push(BOOTSTRAP, topic, [(new_id, rule_text)])
        while time.monotonic() - started < 60:
            now = versions()
            if now and not now & before and len(now) == 1:
                return round(time.monotonic() - started, 3)
            time.sleep(0.05)
        return None

    return {"add_s": timed(added), "change_s": timed(changed)}


def _percentiles(samples: list[float]) -> dict[str, float | None]:
    samples = sorted(samples)
    return {"count": len(samples), "p50_ms": round(statistics.median(samples), 1) if samples else None,
            "p99_ms": round(samples[max(int(len(samples) * 0.99) - 1, 0)], 1) if samples else None}


def latency(lines: list[bytes], rate: float, seconds: float, partitions: int, models: bool,
            correlator: bool) -> dict[str, object]:
    """Latency at a fixed rate; the live-rule pushes happen while it runs."""
    run = uuid.uuid4().hex[:8]
    topics = create_topics(run, partitions)
    group = f"bench-{run}"
    supervisor = make_supervisor(topics, group, models, correlator)
    ray.get(supervisor.start.remote(), timeout=300)
    wait_ready(supervisor, correlator)  # every actor compiled before the clock starts
    samples: list[float] = []
    alert_samples: list[float] = []
    sent_at: dict[tuple[int, int], int] = {}  # (partition, offset) of an input record -> its CreateTime
    stop = threading.Event()

    def read() -> None:
        consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"lat-{run}", "auto.offset.reset": "earliest"})
        consumer.subscribe([topics["out"], topics["alerts"]])
        while not stop.is_set():
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            now_ms = time.time() * 1000
            record = orjson.loads(message.value())
            if message.topic() == topics["alerts"]:
                if record.get("activity_id") != 1:
                    continue
                refs = record["unmapped"]["sigmaray"]["explanation"]["evidence"]["refs"]
                times = [sent_at.get((ref[1], ref[2])) for ref in refs if ref[0] == topics["in"]]
                if times and all(t is not None for t in times):
                    alert_samples.append(now_ms - max(t for t in times if t is not None))
                continue
            source = record.get("source") or {}
            if source.get("timestamp_ms"):
                samples.append(now_ms - source["timestamp_ms"])
        consumer.close()

    def delivered(error: object, message: object) -> None:
        if error is None:
            sent_at[(message.partition(), message.offset())] = message.timestamp()[1]  # type: ignore[attr-defined]

    reader = threading.Thread(target=read)
    reader.start()
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 1})
    sent = 0
    swap: dict[str, float | None] = {}
    # The live-rule pushes start a third of the way in, while events keep arriving at `rate`.
    pusher = threading.Timer(seconds / 3, lambda: swap.update(push_to_swap(supervisor, topics["rules"])))
    pusher.start()
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        due = int((time.monotonic() - began) * rate)
        while sent < due:
            producer.produce(topics["in"], lines[sent % len(lines)], on_delivery=delivered)
            sent += 1
        producer.poll(0)
        time.sleep(0.005)
    producer.flush(60)
    pusher.join(120)
    time.sleep(8)
    stop.set()
    reader.join()
    ray.get(supervisor.shutdown.remote(), timeout=120)
    out: dict[str, object] = {"rate": rate, "sent": sent, "detections": _percentiles(samples),
                              "push_to_swap_s": swap}
    if correlator:
        out["event_to_alert"] = _percentiles(alert_samples)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=2, help="OTRF passes preloaded for the throughput run")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0, help="latency run rate (default: half the throughput)")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--compare", choices=("correlator", "models"), default="correlator",
                        help="the two modes measured in one run: correlator off/on (models on), or models off/on "
                             "(correlator off)")
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    lines = otrf_lines()
    result: dict[str, object] = {"rules": "SigmaHQ rules + emerging + hunting + compliance", "workers": 2,
                                 "compare": args.compare}
    for on in (False, True):
        models, correlator = (True, on) if args.compare == "correlator" else (on, False)
        name = f"{args.compare}_{'on' if on else 'off'}"
        measured = throughput(lines, args.copies, args.partitions, models, correlator)
        rate = args.rate or measured["events_per_s"] / 2
        result[name] = {"throughput": measured,
                        "latency": latency(lines, rate, args.seconds, args.partitions, models, correlator)}
    result["throughput_ratio_on_to_off"] = round(
        result[f"{args.compare}_on"]["throughput"]["events_per_s"]  # type: ignore[index]
        / result[f"{args.compare}_off"]["throughput"]["events_per_s"], 3)  # type: ignore[index]
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
