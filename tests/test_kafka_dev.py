"""Integration tests of `sigmaray kafka`: a real Kafka broker, real clients.

The first run fetches the broker jars with Maven (about 45 MB, well under 10 minutes); later runs
reuse ~/.cache/sigmaray. The broker is the test run's own (tests/broker.py: a free port and a data
folder of its own), never a developer's default one.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cluster.kafka import dev_broker as kafka_dev
from tests import broker as test_broker
from tests.broker import _free_port_pair, shared_broker


@pytest.fixture(scope="session")
def broker() -> Iterator[kafka_dev.BrokerInfo]:
    # shared_broker, not up()/down(): other xdist workers and test modules use the same broker.
    with shared_broker(test_broker.DATA_DIR, test_broker.PORT) as info:
        yield info


@pytest.fixture()
def topic(broker: kafka_dev.BrokerInfo) -> Iterator[str]:
    """A fresh 3-partition topic, deleted afterwards so a developer's broker does not fill up."""
    name = f"sigmaray-test-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])[name].result(30)
    yield name
    with contextlib.suppress(KafkaException):
        admin.delete_topics([name])[name].result(30)


def _consume(bootstrap: str, topic: str, expected: int, **extra: str) -> list[tuple[int, bytes]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", **extra})
    consumer.subscribe([topic])
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < expected and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append((msg.partition() or 0, msg.value() or b""))
        # A little longer, so a message that should not be there (aborted, duplicated) shows up.
        end = time.monotonic() + 2
        while time.monotonic() < end:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.partition() or 0, msg.value() or b""))
    finally:
        consumer.close()
    return got


def test_ensure_installed_is_cached_and_holds_the_pinned_kafka_jar(broker: kafka_dev.BrokerInfo) -> None:
    started = time.monotonic()
    lib = kafka_dev.ensure_installed()
    assert time.monotonic() - started < 2, "the second install must reuse the cache, not run Maven"
    assert (lib / f"kafka_2.13-{kafka_dev.kafka_version()}.jar").is_file()


def test_status_reports_the_running_broker_and_its_topics(broker: kafka_dev.BrokerInfo, topic: str) -> None:
    st = kafka_dev.status(data_dir=test_broker.DATA_DIR)
    assert st.running and st.pid == broker.pid and st.bootstrap == broker.bootstrap
    assert st.topics is not None and st.topics >= 1


def test_up_again_is_a_no_op_returning_the_same_broker(broker: kafka_dev.BrokerInfo) -> None:
    again = kafka_dev.up(test_broker.DATA_DIR, test_broker.PORT)
    assert not again.started
    assert again.pid == broker.pid and again.bootstrap == broker.bootstrap


def test_messages_produced_to_three_partitions_are_all_consumed(broker: kafka_dev.BrokerInfo, topic: str) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    sent = [f"event-{i}".encode() for i in range(30)]
    for i, value in enumerate(sent):
        producer.produce(topic, value=value, key=str(i).encode())
    assert producer.flush(30) == 0
    got = _consume(broker.bootstrap, topic, len(sent))
    assert sorted(v for _, v in got) == sorted(sent)
    assert len({p for p, _ in got}) > 1, "keys should spread over the 3 partitions"


def test_transactional_producer_commits_and_aborted_records_stay_invisible(
    broker: kafka_dev.BrokerInfo, topic: str
) -> None:
    # Fails (init_transactions times out) unless the single broker allows replication factor 1
    # and min.isr 1 for __transaction_state: what exactly-once processing relies on.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex[:8]}"})
    producer.init_transactions(60)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, value=f"aborted-{i}".encode())
    producer.abort_transaction(30)
    producer.begin_transaction()
    committed = [f"committed-{i}".encode() for i in range(3)]
    for value in committed:
        producer.produce(topic, value=value)
    producer.commit_transaction(30)
    got = _consume(broker.bootstrap, topic, len(committed), **{"isolation.level": "read_committed"})
    assert sorted(v for _, v in got) == committed


def test_stale_pid_file_reads_as_not_running_and_is_removed(tmp_path: Path) -> None:
    # The pid of this test process is alive but is not a Kafka broker: a reused pid.
    (tmp_path / "server.properties").write_text("advertised.listeners=PLAINTEXT://127.0.0.1:1\n")
    (tmp_path / "broker.pid").write_text(f"{os.getpid()}\n")
    assert not kafka_dev.status(data_dir=tmp_path).running
    assert not (tmp_path / "broker.pid").exists()
    (tmp_path / "broker.pid").write_text("999999999\n")  # no such process
    assert kafka_dev.down(data_dir=tmp_path) is False
    assert not (tmp_path / "broker.pid").exists()


def test_shared_broker_starts_formats_and_stops_only_after_the_last_holder(tmp_path: Path) -> None:
    # A second broker in its own fresh data dir: also proves formatting a new dir and --port.
    data, port = tmp_path / "kafka", _free_port_pair()
    with shared_broker(data, port) as outer:
        assert outer.started and outer.bootstrap == f"127.0.0.1:{port}"
        with shared_broker(data, port) as inner:
            assert not inner.started and inner.pid == outer.pid
        assert kafka_dev.status(data).running, "an outer holder still needs it"
    assert not kafka_dev.status(data).running
    assert kafka_dev.down(data_dir=data) is False
