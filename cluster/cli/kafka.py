"""`sigmaray kafka up|down|status`: a single-node Kafka broker for development and the quickstart."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
import yaml

from cluster.cli.common import run_guarded
from cluster.kafka import dev_broker as kafka_dev

DATA_DIR_HELP = ("broker data folder (default $SIGMARAY_KAFKA_DATA or ~/.cache/sigmaray/kafka-data; with --secure "
                 "$SIGMARAY_KAFKA_SECURE_DATA or ~/.cache/sigmaray/kafka-data-secure)")
SECURE_HELP = "the SASL/SCRAM-over-TLS broker (`up --secure`) rather than the plaintext one"


def register(commands: Any) -> None:
    kafka = commands.add_parser(
        "kafka",
        help="run a local single-node Kafka broker",
        description="A real Apache Kafka broker (KRaft, one node) for development, tests and the "
        "quickstart. The first `up` fetches the jars with Maven (needs Java 17+ and mvn).",
    )
    sub = kafka.add_subparsers(dest="kafka_command", metavar="ACTION")
    sub.required = True

    up = sub.add_parser("up", help="start the broker in the background; a no-op if it runs",
                        description="Starts the broker detached and waits until it answers. "
                        "The controller listens on PORT+1.")
    up.add_argument("--port", type=int, help="client port (default 9092; 9094 with --secure)")
    up.add_argument("--data-dir", help=DATA_DIR_HELP)
    up.add_argument("--secure", action="store_true",
                    help="SASL_SSL: a CA and broker certificate made at the first start, SCRAM-SHA-512 users made "
                    "with Kafka's storage tool; prints the kafka.client settings, the password stays in a mode-600 file")
    up.add_argument("--timeout", type=float, default=90, help="seconds to wait for the broker (default 90)")
    up.set_defaults(run=lambda args: run_guarded(_up, args))

    down = sub.add_parser("down", help="stop the broker")
    down.add_argument("--data-dir", help=DATA_DIR_HELP)
    down.add_argument("--secure", action="store_true", help=SECURE_HELP)
    down.add_argument("--timeout", type=float, default=30, help="seconds before SIGKILL (default 30)")
    down.set_defaults(run=lambda args: run_guarded(_down, args))

    status = sub.add_parser("status", help="is the broker running; exit 0 if so, 1 if not")
    status.add_argument("--data-dir", help=DATA_DIR_HELP)
    status.add_argument("--secure", action="store_true", help=SECURE_HELP)
    status.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    status.set_defaults(run=lambda args: run_guarded(_status, args))


def _up(args: argparse.Namespace) -> int:
    info = kafka_dev.up(data_dir=args.data_dir, port=args.port, timeout=args.timeout, secure=args.secure)
    state = f"started in {info.seconds:.1f}s" if info.started else "already running"
    kind = f" (SASL_SSL, {kafka_dev.SCRAM_MECHANISM})" if info.client_config else ""
    print(f"kafka broker {state}: bootstrap {info.bootstrap}{kind}, pid {info.pid}, log {info.log_file}")
    if info.client_config is not None:
        # The password is never printed (terminal scrollback, CI logs): it stays in the file.
        shown = {"kafka": {"bootstrap_servers": info.bootstrap,
                           "client": kafka_dev.public_client_settings(info.data_dir)}}
        print(f"client settings for cluster.yaml; {info.client_config} (readable by you only) holds this "
              "kafka section with the password:")
        print(yaml.safe_dump(shown, sort_keys=False).rstrip())
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = kafka_dev.down(timeout=args.timeout, data_dir=args.data_dir, secure=args.secure)
    print("kafka broker stopped" if stopped else "no kafka broker was running")
    return 0


def _status(args: argparse.Namespace) -> int:
    st = kafka_dev.status(data_dir=args.data_dir, secure=args.secure)
    if args.json:
        sys.stdout.write(orjson.dumps(st.to_dict()).decode() + "\n")
    elif st.running:
        topics = "not answering" if st.topics is None else f"{st.topics} topics"
        print(f"kafka broker running: bootstrap {st.bootstrap}, pid {st.pid}, {topics}, data {st.data_dir}")
    else:
        print(f"kafka broker not running (data {st.data_dir})")
    # Non-zero when down, so scripts can write `sigmaray kafka status >/dev/null || sigmaray kafka up`.
    return 0 if st.running else 1
