"""Cold loads in parallel: rule files are independent, so pySigma parses slices of them in
forked processes while this one parses the first slice.

Only where it is safe and gives the result a serial load gives (`load_ruleset`):
- no rule document is a meta filter or a correlation (they reach across files; a text check
  decides, and a false alarm only costs the parallel load);
- this process runs one thread: forking a process whose other threads may hold a lock (a Kafka
  client, a live-rules compile) can deadlock the child, so workers load serially;
- there are enough rules to pay for the forks, and more than one core.
Anything else, or any failure of a child, is a serial load. A child sends its slice back as
the compiled-ruleset cache's plain data (detectors/cache.py), never as pickled objects.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import re
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor

import orjson

from detectors.ruleset import Rejection, Ruleset, RuleSource

MIN_SOURCES = 800  # below this, forking costs more than it saves
_CROSS_FILE = re.compile(r"^(correlation|filter)\s*:", re.MULTILINE)

_slices: list[list[RuleSource]] = []  # set before the fork; children read their slice from it


def parallel_workers(sources: Sequence[RuleSource]) -> int:
    """How many processes a load of `sources` should use (1: load serially)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    if cores < 2 or len(sources) < MIN_SOURCES or threading.active_count() > 1:
        return 1
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if any(_CROSS_FILE.search(source.text) for source in sources):
        return 1
    return min(cores, 4)


def load_ruleset_parallel(sources: Sequence[RuleSource], pipelines: Sequence[str],
                          placeholders: Mapping[str, Sequence[str]] | None, workers: int) -> Ruleset:
    """What `load_ruleset(sources, pipelines, placeholders)` returns, parsed in `workers`
    processes (pipelines by name or file, as in the configuration)."""
    from detectors.loader import load_ruleset, ruleset_version
    from detectors.rulefiles import resolve_pipeline

    global _slices
    size = -(-len(sources) // workers)
    _slices = [list(sources[i:i + size]) for i in range(0, len(sources), size)]
    context = multiprocessing.get_context("fork")
    # The children inherit this process's heap: frozen, their collector does not walk it (and
    # copy-on-write pages stay shared instead of being touched by every collection). It stays
    # frozen, as the engine build freezes its objects (detectors.engine._gc_paused); garbage is
    # collected first so that none of it is kept.
    gc.collect()
    gc.freeze()
    # Paused while the slices load and decode, ~10^6 objects that all live on (as in
    # `load_ruleset`): the parsed JSON of a child's slice, with the collector on, took 4x
    # as long to decode.
    enabled = gc.isenabled()
    gc.disable()
    try:
        with ProcessPoolExecutor(len(_slices) - 1, mp_context=context) as pool:
            values = {name: list(v) for name, v in (placeholders or {}).items()}
            futures = [pool.submit(_load_slice, n, tuple(pipelines), values)
                       for n in range(1, len(_slices))]
            parts = [load_ruleset(_slices[0], [resolve_pipeline(p) for p in pipelines], placeholders)]
            parts.extend(_decode(future.result()) for future in futures)
    finally:
        _slices = []
        if enabled:
            gc.enable()
    return _merge(parts, ruleset_version(list(sources)))


def _load_slice(number: int, pipelines: tuple[str, ...], placeholders: dict[str, list[str]]) -> bytes:
    from detectors.cache import encode_ruleset
    from detectors.loader import load_ruleset
    from detectors.rulefiles import resolve_pipeline

    ruleset = load_ruleset(_slices[number], [resolve_pipeline(p) for p in pipelines], placeholders)
    return orjson.dumps(encode_ruleset(ruleset))


def _decode(data: bytes) -> Ruleset:
    from detectors.cache import decode_ruleset

    return decode_ruleset(orjson.loads(data))


def _merge(parts: Sequence[Ruleset], version: str) -> Ruleset:
    """One ruleset from slices in load order; a rule id seen in an earlier slice rejects a
    later rule, as a serial load's duplicate check does."""
    merged = Ruleset(version=version)
    seen: dict[str, str] = {}
    for part in parts:
        for rule in part.rules:
            first = seen.get(rule.meta.id)
            if first is not None:
                rule_id = None if rule.meta.id.startswith("untitled:") else rule.meta.id
                merged.rejections.append(Rejection(rule.meta.path or "<unknown>", rule_id, rule.meta.title,
                                                   f"duplicate rule id (first in {first})"))
                continue
            seen[rule.meta.id] = rule.meta.path or "<unknown>"
            merged.rules.append(rule)
        merged.rejections.extend(part.rejections)
        merged.warnings.extend(w for w in part.warnings if seen.get(w.rule_id) == w.path)
        merged.correlations.extend(part.correlations)
        merged.filters_applied += part.filters_applied
    merged.loaded = merged.compiled + merged.filters_applied + len(merged.rejections)
    return merged
