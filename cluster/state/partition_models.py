"""The anomaly-model state of the partitions a worker owns: one EntityScorer per partition, so
a partition's entities and models move with it, checkpointed with the offsets they reflect
(restore and replay rules: cluster/state/partition_state.py).

A checkpoint holds the scorer's state dict (plain data, versioned: cluster/state/checkpoints.py);
one that cannot be restored (a state version this code does not know, other features) is
reported in `metrics()["checkpoint_errors"]`, and the partition starts fresh.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cluster.build import scorer_config
from cluster.config import ModelsConfig
from cluster.state.checkpoints import CheckpointStore
from cluster.state.partition_state import Partition, PartitionStates
from models.scorer import EntityScorer, warm_up


class PartitionModels(PartitionStates[EntityScorer]):
    what = "models"

    def __init__(self, config: ModelsConfig, group: str, mapping: str = "") -> None:
        super().__init__(CheckpointStore(config.checkpoint_url, group), config.checkpoint_interval_s)
        self.config = config
        self.mapping = mapping  # the engine's logsource mapping (rules.mapping), for per-logsource entity rules
        self.scorers = self.states  # the same table, by the name the worker uses
        warm_up(scorer_config(config, mapping), [config.shadow] if config.shadow else [])

    def fresh(self, partition: Partition) -> EntityScorer:
        scorer = EntityScorer(scorer_config(self.config, self.mapping))
        if self.config.shadow:
            scorer.start_shadow(self.config.shadow)
        return scorer

    def restore(self, partition: Partition, state: dict[str, Any]) -> EntityScorer:
        return EntityScorer.from_state_dict(scorer_config(self.config, self.mapping), state)

    def state_of(self, value: EntityScorer) -> dict[str, Any]:
        return value.state_dict()

    def command(self, command: str, name: str = "") -> dict[str, Any]:
        """Model versions on every owned partition: `shadow NAME` starts a candidate beside the
        active model; `promote [NAME]` makes the shadow (or a new NAME) active and keeps the old
        active learning as the shadow; `rollback` swaps them back."""
        if command in ("shadow", "promote") and name:
            from models.scorer import check_model

            check_model(name)  # a clear error before anything changes
        for scorer in self.scorers.values():
            if command == "shadow":
                scorer.start_shadow(name)
            elif command == "promote":
                if name and (scorer.shadow is None or scorer.shadow.spec_name != name):
                    scorer.start_shadow(name)  # cold: it warms up before it alerts
                scorer.promote()
            elif command == "rollback":
                scorer.rollback()
            else:
                raise ValueError(f"unknown model command {command!r} (shadow, promote, rollback)")
        # Partitions acquired later start with what is active now.
        active = next(iter(self.scorers.values()), None)
        if active is not None:
            self.config = replace(self.config, model=active.active.spec_name,
                                  shadow=active.shadow.spec_name if active.shadow else "")
        elif command in ("shadow", "promote") and name:
            self.config = replace(self.config, shadow=name) if command == "shadow" else replace(self.config, model=name)
        return {"model": active.model_label if active else self.config.model,
                "shadow": active.shadow_label if active else (self.config.shadow or None),
                "partitions": len(self.scorers)}

    def metrics(self) -> dict[str, Any]:
        entities = sum(len(s.table) for s in self.scorers.values())
        scorer = next(iter(self.scorers.values()), None)
        no_time = sum(s.skipped_no_time for s in self.scorers.values())
        feature_errors = sum(sum(s.feature_errors.values()) for s in self.scorers.values())
        return {"entities": entities, "events_without_time": no_time, "feature_errors": feature_errors,
                **self.checkpoint_metrics(),
                "model": scorer.model_label if scorer else self.config.model,
                "shadow": scorer.shadow_label if scorer else (self.config.shadow or None)}
