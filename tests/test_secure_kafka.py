"""`sigmaray kafka up --secure`, for real: a broker that speaks only TLS (SASL/SCRAM-SHA-512 for
clients, mutual TLS on its controller port), started through the CLI on free ports with a data
folder of this module's own (never 9092/9094, never a person's ~/.cache/sigmaray).

What is proved: the TLS handshake is real (the broker's certificate verifies against the CA the
command made, and fails against the system's); the printed settings reach the broker through
`kafka.client` and a supervisor with its workers on Ray runs detections end to end with them;
a wrong password or a missing CA is refused at once with an error that says so, both by the
client helper and by `sigmaray run`; no password appears in the command's output, `kafka status`,
the broker's log, the cluster's status or an error message.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Consumer, Producer

from cluster.config import KafkaConfig
from cluster.kafka import client as kafka
from cluster.kafka import dev_broker as kafka_dev
from cluster.sources.files import read_events
from detectors.engine import SigmaEngine
from detectors.rulefiles import load_rules_from_paths
from tests.broker import _free_port_pair
from tests.conftest import OTRF, ROOT

pytestmark = [pytest.mark.kafka]

SIGMARAY = [sys.executable, "-m", "cluster.cli"]
DATASETS = sorted((OTRF / "jsonl" / "credential_access").glob("*.jsonl"))[:3]


@dataclass
class SecureBroker:
    port: int
    data_dir: Path
    up_output: str
    passwords: list[str]
    seen: list[str] = field(default_factory=list)  # texts shown to a person, checked for secrets at the end

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, **changes: Any) -> dict[str, Any]:
        return {**kafka_dev.client_settings(self.data_dir), **changes}

    def kafka(self, **changes: Any) -> KafkaConfig:
        """The cluster's `kafka` settings as `sigmaray run` would read them from cluster.yaml."""
        return KafkaConfig(bootstrap_servers=self.bootstrap, client=self.client(**changes))

    def cli(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*SIGMARAY, *args], check=False, capture_output=True, text=True, cwd=ROOT,
                                timeout=timeout, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        self.seen += [result.stdout, result.stderr]
        return result


@pytest.fixture(scope="module")
def secure_broker() -> Iterator[SecureBroker]:
    port = _free_port_pair()
    data_dir = Path(tempfile.mkdtemp(prefix="sigmaray-test-secure-kafka-"))
    up = subprocess.run([*SIGMARAY, "kafka", "up", "--secure", "--port", str(port), "--data-dir", str(data_dir),
                         "--timeout", "180"], check=False, capture_output=True, text=True, cwd=ROOT, timeout=600)
    try:
        assert up.returncode == 0, f"kafka up --secure failed:\n{up.stdout}\n{up.stderr}"
        users = yaml.safe_load((data_dir / "secure" / "users.yaml").read_text())
        broker = SecureBroker(port, data_dir, up.stdout + up.stderr, sorted(users.values()))
        broker.seen.append(broker.up_output)
        yield broker
    finally:
        down = subprocess.run([*SIGMARAY, "kafka", "down", "--secure", "--data-dir", str(data_dir)], check=False,
                              capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert down.returncode == 0, down.stderr
        shutil.rmtree(data_dir, ignore_errors=True)


# --- TLS --------------------------------------------------------------------------------------


def _handshake(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def test_the_client_port_completes_a_tls_handshake_verified_against_the_ca_the_command_made(
    secure_broker: SecureBroker,
) -> None:
    ca = kafka_dev.ca_path(secure_broker.data_dir)
    context = ssl.create_default_context(cafile=str(ca))  # hostname checked: the certificate names 127.0.0.1
    with _handshake(secure_broker.port, context) as tls:
        assert tls.version() in ("TLSv1.3", "TLSv1.2")
        peer = tls.getpeercert()
        assert ("IP Address", "127.0.0.1") in peer["subjectAltName"]
    # The same handshake without that CA: the broker's certificate is not trusted by anyone else.
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(secure_broker.port, ssl.create_default_context()).close()


def test_the_controller_port_takes_no_connection_without_the_brokers_own_certificate(
    secure_broker: SecureBroker,
) -> None:
    context = ssl.create_default_context(cafile=str(kafka_dev.ca_path(secure_broker.data_dir)))
    # TLS 1.3 reports a missing client certificate after the handshake, on the first read.
    with pytest.raises((ssl.SSLError, ConnectionError)):  # noqa: B908 - either stage may refuse
        with _handshake(secure_broker.port + 1, context) as tls:
            tls.sendall(b"\x00\x00\x00\x00")
            if not tls.recv(1):
                raise ConnectionResetError("closed without a client certificate")


def test_up_prints_the_client_settings_and_keeps_the_password_in_a_file_only_the_user_can_read(
    secure_broker: SecureBroker,
) -> None:
    output = secure_broker.up_output
    assert "SASL_SSL" in output and "SCRAM-SHA-512" in output
    assert "sasl.username: sigmaray" in output
    client_file = kafka_dev.client_config_path(secure_broker.data_dir)
    assert f"sasl.password: <in {client_file}>" in output
    for password in secure_broker.passwords:
        assert password not in output
    assert stat.S_IMODE(client_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(client_file.parent.stat().st_mode) == 0o700
    for private in ("broker.pem", "users.yaml"):
        assert stat.S_IMODE((client_file.parent / private).stat().st_mode) == 0o600
    assert stat.S_IMODE((secure_broker.data_dir / "server.properties").stat().st_mode) == 0o600  # the broker's own JAAS
    # The file is a cluster.yaml `kafka` section as it is.
    section = yaml.safe_load(client_file.read_text())["kafka"]
    assert section["bootstrap_servers"] == secure_broker.bootstrap
    assert section["client"]["sasl.password"] in secure_broker.passwords


def test_kafka_status_reaches_the_secure_broker_and_shows_no_secret(secure_broker: SecureBroker) -> None:
    result = secure_broker.cli("kafka", "status", "--secure", "--data-dir", str(secure_broker.data_dir), "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["running"] and status["bootstrap"] == secure_broker.bootstrap
    assert status["topics"] is not None  # it answered over SASL_SSL with the file's credentials


# --- credentials ------------------------------------------------------------------------------


def test_a_wrong_password_is_refused_at_once_with_an_error_naming_the_credentials(secure_broker: SecureBroker) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    started = time.monotonic()
    with pytest.raises(kafka.KafkaAccessError) as refused:
        kafka.check_access(secure_broker.kafka(**{"sasl.password": wrong}), timeout=30)
    assert time.monotonic() - started < 20  # refused, not timed out
    message = str(refused.value)
    assert "refused the SASL credentials" in message and "SCRAM-SHA-512" in message
    assert wrong not in message
    secure_broker.seen.append(message)
    # The right ones pass the same check.
    assert kafka.check_access(secure_broker.kafka(), timeout=30)


def test_a_client_without_the_brokers_ca_fails_the_tls_handshake_with_an_error_saying_so(
    secure_broker: SecureBroker,
) -> None:
    settings = secure_broker.kafka()
    del settings.client["ssl.ca.location"]  # the system's CAs: none signed this broker
    with pytest.raises(kafka.KafkaAccessError, match="TLS handshake with Kafka failed.*certificate verify failed"):
        kafka.check_access(settings, timeout=30)


def test_sigmaray_run_with_a_wrong_password_exits_with_the_refusal_before_starting_anything(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": secure_broker.bootstrap, "group_id": f"g-{uuid.uuid4().hex[:6]}",
                  "client": secure_broker.client(**{"sasl.password": wrong})},
        "rules": {"paths": [str(ROOT / "rules")]},
        "console": {"enabled": False},
    }))
    started = time.monotonic()
    result = secure_broker.cli("run", "--config", str(config), timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Kafka refused the SASL credentials in kafka.client" in result.stderr
    assert time.monotonic() - started < 60
    assert wrong not in result.stdout + result.stderr
    assert "supervisor started" not in result.stderr


# --- end to end -------------------------------------------------------------------------------


def _events() -> list[dict[str, Any]]:
    events = []
    for path in DATASETS:
        for record in read_events(path):
            assert record.event is not None
            events.append(dict(record.event, sigmaray_test_id=f"{path.stem}:{record.line}"))
    return events


def _read_all(settings: dict[str, Any], topic: str, expected: int, timeout: float) -> list[dict[str, Any]]:
    consumer = Consumer({**settings, "group.id": f"reader-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                if len(out) >= expected and time.monotonic() - quiet_since > 3:
                    break
                continue
            quiet_since = time.monotonic()
            out.append(orjson.loads(message.value()))
    finally:
        consumer.close()
    return out


@pytest.mark.slow
def test_a_supervisor_and_its_workers_on_ray_run_detections_end_to_end_with_the_printed_settings(
    secure_broker: SecureBroker, ray_local: Any
) -> None:
    from cluster.config import config_from_dict
    from cluster.ray.actors import Supervisor, config_to_dict

    run = uuid.uuid4().hex[:8]
    topics = {"in": f"events-{run}", "out": f"detections-{run}", "dlq": f"dead-{run}"}
    section = yaml.safe_load(kafka_dev.client_config_path(secure_broker.data_dir).read_text())["kafka"]
    config = config_from_dict({
        "kafka": {**section, "input_topics": [topics["in"]], "detections_topic": topics["out"],
                  "dead_letter_topic": topics["dlq"], "group_id": f"sigmaray-{run}"},
        "rules": {"paths": [str(ROOT / "rules")]},
        "models": {"enabled": False},
        "workers": 1,
        "correlator": {"enabled": False},  # the workers' Kafka clients are under test
    })
    kafka.create_topics(config.kafka, {topics["in"]: 2, topics["out"]: 1, topics["dlq"]: 1})
    events = _events()
    producer = Producer(kafka.settings(config.kafka))
    kafka.produce_all(producer, topics["in"], [(e["sigmaray_test_id"].encode(), orjson.dumps(e)) for e in events])

    supervisor = Supervisor.remote(config_to_dict(config))
    try:
        ray_local.get(supervisor.start.remote(), timeout=180)
        group = config.kafka.group_id
        assert kafka.wait_until(lambda: kafka.committed_total(config.kafka, group, topics["in"], 2) >= len(events),
                                timeout=240, every=1)
        status = ray_local.get(supervisor.status.remote(), timeout=30)
    finally:
        ray_local.get(supervisor.shutdown.remote(), timeout=120)

    engine = SigmaEngine(load_rules_from_paths([ROOT / "rules"]).rules)
    offline = sorted((e["sigmaray_test_id"], m.id) for e in events for m in engine.match(e))
    assert offline, "the chosen datasets must match some shipped rule, or this proves nothing"
    detections = [d for d in _read_all(kafka.settings(config.kafka), topics["out"], len(offline), 90)
                  if d["kind"] == "sigma"]
    assert sorted((d["event"]["sigmaray_test_id"], d["rule"]["id"]) for d in detections) == offline
    assert sum(row["events_in"] for row in status["workers"]) >= len(events)
    secure_broker.seen.append(json.dumps(status))
    # Everything Ray logged for this cluster (driver, supervisor, workers) goes to the final check.
    session = Path(ray_local._private.worker._global_node.get_session_dir_path())
    logs = [path for path in (session / "logs").rglob("*") if path.is_file()]
    assert logs
    secure_broker.seen += [path.read_bytes().decode(errors="replace") for path in logs]


def test_a_restarted_secure_broker_keeps_its_users_and_certificate_and_refuses_plaintext_mode(
    secure_broker: SecureBroker,
) -> None:
    data_dir = str(secure_broker.data_dir)
    ca_before = kafka_dev.ca_path(secure_broker.data_dir).read_bytes()
    settings = secure_broker.kafka()
    down = secure_broker.cli("kafka", "down", "--secure", "--data-dir", data_dir)
    assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
    # Its storage holds SCRAM users: starting it as a plaintext broker is refused, not half-done.
    with pytest.raises(kafka_dev.KafkaDevError, match="formatted with --secure"):
        kafka_dev.up(data_dir, secure_broker.port, secure=False)
    up = secure_broker.cli("kafka", "up", "--secure", "--port", str(secure_broker.port), "--data-dir", data_dir)
    assert up.returncode == 0 and "started" in up.stdout, up.stdout + up.stderr
    assert kafka_dev.ca_path(secure_broker.data_dir).read_bytes() == ca_before  # clients keep trusting it
    assert kafka.check_access(settings, timeout=60)  # the same password still works


# --- secrets ----------------------------------------------------------------------------------


def test_no_password_appears_in_any_output_status_error_or_the_brokers_log(secure_broker: SecureBroker) -> None:
    """Runs last in this module (file order): everything the tests above showed is checked."""
    assert len(secure_broker.passwords) == 2 and all(len(p) >= 24 for p in secure_broker.passwords)
    texts = {f"shown[{i}]": text for i, text in enumerate(secure_broker.seen)}
    for name in ("broker.log", "log4j2.properties"):
        texts[name] = (secure_broker.data_dir / name).read_text(errors="replace")
    # The log is the real one: the broker logged its configuration, SASL_SSL listener included.
    assert f"SASL_SSL://127.0.0.1:{secure_broker.port}" in texts["broker.log"]
    leaked = [name for name, text in texts.items() for password in secure_broker.passwords if password in text]
    assert not leaked, f"a password is in {leaked}"
