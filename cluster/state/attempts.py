"""Which record keeps killing its worker: a small per-partition log of owners that died.

A record whose processing raises is dead-lettered by the detector. A record that takes the whole
process down (a segfault in native code, memory exhaustion, a hang that the supervisor ends)
cannot be caught there: the partition would be re-assigned, the record processed again, and the
next owner would die the same way, forever. Kafka Streams and Flink answer poison pills with a
dead-letter topic; this log is how the loop knows which record to send there.

Per partition, a marker in the checkpoint store says at which committed offset the last owner
started, and whether it let the partition go cleanly:

- an owner that takes a partition writes ``{offset: committed, owners: n}``; a clean release
  (between batches, or at shutdown) writes ``owners: 0``;
- an owner that finds a marker it did not release cleanly counts one death at that offset;
- after ``ISOLATE_AFTER`` deaths at the same committed offset the new owner *isolates* the
  partition: it processes and commits one record at a time, writing the offset of the record
  in flight to the marker before each one;
- an owner that finds an isolating marker whose record is exactly the committed offset knows
  that the previous owner died with that very record in flight: it dead-letters that record
  (stage ``crash``) and goes on.

So a record that kills its worker costs a few restarts and then one dead letter; a worker killed
by an operator (kill -9, a node lost) costs at most one isolated batch, never a record. The
marker is written only when a partition changes owner and, while isolating, once per record.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import Enum

import fsspec

from cluster.state.checkpoints import default_url

ISOLATE_AFTER = 2  # deaths at one committed offset before records are processed one at a time
Partition = tuple[str, int]


class Mode(Enum):
    NORMAL = "normal"
    ISOLATE = "isolate"  # one record per commit until the suspect range is passed
    POISON = "poison"  # the record at the committed offset killed an isolating owner


@dataclass(frozen=True, slots=True)
class Marker:
    offset: int  # committed offset when the owner took the partition, or the record in flight
    owners: int  # owners since the last clean release; 0 = released cleanly
    isolating: bool = False
    deaths: int = 0  # owners that died at this offset


@dataclass(frozen=True, slots=True)
class Decision:
    mode: Mode
    offset: int  # the committed offset the decision is about
    deaths: int  # owners that died there

    def describe(self) -> str:
        return f"{self.deaths} worker(s) died at offset {self.offset}"


def decide(marker: Marker | None, committed: int) -> tuple[Decision, Marker]:
    """What a new owner does with a partition, and the marker it writes. Pure.

    >>> decide(None, 10)[0].mode
    <Mode.NORMAL: 'normal'>
    >>> d, m = decide(Marker(10, owners=1), 10)   # the last owner died at 10
    >>> d.mode, m.deaths
    (<Mode.NORMAL: 'normal'>, 1)
    >>> d, m = decide(m, 10)                      # and the next one too
    >>> d.mode, m.isolating
    (<Mode.ISOLATE: 'isolate'>, True)
    >>> decide(Marker(12, owners=1, isolating=True, deaths=2), 12)[0].mode   # died with record 12 in flight
    <Mode.POISON: 'poison'>
    >>> decide(Marker(12, owners=0, isolating=True, deaths=2), 12)[0].mode   # released cleanly: nothing died
    <Mode.NORMAL: 'normal'>
    """
    if marker is None or marker.owners == 0:
        return Decision(Mode.NORMAL, committed, 0), Marker(committed, 1)
    if marker.isolating and marker.offset == committed:
        deaths = marker.deaths + 1
        return Decision(Mode.POISON, committed, deaths), Marker(committed, marker.owners + 1, True, deaths)
    # The previous owner did not let go cleanly: it died after its last commit, at `committed`.
    deaths = (marker.deaths if marker.offset == committed else 0) + 1
    if deaths >= ISOLATE_AFTER:
        return Decision(Mode.ISOLATE, committed, deaths), Marker(committed, marker.owners + 1, True, deaths)
    return Decision(Mode.NORMAL, committed, deaths), Marker(committed, marker.owners + 1, False, deaths)


class AttemptLog:
    """The markers, beside the checkpoints (same store: local disk or any fsspec URL)."""

    def __init__(self, url: str, group: str) -> None:
        base = (url or default_url()).rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(f"{base}/{group}")
        self.errors: list[str] = []

    def _path(self, partition: Partition) -> str:
        return f"{self.root}/{partition[0]}/{partition[1]}.attempts"

    def load(self, partition: Partition) -> Marker | None:
        path = self._path(partition)
        try:
            if not self.fs.exists(path):
                return None
            return Marker(**json.loads(self.fs.cat_file(path)))
        except Exception as error:  # unreadable: behave as if none (never stall a partition on it)
            self.errors.append(f"attempt marker {path}: {type(error).__name__}: {error}")
            return None

    def save(self, partition: Partition, marker: Marker) -> None:
        path = self._path(partition)
        try:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(path, json.dumps(asdict(marker)).encode())
        except Exception as error:  # the store is down: we lose crash tracking, not data
            self.errors.append(f"attempt marker {path}: {type(error).__name__}: {error}")

    def acquired(self, partition: Partition, committed: int) -> Decision:
        decision, marker = decide(self.load(partition), committed)
        self.save(partition, marker)
        return decision

    def in_flight(self, partition: Partition, offset: int, deaths: int) -> None:
        """While isolating: `offset` is the one record being processed now."""
        self.save(partition, Marker(offset, 1, True, deaths))

    def released(self, partition: Partition, committed: int) -> None:
        self.save(partition, Marker(committed, 0))
