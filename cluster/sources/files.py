"""Read JSON-lines and Windows .evtx files into flat events.

Bad input never raises out of a reader: each record that cannot be decoded is yielded as a
SourceRecord with `event=None` and the reason in `error`, so callers can count and report skips.
A missing or unreadable file still raises the usual OSError: that is a usage error, not bad data.
"""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import cast

import orjson
from evtx import PyEvtxParser

from cluster.sources.evtx import flatten_evtx_record

MAX_EVENT_BYTES: int = 8 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"
_FILE_HEADER = 4096
_CHUNK = 65536
_CHUNK_HEADER = 512
_RECORD_MAGIC = 0x2A2A
_CHUNK_ERROR = re.compile(r"chunk number (\d+)")


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One input record: a flat event, or the reason it was skipped.

    `line` is the 1-based line for JSON lines and the 1-based record position for EVTX;
    0 marks an error about the whole file (an EVTX file whose header cannot be read).
    """

    file: str
    line: int
    event: dict | None
    error: str | None


def read_events(path: str | Path) -> Iterator[SourceRecord]:
    """Read `path` as EVTX when its suffix is .evtx, otherwise as JSON lines."""
    if Path(path).suffix.lower() == ".evtx":
        return read_evtx(path)
    return read_jsonl(path)


def read_jsonl(path: str | Path) -> Iterator[SourceRecord]:
    """Yield one record per non-blank line; each line must be a JSON object."""
    name = str(path)
    with open(path, "rb") as f:
        for number, line in _lines(f):
            if line is None:
                yield SourceRecord(name, number, None, f"line longer than {MAX_EVENT_BYTES} bytes")
                continue
            if number == 1 and line.startswith(_BOM):
                line = line[len(_BOM):]
            if not line.strip():
                continue
            event, error = _decode_json_object(line)
            yield SourceRecord(name, number, event, error)


def _lines(f: io.BufferedReader) -> Iterator[tuple[int, bytes | None]]:
    """Yield (line number, line), or (line number, None) for a line over MAX_EVENT_BYTES.

    Reads at most MAX_EVENT_BYTES + 1 bytes at a time, so a huge line never sits in memory.
    """
    number = 0
    while chunk := f.readline(MAX_EVENT_BYTES + 1):
        number += 1
        if chunk.endswith(b"\n"):
            yield number, chunk
        elif len(chunk) <= MAX_EVENT_BYTES:
            yield number, chunk  # the last line, without a newline
        else:
            while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield number, None


def _decode_json_object(line: bytes) -> tuple[dict | None, str | None]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as bad:
            return None, f"invalid UTF-8 at byte offset {bad.start}"
        return None, f"invalid JSON: {exc}"
    if not isinstance(value, dict):
        return None, f"JSON {type(value).__name__} is not an object"
    return value, None


def read_evtx(path: str | Path) -> Iterator[SourceRecord]:
    """Yield one record per EVTX record, in file order, flattened by `flatten_evtx_record`.

    Records that fail to parse, chunks that fail their checksum and the records a truncated
    file lost are all yielded as error records (one per record when the count is known).
    """
    name = str(path)
    with open(path, "rb") as f:  # raises the usual OSError for a missing or unreadable file
        size = os.fstat(f.fileno()).st_size
        header = f.read(_FILE_HEADER)
        tail_start = _FILE_HEADER + max(0, size - _FILE_HEADER) // _CHUNK * _CHUNK
        f.seek(tail_start)
        tail = f.read()
    try:
        # Unvalidated, one corrupt byte in a chunk (header or record data) can make the parser
        # loop forever, holding the GIL; validated, the chunk is rejected with an error.
        records = _records(PyEvtxParser(name, validate_checksums=True))
    except Exception as exc:
        yield SourceRecord(name, 0, None, f"not a readable EVTX file: {_one_line(str(exc))}")
        return
    items = chain(
        _drain(records, name),
        _salvage_tail(header, tail, tail_start),
        _missing_chunks(header, tail, tail_start),
    )
    for position, (event, error) in enumerate(items, 1):
        yield SourceRecord(name, position, event, error)


_Item = tuple[dict | None, str | None]


def _records(parser: PyEvtxParser) -> Iterator[dict]:
    """The parser's records, as dicts. (evtx's stub types the iterator's __next__ as Optional:
    pyo3's way to end the iteration, so no record is ever None.)"""
    return cast("Iterator[dict]", parser.records_json())


def _drain(records: Iterator[dict], path: str) -> Iterator[_Item]:
    """Flatten each record; a parse error becomes error items and iteration resumes."""
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except BaseException as exc:
            if not _is_library_error(exc):
                raise
            yield from _chunk_loss(path, _one_line(str(exc)))
            continue
        yield _flatten(record)


def _flatten(record: dict) -> _Item:
    try:
        return flatten_evtx_record(record), None
    except ValueError as exc:
        return None, f"EVTX record number {record.get('event_record_id')}: {exc}"


def _is_library_error(exc: BaseException) -> bool:
    # A Rust panic in the parser surfaces as pyo3's PanicException, a BaseException.
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def _chunk_loss(path: str, message: str) -> Iterator[_Item]:
    """One error per record of a rejected chunk when its header says which; else one error."""
    match = _CHUNK_ERROR.search(message)
    if match:
        with open(path, "rb") as f:
            f.seek(_FILE_HEADER + int(match.group(1)) * _CHUNK)
            ids = _chunk_record_ids(f.read(_CHUNK_HEADER))
        if ids:
            for record_id in ids:
                yield None, f"EVTX record number {record_id} lost: {message}"
            return
    yield None, message


def _chunk_record_ids(chunk: bytes) -> range | None:
    """The record numbers a chunk header lists, when the header is intact."""
    if len(chunk) < _CHUNK_HEADER or not chunk.startswith(b"ElfChnk\0"):
        return None
    if not _crc_ok(chunk[:120] + chunk[128:_CHUNK_HEADER], chunk, 124):
        return None
    first_id, last_id = struct.unpack_from("<QQ", chunk, 8)
    return range(first_id, last_id + 1) if first_id <= last_id else None


def _crc_ok(covered: bytes, block: bytes, at: int) -> bool:
    return zlib.crc32(covered) == struct.unpack_from("<I", block, at)[0]


def _salvage_tail(header: bytes, tail: bytes, offset: int) -> Iterator[_Item]:
    """Recover the complete records of a partial last chunk; report the rest as lost.

    The evtx package silently ignores a partial chunk, and parses a record cut short as if it
    were whole (its missing values read as empty). So only records that end before the cut are
    parsed, from a copy of the chunk padded to full size, and only when the chunk header's
    checksum holds. The padded copy cannot pass the data checksum, so it is parsed
    unvalidated: a chunk both cut and corrupted could still hang the parser (see read_evtx).
    """
    if not tail.strip(b"\0"):
        return  # no partial chunk, or only zero padding
    lost = f"file truncated at offset {offset + len(tail)}"
    ids = _chunk_record_ids(tail)
    if ids is None:
        yield None, (f"truncated EVTX: {len(tail)} bytes at offset {offset} are not a whole "
                     "chunk; its records are lost, count unknown")
        return
    complete: set[int] = set()
    at = _CHUNK_HEADER
    while at + 24 <= len(tail):
        magic, size, record_id = struct.unpack_from("<IIQ", tail, at)
        if magic != _RECORD_MAGIC or size < 24 or at + size > len(tail):
            break
        complete.add(record_id)
        at += size
    recovered: set[int] = set()
    if complete:
        padded = io.BytesIO(header + tail + bytes(_CHUNK - len(tail)))
        for record in _records_of(padded, complete):
            recovered.add(record["event_record_id"])
            yield _flatten(record)
    for record_id in ids:
        if record_id not in recovered:
            yield None, f"EVTX record number {record_id} lost: {lost}"


def _records_of(source: io.BytesIO, wanted: set[int]) -> Iterator[dict]:
    """The records of `source` whose ids are in `wanted`; parse errors are dropped
    because the caller reports every id that does not come back."""
    try:
        records = _records(PyEvtxParser(source))
    except Exception:
        return
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except BaseException as exc:
            if not _is_library_error(exc):
                raise
            continue
        if record.get("event_record_id") in wanted:
            yield record


def _missing_chunks(header: bytes, tail: bytes, tail_start: int) -> Iterator[_Item]:
    """An error when an intact file header lists more chunks than the file holds."""
    if len(header) < _FILE_HEADER or not _crc_ok(header[:120], header, 124):
        return
    listed = struct.unpack_from("<H", header, 42)[0]
    present = (tail_start - _FILE_HEADER) // _CHUNK + (1 if tail.strip(b"\0") else 0)
    if listed > present:
        yield None, (f"truncated EVTX: the header lists {listed} chunks, the file holds "
                     f"{present}; the records of the missing chunks are lost, count unknown")


def _one_line(message: str) -> str:
    return " ".join(message.split())
