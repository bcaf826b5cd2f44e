"""Checkpoints on an S3-compatible object store, for real: moto's standalone server (its own
process, on 127.0.0.1 and a free port) reached over HTTP through s3fs, configured the way a
deployment is, by the AWS SDK's environment (AWS_ENDPOINT_URL_S3 and the key pair) with
`models.checkpoint_url: s3://bucket/prefix` in the cluster config.

- A partition restored from S3 scores exactly as one restored from local disk (and as one that
  never stopped): the object store changes where the bytes live, nothing else.
- A worker killed with kill -9 on a running cluster (real broker, real Ray) is replaced, its
  partitions are restored from the bucket, and every score is the offline replay's, the same
  expectation that tests/test_cluster_models.py holds the local-disk run to.
- The compiled-ruleset cache sits in the same store (`<checkpoint_url>/rulesets`): a second load
  of the same rules is a hit from the bucket, and the cluster's workers leave their ruleset there.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.config import config_from_dict
from cluster.state.partition_models import PartitionModels
from models.datasets.generator import generate
from tests.test_checkpoints import _feed

PARTITION = ("events", 0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto's S3 server in a process of its own; the environment points every s3fs client of this
    process, and of the Ray it starts later, at it. Returns the endpoint URL."""
    port = _free_port()
    log = tempfile.TemporaryFile()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    settings = {
        "AWS_ENDPOINT_URL_S3": endpoint,  # botocore (and so s3fs) read it: no code path knows it is a test
        "AWS_ACCESS_KEY_ID": "sigmaray-test",
        "AWS_SECRET_ACCESS_KEY": "sigmaray-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata probing for credentials
    }
    saved = {name: os.environ.get(name) for name in settings}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"moto's server did not start:\n{log.read().decode(errors='replace')[-3000:]}")
                time.sleep(0.2)
        os.environ.update(settings)
        yield endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(15)
        log.close()


def _bucket(endpoint: str) -> str:
    import s3fs

    name = f"sigmaray-{uuid.uuid4().hex[:10]}"
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir(name)
    # The environment reached s3fs: the bucket is on this server (moto answers ListBuckets at /).
    with urllib.request.urlopen(f"{endpoint}/", timeout=10) as answer:
        assert f"<Name>{name}</Name>" in answer.read().decode()
    return name


def _objects(bucket: str) -> dict[str, bytes]:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)  # no listing cached by another instance
    return {path: fs.cat_file(path) for path in fs.find(bucket)}


def _models(url: str) -> PartitionModels:
    config = config_from_dict({"models": {"checkpoint_url": url, "calibration_window": 200, "shadow": "loda"}})
    return PartitionModels(config.models, "group")


def test_a_partition_restored_from_s3_scores_exactly_as_one_restored_from_local_disk(
    s3_server: str, tmp_path: Path
) -> None:
    events = list(generate(2_000, seed=7, attack_share=0.02))
    bucket = _bucket(s3_server)
    urls = {"s3": f"s3://{bucket}/checkpoints", "disk": str(tmp_path / "checkpoints")}
    uninterrupted = None
    for url in urls.values():
        first = _models(url)
        assert first.assign(PARTITION, committed=0) == 0
        _feed(first.scorers[PARTITION], events[:1_200])
        first.processed(PARTITION, 1_199)
        first.save_all()
        assert first.metrics()["checkpoints_saved"] == 1
        uninterrupted = first.scorers[PARTITION]

    stored = _objects(bucket)
    (key,) = [k for k in stored if k.endswith(".ckpt")]
    assert key == f"{bucket}/checkpoints/group/{PARTITION[0]}/{PARTITION[1]}.ckpt"
    on_disk = tmp_path / "checkpoints" / "group" / PARTITION[0] / f"{PARTITION[1]}.ckpt"
    assert stored[key] == on_disk.read_bytes()  # byte for byte the checkpoint the local store wrote

    scores = {}
    for name, url in urls.items():
        second = _models(url)
        assert second.assign(PARTITION, committed=1_200) == 1_200
        assert second.metrics()["checkpoints_restored"] == 1 and second.errors == []
        scores[name] = _feed(second.scorers[PARTITION], events[1_200:])
    assert uninterrupted is not None
    assert scores["s3"] == scores["disk"] == _feed(uninterrupted, events[1_200:])


def test_the_compiled_ruleset_cache_lives_beside_the_checkpoints_in_the_bucket(s3_server: str) -> None:
    from cluster.build import load_rules, rule_cache_url
    from detectors.cache import CacheOutcome
    from tests.conftest import ROOT

    bucket = _bucket(s3_server)
    config = config_from_dict({"rules": {"paths": [str(ROOT / "rules")]},
                               "models": {"checkpoint_url": f"s3://{bucket}/sigmaray"}})
    url = rule_cache_url(config.models)
    assert url == f"s3://{bucket}/sigmaray/rulesets"
    first, second = CacheOutcome(), CacheOutcome()
    compiled = load_rules(config.rules, cache_url=url, outcome=first)
    cached = load_rules(config.rules, cache_url=url, outcome=second)
    assert (first.hit, second.hit) == (False, True), second.reason
    assert [k for k in _objects(bucket) if k.endswith(".ruleset")] == [
        f"{bucket}/sigmaray/rulesets/{first.key[:2]}/{first.key}.ruleset"]
    assert cached.version == compiled.version
    assert [r.meta.id for r in cached.rules] == [r.meta.id for r in compiled.rules]


@pytest.fixture(scope="module")
def ray_with_s3(s3_server: str, ray_local: Any) -> Any:
    """Ray started after the S3 settings are in the environment, so its workers inherit them
    (as `ray start` on a node inherits the node's)."""
    return ray_local


@pytest.mark.kafka
@pytest.mark.slow
def test_a_worker_killed_with_kill_9_restores_from_the_bucket_and_scores_as_the_local_disk_run(
    broker: str, s3_server: str, ray_with_s3: Any, tmp_path: Path
) -> None:
    from cluster.ray.actors import Supervisor, config_to_dict
    from tests.test_cluster_models import Run, _check_scores, _stream

    bucket = _bucket(s3_server)
    url = f"s3://{bucket}/sigmaray"
    run = Run(broker, tmp_path, {"shadow": "loda", "checkpoint_interval_s": 0, "checkpoint_url": url}, batch_size=100)
    assert run.config.models.checkpoint_url == url
    events = _stream(6_000, seed=22)  # the stream and cut of the local-disk kill -9 test
    supervisor = Supervisor.remote(config_to_dict(run.config))
    try:
        ray_with_s3.get(supervisor.start.remote(), timeout=120)
        run.produce(events[:3_000])
        deadline = time.monotonic() + 120
        while run.committed() < 1_000 and time.monotonic() < deadline:
            time.sleep(0.2)
        before_kill = _objects(bucket)
        victim = ray_with_s3.get(supervisor.worker_pids.remote(), timeout=30)["worker-1"]
        os.kill(victim, signal.SIGKILL)
        run.produce(events[3_000:])
        run.wait_committed(len(events))
        status = ray_with_s3.get(supervisor.status.remote(), timeout=30)
    finally:
        ray_with_s3.get(supervisor.shutdown.remote(), timeout=120)

    assert any(key.endswith(".ckpt") for key in before_kill), "no checkpoint reached the bucket before the kill"
    assert status["restarts"] >= 1
    assert sum(r["models"]["checkpoints_restored"] for r in status["workers"]) >= 1
    assert not any(r["models"].get("checkpoint_errors") for r in status["workers"]), status["workers"]
    after = _objects(bucket)
    partitions = {f"{bucket}/sigmaray/{run.group}/{run.topics['in']}/{p}.ckpt" for p in range(3)}
    assert partitions <= set(after), sorted(after)
    assert any(key.startswith(f"{bucket}/sigmaray/rulesets/") for key in after)  # the workers' shared rule cache
    assert not (tmp_path / "checkpoints").exists()  # nothing went to local disk instead
    records, distinct = _check_scores(run, "loda")
    print(f"kill -9 with S3 checkpoints: {records} shadow records for {distinct} events, {len(after)} objects")
