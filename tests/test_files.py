"""Readers for JSON lines and .evtx: real samples flatten exactly, bad input is counted."""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.sources import files
from cluster.sources.evtx import flatten_evtx_record
from cluster.sources.files import MAX_EVENT_BYTES, SourceRecord, read_events, read_evtx, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SIGMA = ROOT.parent / "shared" / "sigma"
_MANIFEST_PATH = SIGMA / "regression" / "manifest.json"
# Without ../shared there is nothing to parametrize over (conftest skips the data tests).
MANIFEST = json.loads(_MANIFEST_PATH.read_text()) if _MANIFEST_PATH.is_file() else []
# A Sysmon sample with 7 records in its single chunk.
SEVEN = SIGMA / "regression" / "evtx" / "efc21479-9e83-41da-8cf1-122e06ba8db3.evtx"
SEVEN_JSONL = SIGMA / "regression" / "jsonl" / "efc21479-9e83-41da-8cf1-122e06ba8db3.jsonl"
CHUNK_START = 4096


def good(records: list[SourceRecord]) -> list[dict]:
    return [r.event for r in records if r.event is not None]


def errors(records: list[SourceRecord]) -> list[tuple[int, str]]:
    return [(r.line, r.error) for r in records if r.error is not None]


def record_ends(evtx: bytes) -> list[int]:
    """File offsets where each record of the first chunk ends."""
    ends, at = [], CHUNK_START + 512
    while struct.unpack_from("<I", evtx, at)[0] == 0x2A2A:
        at += struct.unpack_from("<I", evtx, at + 4)[0]
        ends.append(at)
    return ends


# --- (a) every regression sample: the .evtx flattens to exactly the events of the .jsonl


def test_manifest_lists_202_samples() -> None:
    assert len(MANIFEST) == 202


@pytest.mark.parametrize("sample", MANIFEST, ids=lambda s: Path(s["evtx"]).stem)
def test_regression_evtx_flattens_to_the_jsonl_events(sample: dict) -> None:
    from_evtx = list(read_evtx(SIGMA / sample["evtx"]))
    from_jsonl = list(read_jsonl(SIGMA / sample["jsonl"]))
    assert errors(from_evtx) == [] and errors(from_jsonl) == []
    assert len(from_evtx) == len(from_jsonl) == sample["events"]
    assert [r.line for r in from_evtx] == list(range(1, sample["events"] + 1))
    for got, expected in zip(good(from_evtx), good(from_jsonl), strict=True):
        assert got == expected


# --- flattening rules that the samples do not exercise, on records shaped as `evtx` renders


def rendered(event: dict) -> dict:
    return {"event_record_id": 1, "timestamp": "", "data": json.dumps({"Event": event})}


SYSTEM = {
    "Provider": {"#attributes": {"Name": "PowerShell"}},
    "EventID": {"#attributes": {"Qualifiers": 0}, "#text": 400},
    "Channel": "Windows PowerShell",
    "Correlation": None,
}


def test_unnamed_data_becomes_a_data_string_or_list() -> None:
    one = flatten_evtx_record(rendered({"System": SYSTEM, "EventData": {"Data": {"#text": "x"}}}))
    many = {"System": SYSTEM, "EventData": {"Data": {"#text": ["Available", "None", "a b"]}}}
    assert one["Data"] == "x"
    assert flatten_evtx_record(rendered(many))["Data"] == ["Available", "None", "a b"]


def test_system_text_and_attributes_split_and_empty_elements_are_dropped() -> None:
    event = flatten_evtx_record(rendered({"System": SYSTEM, "EventData": None}))
    assert event == {"Provider_Name": "PowerShell", "EventID": 400, "EventID_Qualifiers": 0,
                     "Channel": "Windows PowerShell"}


def test_eventdata_name_colliding_with_system_moves_to_eventdata_prefix() -> None:
    event_data = {"Channel": "c", "EventID": 7}
    event = flatten_evtx_record(rendered({"System": SYSTEM, "EventData": event_data}))
    assert (event["Channel"], event["EventData_Channel"]) == ("Windows PowerShell", "c")
    assert (event["EventID"], event["EventData_EventID"]) == (400, 7)


def test_key_names_keep_only_letters_digits_and_underscore() -> None:
    event_data = {"Threat Name": "EICAR", "a-b.c_d": 1}
    event = flatten_evtx_record(rendered({"System": SYSTEM, "EventData": event_data}))
    assert event["ThreatName"] == "EICAR" and event["abc_d"] == 1


def test_userdata_wrapper_is_dropped_and_deeper_nesting_joined() -> None:
    user_data = {"LogFileCleared": {"#attributes": {"xmlns": "ns"}, "SubjectUserName": "bob",
                                    "Param": {"#attributes": {"Kind": "k"}, "Value": "v"}}}
    event = flatten_evtx_record(rendered({"System": SYSTEM, "UserData": user_data}))
    assert event["SubjectUserName"] == "bob"
    assert (event["Param_Kind"], event["Param_Value"]) == ("k", "v")
    assert "LogFileCleared" not in event and "xmlns" not in json.dumps(event)


@pytest.mark.parametrize(
    "record", [{}, {"data": 5}, {"data": "[]"}, {"data": '{"Event": 1}'}, {"data": "{"}]
)
def test_flatten_rejects_a_record_that_is_not_a_rendered_event(record: dict) -> None:
    with pytest.raises(ValueError):
        flatten_evtx_record(record)


# --- (b) JSON lines: bad lines become error records with the right line number


def write(tmp_path: Path, data: bytes, name: str = "events.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_jsonl_skips_blank_lines_silently_and_counts_physical_lines(tmp_path: Path) -> None:
    path = write(tmp_path, b'\n\r\n{"a": 1}\n   \n{"a": 2}\r\n\n{"a": 3}')
    records = list(read_jsonl(path))
    assert [(r.line, r.event) for r in records] == [(3, {"a": 1}), (5, {"a": 2}), (7, {"a": 3})]


def test_jsonl_accepts_a_utf8_bom_on_the_first_line(tmp_path: Path) -> None:
    records = list(read_jsonl(write(tmp_path, b'\xef\xbb\xbf{"a": 1}\n')))
    assert good(records) == [{"a": 1}] and errors(records) == []


def test_jsonl_non_object_lines_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"ok": 1}\n[1, 2]\n42\n"text"\nnull\n{"ok": 2}\n')
    records = list(read_jsonl(path))
    assert good(records) == [{"ok": 1}, {"ok": 2}]
    assert [line for line, _ in errors(records)] == [2, 3, 4, 5]
    assert all("not an object" in error for _, error in errors(records))


def test_jsonl_invalid_json_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"ok": 1}\n{"a": \n{"a": 1} trailing\n{"ok": 2}\n')
    records = list(read_jsonl(path))
    assert len(good(records)) == 2
    assert [(line, error.split(":")[0]) for line, error in errors(records)] == [
        (2, "invalid JSON"), (3, "invalid JSON")]


def test_jsonl_invalid_utf8_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"ok": 1}\n{"Image": "C:\\\\\xff\xfe.exe"}\n{"ok": 2}\n')
    records = list(read_jsonl(path))
    assert good(records) == [{"ok": 1}, {"ok": 2}]
    assert errors(records) == [(2, "invalid UTF-8 at byte offset 15")]


def test_jsonl_binary_garbage_is_an_error_per_line(tmp_path: Path) -> None:
    garbage = bytes(b for b in random.Random(7).randbytes(20_000) if b != 0x0A)
    path = write(tmp_path, b'{"ok": 1}\n' + garbage + b"\n" + b"\0" * 512 + b'\n{"ok": 2}\n')
    records = list(read_jsonl(path))
    assert good(records) == [{"ok": 1}, {"ok": 2}]
    assert [line for line, _ in errors(records)] == [2, 3]


@pytest.mark.parametrize(
    "deep", [b"[" * 10_000 + b"]" * 10_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000]
)
def test_jsonl_deeply_nested_json_is_an_error_not_a_crash(tmp_path: Path, deep: bytes) -> None:
    records = list(read_jsonl(write(tmp_path, b'{"ok": 1}\n' + deep + b'\n{"ok": 2}\n')))
    assert len(good(records)) == 2
    assert [line for line, _ in errors(records)] == [2]
    assert "depth" in errors(records)[0][1]


def test_jsonl_accepts_a_5mb_event(tmp_path: Path) -> None:
    big = {"CommandLine": "A" * (5 * 1024 * 1024)}
    records = list(read_jsonl(write(tmp_path, b'{"ok": 1}\n' + json.dumps(big).encode() + b"\n")))
    assert errors(records) == [] and [r.line for r in records] == [1, 2]
    assert records[1].event == big


def test_jsonl_line_over_max_event_bytes_is_an_error_and_reading_continues(tmp_path: Path) -> None:
    huge = b'{"CommandLine": "' + b"A" * MAX_EVENT_BYTES + b'"}'
    records = list(read_jsonl(write(tmp_path, b'{"ok": 1}\n' + huge + b'\n{"ok": 2}\n')))
    assert good(records) == [{"ok": 1}, {"ok": 2}]
    assert [r.line for r in records] == [1, 2, 3]
    assert errors(records) == [(2, f"line longer than {MAX_EVENT_BYTES} bytes")]


def test_jsonl_max_event_bytes_is_inclusive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "MAX_EVENT_BYTES", 20)
    at_limit, over = b'{"a": "' + b"x" * 11 + b'"}', b'{"a": "' + b"x" * 12 + b'"}'
    assert (len(at_limit), len(over)) == (20, 21)
    lines = [at_limit, over, over + b"x" * 100, at_limit]
    records = list(read_jsonl(write(tmp_path, b"\n".join(lines))))
    assert [(r.line, r.error is None) for r in records] == [
        (1, True), (2, False), (3, False), (4, True)]


# --- (b) EVTX: truncated and corrupt files yield error records, never an exception or a hang


def test_evtx_truncated_after_a_record_keeps_the_complete_records(tmp_path: Path) -> None:
    data = SEVEN.read_bytes()
    expected = good(list(read_jsonl(SEVEN_JSONL)))
    ends = record_ends(data)
    assert len(ends) == 7 == len(expected)
    records = list(read_evtx(write(tmp_path, data[: ends[3]], "cut.evtx")))
    assert good(records) == expected[:4]
    assert [line for line, _ in errors(records)] == [5, 6, 7]
    assert all("truncated" in error for _, error in errors(records))


@pytest.mark.parametrize("record,into,kept", [(0, 16, 1), (3, 40, 4)])
def test_evtx_record_cut_in_the_middle_is_an_error_not_a_half_empty_event(
    tmp_path: Path, record: int, into: int, kept: int
) -> None:
    # The evtx package silently ignores a partial chunk, and when the chunk is padded it renders
    # a cut record with its missing values as empty: neither may pass as an event.
    data = SEVEN.read_bytes()
    records = list(read_evtx(write(tmp_path, data[: record_ends(data)[record] + into], "cut.evtx")))
    assert good(records) == good(list(read_jsonl(SEVEN_JSONL)))[:kept]
    assert [line for line, _ in errors(records)] == list(range(kept + 1, 8))


def test_evtx_cut_before_the_first_record_reports_all_seven_lost(tmp_path: Path) -> None:
    records = list(read_evtx(write(tmp_path, SEVEN.read_bytes()[: CHUNK_START + 600], "cut.evtx")))
    assert good(records) == [] and [line for line, _ in errors(records)] == list(range(1, 8))


def test_evtx_with_only_its_file_header_reports_the_missing_chunk(tmp_path: Path) -> None:
    records = list(read_evtx(write(tmp_path, SEVEN.read_bytes()[:CHUNK_START], "cut.evtx")))
    assert good(records) == [] and len(errors(records)) == 1
    assert "header lists 1 chunks" in errors(records)[0][1]


@pytest.mark.parametrize(
    "data",
    [b"", SEVEN.read_bytes()[:100] if SEVEN.is_file() else b"ElfFile\x00" + bytes(92), bytes(range(256)) * 64],
    ids=["empty", "cut-header", "garbage"],
)
def test_evtx_unreadable_file_header_is_one_file_level_error(tmp_path: Path, data: bytes) -> None:
    records = list(read_evtx(write(tmp_path, data, "bad.evtx")))
    assert [(r.line, r.event) for r in records] == [(0, None)]
    assert records[0].error.startswith("not a readable EVTX file")


def test_evtx_corrupt_record_is_reported_by_number_and_the_rest_of_its_chunk_recovered(tmp_path: Path) -> None:
    data = bytearray(SEVEN.read_bytes())
    data[CHUNK_START + 512 + 24] = 0xFF  # the first record's first BinXML token
    records = list(read_evtx(write(tmp_path, bytes(data), "corrupt.evtx")))
    assert good(records) == good(list(read_jsonl(SEVEN_JSONL)))[1:]
    assert all(r.recovered and "chunk data CRC32 invalid" in r.recovered for r in records if r.event)
    assert [(line, error.split(":")[0]) for line, error in errors(records)] == [(1, "EVTX record number 1 lost")]


@pytest.mark.parametrize(
    "offset,value", [(128, 0x28), (829, 0xAC)], ids=["chunk-header-table", "record-data"],
)
def test_evtx_byte_that_hangs_an_unvalidated_parser_neither_hangs_nor_loses_the_chunk(
    tmp_path: Path, offset: int, value: int
) -> None:
    # Unvalidated, the evtx package loops forever on these one-byte corruptions while holding
    # the GIL, so the check runs in a child process that a timeout can kill. The reader parses
    # a damaged chunk with its offset tables zeroed, in a child of its own: all 7 come back,
    # marked as recovered.
    data = bytearray(SEVEN.read_bytes())
    data[CHUNK_START + offset] = value
    path = write(tmp_path, bytes(data), "corrupt.evtx")
    script = ("import sys; from cluster.sources.files import read_evtx; r = list(read_evtx(sys.argv[1])); "
              "print(sum(x.event is None for x in r), sum(x.recovered is not None for x in r), len(r))")
    done = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, timeout=60,
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0", "7", "7"]


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    for reader in (read_jsonl, read_evtx, read_events):
        with pytest.raises(FileNotFoundError):
            list(reader(tmp_path / "nope.evtx"))


def test_read_events_dispatches_on_the_evtx_suffix(tmp_path: Path) -> None:
    evtx_copy = write(tmp_path, SEVEN.read_bytes(), "SECURITY.EVTX")
    json_copy = write(tmp_path, b'{"a": 1}\n', "events.json")
    assert [len(good(list(read_events(p)))) for p in (SEVEN, evtx_copy, json_copy)] == [7, 7, 1]
    assert list(read_events(json_copy)) == [SourceRecord(str(json_copy), 1, {"a": 1}, None)]
