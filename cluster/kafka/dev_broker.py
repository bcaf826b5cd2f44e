"""A real single-node Apache Kafka broker (KRaft) for development, tests and the quickstart.

The jars come from Maven Central through `cluster/kafka/pom.xml` (so the machine needs only Java
and Maven, both reachable through package registries); they are cached per Kafka version and
reused. One data dir holds one broker: server.properties, broker.pid, broker.log and the logs/.

`up(secure=True)` starts it with SASL/SCRAM-SHA-512 over TLS instead of plaintext (see the
"secure" section below): a CA and broker certificate made at the first start, users created by
Kafka's own storage tool, and the client settings written to a file only the user can read.
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

import yaml

from detectors.errors import SigmaRayError

POM = Path(__file__).with_name("pom.xml")
HOST = "127.0.0.1"
DEFAULT_PORT = 9092
DEFAULT_SECURE_PORT = 9094  # beside a plaintext broker on 9092/9093: its controller takes 9095
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
    client_config: Path | None = None  # secure broker: the `kafka:` settings with the password (mode 600)


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


def default_data_dir(secure: bool = False) -> Path:
    """A secure broker has a folder of its own: a plaintext one's storage was formatted without
    SCRAM users, and the two can run side by side."""
    override = os.environ.get("SIGMARAY_KAFKA_SECURE_DATA" if secure else "SIGMARAY_KAFKA_DATA")
    return Path(override).expanduser() if override else _cache_root() / ("kafka-data-secure" if secure else "kafka-data")


def _data_dir(data_dir: str | Path | None, secure: bool = False) -> Path:
    return (Path(data_dir).expanduser() if data_dir else default_data_dir(secure)).resolve()


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


def _format_storage(java: str, lib: Path, props: Path, data_dir: Path,
                    scram_users: dict[str, str] | None = None) -> None:
    """Formats log.dirs once (KRaft refuses to start on an unformatted dir). `scram_users` (name ->
    password) become SCRAM-SHA-512 credentials in the first metadata records (`--add-scram`), so
    the broker can authenticate its own inter-broker connection from its first second."""
    if (data_dir / "logs" / "meta.properties").exists():
        return
    # Static controller.quorum.voters means no --standalone (that flag is for dynamic quorums).
    args = ["-Xmx256m", "-cp", f"{lib}/*", "kafka.tools.StorageTool", "format",
            "-t", _cluster_id(), "-c", str(props), "--ignore-formatted"]
    for name, password in (scram_users or {}).items():
        args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
    secrets_ = list((scram_users or {}).values())
    if not secrets_:
        done = subprocess.run([java, *args], capture_output=True, text=True, timeout=180)
    else:
        # The passwords go through a java @argfile (mode 600, deleted right after), never the
        # command line, which every local user can read in /proc/PID/cmdline.
        argfile = data_dir / ".format-args"
        _write_private(argfile, "".join(f'"{a}"\n' for a in args))
        try:
            done = subprocess.run([java, f"@{argfile}"], capture_output=True, text=True, timeout=180)
        finally:
            argfile.unlink(missing_ok=True)
    if done.returncode != 0:
        output = _redact(done.stdout + done.stderr, secrets_)
        raise KafkaDevError(f"formatting Kafka storage failed ({done.returncode}):\n{_tail(output)}")


# ---------------------------------------------------------------- secure (SASL_SSL)
#
# Clients reach the broker on one SASL_SSL listener (TLS, then SCRAM-SHA-512). The broker's own
# connections use it too (inter-broker traffic such as transaction markers, which the broker sends
# to itself), as user sigmaray-broker. The KRaft controller listener is TLS with client
# certificates required: only a holder of the broker's key (mode 600) gets in, so no port of a
# secure broker takes an unauthenticated connection. SCRAM cannot guard the controller listener
# (its credentials live in the metadata the controller serves), hence mutual TLS there.
#
# The CA is made at the first start, signs the broker certificate and is thrown away: only its
# certificate (ca.pem, what clients trust) stays. No authorizer: every authenticated user may do
# everything, as on the plaintext broker; a development broker, not a model of production ACLs.

SCRAM_MECHANISM = "SCRAM-SHA-512"
CLIENT_USER = "sigmaray"
BROKER_USER = "sigmaray-broker"
CERT_DAYS = 365


def secure_dir(data_dir: Path) -> Path:
    return data_dir / "secure"


def client_config_path(data_dir: str | Path) -> Path:
    """The `kafka:` settings for cluster.yaml, password included: readable by the user only."""
    return secure_dir(Path(data_dir)) / "client.yaml"


def ca_path(data_dir: str | Path) -> Path:
    return secure_dir(Path(data_dir)) / "ca.pem"


def _is_secure(data_dir: Path) -> bool:
    return (secure_dir(data_dir) / "users.yaml").exists()


def _redact(text: str, secrets_: list[str]) -> str:
    for secret in secrets_:
        if secret:
            text = text.replace(secret, "***")
    return text


def _write_private(path: Path, text: str | bytes) -> None:
    """Written with mode 600 from the first byte (no window in which the umask's mode applies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(text.encode() if isinstance(text, str) else text)
    temporary.replace(path)


def client_settings(data_dir: str | Path) -> dict[str, Any]:
    """librdkafka settings for the secure broker of `data_dir` (password included)."""
    try:
        data = yaml.safe_load(client_config_path(data_dir).read_text())
        return dict(data["kafka"]["client"])
    except (OSError, KeyError, TypeError, yaml.YAMLError) as error:
        raise KafkaDevError(f"no client settings for a secure broker in {data_dir}: {error}") from None


def public_client_settings(data_dir: str | Path) -> dict[str, Any]:
    """The same settings with the password replaced by where it is: safe to print or log."""
    settings = client_settings(data_dir)
    if "sasl.password" in settings:
        settings["sasl.password"] = f"<in {client_config_path(data_dir)}>"
    return settings


def _prepare_secure(data_dir: Path, port: int) -> tuple[dict[str, Any], dict[str, str]]:
    """Certificates (made when missing or about to expire), users and passwords (made once, when
    the storage is first formatted) and the client file for this port. Returns (client settings,
    {user: password})."""
    import secrets

    folder = secure_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    users_file = folder / "users.yaml"
    users: dict[str, str] = {}
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
        users = dict(yaml.safe_load(users_file.read_text()) or {})
    if set(users) != {CLIENT_USER, BROKER_USER}:
        if (data_dir / "logs" / "meta.properties").exists():
            raise KafkaDevError(f"{users_file} is missing or damaged, and the users' credentials were fixed when "
                                f"{data_dir} was formatted: remove {data_dir} to start afresh")
        users = {CLIENT_USER: secrets.token_urlsafe(24), BROKER_USER: secrets.token_urlsafe(24)}
        _write_private(users_file, yaml.safe_dump(users))
    if _certificate_expiring(folder / "broker.pem"):
        _make_certificates(folder)
    client = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": SCRAM_MECHANISM,
        "sasl.username": CLIENT_USER,
        "sasl.password": users[CLIENT_USER],
        "ssl.ca.location": str(folder / "ca.pem"),
    }
    header = ("# `sigmaray kafka up --secure`: the kafka settings for cluster.yaml, password included.\n"
              "# Readable by you only; keep it that way (and keep the password out of shared files).\n")
    _write_private(folder / "client.yaml",
                   header + yaml.safe_dump({"kafka": {"bootstrap_servers": f"{HOST}:{port}", "client": client}},
                                           sort_keys=False))
    return client, users


def _certificate_expiring(path: Path) -> bool:
    from cryptography import x509

    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return True
    remaining = certificate.not_valid_after_utc.timestamp() - time.time()
    return remaining < 7 * 86400


def _make_certificates(folder: Path) -> None:
    """A throw-away CA and a broker certificate for 127.0.0.1 and localhost (serverAuth for the
    clients, clientAuth for the broker's own controller connection)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sigmaray dev broker CA {uuid.uuid4().hex[:8]}")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    # Kafka's PEM key store reads an unencrypted PKCS#8 key followed by the certificate chain.
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_private(folder / "broker.pem", key_pem + cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(pem))  # public: what clients trust


def _secure_properties(data_dir: Path, port: int, users: dict[str, str]) -> str:
    """Overrides appended to _server_properties (later keys win in a properties file)."""
    folder = secure_dir(data_dir)
    controller = port + 1
    jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{BROKER_USER}" '
            f'password="{users[BROKER_USER]}";')
    settings = {
        "listeners": f"SASL_SSL://{HOST}:{port},CONTROLLER://{HOST}:{controller}",
        "advertised.listeners": f"SASL_SSL://{HOST}:{port}",
        "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(folder / "broker.pem"),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(folder / "ca.pem"),
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
    }
    return "# --secure\n" + "".join(f"{k}={v}\n" for k, v in settings.items())


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


def _admin(bootstrap: str, client: dict[str, Any] | None = None) -> Any:
    from cluster.kafka.client import admin  # imported late: only broker commands need it

    quiet = logging.getLogger("sigmaray.kafka_dev.librdkafka")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False  # "connection refused" while the broker boots is expected noise
    return admin(bootstrap, logger=quiet, **(client or {}))


def _user_topics(admin: Any, timeout: float) -> int:
    meta = admin.list_topics(timeout=timeout)
    if not meta.brokers:  # answered before the broker registered: not ready yet
        raise RuntimeError("no brokers in metadata")
    return sum(1 for name in meta.topics if not name.startswith("__"))


# ---------------------------------------------------------------- public


def up(data_dir: str | Path | None = None, port: int | None = None, timeout: float = 90,
       secure: bool = False) -> BrokerInfo:
    """Starts the broker detached and waits until it answers an AdminClient; a no-op if it runs.
    `secure`: SASL/SCRAM-SHA-512 over TLS (default port 9094, data dir kafka-data-secure)."""
    started = time.monotonic()
    port = port if port is not None else (DEFAULT_SECURE_PORT if secure else DEFAULT_PORT)
    data_dir = _data_dir(data_dir, secure)
    props, pid_file, log_file = _files(data_dir)
    with _locked(data_dir / ".lock"):
        formatted_secure = _is_secure(data_dir)
        if (data_dir / "logs" / "meta.properties").exists() and formatted_secure != secure:
            kind = "with" if formatted_secure else "without"
            raise KafkaDevError(f"{data_dir} holds a broker formatted {kind} --secure; use another --data-dir "
                                "(a secure broker's users are created when its storage is formatted)")
        pid = _running_pid(data_dir)
        client_file = client_config_path(data_dir) if secure else None
        if pid is not None:
            running_port = _port_of(props) or port
            if running_port != port:
                raise KafkaDevError(f"the broker in {data_dir} already runs on port {running_port}; "
                                    "run `sigmaray kafka down` first to move it")
            return BrokerInfo(pid, f"{HOST}:{port}", data_dir, log_file, False, time.monotonic() - started, client_file)
        for taken in (port, port + 1):
            if _port_taken(taken):
                raise KafkaDevError(f"port {taken} on {HOST} is already in use by another program")
        java, lib = _java(), ensure_installed()
        (data_dir / "logs").mkdir(parents=True, exist_ok=True)
        client: dict[str, Any] | None = None
        if secure:
            client, users = _prepare_secure(data_dir, port)
            _write_private(props, _server_properties(data_dir, port) + _secure_properties(data_dir, port, users))
        else:
            props.write_text(_server_properties(data_dir, port))
            users = {}
        (data_dir / "log4j2.properties").write_text(LOG4J2)
        _format_storage(java, lib, props, data_dir, users)
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
        _wait_ready(proc, bootstrap, time.monotonic() + timeout, log_file, pid_file, client)
        return BrokerInfo(proc.pid, bootstrap, data_dir, log_file, True, time.monotonic() - started, client_file)


def _wait_ready(proc: subprocess.Popen[bytes], bootstrap: str, deadline: float, log_file: Path, pid_file: Path,
                client: dict[str, Any] | None = None) -> None:
    admin = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_file.unlink(missing_ok=True)
            raise KafkaDevError(f"the Kafka broker exited with code {proc.returncode} while starting; "
                                f"end of {log_file}:\n{_tail(log_file)}")
        # Cheap socket probe first, so the AdminClient is only built once something listens.
        if admin is None and _port_taken(int(bootstrap.rsplit(":", 1)[1])):
            admin = _admin(bootstrap, client)
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


def down(timeout: float = 30, data_dir: str | Path | None = None, secure: bool = False) -> bool:
    """Stops the broker (SIGTERM, then SIGKILL after timeout); False if none was running."""
    data_dir = _data_dir(data_dir, secure)
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


def status(data_dir: str | Path | None = None, secure: bool = False) -> BrokerStatus:
    """Whether this data dir's broker runs, and how many (non-internal) topics it has."""
    data_dir = _data_dir(data_dir, secure)
    props = _files(data_dir)[0]
    pid = _running_pid(data_dir)
    if pid is None:
        return BrokerStatus(False, None, None, None, data_dir)
    port = _port_of(props)
    bootstrap = f"{HOST}:{port}" if port else None
    topics = None
    if bootstrap:
        with contextlib.suppress(Exception):
            client = client_settings(data_dir) if _is_secure(data_dir) else None
            topics = _user_topics(_admin(bootstrap, client), timeout=5)
    return BrokerStatus(True, pid, bootstrap, topics, data_dir)
