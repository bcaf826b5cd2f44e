"""What a running cluster exposes and what it shows: `sigmaray run`'s own Ray listens on
127.0.0.1 only (its Prometheus metrics included), and a Kafka password given in `kafka.client`
appears in no output, status, metrics, error message or Ray log.

One `sigmaray run` in its own process serves both, with the real broker and a real Ray. It runs
with its own HOME (so its Ray token and `ray-address` file are its own) and its own RAY_TMPDIR
(so the Ray session it logs to is this test's and no one else's).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cluster.config import ClusterConfig, config_from_dict, load_config
from detectors.errors import ConfigError
from models.datasets.generator import generate
from tests.conftest import OTRF, ROOT

SIGMARAY = [sys.executable, "-m", "cluster.cli"]
# Distinctive, so any occurrence anywhere is the leak. librdkafka accepts SASL settings under
# PLAINTEXT (with a warning that names the property, never its value), so the plaintext dev
# broker still serves a client that carries them.
PASSWORD = f"fake-kafka-password-{uuid.uuid4().hex}"
SECRET_CLIENT = {
    "security.protocol": "PLAINTEXT",
    "sasl.mechanism": "PLAIN",
    "sasl.username": "sigmaray-test-user",
    "sasl.password": PASSWORD,
}
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def _psutil() -> Any:
    importlib.import_module("ray")  # Ray ships psutil in ray/thirdparty_files and puts it on sys.path
    return importlib.import_module("psutil")


@dataclass
class RunningCluster:
    process: subprocess.Popen[bytes]
    base: Path
    env: dict[str, str]
    address: str
    metrics_url: str

    @property
    def log(self) -> Path:
        return self.base / "run.log"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SIGMARAY, *args], check=False, capture_output=True, text=True, timeout=180,
                              cwd=ROOT, env=self.env)

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--address", self.address, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def stop(self) -> int:
        """Ctrl-C, as an operator would; returns the exit code (idempotent)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        return self.process.returncode


@pytest.fixture(scope="module")
def cluster(broker: str) -> Iterator[RunningCluster]:
    run = uuid.uuid4().hex[:8]
    topics = {"in": f"sec-events-{run}", "out": f"sec-detections-{run}", "dlq": f"sec-dead-{run}"}
    admin = AdminClient({"bootstrap.servers": broker})
    for future in admin.create_topics([NewTopic(topics["in"], 2, 1), NewTopic(topics["out"], 1, 1),
                                       NewTopic(topics["dlq"], 1, 1)]).values():
        future.result(30)
    base = Path(tempfile.mkdtemp(prefix="srsec-", dir="/tmp"))  # short: Ray's socket paths
    (base / "home").mkdir()
    config = base / "cluster.yaml"
    config.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": broker, "input_topics": [topics["in"]], "detections_topic": topics["out"],
                  "dead_letter_topic": topics["dlq"], "group_id": f"sigmaray-{run}", "client": SECRET_CLIENT},
        "rules": {"paths": [str(ROOT / "rules")]},
        "models": {"checkpoint_url": str(base / "checkpoints")},
        "workers": 2,
        "correlator": {"enabled": False},  # the workers are under test
        "console": {"port": 0},
    }))  # no `ray` section: the default is what is tested
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env.update(HOME=str(base / "home"), RAY_TMPDIR=str(base), RAY_USAGE_STATS_ENABLED="0")
    process = None
    try:
        with open(base / "run.log", "wb") as log:  # stdout and stderr: everything `run` prints
            process = subprocess.Popen([*SIGMARAY, "run", "--config", str(config), "--for-seconds", "900"],
                                       stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        deadline = time.monotonic() + 180
        found = None
        while found is None and time.monotonic() < deadline:
            time.sleep(1)
            text = (base / "run.log").read_text(errors="replace")
            found = re.search(r"Ray at (\S+) .*Prometheus metrics at (\S+)", text)
            assert process.poll() is None, text
        assert found, (base / "run.log").read_text(errors="replace")
        running = RunningCluster(process, base, env, *found.groups())

        # Traffic, so the workers' Kafka clients fetch, produce and commit with those settings.
        events = list(generate(400, seed=11, attack_share=0.05, otrf_root=OTRF))
        producer = Producer({"bootstrap.servers": broker})
        for event in events:
            producer.produce(topics["in"], orjson.dumps(event), key=event["Computer"].encode())
        assert producer.flush(60) == 0
        deadline = time.monotonic() + 180
        while sum(r.get("events_in", 0) for r in running.status()["workers"]) < len(events):
            assert time.monotonic() < deadline, running.status()
            time.sleep(2)
        yield running
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()
        admin.delete_topics(list(topics.values()))
        shutil.rmtree(base, ignore_errors=True)


def _listening(root_pid: int) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every TCP listener of `root_pid` and its descendants:
    the driver, Ray's GCS, raylet, dashboard, agents, monitor and worker processes."""
    psutil = _psutil()
    root = psutil.Process(root_pid)
    found = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.append((proc.name(), conn.laddr.ip, conn.laddr.port))
        except psutil.NoSuchProcess:
            continue  # a worker process that just ended
    return found


@pytest.mark.ray
def test_sigmaray_run_serves_its_prometheus_metrics_and_every_other_ray_port_on_127_0_0_1_only(
    cluster: RunningCluster,
) -> None:
    metrics = re.fullmatch(r"http://([^:/]+):(\d+)/metrics", cluster.metrics_url)
    assert metrics and metrics.group(1) == "127.0.0.1", cluster.metrics_url
    assert cluster.address.startswith("127.0.0.1:")
    assert "this machine only" in cluster.log.read_text(errors="replace")  # `run` says how far it reaches

    listeners = _listening(cluster.process.pid)
    ports = {port for _, _, port in listeners}
    # The HTTP endpoints (the node's metrics export, the dashboard agent's HTTP port; the head's
    # autoscaler and dashboard metrics on 44217/44227 unless another Ray on this machine holds
    # those) are among them, and so are the GCS and raylet gRPC ports.
    assert int(metrics.group(2)) in ports
    exposed = [entry for entry in listeners if entry[1] not in LOOPBACK]
    assert not exposed, f"listening beyond 127.0.0.1 (0.0.0.0/:: is every interface): {exposed}"
    assert len(listeners) >= 6, listeners  # the tree was found: GCS, raylet, agents, driver, workers

    text = urllib.request.urlopen(cluster.metrics_url, timeout=30).read().decode()
    assert "ray_" in text  # the endpoint serves, on the loopback address


@pytest.mark.ray
def test_a_kafka_password_appears_in_no_status_metrics_output_or_ray_log(cluster: RunningCluster) -> None:
    secret = PASSWORD.encode()
    status = cluster.status()  # Supervisor.status(): every PartitionWorker's metrics dict
    assert len(status["workers"]) == 2 and all("events_in" in row for row in status["workers"])
    assert PASSWORD not in json.dumps(status)
    table = cluster.cli("status", "--address", cluster.address)
    assert table.returncode == 0 and "worker-1" in table.stdout, table.stderr
    assert PASSWORD not in table.stdout + table.stderr

    assert cluster.stop() == 0, cluster.log.read_text(errors="replace")[-3000:]
    output = cluster.log.read_bytes()
    assert b"supervisor started worker-1, worker-2" in output and b"events in" in output
    assert secret not in output

    sessions = [p for p in (cluster.base / "ray").glob("session_*") if p.is_dir() and not p.is_symlink()]
    assert len(sessions) == 1, sessions  # this test's Ray, by its RAY_TMPDIR
    files = [p for p in sessions[0].rglob("*") if p.is_file() and not p.is_symlink()]
    leaked = [str(p.relative_to(sessions[0])) for p in files if secret in p.read_bytes()]
    assert not leaked, f"the password is in {leaked}"
    # The scan saw the workers' Kafka client output: librdkafka's warning about the SASL settings
    # names the property (never a value), from the worker processes' logs.
    logs = b"".join(p.read_bytes() for p in files if p.suffix in (".err", ".out", ".log"))
    assert b"`sasl.mechanism`" in logs


def test_config_errors_name_the_key_but_never_show_a_kafka_password(tmp_path: Path) -> None:
    def error_of(data: Any) -> str:
        with pytest.raises(ConfigError) as caught:
            config_from_dict(data, "cluster.yaml")
        return str(caught.value)

    kafka = {"bootstrap_servers": "127.0.0.1:9092", "client": SECRET_CLIENT}
    messages = [
        error_of({"kafka": {**kafka, "sasl.password": PASSWORD}}),  # the right key at the wrong level
        error_of({"kafka": {**kafka, "group_id": 5}}),
        error_of({"kafka": {**kafka, "client": PASSWORD}}),
        error_of({"kafka": kafka, "workers": 0}),
        error_of({"kafka": kafka, "ray": {"host": "10.0.0.5"}}),
    ]
    assert "unknown key kafka.sasl.password" in messages[0] and "kafka.group_id" in messages[1]
    assert "kafka.client must be a mapping" in messages[2] and "ray.host" in messages[4]

    # A YAML mistake on the password's own line: PyYAML would quote that line in its message.
    for broken in (f"%{PASSWORD}", f'"{PASSWORD}"x', f"*{PASSWORD}", f"!{PASSWORD} x"):
        path = tmp_path / "cluster.yaml"
        path.write_text(f"kafka:\n  client:\n    sasl.username: someone\n    sasl.password: {broken}\n")
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert "line 4" in str(caught.value)  # still says where
        messages.append(str(caught.value))
        cli = subprocess.run([*SIGMARAY, "run", "--config", str(path)], check=False, capture_output=True, text=True,
                             timeout=120, cwd=ROOT)
        assert cli.returncode == 2 and "not valid YAML at line 4" in cli.stderr and "Traceback" not in cli.stderr
        messages.append(cli.stdout + cli.stderr)
    leaked = [m for m in messages if PASSWORD in m]
    assert not leaked, leaked


def test_ray_host_defaults_to_loopback_and_takes_only_what_ray_can_bind() -> None:
    assert ClusterConfig().ray.host == "127.0.0.1" == config_from_dict({}).ray.host
    assert config_from_dict({"ray": {"host": "0.0.0.0"}}).ray.host == "0.0.0.0"
    # Ray binds its metrics endpoints to the loopback address or to every interface: a single
    # other address would be a promise it cannot keep.
    for bad, key in (({"host": "10.0.0.5"}, "ray.host must be 127.0.0.1"), ({"host": 1}, "ray.host must be a str"),
                     ({"port": 1}, "unknown key ray.port"), ("0.0.0.0", "ray must be a mapping")):
        with pytest.raises(ConfigError, match=re.escape(key)):
            config_from_dict({"ray": bad})
