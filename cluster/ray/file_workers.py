"""`sigmaray replay --workers N`: files through the workers' processing code on Ray, in parallel.

Each file plays one partition (its own entity state, as a partition's in the cluster). Files go
to N FileWorker actors, largest first to the least loaded; each worker writes what the cluster
would produce to its own JSON-lines files in the output directory (`detections-<worker>.jsonl`,
`dead-letter-<worker>.jsonl`). On a multi-node cluster the files and the output directory must
be reachable under the same paths from every node (a shared file system).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import ray

from cluster.config import config_from_dict


def spread(files: Sequence[str], workers: int) -> list[list[str]]:
    """Files per worker, balanced by size (largest first to the least loaded), each in input order."""
    loads = [0] * workers
    shares: list[list[str]] = [[] for _ in range(workers)]
    order = {path: i for i, path in enumerate(files)}
    for path in sorted(files, key=lambda p: -_size(p)):
        least = loads.index(min(loads))
        shares[least].append(path)
        loads[least] += _size(path)
    return [sorted(share, key=order.__getitem__) for share in shares]


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # unreadable: the worker reports it


@ray.remote
class FileWorker:
    def __init__(self, config: dict[str, Any], name: str) -> None:
        self.config = config_from_dict(config)
        self.name = name

    def run(self, files: list[str], output_dir: str, rate: float, rule_paths: list[str], model: str | None,
            models: bool) -> dict[str, Any]:
        from cluster.sources.replay import replay_files

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"detections": out / f"detections-{self.name}.jsonl", "dead_letter": out / f"dead-letter-{self.name}.jsonl"}
        with paths["detections"].open("wb") as detections, paths["dead_letter"].open("wb") as dead_letters:

            def write(record: Any, dead: bool) -> None:
                if dead:  # the record as it came, with why and where in the headers
                    headers = {k: v.decode(errors="replace") for k, v in record.headers}
                    value = record.value.decode(errors="replace")
                    dead_letters.write(orjson.dumps({"headers": headers, "value": value}) + b"\n")
                else:
                    detections.write(record.value + b"\n")

            result = replay_files(self.config, files, write, rule_paths=rule_paths, rate=rate, model=model,
                                  models=models, per_file=True)
        return {"worker": self.name, "files": len(files), "counts": dict(result.counts), "dead": result.dead,
                "seconds": result.seconds, "ruleset": result.ruleset_version, "model": result.model,
                "outputs": {k: str(v) for k, v in paths.items()}}
