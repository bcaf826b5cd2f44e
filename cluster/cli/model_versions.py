"""`sigmaray models shadow|promote|rollback`: model versions on a running cluster, no restart.

Each command goes to the supervisor, which hands it to every worker; a worker applies it
between two batches on every partition it owns, so no event is skipped or scored by a mix.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

import orjson

from cluster.cli.common import fail, run_guarded


def add_version_commands(models: Any) -> None:
    """Adds the live commands to the `sigmaray models` subcommands."""
    shadow = models.add_parser("shadow", help="score a candidate model beside the active one (scores go to the shadow topic)")
    shadow.add_argument("name", help="a model from `sigmaray models list`")
    promote = models.add_parser("promote", help="make the shadow (or NAME) the active model; the old one becomes the shadow")
    promote.add_argument("name", nargs="?", default="", help="default: the current shadow")
    rollback = models.add_parser("rollback", help="swap the active and shadow models back")
    for parser, command in ((shadow, "shadow"), (promote, "promote"), (rollback, "rollback")):
        parser.add_argument("--address", default="auto", metavar="ADDR", help="Ray address (default: auto)")
        parser.add_argument("--json", action="store_true")
        parser.set_defaults(run=lambda args, command=command: run_guarded(functools.partial(_send, command=command), args))


def _send(args: argparse.Namespace, command: str) -> int:
    from cluster.ray.connect import ClusterError, SupervisorHandle, connect

    connect(args.address)
    try:
        supervisor = SupervisorHandle.find(args.address)
    except ClusterError as error:
        return fail(str(error))
    reply = supervisor.model_command(command, getattr(args, "name", ""))
    if args.json:
        print(orjson.dumps(reply).decode())
    else:
        for worker, row in sorted(reply["workers"].items()):
            if "error" in row:
                print(f"{worker:<12} error: {row['error']}")
            else:
                print(f"{worker:<12} active {row['model']:<12} shadow {row['shadow'] or '-':<12} "
                      f"on {row['partitions']} partitions")
    return 2 if reply["errors"] else 0
