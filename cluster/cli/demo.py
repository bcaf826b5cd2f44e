"""`sigmaray demo`: broker, Ray, the cluster and a live attack stream, in one command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cluster.cli.common import run_guarded


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
    demo.add_argument("--shared", type=Path, default=None,
                      help="OTRF datasets folder (attacks come from here; default ../shared/datasets/otrf beside the project)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--keep", action="store_true", help="keep the topics afterwards")
    demo.add_argument("--port", type=int, default=None,
                      help="the development broker's port (default 9092; started there if it is not running)")
    demo.add_argument("--data-dir", default=None,
                      help="the development broker's data folder (default $SIGMARAY_KAFKA_DATA or ~/.cache/sigmaray/kafka-data)")
    demo.set_defaults(run=lambda args: run_guarded(_demo, args))


def _demo(args: argparse.Namespace) -> int:
    from cluster.demo import DEFAULT_OTRF, run_demo

    run_demo(events=args.events, rate=args.rate, seconds=args.seconds, attack_share=args.attack_share,
             shared=args.shared or DEFAULT_OTRF, seed=args.seed, keep=args.keep, port=args.port, data_dir=args.data_dir)
    return 0
