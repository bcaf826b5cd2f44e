"""Keeps Kafka credentials out of what the console shows and logs.

Broker and client errors are shown on the cluster page; librdkafka does not put passwords in
its messages, but a config value could end up in one (a bad `sasl.jaas.config` echoed back), so
every `kafka.client` value long enough to be a secret is cut out of any text before it is shown.

>>> from cluster.config import ClusterConfig, KafkaConfig
>>> redact = Redactor.from_config(ClusterConfig(kafka=KafkaConfig(client={"sasl.password": "hunter22"})))
>>> redact("auth failed for hunter22")
'auth failed for ***'
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.config import ClusterConfig


@dataclass(frozen=True, slots=True)
class Redactor:
    secrets: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: ClusterConfig) -> Redactor:
        # Every client value, not only keys named like passwords: key names vary (sasl.jaas.config,
        # ssl.key.pem, oauthbearer settings), and hiding a harmless value costs nothing.
        values = {str(value) for value in config.kafka.client.values() if len(str(value)) >= 4}
        return cls(tuple(sorted(values, key=len, reverse=True)))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text
