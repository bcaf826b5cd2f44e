"""A real single-node Apache Kafka broker (KRaft) for development, tests and the quickstart.

The jars come from Maven Central through `cluster/kafka/pom.xml` (so the machine needs only Java
and Maven, both reachable through package registries); they are cached per Kafka version and
reused. One data dir holds one broker: server.properties, broker.pid, broker.log and the logs/.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from detectors.errors import SigmaRayError

POM = Path(__file__).with_name("pom.xml")
HOST = "127.0.0.1"
DEFAULT_PORT = 9092
# The machine has 2 cores and the broker shares them with Ray workers: keep the JVM modest.
JVM_OPTS = ["-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            # Log4j's own shutdown hook otherwise closes the log before Kafka's hook has finished,
            # cutting the shutdown messages that show whether a stop was clean.
            "-Dlog4j2.shutdownHookEnabled=false"]
MAIN_CLASS = "kafka.Kafka"


class KafkaDevError(SigmaRayError):
    """The dev broker could not be installed, started or stopped; the reason says why."""


@dataclass(frozen=True)
class BrokerInfo:
    pid: int
    bootstrap: str
    data_dir: Path
    log_file: Path
    started: bool  # False when up() found the broker already running
    seconds: float  # how long up() took


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str | None
    topics: int | None  # topics other than Kafka's internal __* ones; None when not reachable
    data_dir: Path

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "data_dir": str(self.data_dir)}


# ---------------------------------------------------------------- paths


def kafka_version() -> str:
    """The version pinned in the pom, so the pom is the only place to change it."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    version = (node.text or "").strip() if node is not None else ""
    if not version:
        raise KafkaDevError(f"{POM} has no <kafka.version> property")
    return version


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sigmaray"


def kafka_home() -> Path:
    override = os.environ.get("SIGMARAY_KAFKA_HOME")
    return Path(override).expanduser() if override else _cache_root() / f"kafka-{kafka_version()}"


def default_data_dir() -> Path:
    override = os.environ.get("SIGMARAY_KAFKA_DATA")
    return Path(override).expanduser() if override else _cache_root() / "kafka-data"


def _data_dir(data_dir: str | Path | None) -> Path:
    return (Path(data_dir).expanduser() if data_dir else default_data_dir()).resolve()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialises installs and starts across processes (pytest-xdist workers, two shells)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- install


def ensure_installed() -> Path:
    """Resolves the broker jars with Maven once; returns the lib folder to put on the classpath."""
    home = kafka_home()
    lib, marker = home / "lib", home / "installed.json"
    pom_hash = hashlib.sha256(POM.read_bytes()).hexdigest()
    with _locked(home / ".install.lock"):
        if _install_complete(lib, marker, pom_hash):
            return lib
        mvn = shutil.which("mvn")
        if not mvn:
            raise KafkaDevError("Maven (mvn) is needed once to fetch the Kafka jars: apt-get install maven")
        shutil.copyfile(POM, home / "pom.xml")
        # Copy into a side folder and rename, so an interrupted download never looks complete.
        partial = home / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        cmd = [mvn, "-q", "-B", "-f", str(home / "pom.xml"), "dependency:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={partial}"]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=home)
        if done.returncode != 0:
            output = _tail(done.stdout + done.stderr)
            raise KafkaDevError(f"mvn failed ({done.returncode}) fetching the Kafka jars:\n{output}")
        shutil.rmtree(lib, ignore_errors=True)
        partial.rename(lib)
        jars = sorted(p.name for p in lib.glob("*.jar"))
        marker.write_text(json.dumps({"pom_sha256": pom_hash, "jars": jars}, indent=1))
        return lib


def _install_complete(lib: Path, marker: Path, pom_hash: str) -> bool:
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    jars = record.get("jars") or []
    return record.get("pom_sha256") == pom_hash and bool(jars) and all((lib / j).is_file() for j in jars)


# ---------------------------------------------------------------- config


def _server_properties(data_dir: Path, port: int) -> str:
    controller = port + 1  # 9093 for the default port; follows --port so two brokers can coexist
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        "num.partitions": "3",
        # One broker: every internal topic must accept replication factor 1 and min.isr 1, or
        # consumer groups, transactions (exactly-once) and share groups never get going.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Fewer internal partitions than the default 50: creating them is most of the first
        # consumer group's and first transaction's wait on a 2-core machine.
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.num.partitions": "10",
        # Tests and the quickstart start consumers right away; the default 3 s delay only helps
        # real clusters where many members join at once.
        "group.initial.rebalance.delay.ms": "0",
        # Topics are created on purpose (with their partition count); a typo must not create one.
        "auto.create.topics.enable": "false",
    }
    return "".join(f"{k}={v}\n" for k, v in settings.items())


# Broker output goes to stdout, which up() points at broker.log.
LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


def _port_of(props: Path) -> int | None:
    try:
        for line in props.read_text().splitlines():
            if line.startswith("advertised.listeners="):
                return int(line.rsplit(":", 1)[1])
    except (OSError, ValueError):
        return None
    return None


def _cluster_id() -> str:
    # Kafka's Uuid format (base64url of 16 bytes, no padding); like Uuid.randomUuid, avoid a
    # leading "-" that the tool's argument parser would take for an option.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise KafkaDevError("Java 17+ is needed to run the Kafka broker: apt-get install openjdk-17-jre-headless")
    return java


def _format_storage(java: str, lib: Path, props: Path, data_dir: Path) -> None:
    """Formats log.dirs once (KRaft refuses to start on an unformatted dir)."""
    if (data_dir / "logs" / "meta.properties").exists():
        return
    # Static controller.quorum.voters means no --standalone (that flag is for dynamic quorums).
    cmd = [java, "-Xmx256m", "-cp", f"{lib}/*", "kafka.tools.StorageTool", "format",
           "-t", _cluster_id(), "-c", str(props), "--ignore-formatted"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise KafkaDevError(f"formatting Kafka storage failed ({done.returncode}):\n{_tail(done.stdout + done.stderr)}")


# ---------------------------------------------------------------- process


def _files(data_dir: Path) -> tuple[Path, Path, Path]:
    return data_dir / "server.properties", data_dir / "broker.pid", data_dir / "broker.log"


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        # Our own child (the broker was started by this process): reap it, or it stays a zombie
        # that os.kill(pid, 0) still reports as alive.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _running_pid(data_dir: Path) -> int | None:
    """The pid of this data dir's broker, or None; removes a stale pid file."""
    props, pid_file, _ = _files(data_dir)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if _alive(pid) and _is_broker(pid, props):
        return pid
    pid_file.unlink(missing_ok=True)
    return None


def _is_broker(pid: int, props: Path) -> bool:
    # A pid from an old file may now belong to another program: check it runs our broker.
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return not Path("/proc").is_dir()  # no /proc (macOS): trust the pid file
    return MAIN_CLASS in args and str(props) in args


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _tail(text_or_path: str | Path, lines: int = 40) -> str:
    if isinstance(text_or_path, Path):
        try:
            text_or_path = text_or_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
    return "\n".join(text_or_path.strip().splitlines()[-lines:])


def _admin(bootstrap: str) -> Any:
    from cluster.kafka.client import admin  # imported late: only broker commands need it

    quiet = logging.getLogger("sigmaray.kafka_dev.librdkafka")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False  # "connection refused" while the broker boots is expected noise
    return admin(bootstrap, logger=quiet)


def _user_topics(admin: Any, timeout: float) -> int:
    meta = admin.list_topics(timeout=timeout)
    if not meta.brokers:  # answered before the broker registered: not ready yet
        raise RuntimeError("no brokers in metadata")
    return sum(1 for name in meta.topics if not name.startswith("__"))


# ---------------------------------------------------------------- public


def up(data_dir: str | Path | None = None, port: int = DEFAULT_PORT, timeout: float = 90) -> BrokerInfo:
    """Starts the broker detached and waits until it answers an AdminClient; a no-op if it runs."""
    started = time.monotonic()
    data_dir = _data_dir(data_dir)
    props, pid_file, log_file = _files(data_dir)
    with _locked(data_dir / ".lock"):
        pid = _running_pid(data_dir)
        if pid is not None:
            running_port = _port_of(props) or port
            if running_port != port:
                raise KafkaDevError(f"the broker in {data_dir} already runs on port {running_port}; "
                                    "run `sigmaray kafka down` first to move it")
            return BrokerInfo(pid, f"{HOST}:{port}", data_dir, log_file, False, time.monotonic() - started)
        for taken in (port, port + 1):
            if _port_taken(taken):
                raise KafkaDevError(f"port {taken} on {HOST} is already in use by another program")
        java, lib = _java(), ensure_installed()
        (data_dir / "logs").mkdir(parents=True, exist_ok=True)
        props.write_text(_server_properties(data_dir, port))
        (data_dir / "log4j2.properties").write_text(LOG4J2)
        _format_storage(java, lib, props, data_dir)
        if log_file.exists():
            log_file.replace(log_file.with_name("broker.log.1"))  # keep the previous run's log
        cmd = [java, *JVM_OPTS, f"-Dlog4j2.configurationFile={data_dir / 'log4j2.properties'}",
               "-cp", f"{lib}/*", MAIN_CLASS, str(props)]
        with open(log_file, "ab") as out:
            # A new session: the broker outlives this command and ignores the terminal's Ctrl-C.
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=data_dir, start_new_session=True)
        pid_file.write_text(f"{proc.pid}\n")
        bootstrap = f"{HOST}:{port}"
        # The timeout counts from the launch: the first run's Maven download is not part of it.
        _wait_ready(proc, bootstrap, time.monotonic() + timeout, log_file, pid_file)
        return BrokerInfo(proc.pid, bootstrap, data_dir, log_file, True, time.monotonic() - started)


def _wait_ready(proc: subprocess.Popen[bytes], bootstrap: str, deadline: float, log_file: Path, pid_file: Path) -> None:
    admin = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_file.unlink(missing_ok=True)
            raise KafkaDevError(f"the Kafka broker exited with code {proc.returncode} while starting; "
                                f"end of {log_file}:\n{_tail(log_file)}")
        # Cheap socket probe first, so the AdminClient is only built once something listens.
        if admin is None and _port_taken(int(bootstrap.rsplit(":", 1)[1])):
            admin = _admin(bootstrap)
        if admin is not None:
            with contextlib.suppress(Exception):
                _user_topics(admin, timeout=max(0.5, min(3.0, deadline - time.monotonic())))
                return
        time.sleep(0.5)
    _stop(proc.pid, 10)  # do not leave a half-started broker holding the ports
    pid_file.unlink(missing_ok=True)
    raise KafkaDevError(f"the Kafka broker did not answer on {bootstrap} within the timeout; "
                        f"end of {log_file}:\n{_tail(log_file)}")


def _stop(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)  # the broker flushes logs and leaves the quorum cleanly
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def down(timeout: float = 30, data_dir: str | Path | None = None) -> bool:
    """Stops the broker (SIGTERM, then SIGKILL after timeout); False if none was running."""
    data_dir = _data_dir(data_dir)
    _, pid_file, _ = _files(data_dir)
    if not pid_file.exists():
        return False
    with _locked(data_dir / ".lock"):
        pid = _running_pid(data_dir)
        if pid is None:
            return False
        _stop(pid, timeout)
        if _alive(pid):
            raise KafkaDevError(f"the Kafka broker (pid {pid}) did not stop, even after SIGKILL")
        pid_file.unlink(missing_ok=True)
        return True


def status(data_dir: str | Path | None = None) -> BrokerStatus:
    """Whether this data dir's broker runs, and how many (non-internal) topics it has."""
    data_dir = _data_dir(data_dir)
    props = _files(data_dir)[0]
    pid = _running_pid(data_dir)
    if pid is None:
        return BrokerStatus(False, None, None, None, data_dir)
    port = _port_of(props)
    bootstrap = f"{HOST}:{port}" if port else None
    topics = None
    if bootstrap:
        with contextlib.suppress(Exception):
            topics = _user_topics(_admin(bootstrap), timeout=5)
    return BrokerStatus(True, pid, bootstrap, topics, data_dir)
