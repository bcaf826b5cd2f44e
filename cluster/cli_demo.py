"""`sigmaray demo`: broker, Ray, the cluster and a live attack stream, in one command."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from cluster.cli_common import run_guarded

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OTRF = ROOT.parent / "shared" / "datasets" / "otrf"


def register(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="start a dev broker and a local cluster, stream Windows events with attacks, show detections live",
        description="Starts the development Kafka broker if needed and a local Ray, runs the supervisor "
        "with 2 PartitionWorkers and the project's rules, produces a Windows event stream (synthesized "
        "background with real OTRF attack recordings mixed in) and prints each detection as it arrives.",
    )
    demo.add_argument("--events", type=int, default=20000, help="events to produce (default 20000)")
    demo.add_argument("--rate", type=float, default=2000, help="events per second (0: as fast as possible)")
    demo.add_argument("--seconds", type=float, default=0, help="stop after this long (0: when all are processed)")
    demo.add_argument("--attack-share", type=float, default=0.02, help="how often an attack recording starts")
    demo.add_argument("--shared", type=Path, default=DEFAULT_OTRF, help="OTRF datasets folder (attacks come from here)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--keep", action="store_true", help="keep the topics afterwards")
    demo.add_argument("--port", type=int, default=None,
                      help="the development broker's port (default 9092; started there if it is not running)")
    demo.add_argument("--data-dir", default=None,
                      help="the development broker's data folder (default $SIGMARAY_KAFKA_DATA or ~/.cache/sigmaray/kafka-data)")
    demo.set_defaults(run=lambda args: run_guarded(_demo, args))


def _demo(args: argparse.Namespace) -> int:
    run_demo(args)
    return 0


def run_demo(args: argparse.Namespace, out: Any = None) -> dict[str, Any]:
    """Runs the demo; returns the summary (also printed). `out` receives the live lines."""
    import ray
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from cluster import kafka_dev
    from cluster.actors import Supervisor, config_to_dict
    from cluster.cli_run import init_local_ray
    from cluster.config import config_from_dict
    from cluster.generator import generate

    out = out or sys.stdout
    broker = kafka_dev.up(getattr(args, "data_dir", None), getattr(args, "port", None) or kafka_dev.DEFAULT_PORT)
    bootstrap = broker.bootstrap
    run = uuid.uuid4().hex[:6]
    topics = {"in": f"sigmaray-demo-{run}-events", "out": f"sigmaray-demo-{run}-detections", "dlq": f"sigmaray-demo-{run}-dead"}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topics["in"], 4, 1), NewTopic(topics["out"], 2, 1), NewTopic(topics["dlq"], 1, 1)]).values():
        future.result(30)
    otrf = args.shared if args.shared and Path(args.shared).is_dir() else None
    events = list(generate(args.events, args.seed, args.attack_share, otrf, attacks="auto"))
    group = f"sigmaray-demo-{run}"
    config = config_from_dict({
        "kafka": {"bootstrap_servers": bootstrap, "input_topics": [topics["in"]], "detections_topic": topics["out"],
                  "dead_letter_topic": topics["dlq"], "group_id": group},
        "rules": {"paths": [str(ROOT / "rules")]},
        # the demo's model state lives and dies with its topics
        "models": {"checkpoint_url": str(Path(tempfile.gettempdir()) / f"sigmaray-demo-{run}")},
        "workers": 2,
    })
    started_ray = not ray.is_initialized()
    if started_ray:
        init_local_ray(config.ray.host, include_dashboard=False, logging_level="ERROR", namespace=f"sigmaray-demo-{run}")
    supervisor = Supervisor.remote(config_to_dict(config))
    print(f"sigmaray demo: broker {bootstrap}, Ray up, starting 2 workers with the rules in {ROOT / 'rules'} ...", file=out)
    ray.get(supervisor.start.remote(), timeout=300)
    began = time.monotonic()

    def produce() -> None:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for number, event in enumerate(events):
            if args.rate:
                delay = number / args.rate - (time.monotonic() - began)
                if delay > 0:
                    time.sleep(delay)
            producer.produce(topics["in"], orjson.dumps(event), key=event["Computer"].encode())
            producer.poll(0)
        producer.flush(60)

    producer_thread = threading.Thread(target=produce, daemon=True)
    producer_thread.start()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{group}-viewer", "auto.offset.reset": "earliest"})
    consumer.subscribe([topics["out"]])
    by_rule: Counter[str] = Counter()
    seen: list[dict[str, Any]] = []

    checker = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    quiet_since = time.monotonic()
    try:
        while True:
            message = consumer.poll(0.3)
            if message is not None and not message.error():
                detection = orjson.loads(message.value())
                seen.append(detection)
                by_rule[detection["rule"]["title"]] += 1
                quiet_since = time.monotonic()
                line = (f"{detection['event_time'] or '-':<25} {detection['entity'] or '-':<15} "
                        f"{detection['rule']['level'] or '-':<8} {detection['rule']['title']}")
                if detection["kind"] == "anomaly":  # why it is unusual, for the analyst
                    anomaly = detection["anomaly"]
                    line += f"  score {anomaly['score']:.3f}: {'; '.join(anomaly['reasons'][:2])}"
                print(line, file=out)
            if args.seconds and time.monotonic() - began > args.seconds:
                break
            if not producer_thread.is_alive() and time.monotonic() - quiet_since > 2:
                done = sum(max(o.offset, 0) for o in checker.committed(
                    [TopicPartition(topics["in"], p) for p in range(4)], timeout=10))
                if done >= len(events) and time.monotonic() - quiet_since > 3:
                    break
    finally:
        consumer.close()
        checker.close()
        status = ray.get(supervisor.status.remote(), timeout=60)
        ray.get(supervisor.shutdown.remote(), timeout=120)
        ray.kill(supervisor)
        if started_ray:
            ray.shutdown()
        if not args.keep:
            admin.delete_topics(list(topics.values()))
            shutil.rmtree(Path(tempfile.gettempdir()) / f"sigmaray-demo-{run}", ignore_errors=True)
    summary = {
        "events": len(events),
        "processed": sum(row.get("events_in", 0) for row in status["workers"]),
        "detections": len(seen),
        "by_rule": dict(by_rule.most_common()),
        "seconds": round(time.monotonic() - began, 1),
        "topics": topics,
        "detected_event_ids": sorted(d["event"]["sigmaray_event_id"] + "|" + d["rule"]["id"] for d in seen
                                     if d["kind"] == "sigma"),
        "anomalies": sum(1 for d in seen if d["kind"] == "anomaly"),
        "events_list": events,
    }
    print(f"\nsigmaray demo: {summary['events']} events sent, {summary['processed']} processed, "
          f"{summary['detections']} detections in {summary['seconds']}s "
          f"({summary['anomalies']} of them entity anomalies from the models)", file=out)
    for title, count in by_rule.most_common():
        print(f"  {count:5d}  {title}", file=out)
    return summary
