"""A small progress line for long scans; silent when stderr is not a terminal."""

from __future__ import annotations

import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO, enabled: bool = True, every: int = 2000) -> None:
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self.every = every
        self.count = 0
        self.started = time.perf_counter()
        self.file = ""

    def start_file(self, name: str) -> None:
        self.file = name

    def tick(self) -> None:
        self.count += 1
        if self.enabled and self.count % self.every == 0:
            rate = self.count / max(time.perf_counter() - self.started, 1e-9)
            self.stream.write(f"\r{self.count:>10,d} records  {rate:>9,.0f}/s  {self.file[-50:]:<50}")
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.count >= self.every:
            self.stream.write("\r" + " " * 90 + "\r")
            self.stream.flush()
