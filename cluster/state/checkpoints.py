"""Model and feature state saved with the Kafka offsets it reflects, one file per partition.

Local disk by default; any fsspec URL (s3://bucket/prefix, gs://, ...) in a cluster, so a
partition's state follows it to whichever worker owns it next. A file is written whole and
then renamed into place (local) or put in one request (object stores): a reader never sees
half a checkpoint.

The file, format 3:

    SIGMARAY-CHECKPOINT 3\\n
    {"offset": ..., "ruleset_version": ..., "state": <EntityScorer.state_dict()>}

the second part written by models/serialization.py: pickle holding plain data only (dicts,
lists, str, numbers, numeric arrays), read back by an unpickler that refuses to look up any
class. So a checkpoint is data, never code: whoever can write to the bucket cannot make a worker
run anything by planting a file, and a checkpoint does not break when a class is renamed or
moved. Its layout is versioned twice, each version checked before anything is used:
- the file format (the header line): anything else is refused. Formats 1 and 2 were pickled
  object graphs (a bare pickle, no header); reading one would run whatever it names, so it is
  refused unread, by its first bytes, and the partition starts fresh;
- the state dict's `"version"`: checked by `EntityScorer.from_state_dict` (models/migrations.py),
  which migrates a known older layout and refuses an unknown one, naming both versions.
Why pickle for the body rather than JSON + .npz: see models/serialization.py.
"""

from __future__ import annotations

import pickletools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from models import serialization

FORMAT = 3  # 3: header line + plain-data state dict; 1 and 2 (pickled objects) are refused, the partition starts fresh
MAGIC = b"SIGMARAY-CHECKPOINT"
_LONGEST_HEADER = 64


@dataclass(frozen=True, slots=True)
class Checkpoint:
    offset: int  # the next offset to process: the state reflects every record before it
    state: dict[str, Any]  # EntityScorer.state_dict()
    ruleset_version: str = ""


class CheckpointFormatError(ValueError):
    """A file that is not a checkpoint of the format this version reads."""


def default_url() -> str:
    return str(Path.home() / ".cache" / "sigmaray" / "checkpoints")


def encode(checkpoint: Checkpoint) -> bytes:
    body = {"offset": checkpoint.offset, "ruleset_version": checkpoint.ruleset_version, "state": checkpoint.state}
    return MAGIC + b" %d\n" % FORMAT + serialization.dumps(body)


def decode(data: bytes, where: str = "checkpoint") -> Checkpoint:
    """The checkpoint in `data`; CheckpointFormatError when it is of another format."""
    if not data.startswith(MAGIC + b" "):
        old = _legacy_format(data)
        what = f"format {old}, a pickled object graph" if old is not None else "no checkpoint header"
        raise CheckpointFormatError(f"{where} has {what}; this version reads format {FORMAT} only "
                                    "(older checkpoints are not read: the partition's models start fresh)")
    header, newline, body = data.partition(b"\n")
    version = header[len(MAGIC) + 1:]
    if not newline or len(header) > _LONGEST_HEADER or not version.isdigit():
        raise CheckpointFormatError(f"{where}: malformed header {header[:_LONGEST_HEADER]!r}")
    if int(version) != FORMAT:
        raise CheckpointFormatError(f"{where} has format {int(version)}; this version reads format {FORMAT}")
    content = serialization.loads(body)
    if not isinstance(content, dict) or set(content) != {"offset", "ruleset_version", "state"} \
            or type(content["offset"]) is not int or not isinstance(content["state"], dict):
        raise CheckpointFormatError(f"{where}: not a checkpoint body")
    return Checkpoint(content["offset"], content["state"], str(content["ruleset_version"]))


def _legacy_format(data: bytes) -> int | None:
    """The format number a format 1 or 2 file starts with (a pickled `(FORMAT, Checkpoint)`),
    read from the pickle's opcodes without running them; None if it is not such a file."""
    try:
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name in ("PROTO", "FRAME", "MARK"):
                continue
            return argument if opcode.name in ("BININT1", "BININT2", "BININT") and isinstance(argument, int) else None
    except Exception:  # noqa: BLE001 - not a pickle at all
        return None
    return None


class CheckpointStore:
    def __init__(self, url: str, group: str) -> None:
        self.url = (url or default_url()).rstrip("/")
        self.group = group
        self.fs, self.root = fsspec.core.url_to_fs(f"{self.url}/{group}")

    def _path(self, topic: str, partition: int) -> str:
        return f"{self.root}/{topic}/{partition}.ckpt"

    def save(self, topic: str, partition: int, checkpoint: Checkpoint) -> int:
        """Returns the size in bytes."""
        data = encode(checkpoint)
        path = self._path(topic, partition)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        if "file" in protocols:
            temporary = path + ".tmp"
            with self.fs.open(temporary, "wb") as handle:
                handle.write(data)
            self.fs.mv(temporary, path)
        else:
            self.fs.pipe_file(path, data)
        return len(data)

    def load(self, topic: str, partition: int) -> Checkpoint | None:
        """None when there is none; an unreadable one (another format included) is an error the
        caller reports."""
        path = self._path(topic, partition)
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as handle:
            data = handle.read()
        return decode(data, f"checkpoint {path}")

    def delete(self, topic: str, partition: int) -> None:
        path = self._path(topic, partition)
        if self.fs.exists(path):
            self.fs.rm(path)
