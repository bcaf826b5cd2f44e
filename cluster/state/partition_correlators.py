"""The correlators' state, per partition they own (Kafka Streams: state keyed by the partition
that owns it): for a detections-topic partition, the fusion state of its entities (risk, open
alerts, deduplication, suppressions and verdicts); for a repartition-topic partition, the
correlation windows of its groups. Both are one `correlator.Correlator` per partition, saved with
the offset it reflects in the models' checkpoint store (`models.checkpoint_url`, under the group
`<kafka.group_id>.correlator`), and restored, then replayed to the committed offset, by the rules
of cluster/state/partition_state.py; without a checkpoint the partition is replayed from its
start (what the topic still retains), as Kafka Streams restores a store from its changelog.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cluster.state.checkpoints import CheckpointStore
from cluster.state.partition_state import Partition, PartitionStates
from correlator.pipeline import Correlator


class PartitionCorrelators(PartitionStates[Correlator]):
    what = "correlation and fusion state"
    replay_history = True  # open windows and alerts matter: never begin empty at the committed offset

    def __init__(self, store: CheckpointStore, interval_s: float, build: Callable[[], Correlator]) -> None:
        super().__init__(store, interval_s)
        self.build = build  # a fresh Correlator of the current ruleset, settings and criticality

    def fresh(self, partition: Partition) -> Correlator:
        return self.build()

    def restore(self, partition: Partition, state: dict[str, Any]) -> Correlator:
        correlator = self.build()
        correlator.load_state_dict(state)
        return correlator

    def state_of(self, value: Correlator) -> dict[str, Any]:
        return value.state_dict()

    def rebuild_all(self, build: Callable[[], Correlator]) -> None:
        """A new ruleset: every owned partition's state moves into a Correlator of the new rules
        (correlations kept by id; a removed one's windows are dropped, a new one starts empty)."""
        self.build = build
        for partition, old in list(self.states.items()):
            new = build()
            new.load_state_dict(old.state_dict())
            self.states[partition] = new

    def metrics(self) -> dict[str, Any]:
        entities = 0
        groups = 0
        open_alerts = 0
        late = {"too_late": 0, "duplicates": 0, "missing_field": 0, "evicted": 0, "expired": 0}
        skipped: dict[str, int] = {}
        for correlator in self.states.values():
            stats = correlator.stats()
            entities += sum(stats["fusion"]["entities"].values())
            open_alerts += stats["fusion"]["open_alerts"]
            groups += stats["correlations"]["groups"]
            for name in late:
                late[name] += stats["correlations"][name]
            for reason, count in stats["skipped"].items():
                skipped[reason] = skipped.get(reason, 0) + count
            for reason, count in stats["fusion"]["skipped"].items():
                skipped[f"fusion: {reason}"] = skipped.get(f"fusion: {reason}", 0) + count
        # Hits older than the watermark, hits delivered twice, hits without a group-by field,
        # groups evicted by the cap or expired: counted, never silently dropped.
        return {"entities": entities, "groups": groups, "open_alerts": open_alerts, "skipped": skipped,
                "correlation_hits": late, **self.checkpoint_metrics()}
