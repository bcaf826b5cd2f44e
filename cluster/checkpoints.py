"""Model and feature state saved with the Kafka offsets it reflects, one file per partition.

Local disk by default; any fsspec URL (s3://bucket/prefix, gs://, ...) in a cluster, so a
partition's state follows it to whichever worker owns it next. A file is written whole and
then renamed into place (local) or put in one request (object stores): a reader never sees
half a checkpoint.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

FORMAT = 2  # 2: entity state in slot arrays (compiled features); 1 is refused, the partition starts fresh


@dataclass(frozen=True, slots=True)
class Checkpoint:
    offset: int  # the next offset to process: the state reflects every record before it
    state: Any
    ruleset_version: str = ""


def default_url() -> str:
    return str(Path.home() / ".cache" / "sigmaray" / "checkpoints")


class CheckpointStore:
    def __init__(self, url: str, group: str) -> None:
        self.url = (url or default_url()).rstrip("/")
        self.group = group
        self.fs, self.root = fsspec.core.url_to_fs(f"{self.url}/{group}")

    def _path(self, topic: str, partition: int) -> str:
        return f"{self.root}/{topic}/{partition}.ckpt"

    def save(self, topic: str, partition: int, checkpoint: Checkpoint) -> int:
        """Returns the size in bytes."""
        data = pickle.dumps((FORMAT, checkpoint), protocol=pickle.HIGHEST_PROTOCOL)
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
        """None when there is none; an unreadable one is an error the caller reports."""
        path = self._path(topic, partition)
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as handle:
            version, checkpoint = pickle.load(handle)
        if version != FORMAT:
            raise ValueError(f"checkpoint {path} has format {version}, this version reads {FORMAT}")
        return checkpoint

    def delete(self, topic: str, partition: int) -> None:
        path = self._path(topic, partition)
        if self.fs.exists(path):
            self.fs.rm(path)
