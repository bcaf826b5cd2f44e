"""`sigmaray replay --workers N`: files through the workers' processing code on a real Ray, no
broker. What the actors write is exactly what the same code writes in one process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from cluster.config import config_from_dict
from cluster.ray.file_workers import spread
from cluster.sources.replay import replay_files
from tests.conftest import OTRF, ROOT


def _files(tmp_path: Path) -> list[str]:
    chosen = sorted((OTRF / "jsonl").rglob("*.jsonl"), key=lambda p: p.stat().st_size)[-5:]
    broken = tmp_path / "broken.jsonl"  # two good events around garbage: counted, never fatal
    lines = chosen[0].read_bytes().splitlines()
    broken.write_bytes(lines[0] + b"\n{not json\n\xff\xfe binary\n" + lines[1] + b"\n")
    return [str(p) for p in chosen] + [str(broken)]


def test_files_spread_over_workers_by_size_and_keep_their_order() -> None:
    files = sorted(str(p) for p in (OTRF / "jsonl").rglob("*.jsonl"))
    shares = spread(files, 3)
    assert sorted(f for share in shares for f in share) == files
    sizes = [sum(Path(f).stat().st_size for f in share) for share in shares]
    assert max(sizes) - min(sizes) <= max(Path(f).stat().st_size for f in files)  # greedy balance
    for share in shares:
        assert share == sorted(share, key=files.index)


def test_replay_on_ray_workers_writes_exactly_what_the_same_code_writes_in_one_process(
        ray_local: Any, tmp_path: Path) -> None:
    files = _files(tmp_path)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "replay", "--workers", "2",
         "--address", ray_local.get_runtime_context().gcs_address,
         "--output", str(out), "--rules", str(ROOT / "rules"), *files],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 0, done.stderr
    assert "on 2 Ray workers" in done.stderr and "2 dead letters" in done.stderr, done.stderr
    on_ray = sorted(line for p in out.glob("detections-*.jsonl") for line in p.read_bytes().splitlines())
    dead = [orjson.loads(line) for p in out.glob("dead-letter-*.jsonl") for line in p.read_bytes().splitlines()]

    expected: list[bytes] = []
    replay_files(config_from_dict({}), files, lambda record, is_dead: None if is_dead else expected.append(record.value),
                 rule_paths=[str(ROOT / "rules")], per_file=True)
    assert on_ray == sorted(expected) and len(on_ray) > 0
    kinds = {orjson.loads(line)["kind"] for line in on_ray}
    assert "sigma" in kinds
    assert all(orjson.loads(line)["scores"] for line in on_ray)  # entity scores ride along
    assert sorted(d["headers"]["source.offset"] for d in dead) == ["2", "3"]
    assert {d["headers"]["source.topic"] for d in dead} == {files[-1]}


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    return env
