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
import subprocess
import sys
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
_TABLES_START = 128  # the chunk header's string and template offset tables: bytes 128-511
_CHUNK_ERROR = re.compile(r"chunk number (\d+)")


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One input record: a flat event, or the reason it was skipped.

    `line` is the 1-based line for JSON lines and the 1-based record position for EVTX;
    0 marks an error about the whole file (an EVTX file whose header cannot be read).
    `recovered` is set on an EVTX event parsed from a chunk that failed its checksums: the
    event is what the bytes say, but a damaged byte may sit inside one of its values.
    """

    file: str
    line: int
    event: dict | None
    error: str | None
    recovered: str | None = None


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

    Chunks whose checksums hold are parsed validated. A chunk that fails its checksums is not
    dropped: its records are parsed again without validation (in a child process, see
    `_recover_chunk`), each record that parses is yielded with `recovered` saying why it is
    suspect, and each record that does not is an error naming its record number and why. The
    records a truncated file lost are errors too (one per record when the count is known).
    """
    name = str(path)
    with open(path, "rb") as f:  # raises the usual OSError for a missing or unreadable file
        size = os.fstat(f.fileno()).st_size
        header = f.read(_FILE_HEADER)
        tail_start = _FILE_HEADER + max(0, size - _FILE_HEADER) // _CHUNK * _CHUNK
        f.seek(tail_start)
        tail = f.read()
    try:
        # Validated first: on an intact chunk the two parses agree, and the validated one never
        # runs the parser over corrupt bytes in this process (see `_recover_chunk`).
        records = _records(PyEvtxParser(name, validate_checksums=True))
    except Exception as exc:
        problem = f"not a readable EVTX file: {_one_line(str(exc))}"
        # A damaged file header hides no record: its chunks may still be whole.
        salvaged = list(_recover_chunks(header, name, size, problem))
        if not any(event is not None for event, _, _ in salvaged):
            yield SourceRecord(name, 0, None, problem)
            return
        salvaged.extend(_salvage_tail(header, tail, tail_start))
        for position, (event, error, recovered) in enumerate(salvaged, 1):
            yield SourceRecord(name, position, event, error, recovered)
        return
    items = chain(
        _drain(records, name, header),
        _salvage_tail(header, tail, tail_start),
        _missing_chunks(header, tail, tail_start),
    )
    for position, (event, error, recovered) in enumerate(items, 1):
        yield SourceRecord(name, position, event, error, recovered)


# (event, error, recovered): one of event and error is None; `recovered` is set on an event
# parsed from a chunk that failed its checksums.
_Item = tuple[dict | None, str | None, str | None]


def _records(parser: PyEvtxParser) -> Iterator[dict]:
    """The parser's records, as dicts. (evtx's stub types the iterator's __next__ as Optional:
    pyo3's way to end the iteration, so no record is ever None.)"""
    return cast("Iterator[dict]", parser.records_json())


def _drain(records: Iterator[dict], path: str, header: bytes) -> Iterator[_Item]:
    """Flatten each record; a chunk the validated parser rejects is recovered record by record."""
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except BaseException as exc:
            if not _is_library_error(exc):
                raise
            message = _one_line(str(exc))
            match = _CHUNK_ERROR.search(message)
            if match is None:
                yield None, message, None
                continue
            number = int(match.group(1))
            with open(path, "rb") as f:
                f.seek(_FILE_HEADER + number * _CHUNK)
                chunk = f.read(_CHUNK)
            yield from _recover_chunk(header, chunk, number, _chunk_problem(message))
            continue
        yield _flatten(record)


def _flatten(record: dict, recovered: str | None = None) -> _Item:
    try:
        return flatten_evtx_record(record), None, recovered
    except ValueError as exc:
        return None, f"EVTX record number {record.get('event_record_id')}: {exc}", None


def _is_library_error(exc: BaseException) -> bool:
    # A Rust panic in the parser surfaces as pyo3's PanicException, a BaseException.
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def _chunk_problem(message: str) -> str:
    """The parser's reason without its "Failed to parse chunk number N:" prefix."""
    return message.split(": ", 1)[1] if message.startswith("Failed to parse chunk") and ": " in message else message


# --- recovering the records of a chunk that failed its checksums ------------------------------

RECOVERY_TIMEOUT_S: float = 10.0

# Run in a child process: stdin is a one-chunk EVTX file, stdout one JSON line per record or
# error. Only the evtx package is imported, so the child starts in a fraction of a second.
_CHILD = """
import io, sys, orjson
from evtx import PyEvtxParser
out = sys.stdout.buffer
records = PyEvtxParser(io.BytesIO(sys.stdin.buffer.read()), number_of_threads=1).records_json()
while True:
    try:
        record = next(records)
    except StopIteration:
        break
    except BaseException as exc:
        out.write(orjson.dumps({"error": " ".join(str(exc).split())}) + b"\\n")
        continue
    out.write(orjson.dumps({"record": record}) + b"\\n")
    out.flush()
"""


def _recover_chunk(header: bytes, chunk: bytes, number: int, problem: str,
                   wanted: set[int] | None = None) -> Iterator[_Item]:
    """Parse a chunk that failed its checksums without validation and yield what parses.

    The evtx package can loop forever, holding the GIL, on one corrupt byte of an unvalidated
    chunk; so the parse runs in a child process under a timeout, never in this one. It runs
    first with the chunk's string and template offset tables zeroed: they are only a cache of
    offsets into the chunk (every record names its strings and templates inline), and a bad
    entry there is what makes the parser hang or give up on the whole chunk. If records are
    still missing, the chunk is parsed as it is too, and the two results are merged by record
    number. `wanted` limits the records taken (a truncated chunk's complete records).

    Every record number the chunk is known to hold (its header's range when the header's
    checksum holds, else the records its structure shows) that does not come back is reported
    lost, with the reason.
    """
    where = f"chunk {number}: {problem}"
    expected = _expected_records(chunk)
    if wanted is not None:
        expected = [i for i in expected if i in wanted]
    got: dict[int, dict] = {}
    failures: list[str] = []
    cleaned = bytearray(chunk)
    cleaned[:8] = b"ElfChnk\0"  # a damaged signature alone must not cost the chunk
    cleaned[_TABLES_START:_CHUNK_HEADER] = bytes(_CHUNK_HEADER - _TABLES_START)
    for variant in (bytes(cleaned), chunk):
        records, failure = _parse_in_child(_one_chunk_file(header, variant))
        if failure:
            failures.append(failure)
        for record in records:
            record_id = record.get("event_record_id")
            if isinstance(record_id, int) and record_id not in got and (wanted is None or record_id in wanted):
                got[record_id] = record
        if all(i in got for i in expected) and got:
            break
    mark = f"recovered from a damaged EVTX {where}; parsed without checksum validation"
    why = "; ".join(dict.fromkeys(failures)) or "the parser did not return it"
    for record_id in sorted({*got, *expected}):  # record order, lost ones in their place
        if record_id in got:
            yield _flatten(got[record_id], f"EVTX record number {record_id} {mark}")
        else:
            yield None, f"EVTX record number {record_id} lost: {where}; {why}", None
    if not expected and not got:
        yield None, f"EVTX {where}; no record could be recovered and the count is unknown ({why})", None


def _recover_chunks(header: bytes, path: str, size: int, problem: str) -> Iterator[_Item]:
    """Every whole chunk of a file whose header the parser refuses, recovered one by one."""
    with open(path, "rb") as f:
        for number in range(max(0, size - _FILE_HEADER) // _CHUNK):
            f.seek(_FILE_HEADER + number * _CHUNK)
            chunk = f.read(_CHUNK)
            if chunk.startswith(b"ElfChnk") or _expected_records(chunk):
                yield from _recover_chunk(header, chunk, number, problem)


def _parse_in_child(data: bytes) -> tuple[list[dict], str]:
    """(records, why some may be missing) from parsing `data` in a child process."""
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD], input=data, capture_output=True,
                              timeout=RECOVERY_TIMEOUT_S, check=False)
        output, failure = done.stdout, "" if done.returncode == 0 else f"the parser crashed ({done.returncode})"
    except subprocess.TimeoutExpired as timeout:
        output = timeout.stdout or b""
        failure = f"the parser did not finish within {RECOVERY_TIMEOUT_S:g}s"
    records: list[dict] = []
    errors: list[str] = []
    for line in output.splitlines():
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # the last line of a killed child can be cut
        if "record" in item:
            records.append(item["record"])
        else:
            errors.append(str(item.get("error", "")))
    if errors and not failure:
        failure = f"the parser failed on it: {errors[0]}"
    return records, failure


def _one_chunk_file(header: bytes, chunk: bytes) -> bytes:
    """An EVTX file of the original file header (rewritten to list one chunk) and `chunk`,
    padded to a whole chunk (the evtx package ignores a partial one)."""
    head = bytearray(header[:_FILE_HEADER].ljust(_FILE_HEADER, b"\0"))
    if not head.startswith(b"ElfFile\0"):
        head[:8] = b"ElfFile\0"
        struct.pack_into("<IHHH", head, 32, 128, 1, 3, _FILE_HEADER)
    struct.pack_into("<QQ", head, 8, 0, 0)  # first and last chunk number
    struct.pack_into("<H", head, 42, 1)  # chunk count
    struct.pack_into("<I", head, 124, zlib.crc32(bytes(head[:120])))
    return bytes(head) + chunk[:_CHUNK].ljust(_CHUNK, b"\0")


def _expected_records(chunk: bytes) -> list[int]:
    """The record numbers a chunk holds: its header's range when the header's checksum holds,
    else those of the records its structure shows (each with the record magic and its size
    repeated at its end)."""
    listed = _chunk_record_ids(chunk)
    if listed is not None:
        return list(listed)
    found: list[int] = []
    at = _CHUNK_HEADER
    end = min(len(chunk), _CHUNK)
    while at + 28 <= end:
        magic, size, record_id = struct.unpack_from("<IIQ", chunk, at)
        if (magic == _RECORD_MAGIC and 28 <= size <= end - at
                and struct.unpack_from("<I", chunk, at + size - 4)[0] == size):
            found.append(record_id)
            at += size
            continue
        # Not a record here: look for the next record magic (records follow each other, so a
        # damaged record header hides only that record).
        nxt = chunk.find(b"\x2a\x2a\x00\x00", at + 1, end)
        if nxt < 0:
            break
        at = nxt
    return found


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
    taken, from a copy of the chunk padded to full size, and only when the chunk header's
    checksum holds. The padded copy cannot pass the data checksum: it is parsed like a damaged
    chunk (`_recover_chunk`), and its records are marked recovered.
    """
    if not tail.strip(b"\0"):
        return  # no partial chunk, or only zero padding
    lost = f"file truncated at offset {offset + len(tail)}"
    ids = _chunk_record_ids(tail)
    if ids is None:
        yield None, (f"truncated EVTX: {len(tail)} bytes at offset {offset} are not a whole "
                     "chunk; its records are lost, count unknown"), None
        return
    complete: set[int] = set()
    at = _CHUNK_HEADER
    while at + 24 <= len(tail):
        magic, size, record_id = struct.unpack_from("<IIQ", tail, at)
        if magic != _RECORD_MAGIC or size < 24 or at + size > len(tail):
            break
        complete.add(record_id)
        at += size
    if complete:
        # Complete records that do not parse are reported by `_recover_chunk`, with the reason.
        number = (offset - _FILE_HEADER) // _CHUNK
        yield from _recover_chunk(header, tail, number, lost, wanted=complete)
    for record_id in ids:
        if record_id not in complete:
            yield None, f"EVTX record number {record_id} lost: {lost}", None


def _missing_chunks(header: bytes, tail: bytes, tail_start: int) -> Iterator[_Item]:
    """An error when an intact file header lists more chunks than the file holds."""
    if len(header) < _FILE_HEADER or not _crc_ok(header[:120], header, 124):
        return
    listed = struct.unpack_from("<H", header, 42)[0]
    present = (tail_start - _FILE_HEADER) // _CHUNK + (1 if tail.strip(b"\0") else 0)
    if listed > present:
        yield None, (f"truncated EVTX: the header lists {listed} chunks, the file holds "
                     f"{present}; the records of the missing chunks are lost, count unknown"), None


def _one_line(message: str) -> str:
    return " ".join(message.split())
