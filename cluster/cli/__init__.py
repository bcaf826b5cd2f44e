"""The `sigmaray` command line: it parses and prints, and nothing else.

Each subcommand lives in its own module and calls the packages' public functions; Kafka and Ray
are reached only through `cluster.kafka` and `cluster.ray`. This file only wires up argparse.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cluster.cli import alerts as cli_alerts
from cluster.cli import bench as cli_bench
from cluster.cli import console as cli_console
from cluster.cli import demo as cli_demo
from cluster.cli import eval as cli_eval
from cluster.cli import kafka as cli_kafka
from cluster.cli import models as cli_models
from cluster.cli import replay as cli_replay
from cluster.cli import rules as cli_rules
from cluster.cli import run as cli_run
from cluster.cli import scan as cli_scan

DESCRIPTION = """\
sigmaray: Sigma detection and River anomaly scoring for security logs, on Ray and Kafka.

Start here:
  sigmaray demo                               broker + local cluster + a live attack stream, detections shown live
  sigmaray rules check rules/                 load and compile rules, list what is rejected
  sigmaray scan --rules rules/ events.jsonl   match a JSON-lines or .evtx file, print matches
  sigmaray bench engine --rules R --events F  measure the engine (indexed vs plain)
  sigmaray kafka up                           start a development Kafka broker on 127.0.0.1:9092
  sigmaray run --config cluster.yaml          run the detection cluster on Ray
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigmaray",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sigmaray {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    cli_rules.register(commands)
    cli_scan.register(commands)
    cli_bench.register(commands)
    cli_run.register(commands)
    cli_kafka.register(commands)
    cli_replay.register(commands)
    cli_demo.register(commands)
    cli_models.register(commands)
    cli_eval.register(commands)
    cli_console.register(commands)
    cli_alerts.register(commands)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sigmaray")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sigmaray` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `sigmaray scan ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
