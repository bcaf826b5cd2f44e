"""Damaged EVTX files lose no record that can be recovered, and every loss is reported by record.

The damaged files are made in tmp_path by flipping bytes of the regression samples in
../shared (each sample is one 64 KiB chunk; several samples' chunks make a multi-chunk file).
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from pathlib import Path

import pytest

from cluster.sources import files
from cluster.sources.evtx import flatten_evtx_record
from cluster.sources.files import SourceRecord, read_evtx, read_jsonl
from tests.conftest import SIGMA

CHUNK_START, CHUNK = 4096, 65536
SAMPLES = SIGMA / "regression"
SEVEN = "efc21479-9e83-41da-8cf1-122e06ba8db3"  # a Sysmon sample: 7 records in one chunk


def _samples_with(count: int) -> list[str]:
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    return [Path(s["evtx"]).stem for s in manifest if s["events"] == count]


def _evtx(stem: str) -> bytes:
    return (SAMPLES / "evtx" / f"{stem}.evtx").read_bytes()


def _jsonl(stem: str) -> list[dict]:
    return [r.event for r in read_jsonl(SAMPLES / "jsonl" / f"{stem}.jsonl") if r.event is not None]


def _multi_chunk(stems: list[str]) -> bytes:
    """One EVTX file whose chunks are the samples' chunks, in order, under a valid file header."""
    header = bytearray(_evtx(stems[0])[:CHUNK_START])
    struct.pack_into("<QQ", header, 8, 0, len(stems) - 1)
    struct.pack_into("<H", header, 42, len(stems))
    struct.pack_into("<I", header, 124, zlib.crc32(bytes(header[:120])))
    return bytes(header) + b"".join(_evtx(s)[CHUNK_START:CHUNK_START + CHUNK] for s in stems)


def _write(tmp_path: Path, data: bytes | bytearray) -> Path:
    path = tmp_path / "damaged.evtx"
    path.write_bytes(bytes(data))
    return path


def _events(records: list[SourceRecord]) -> list[dict]:
    return [r.event for r in records if r.event is not None]


def _lost(records: list[SourceRecord]) -> list[int]:
    """Record numbers reported lost (errors that name one)."""
    out = []
    for record in records:
        if record.error and record.error.startswith("EVTX record number "):
            out.append(int(record.error.split()[3]))
    return out


def test_multi_chunk_file_reads_like_its_samples_and_marks_nothing(tmp_path: Path) -> None:
    stems = [SEVEN, *_samples_with(3)[:2]]
    records = list(read_evtx(_write(tmp_path, _multi_chunk(stems))))
    assert _events(records) == [e for s in stems for e in _jsonl(s)]
    assert all(r.error is None and r.recovered is None for r in records)


def test_bad_data_checksum_in_the_middle_chunk_recovers_its_records_and_marks_only_them(tmp_path: Path) -> None:
    stems = [*_samples_with(3)[:1], SEVEN, *_samples_with(3)[1:2]]
    data = bytearray(_multi_chunk(stems))
    middle = CHUNK_START + CHUNK
    data[middle + 52] ^= 0x01  # the stored data CRC32: every byte of the records is intact
    data[middle + 124:middle + 128] = struct.pack(  # keep the header checksum right
        "<I", zlib.crc32(bytes(data[middle:middle + 120] + data[middle + 128:middle + 512])))
    records = list(read_evtx(_write(tmp_path, data)))
    assert _events(records) == [e for s in stems for e in _jsonl(s)]
    assert [r.recovered is not None for r in records] == [False] * 3 + [True] * 7 + [False] * 3
    assert "chunk 1: chunk data CRC32 invalid" in (records[3].recovered or "")
    assert [r.line for r in records] == list(range(1, 14))


def test_bad_chunk_header_checksum_recovers_every_record(tmp_path: Path) -> None:
    data = bytearray(_evtx(SEVEN))
    data[CHUNK_START + 60] ^= 0xFF  # a reserved header byte: only the header checksum breaks
    records = list(read_evtx(_write(tmp_path, data)))
    assert _events(records) == _jsonl(SEVEN)
    assert all(r.recovered for r in records)


def test_a_record_that_does_not_parse_is_lost_alone_and_named_even_when_the_header_is_broken(
    tmp_path: Path,
) -> None:
    data = bytearray(_evtx(SEVEN))
    data[CHUNK_START + 60] ^= 0xFF  # header checksum broken: the record numbers come from the records
    data[CHUNK_START + 512 + 24] = 0xFF  # record 1's first BinXML token
    records = list(read_evtx(_write(tmp_path, data)))
    assert _lost(records) == [1]
    assert "the parser failed on it" in (records[0].error or "")
    assert _events(records) == _jsonl(SEVEN)[1:]


def test_a_parser_that_hangs_costs_the_timeout_and_every_record_is_reported_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The evtx package can loop forever on a damaged chunk; the child that parses it is killed.
    monkeypatch.setattr(files, "_CHILD", "import time; time.sleep(60)")
    monkeypatch.setattr(files, "RECOVERY_TIMEOUT_S", 0.5)
    data = bytearray(_evtx(SEVEN))
    data[CHUNK_START + 60] ^= 0xFF
    records = list(read_evtx(_write(tmp_path, data)))
    assert _events(records) == [] and _lost(records) == list(range(1, 8))
    assert all("did not finish within 0.5s" in (r.error or "") for r in records)


def test_random_byte_flips_never_lose_or_duplicate_a_record_silently(tmp_path: Path) -> None:
    """Each record is exactly once either an event or an error naming it; an event that is not
    marked recovered is the sample's own."""
    original = _evtx(SEVEN)
    expected = _jsonl(SEVEN)
    data_end = CHUNK_START + struct.unpack_from("<I", original, CHUNK_START + 48)[0]
    rng = random.Random(14)
    for _ in range(12):
        data = bytearray(original)
        offset = rng.randrange(CHUNK_START, data_end)
        data[offset] ^= 1 << rng.randrange(8)
        records = list(read_evtx(_write(tmp_path, data)))
        seen = _lost(records)
        for record in records:
            if record.recovered is not None:
                seen.append(int(record.recovered.split()[3]))
            elif record.event is not None:  # not marked: must be the sample's own event
                assert record.event in expected, offset
                seen.append(expected.index(record.event) + 1)
        assert sorted(seen) == list(range(1, 8)), (offset, [r.error for r in records if r.error])


def test_empty_eventdata_values_are_kept_as_null_like_the_jsonl_convention() -> None:
    # `<Data Name="X"/>` renders as null: dropping it would make `X|exists` differ from JSONL.
    system = {"Provider": {"#attributes": {"Name": "P"}}, "EventID": 1, "Channel": "C", "Correlation": None}
    rendered = {"event_record_id": 1, "data": json.dumps(
        {"Event": {"System": system, "EventData": {"StartModule": None, "Image": "x"},
                   "UserData": {"Wrapper": {"Inner": None}}}})}
    event = flatten_evtx_record(rendered)
    assert event == {"Provider_Name": "P", "EventID": 1, "Channel": "C", "StartModule": None, "Image": "x",
                     "Inner": None}


@pytest.mark.parametrize("offset", [0, 5], ids=["file-signature", "file-signature-tail"])
def test_a_damaged_file_header_does_not_cost_the_records_of_intact_chunks(tmp_path: Path, offset: int) -> None:
    data = bytearray(_evtx(SEVEN))
    data[offset] ^= 0xFF
    records = list(read_evtx(_write(tmp_path, data)))
    assert _events(records) == _jsonl(SEVEN)
    assert all(r.recovered for r in records) and [r.line for r in records] == list(range(1, 8))


def test_a_damaged_chunk_signature_does_not_cost_the_chunk(tmp_path: Path) -> None:
    data = bytearray(_evtx(SEVEN))
    data[CHUNK_START + 2] ^= 0xFF  # "ElfChnk" -> "El?Chnk"
    records = list(read_evtx(_write(tmp_path, data)))
    assert _events(records) == _jsonl(SEVEN)
    assert all(r.recovered for r in records)


def test_replay_detections_on_recovered_records_say_so_in_their_source(tmp_path: Path) -> None:
    """A detection whose evidence was salvaged from a damaged chunk tells the analyst (its
    `source.recovered`), as `sigmaray scan` does; one from an intact chunk does not."""
    import orjson

    from cluster.config import config_from_dict
    from cluster.sources.replay import replay_files

    manifest = {Path(s["evtx"]).stem: s for s in json.loads((SAMPLES / "manifest.json").read_text())}
    rule = str(SIGMA / manifest[SEVEN]["rule_path"])
    damaged = bytearray(_evtx(SEVEN))
    damaged[CHUNK_START + 60] ^= 0xFF  # the header checksum breaks: every record is recovered
    intact = tmp_path / "intact.evtx"
    intact.write_bytes(_evtx(SEVEN))
    config = config_from_dict({"rules": {"paths": [rule]}, "models": {"enabled": False}})
    sources: dict[str, list[dict]] = {}

    def write(record: object, dead: bool) -> None:
        if not dead:
            detection = orjson.loads(record.value)  # type: ignore[attr-defined]
            sources.setdefault(Path(detection["source"]["topic"]).name, []).append(detection["source"])

    replay_files(config, [str(_write(tmp_path, damaged)), str(intact)], write, rule_paths=[rule])
    assert len(sources["damaged.evtx"]) == len(sources["intact.evtx"]) == manifest[SEVEN]["expected_match_count"]
    assert all("chunk header" in source["recovered"].lower() or "checksum" in source["recovered"].lower()
               for source in sources["damaged.evtx"])
    assert not any("recovered" in source for source in sources["intact.evtx"])
