"""Evaluation over the user's own files: the event-time merge, and the CLI's errors (no ../shared needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.cli import main
from evaluation.labels import parse_labels
from evaluation.run import merge_events


def _write(path: Path, times: list[str]) -> str:
    path.write_text("".join(json.dumps({"TimeCreated_SystemTime": t, "n": i}) + "\n" for i, t in enumerate(times, 1)))
    return str(path)


def test_files_merge_in_event_time_order_and_remember_their_origin(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.jsonl", ["2026-01-01T00:00:03Z", "2026-01-01T00:00:01Z", "2026-01-01T00:00:05Z"])
    b = _write(tmp_path / "b.jsonl", ["2026-01-01T00:00:02Z", "2026-01-01T00:00:03Z"])
    with open(b, "a") as f:
        f.write("not json\n")  # keeps the time of the line before it, and reaches the replay
    labels = parse_labels(f'{{"incident": "x", "file": "{b}", "first_line": 2, "last_line": 3}}')
    merged = merge_events([a, b], str(tmp_path / "merged.jsonl"), labels)
    assert merged.origins == [(a, 2), (b, 1), (a, 1), (b, 2), (b, 3), (a, 3)]
    lines = (tmp_path / "merged.jsonl").read_text().splitlines()
    assert lines[4] == "not json" and json.loads(lines[0])["n"] == 2
    assert merged.incident_events["x"] == 2
    assert merged.first_ms is not None and merged.incident_first_ms["x"] == merged.first_ms + 2000


def test_cli_lists_scenarios_and_names_bad_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:

    assert main(["eval", "--list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("small ") and "enterprise" in out
    events = _write(tmp_path / "e.jsonl", ["2026-01-01T00:00:00Z"] * 5)
    (tmp_path / "labels.jsonl").write_text('{"incident": "a", "file": "other.jsonl"}\n')
    assert main(["eval", "--events", events, "--labels", str(tmp_path / "labels.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "labels line 1: unknown file" in err and err.startswith("sigmaray: error:")
    assert main(["eval", "--events", events]) == 2
    assert "--events needs --labels" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--scenario", "small", "--events", events])
