"""The test run's own Kafka broker: a free port and a data folder of its own, so a test run never
shares a broker with a person's `sigmaray demo` or with another test run on the same machine.

The port and folder are chosen once per run, in the first process that imports this module (the
pytest-xdist controller, or plain pytest), and handed to the xdist workers through the
environment. Whichever worker first needs the broker starts it; the holders logic keeps it up
while any worker is inside, and the controller stops it at the end of the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from cluster.kafka import dev_broker as kafka_dev

_ENV = "SIGMARAY_TEST_KAFKA"  # "PORT:DATA_DIR", set by the first process of the run


def _free_port_pair() -> int:
    """A port whose successor is free too (the broker's controller listens on PORT+1)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind((kafka_dev.HOST, 0))
            port = int(sock.getsockname()[1])
        if port < 65535 and not kafka_dev._port_taken(port) and not kafka_dev._port_taken(port + 1):
            with contextlib.suppress(OSError), socket.socket() as probe:
                probe.bind((kafka_dev.HOST, port + 1))
                return port
    raise RuntimeError("no free pair of ports for the test broker")


def _chosen() -> tuple[int, Path, bool]:
    """(port, data folder, whether this process chose them)."""
    value = os.environ.get(_ENV)
    if value:
        port, _, folder = value.partition(":")
        return int(port), Path(folder), False
    port = _free_port_pair()
    folder = Path(tempfile.mkdtemp(prefix="sigmaray-test-kafka-"))
    os.environ[_ENV] = f"{port}:{folder}"
    return port, folder, True


PORT, DATA_DIR, OWNER = _chosen()
BOOTSTRAP = f"{kafka_dev.HOST}:{PORT}"


@contextlib.contextmanager
def held() -> Iterator[str]:
    """The run's broker, started if needed, kept up while any holder in any process is inside."""
    with shared_broker(DATA_DIR, PORT, timeout=120):
        yield BOOTSTRAP


@contextlib.contextmanager
def shared_broker(data_dir: str | Path, port: int, timeout: float = 90) -> Iterator[kafka_dev.BrokerInfo]:
    """Keeps the broker up while any holder, in any process, is inside.

    pytest-xdist workers share one broker: a plain "stop it if I started it" fixture would stop
    it under another worker's feet. So each holder leaves a file named after its pid, and the
    last one out stops the broker, and only if a holder started it (a broker a person started
    keeps running). Files of dead pids are ignored, so a crashed run pins nothing.
    """
    data_dir = Path(data_dir)
    holders = data_dir / "holders"
    started_by_holder = holders / "started-by-holder"
    me = holders / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with kafka_dev._locked(data_dir / ".holders.lock"):
        holders.mkdir(parents=True, exist_ok=True)
        if not _live_holders(holders):
            started_by_holder.unlink(missing_ok=True)  # left by a crashed run
        info = kafka_dev.up(data_dir, port, timeout)
        if info.started:
            started_by_holder.touch()
        me.touch()
    try:
        yield info
    finally:
        with kafka_dev._locked(data_dir / ".holders.lock"):
            me.unlink(missing_ok=True)
            if not _live_holders(holders) and started_by_holder.exists():
                kafka_dev.down(data_dir=data_dir)
                started_by_holder.unlink()


def _live_holders(holders: Path) -> list[Path]:
    live = []
    for path in holders.iterdir():
        pid = path.name.split("-", 1)[0]
        if pid.isdigit() and kafka_dev._alive(int(pid)):
            live.append(path)
        elif pid.isdigit():
            path.unlink(missing_ok=True)
    return live


def stop() -> None:
    """At the end of the run (controller only): the broker goes, and its folder with it."""
    if not OWNER:
        return
    with contextlib.suppress(kafka_dev.KafkaDevError):
        kafka_dev.down(data_dir=DATA_DIR)
    shutil.rmtree(DATA_DIR, ignore_errors=True)
