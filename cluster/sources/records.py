"""Files as a source for the worker's processing code: JSON lines or EVTX, paced or not.

Records carry the file as topic, 0 as partition and the line (or EVTX record position) as
offset, so detections from a replay look like detections from the cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from cluster.processing.detector import InputRecord
from cluster.sources.files import read_events


def file_records(paths: Sequence[str], rate: float = 0, batch_size: int = 500) -> Iterator[list[InputRecord]]:
    """Batches of records from the files in order; `rate` > 0 paces them to events per second."""
    batch: list[InputRecord] = []
    started = time.monotonic()
    sent = 0
    for path in paths:
        for record in read_events(path):
            batch.append(InputRecord(record.file, 0, record.line, None, event=record.event, error=record.error,
                                     recovered=record.recovered))
            sent += 1
            if len(batch) >= batch_size or rate:
                if rate:
                    # Pacing only decides when a record is handed over; event time still comes
                    # from the record itself.
                    delay = sent / rate - (time.monotonic() - started)
                    if delay > 0:
                        time.sleep(delay)
                yield batch
                batch = []
    if batch:
        yield batch
