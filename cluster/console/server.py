"""Starting and stopping the console: uvicorn in a thread of the calling process, beside the
Kafka feed thread. `sigmaray run` starts one with the supervisor's status; `sigmaray console`
starts one alone, against a running cluster's Kafka.

    server = ConsoleServer.from_config(config, token, status=supervisor.status)
    server.start()            # binds now: server.url is known (port 0 = any free port)
    ...
    server.stop()
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

import uvicorn

from cluster.config import ClusterConfig
from cluster.console.app import Services, build_app
from cluster.console.auth import Sessions
from cluster.console.cluster_view import ClusterView
from cluster.console.evidence import KafkaEvidence
from cluster.console.feed import AlertFeed, SharedState
from cluster.console.redact import Redactor
from cluster.console.verdicts import KafkaVerdicts

__all__ = ["ConsoleServer", "announce", "start_console"]


class ConsoleServer:
    """The web console on (host, port); `services` decide where data comes from."""

    def __init__(self, services: Services, token: str, host: str = "127.0.0.1", port: int = 0,
                 feed: AlertFeed | None = None) -> None:
        self.services = services
        self.sessions = Sessions(token)
        self.host = host
        self.port = port
        self.feed = feed
        self.app = build_app(services, self.sessions)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @classmethod
    def from_config(cls, config: ClusterConfig, token: str, status: Callable[[], dict[str, Any]] | None = None,
                    host: str | None = None, port: int | None = None) -> ConsoleServer:
        """A console reading the config's alerts and verdicts topics, fetching evidence from and
        writing verdicts to its Kafka, and showing `status()` (a SupervisorHandle's) when given."""
        from cluster.console.state import ConsoleState
        from correlator.settings import fusion_config_from_dict

        half_life = fusion_config_from_dict(config.correlator.fusion).risk.half_life_ms
        shared = SharedState(state=ConsoleState(half_life_ms=half_life))
        feed = AlertFeed(config, shared)
        evidence = KafkaEvidence(config)
        verdicts = KafkaVerdicts(config)
        services = Services(shared=shared, fetch_evidence=evidence.fetch, send_verdict=verdicts.send,
                            cluster=ClusterView(status, Redactor.from_config(config)), feed_stats=feed.stats)
        return cls(services, token, config.console.host if host is None else host,
                   config.console.port if port is None else port, feed)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self, timeout: float = 15) -> str:
        """Binds, starts the feed and the web server threads; returns the URL once it answers."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))  # bound here, so port 0 becomes a known free port
        except OSError:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        self._socket = sock
        # No access log: URLs carry alert ids and filters, never the token, but a console's log
        # is not where analysts' browsing belongs. Credentials never reach uvicorn at all.
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=3)
        self._server = uvicorn.Server(config)
        if self.feed is not None:
            self.feed.start()
        self._thread = threading.Thread(target=self._serve, name="sigmaray-console-http", daemon=True)
        self._thread.start()
        waited = threading.Event()
        for _ in range(int(timeout * 20)):
            if self._server.started or not self._thread.is_alive():
                break
            waited.wait(0.05)
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"the console did not start on {self.url}")
        return self.url

    def _serve(self) -> None:
        assert self._server is not None and self._socket is not None
        # A loop of its own: the calling thread may have one (or be Ray's), this one is the server's.
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def stop(self, timeout: float = 10) -> None:
        self.services.stopping.set()  # live streams end, so the graceful shutdown is quick
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self.feed is not None:
            self.feed.stop()
        if self._socket is not None:
            self._socket.close()


def announce(url: str, token: str, generated: bool, env_name: str, out: TextIO) -> None:
    """The URL, and the token once when it was generated."""
    print(f"sigmaray: console at {url}", file=out)
    if generated:
        print(f"sigmaray: console login token (shown once; set {env_name} to choose your own): {token}",
              file=out, flush=True)
    else:
        print(f"sigmaray: console login token: the value of {env_name}", file=out, flush=True)


def start_console(config: ClusterConfig, status: Callable[[], dict[str, Any]] | None = None,
                  out: TextIO | None = None) -> ConsoleServer | None:
    """The console beside a cluster (`sigmaray run`, `sigmaray demo`): started on the config's
    console.host/port when console.enabled, its URL and token announced; None when disabled.
    The caller stops it (`.stop()`) when the cluster stops."""
    if not config.console.enabled:
        return None
    from cluster.console.auth import console_token

    out = out or sys.stderr
    token, generated = console_token(config.console.token_env)
    server = ConsoleServer.from_config(config, token, status=status)
    try:
        url = server.start()
    except (OSError, RuntimeError) as error:  # the port is taken: the cluster matters more than its console
        print(f"sigmaray: warning: the console could not start on {config.console.host}:{config.console.port} "
              f"({error}); the cluster runs without it", file=out)
        return None
    announce(url, token, generated, config.console.token_env, out)
    return server
