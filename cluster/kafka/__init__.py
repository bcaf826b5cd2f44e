"""Kafka's one home: the client factory, the partition loop, the rules feed, topic limits and the
development broker. Nothing outside this package imports confluent_kafka."""
