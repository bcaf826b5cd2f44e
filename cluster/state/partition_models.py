"""The anomaly-model state of the partitions a worker owns: one EntityScorer per partition, so
a partition's entities and models move with it, checkpointed with the offsets they reflect.

Restore rules (S = checkpointed offset, C = committed offset):
- S >= C: the outputs of every record before S were flushed before S was saved, so processing
  resumes at S with nothing lost and nothing learned twice;
- S < C: the state is behind the offsets: records S..C are replayed to rebuild the state, with
  their outputs suppressed (they were delivered already);
- no checkpoint: a fresh state from C.
After a failed batch (outputs not acknowledged, commit refused) the partition is rebuilt the
same way, so a record processed again is never learned twice.

A checkpoint holds the scorer's state dict (plain data, versioned: cluster/state/checkpoints.py);
one that cannot be read or restored (another file format, a state version this code does not
know, other features) is logged and reported in `metrics()["checkpoint_errors"]`, and the
partition starts fresh, as with no checkpoint.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from cluster.build import scorer_config
from cluster.config import ModelsConfig
from cluster.state.checkpoints import Checkpoint, CheckpointStore
from models.scorer import EntityScorer, warm_up

Partition = tuple[str, int]
log = logging.getLogger("sigmaray.checkpoints")


class PartitionModels:
    def __init__(self, config: ModelsConfig, group: str, mapping: str = "") -> None:
        self.config = config
        self.mapping = mapping  # the engine's logsource mapping (rules.mapping), for per-logsource entity rules
        self.store = CheckpointStore(config.checkpoint_url, group)
        self.scorers: dict[Partition, EntityScorer] = {}
        self.next_offset: dict[Partition, int] = {}  # the state reflects every record before it
        self.origin: dict[Partition, int] = {}  # where a state without checkpoint started
        self.replay_until: dict[Partition, int] = {}
        self.last_saved = time.monotonic()
        self.saved = 0
        self.restored = 0
        self.replayed = 0
        self.errors: list[str] = []
        warm_up(scorer_config(config, mapping), [config.shadow] if config.shadow else [])

    def _fresh(self) -> EntityScorer:
        scorer = EntityScorer(scorer_config(self.config, self.mapping))
        if self.config.shadow:
            scorer.start_shadow(self.config.shadow)
        return scorer

    def assign(self, partition: Partition, committed: int) -> int:
        """Takes ownership; returns the offset to start consuming at."""
        restored = self._load(partition)
        if restored is None:
            self.scorers[partition] = self._fresh()
            start = max(committed, 0)
            self.origin[partition] = start
        else:
            start, self.scorers[partition] = restored
            self.restored += 1
            self.origin.pop(partition, None)
            if committed > start:
                self.replay_until[partition] = committed
        self.next_offset[partition] = start
        return start

    def release(self, partition: Partition) -> None:
        """Gives up ownership after a completed batch: saves the state for the next owner."""
        try:
            self._save(partition)
        except Exception as error:  # the next owner starts from the last good checkpoint instead
            self.errors.append(f"checkpoint of {partition[0]}[{partition[1]}] on release: {type(error).__name__}: {error}")
        for table in (self.scorers, self.next_offset, self.origin, self.replay_until):
            table.pop(partition, None)

    def rebuild(self, partition: Partition, resume_at: int) -> int:
        """After a failed batch: back to the last saved state; returns where to seek. Records up to
        `resume_at` are replayed without outputs."""
        restored = self._load(partition)
        if restored is not None:
            start, self.scorers[partition] = restored
        else:
            self.scorers[partition] = self._fresh()
            start = self.origin.get(partition, resume_at)
        if resume_at > start:
            self.replay_until[partition] = resume_at
        self.next_offset[partition] = start
        return start

    def replaying(self, partition: Partition, offset: int) -> bool:
        until = self.replay_until.get(partition)
        if until is None:
            return False
        if offset >= until:
            del self.replay_until[partition]
            return False
        self.replayed += 1
        return True

    def processed(self, partition: Partition, last_offset: int) -> None:
        self.next_offset[partition] = last_offset + 1

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

    def checkpoint_due(self) -> bool:
        return time.monotonic() - self.last_saved >= self.config.checkpoint_interval_s

    def save_all(self) -> None:
        self.last_saved = time.monotonic()  # a failing store is retried at the next interval, not every batch
        for partition in list(self.scorers):
            self._save(partition)

    def _save(self, partition: Partition) -> None:
        scorer = self.scorers.get(partition)
        if scorer is None or partition in self.replay_until:
            return  # a state still catching up is not worth saving over the older good one
        self.store.save(partition[0], partition[1], Checkpoint(self.next_offset[partition], scorer.state_dict()))
        self.origin.pop(partition, None)
        self.saved += 1

    def _load(self, partition: Partition) -> tuple[int, EntityScorer] | None:
        """(the offset the saved state reflects, the scorer restored from it), or None."""
        try:
            checkpoint = self.store.load(*partition)
            if checkpoint is None:
                return None
            return checkpoint.offset, EntityScorer.from_state_dict(scorer_config(self.config, self.mapping), checkpoint.state)
        except Exception as error:  # unreadable or unrestorable: start fresh rather than stall the partition
            message = f"checkpoint of {partition[0]}[{partition[1]}]: {type(error).__name__}: {error}"
            self.errors.append(message)
            log.error("%s (the partition's models start fresh)", message)
            return None

    def metrics(self) -> dict[str, Any]:
        entities = sum(len(s.table) for s in self.scorers.values())
        scorer = next(iter(self.scorers.values()), None)
        no_time = sum(s.skipped_no_time for s in self.scorers.values())
        feature_errors = sum(sum(s.feature_errors.values()) for s in self.scorers.values())
        return {"entities": entities, "events_without_time": no_time, "feature_errors": feature_errors,
                "checkpoints_saved": self.saved, "checkpoints_restored": self.restored,
                "replayed_for_state": self.replayed,
                "replaying": {f"{t}[{p}]": until for (t, p), until in self.replay_until.items()},
                "model": scorer.model_label if scorer else self.config.model,
                "shadow": scorer.shadow_label if scorer else (self.config.shadow or None),
                "checkpoint_errors": self.errors[-3:]}
