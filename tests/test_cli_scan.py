"""`sigmaray scan` and `sigmaray bench engine` as other tools call them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import OTRF, ROOT, SIGMA

SAMPLE_ID = "271de298-cc0e-4842-acd8-079a0a99ea65"
RULES = SIGMA / "rules-emerging-threats" / "2025"


def sigmaray(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_scan_prints_one_json_object_per_match_with_rule_source_and_event() -> None:
    jsonl = SIGMA / "regression" / "jsonl" / f"{SAMPLE_ID}.jsonl"
    evtx = SIGMA / "regression" / "evtx" / f"{SAMPLE_ID}.evtx"
    done = sigmaray("scan", "--rules", str(RULES), str(jsonl), str(evtx))
    assert done.returncode == 0, done.stderr
    matches = [json.loads(line) for line in done.stdout.splitlines()]
    ours = [m for m in matches if m["rule"]["id"] == SAMPLE_ID]
    assert [m["source"] for m in ours] == [{"file": str(jsonl), "line": 1}, {"file": str(evtx), "line": 1}]
    assert set(ours[0]["rule"]) == {"id", "title", "level", "tags"}
    assert ours[0]["rule"]["level"] == "high" and "attack.execution" in ours[0]["rule"]["tags"]
    assert ours[0]["event"] == ours[1]["event"]
    assert "scanned 2 events" in done.stderr


def test_scan_counts_and_reports_bad_records_and_still_matches_the_good_ones(tmp_path: Path) -> None:
    real = (SIGMA / "regression" / "jsonl" / f"{SAMPLE_ID}.jsonl").read_text().strip()
    event = json.loads(real)
    huge = dict(event, Padding="A" * 5_000_000)  # a 5 MB event is accepted and matched
    lines = [
        real.encode(),
        b"{not json",
        b"\x00\x01\x02\xff\xfe binary garbage",
        json.dumps({"CommandLine": "caf\u00e9"}).encode().replace(b"\\u00e9", b"\xe9"),  # invalid UTF-8
        b"[" * 100_000 + b"]" * 100_000,  # deeply nested
        b"42",  # valid JSON but not an object
        json.dumps(huge).encode(),
        b"",
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    done = sigmaray("scan", "--rules", str(RULES), str(path))
    assert done.returncode == 0, done.stderr
    hits = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(m["source"]["line"] for m in hits if m["rule"]["id"] == SAMPLE_ID) == [1, 7]
    assert "scanned 2 events" in done.stderr
    assert "5 skipped records" in done.stderr
    for line_number in (2, 3, 4, 5, 6):
        assert f"mixed.jsonl:{line_number}:" in done.stderr


def test_scan_of_a_missing_file_fails_with_a_clear_message() -> None:
    done = sigmaray("scan", "--rules", str(RULES), "/nonexistent/events.jsonl")
    assert done.returncode == 2
    assert "events.jsonl" in done.stderr and "Traceback" not in done.stderr


def test_bench_engine_json_reports_both_modes_with_identical_matches() -> None:
    events = OTRF / "jsonl" / "credential_access"
    done = sigmaray("bench", "engine", "--rules", str(SIGMA / "rules" / "windows" / "process_access"),
                    "--events", str(events), "--repeat", "1", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {"rules", "events", "events_per_s", "baseline_events_per_s", "matches", "baseline_matches"} <= set(report)
    assert report["events"] > 1000 and report["rules"] > 10
    assert report["matches"] == report["baseline_matches"] > 0


def test_replay_runs_files_through_the_worker_code_and_matches_scan(tmp_path: Path) -> None:
    dataset = OTRF / "jsonl" / "credential_access" / "cmd_lsass_memory_dumpert_syscalls.jsonl"
    truncated = tmp_path / "cut.jsonl"
    truncated.write_bytes(dataset.read_bytes()[:-40] + b"\n\xff\xfe garbage\n")
    rules = str(ROOT / "rules")
    replay = sigmaray("replay", "--rules", rules, str(dataset), str(truncated))
    scan = sigmaray("scan", "--rules", rules, str(dataset), str(truncated))
    assert replay.returncode == 0 and scan.returncode == 0, replay.stderr + scan.stderr
    replayed = [d for d in map(json.loads, replay.stdout.splitlines()) if d["kind"] == "sigma"]
    scanned = [json.loads(line) for line in scan.stdout.splitlines()]
    assert replayed and [(d["source"]["topic"], d["source"]["offset"], d["rule"]["id"]) for d in replayed] == [
        (m["source"]["file"], m["source"]["line"], m["rule"]["id"]) for m in scanned
    ]
    assert "2 dead letters" in replay.stderr  # the cut last line and the garbage line
    assert "cut.jsonl" in replay.stderr
