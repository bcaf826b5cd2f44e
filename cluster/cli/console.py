"""`sigmaray console`: the web console alone, against a running cluster's Kafka (and, with
--address, its supervisor's status)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from cluster.cli.common import run_guarded
from cluster.config import ConsoleConfig, load_config
from cluster.console.server import announce


def register(commands: Any) -> None:
    console = commands.add_parser(
        "console",
        help="the web console: live alerts, entity risk, ATT&CK, rules, cluster; analysts give verdicts",
        description="Serves the console against the config's Kafka: it reads the alerts and verdicts topics, fetches "
        "evidence events, and writes verdicts. Prints the URL and, unless the variable named by console.token_env "
        "is set, a login token generated now (printed once). With --address it also shows the cluster's status.",
    )
    console.add_argument("--config", metavar="FILE", help="cluster YAML (its kafka, correlator and console sections)")
    defaults = ConsoleConfig()
    console.add_argument("--host", help=f"listen address (default: config console.host, {defaults.host})")
    console.add_argument("--port", type=int, help=f"listen port (default: config console.port, {defaults.port}; 0 = any free)")
    console.add_argument("--address", metavar="ADDR", help="also show this Ray cluster's status (e.g. auto)")
    console.add_argument("--for-seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
    console.set_defaults(run=lambda args: run_guarded(_console, args))


def _status_source(address: str | None) -> Callable[[], dict[str, Any]] | None:
    if not address:
        return None
    from cluster.ray.connect import ClusterError, SupervisorHandle, connect

    try:
        connect(address)
        handle = SupervisorHandle.find(address)
    except (ClusterError, ConnectionError, RuntimeError) as error:
        print(f"sigmaray: warning: no cluster status ({error}); the console shows Kafka only", file=sys.stderr)
        return None
    return lambda: handle.status(timeout=10)


def _console(args: argparse.Namespace) -> int:
    from cluster.console.auth import console_token
    from cluster.console.server import ConsoleServer
    from cluster.kafka.client import missing_topics

    config = load_config(args.config)
    topics = [config.correlator.alerts_topic, config.correlator.verdicts_topic]
    missing = missing_topics(config.kafka, topics)
    if missing is None:
        print("sigmaray: warning: the Kafka broker does not answer yet; the console keeps trying", file=sys.stderr)
    elif missing:
        print(f"sigmaray: warning: no topic {', '.join(missing)} yet (the correlator creates them); the console waits",
              file=sys.stderr)
    token, generated = console_token(config.console.token_env)
    server = ConsoleServer.from_config(config, token, status=_status_source(args.address), host=args.host,
                                       port=args.port)
    url = server.start()
    announce(url, token, generated, config.console.token_env, sys.stderr)
    deadline = time.monotonic() + args.for_seconds if args.for_seconds else None
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
