"""State owned per input partition and checkpointed with the offsets it reflects (Kafka Streams'
state stores): the base of the workers' models (PartitionModels) and the correlators' state
(PartitionCorrelators). A subclass says how to make a fresh state, how to restore one from a
checkpoint's plain data, and how to take its plain data.

Restore rules (S = checkpointed offset, C = committed offset):
- S >= C: the outputs of every record before S were flushed before S was saved, so processing
  resumes at S with nothing lost and nothing applied twice;
- S < C: the state is behind the offsets: records S..C are replayed to rebuild the state, with
  their outputs suppressed (they were delivered already);
- no checkpoint: a fresh state from C; or, for a state that must not start empty while the
  topic still holds its history (`replay_history`: the correlators' windows and open alerts),
  a fresh state replayed from the start of the partition to C.
After a failed batch (outputs not acknowledged, commit refused) the partition is rebuilt the
same way, so a record processed again is never applied twice.

A checkpoint that cannot be read or restored (another file format, a state version this code
does not know) is logged and reported in `errors`, and the partition starts fresh, as with no
checkpoint.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Generic, TypeVar

from cluster.state.checkpoints import Checkpoint, CheckpointStore

Partition = tuple[str, int]
T = TypeVar("T")
log = logging.getLogger("sigmaray.checkpoints")


class PartitionStates(Generic[T]):
    """One state object per owned partition; see the module docstring."""

    what = "state"  # named in errors: "the partition's <what> start fresh"
    replay_history = False  # no checkpoint: rebuild from the partition's start rather than begin empty at C

    def __init__(self, store: CheckpointStore, interval_s: float) -> None:
        self.store = store
        self.interval_s = interval_s
        self.states: dict[Partition, T] = {}
        self.next_offset: dict[Partition, int] = {}  # the state reflects every record before it
        self.origin: dict[Partition, int] = {}  # where a state without checkpoint started
        self.replay_until: dict[Partition, int] = {}
        self.last_saved = time.monotonic()
        self.saved = 0
        self.restored = 0
        self.replayed = 0
        self.errors: list[str] = []

    # -- what a subclass provides ------------------------------------------------------------

    def fresh(self, partition: Partition) -> T:
        raise NotImplementedError

    def restore(self, partition: Partition, state: dict[str, Any]) -> T:
        raise NotImplementedError

    def state_of(self, value: T) -> dict[str, Any]:
        raise NotImplementedError

    # -- ownership ----------------------------------------------------------------------------

    def assign(self, partition: Partition, committed: int) -> int:
        """Takes ownership; returns the offset to start consuming at."""
        restored = self._load(partition)
        if restored is None:
            self.states[partition] = self.fresh(partition)
            start = 0 if self.replay_history else max(committed, 0)
            if committed > start:
                self.replay_until[partition] = committed
            self.origin[partition] = start
        else:
            start, self.states[partition] = restored
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
        for table in (self.states, self.next_offset, self.origin, self.replay_until):
            table.pop(partition, None)

    def rebuild(self, partition: Partition, resume_at: int) -> int:
        """After a failed batch: back to the last saved state; returns where to seek. Records up to
        `resume_at` are replayed without outputs."""
        restored = self._load(partition)
        if restored is not None:
            start, self.states[partition] = restored
        else:
            self.states[partition] = self.fresh(partition)
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

    # -- checkpoints --------------------------------------------------------------------------

    def checkpoint_due(self) -> bool:
        return time.monotonic() - self.last_saved >= self.interval_s

    def save_all(self) -> None:
        self.last_saved = time.monotonic()  # a failing store is retried at the next interval, not every batch
        for partition in list(self.states):
            self._save(partition)

    def _save(self, partition: Partition) -> None:
        value = self.states.get(partition)
        if value is None or partition in self.replay_until:
            return  # a state still catching up is not worth saving over the older good one
        self.store.save(partition[0], partition[1], Checkpoint(self.next_offset[partition], self.state_of(value)))
        self.origin.pop(partition, None)
        self.saved += 1

    def _load(self, partition: Partition) -> tuple[int, T] | None:
        """(the offset the saved state reflects, the state restored from it), or None."""
        try:
            checkpoint = self.store.load(*partition)
            if checkpoint is None:
                return None
            return checkpoint.offset, self.restore(partition, checkpoint.state)
        except Exception as error:  # unreadable or unrestorable: start fresh rather than stall the partition
            message = f"checkpoint of {partition[0]}[{partition[1]}]: {type(error).__name__}: {error}"
            self.errors.append(message)
            log.error("%s (the partition's %s start fresh)", message, self.what)
            return None

    def checkpoint_metrics(self) -> dict[str, Any]:
        return {"checkpoints_saved": self.saved, "checkpoints_restored": self.restored,
                "replayed_for_state": self.replayed,
                "replaying": {f"{t}[{p}]": until for (t, p), until in self.replay_until.items()},
                "checkpoint_errors": self.errors[-3:]}
