"""Kafka client settings from the config: secrets from the environment of the process that makes
the client (`kafka.client_env`), the replication factor of created topics, and the actors' CPU
reservation; each bad value named."""

from __future__ import annotations

import pytest

from cluster.config import config_from_dict
from cluster.kafka import client as kafka
from detectors.errors import ConfigError


def test_a_password_named_in_client_env_is_read_from_the_environment_when_a_client_is_made(
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_from_dict({"kafka": {"client": {"security.protocol": "SASL_SSL", "sasl.username": "soc"},
                                         "client_env": {"sasl.password": "TEST_KAFKA_PASSWORD"}}})
    assert "sasl.password" not in config.kafka.client  # the config holds the variable's name only
    monkeypatch.setenv("TEST_KAFKA_PASSWORD", "s3cret")
    made = kafka.settings(config.kafka, **{"group.id": "g"})
    assert made["sasl.password"] == "s3cret" and made["sasl.username"] == "soc" and made["group.id"] == "g"
    monkeypatch.delenv("TEST_KAFKA_PASSWORD")
    with pytest.raises(kafka.KafkaAccessError, match="TEST_KAFKA_PASSWORD .* is not set"):
        kafka.settings(config.kafka)


@pytest.mark.parametrize(("section", "why"), [
    ({"kafka": {"replication_factor": 0}}, "kafka.replication_factor must be at least 1"),
    ({"kafka": {"client_env": {"sasl.password": ""}}}, "kafka.client_env maps"),
    ({"ray": {"actor_cpus": -1}}, "ray.actor_cpus must be 0 or more"),
])
def test_bad_kafka_and_ray_settings_are_named(section: dict[str, object], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        config_from_dict(section)


def test_the_defaults_suit_the_development_broker_and_one_machine() -> None:
    config = config_from_dict({})
    assert (config.kafka.replication_factor, config.kafka.client_env, config.ray.actor_cpus) == (1, {}, 0)
