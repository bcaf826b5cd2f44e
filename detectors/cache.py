"""The compiled-ruleset cache: a parsed and compiled `Ruleset` as data, keyed by everything that
went into it, so loading the same rules again skips pySigma (3.6 s for SigmaHQ's 3,757 rules).

The key is a SHA-256 of the rule texts (with their paths, which rejections and metadata carry),
the pipelines (by name, with the installed pySigma and plugin versions, or by file text), the
placeholders, the logsource mapping text and the engine version (a hash of this package's own
source files, so any change to how rules compile misses the cache). A different input is a
different file; nothing is ever updated in place.

The file, format 1:

    SIGMARAY-RULESET 1 <key>\\n
    <sha256 of the body, hex>\\n
    <body: zlib-compressed JSON>

The body is plain JSON: every node of the condition trees is a list headed by the name of one
of a closed set of the engine's own dataclasses (`_CLASSES`), and decoding constructs only
those, from strings, numbers and booleans; rule regexes are compiled again from their text. So
the cache is data, never code, like the checkpoints (cluster/state/checkpoints.py) beside which
it sits in a cluster: whoever can write to the bucket cannot make a worker run anything. (They
could still plant different rules under a key, as they could plant model state; the bucket is
trusted with detections, not with code.)

A file that is truncated, fails its checksum, carries another key or format, or does not decode
is a miss: the ruleset is compiled from the texts and the file written again. Never trusted.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import hashlib
import importlib.metadata
import ipaddress
import operator
import os
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from detectors.correlation import CorrelationSpec
from detectors.errors import SigmaRayError
from detectors.ir import (
    And,
    BoolEq,
    Cidr,
    CompiledRule,
    Const,
    FieldExists,
    FieldNull,
    FieldRef,
    FieldTest,
    Keyword,
    Not,
    NumCmp,
    NumEq,
    Or,
    Regex,
    RuleMeta,
    StrContains,
    StrEnds,
    StrEq,
    StrPattern,
    StrStarts,
    TimePart,
)
from detectors.regex_safety import RegexWarning
from detectors.rule_regex import RuleRegex
from detectors.ruleset import Rejection, Ruleset, RuleSource

FORMAT = 1
MAGIC = b"SIGMARAY-RULESET"

# The classes a cache may name, and nothing else. RuleRegex and Cidr hold compiled objects and
# are written as their source text (see `_encode`).
_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (StrEq, StrStarts, StrEnds, StrContains, StrPattern, Regex, NumEq, NumCmp, BoolEq, TimePart,
                FieldTest, FieldNull, FieldExists, FieldRef, Keyword, And, Or, Not, Const, RuleMeta, CompiledRule,
                CorrelationSpec, Rejection, RegexWarning)
}
_FIELDS: dict[type, tuple[str, ...]] = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _CLASSES.values()}
_ARITY: dict[type, int] = {cls: len(names) for cls, names in _FIELDS.items()}


class RuleCacheError(SigmaRayError):
    """A cache file that cannot be used (the caller compiles instead)."""


# --- the key ----------------------------------------------------------------------------------


@functools.cache
def engine_version() -> str:
    """A hash of the engine's own code and the pySigma it parses with: a new version of either
    may compile the same text differently."""
    digest = hashlib.sha256()
    package = Path(__file__).parent
    for path in sorted([*package.glob("*.py"), *package.glob("logsources/*")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for distribution in ("pySigma", "orjson"):
        digest.update(f"{distribution}={_version(distribution)}\0".encode())
    return digest.hexdigest()[:16]


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def pipeline_identity(name: str) -> str:
    """What a pipeline reference stands for: a YAML file's text, or a named pipeline's package
    version (the plugins are versioned packages)."""
    path = Path(name)
    if path.suffix in (".yml", ".yaml") and path.is_file():
        return "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    versions = ",".join(f"{d}={_version(d)}" for d in ("pySigma", "pysigma-pipeline-sysmon", "pysigma-pipeline-windows"))
    return f"name:{name}:{versions}"


def ruleset_key(
    sources: Sequence[RuleSource],
    pipelines: Sequence[str] = (),
    placeholders: Mapping[str, Sequence[str]] | None = None,
    mapping_text: str = "",
) -> str:
    """The cache key of compiling `sources` with these settings (order of sources counts: it is
    the order of the rules)."""
    digest = hashlib.sha256(f"sigmaray-ruleset {FORMAT} {engine_version()}\0".encode())
    for source in sources:
        digest.update(source.path.encode("utf-8", "surrogatepass") + b"\0")
        digest.update(source.text.encode("utf-8", "surrogatepass") + b"\0")
    digest.update(b"\1pipelines\0")
    for name in pipelines:
        digest.update(pipeline_identity(name).encode() + b"\0")
    digest.update(b"\1placeholders\0")
    digest.update(orjson.dumps({k: list(v) for k, v in (placeholders or {}).items()}, option=orjson.OPT_SORT_KEYS))
    digest.update(b"\1mapping\0" + mapping_text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


# --- encoding ---------------------------------------------------------------------------------


_SCALARS = frozenset((str, bool, float, type(None)))


def _getter(fields: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    get = operator.attrgetter(*fields)
    if len(fields) == 1:
        return lambda obj: (get(obj),)
    return get  # attrgetter of several names returns a tuple


_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {cls: _getter(fields) for cls, fields in _FIELDS.items()}


def _encode(value: Any) -> Any:
    cls = value.__class__
    if cls in _SCALARS:
        return value
    if cls is Cidr:  # holds a network object: written as text
        return ["cidr", str(value.network)]
    getter = _GETTERS.get(cls)
    if getter is not None:  # the common case: a node of a condition tree
        return [cls.__name__, *[v if v.__class__ in _SCALARS else _encode(v) for v in getter(value)]]
    if cls is int:
        return value if -(2**63) <= value < 2**63 else ["big", str(value)]
    if cls is tuple:
        return ["(", *[v if v.__class__ in _SCALARS else _encode(v) for v in value]]
    if cls is list:
        return ["[", *map(_encode, value)]
    if cls is frozenset:
        return ["{", *map(_encode, sorted(value))]
    if cls is dict:
        if not all(k.__class__ is str for k in value):
            raise RuleCacheError(f"cannot cache a mapping with non-string keys: {value!r}")
        return {k: _encode(v) for k, v in value.items()}
    if cls is RuleRegex:
        return ["re", *value.parts()]
    raise RuleCacheError(f"cannot cache a {cls.__name__}")


_CONTAINERS = (list, dict)


def _decode(value: Any) -> Any:
    # The hot loop of a warm load (~300k nodes for SigmaHQ): scalars are taken as they are,
    # without a call.
    if value.__class__ is dict:
        return {k: _decode(v) if v.__class__ in _CONTAINERS else v for k, v in value.items()}
    head = value[0]
    items = [_decode(v) if v.__class__ in _CONTAINERS else v for v in value[1:]]
    target = _CLASSES.get(head)
    if target is not None:
        if len(items) != _ARITY[target]:
            raise RuleCacheError(f"malformed {head} entry")
        return target(*items)
    if head == "(":
        return tuple(items)
    if head == "[":
        return items
    if head == "{":
        return frozenset(items)
    if head == "re":
        return _regex(*items)
    if head == "cidr":
        return Cidr(ipaddress.ip_network(items[0]))
    if head == "big":
        return int(items[0])
    raise RuleCacheError(f"unknown entry {str(head)[:40]!r}")


@functools.lru_cache(maxsize=8192)
def _regex(*parts: Any) -> RuleRegex:
    # Thousands of rules share a few hundred patterns; a RuleRegex holds no state.
    try:
        return RuleRegex.from_parts(*parts)
    except (TypeError, ValueError, UnicodeError) as error:
        raise RuleCacheError(f"malformed regex entry: {error}") from error


def encode_ruleset(ruleset: Ruleset) -> dict[str, Any]:
    """The ruleset as JSON-ready data."""
    enabled = gc.isenabled()
    gc.disable()  # ~10^5 short-lived lists and no cycles: no collection is worth its walk
    try:
        return _encode_ruleset(ruleset)
    finally:
        if enabled:
            gc.enable()


def _encode_ruleset(ruleset: Ruleset) -> dict[str, Any]:
    return {
        "rules": [_encode(rule) for rule in ruleset.rules],
        "correlations": [_encode(spec) for spec in ruleset.correlations],
        "rejections": [_encode(rejection) for rejection in ruleset.rejections],
        "warnings": [_encode(warning) for warning in ruleset.warnings],
        "loaded": ruleset.loaded,
        "filters_applied": ruleset.filters_applied,
        "version": ruleset.version,
    }


def decode_ruleset(data: Any) -> Ruleset:
    """The ruleset back from `encode_ruleset`'s data; RuleCacheError when it is not that."""
    enabled = gc.isenabled()
    gc.disable()  # ~10^5 long-lived objects and no garbage: no collection is worth its walk
    try:  # (a cold parallel load decodes its children's slices with this; 4x faster so)
        return _decode_ruleset(data)
    finally:
        if enabled:
            gc.enable()


def _decode_ruleset(data: Any) -> Ruleset:
    if not isinstance(data, dict):
        raise RuleCacheError("the body is not an object")
    try:
        ruleset = Ruleset(
            rules=[_decode(item) for item in data["rules"]],
            correlations=[_decode(item) for item in data["correlations"]],
            rejections=[_decode(item) for item in data["rejections"]],
            warnings=[_decode(item) for item in data["warnings"]],
            loaded=int(data["loaded"]),
            filters_applied=int(data["filters_applied"]),
            version=str(data["version"]),
        )
    except RuleCacheError:
        raise
    except Exception as error:  # noqa: BLE001 - any shape error in a cache file is a miss
        raise RuleCacheError(f"malformed body: {type(error).__name__}: {error}") from error
    kinds = ((ruleset.rules, CompiledRule), (ruleset.correlations, CorrelationSpec),
             (ruleset.rejections, Rejection), (ruleset.warnings, RegexWarning))
    for items, kind in kinds:
        if not all(isinstance(item, kind) for item in items):
            raise RuleCacheError(f"an entry is not a {kind.__name__}")
    return ruleset


def dumps(key: str, ruleset: Ruleset) -> bytes:
    body = zlib.compress(orjson.dumps(encode_ruleset(ruleset)), 1)
    return MAGIC + b" %d %s\n" % (FORMAT, key.encode()) + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def loads(data: bytes, key: str) -> Ruleset:
    """The ruleset in a cache file for `key`; RuleCacheError (with the reason) for anything else."""
    first, _, rest = data.partition(b"\n")
    digest, _, body = rest.partition(b"\n")
    if first != MAGIC + b" %d %s" % (FORMAT, key.encode()):
        raise RuleCacheError("another format or key" if first.startswith(MAGIC) else "not a ruleset cache file")
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise RuleCacheError("checksum mismatch (truncated or damaged)")
    enabled = gc.isenabled()
    gc.disable()  # ~10^5 long-lived objects and no garbage: no collection is worth its walk
    try:
        return decode_ruleset(orjson.loads(zlib.decompress(body)))
    except (zlib.error, orjson.JSONDecodeError) as error:
        raise RuleCacheError(f"undecodable body: {error}") from error
    finally:
        if enabled:
            gc.enable()


# --- the store --------------------------------------------------------------------------------


def default_url() -> str:
    """~/.cache/sigmaray/rulesets, or $SIGMARAY_RULE_CACHE ("off" disables the cache)."""
    return os.environ.get("SIGMARAY_RULE_CACHE") or str(Path.home() / ".cache" / "sigmaray" / "rulesets")


@dataclasses.dataclass(slots=True)
class CacheOutcome:
    """What the cache did for one load, for reports and benchmarks."""

    hit: bool = False
    key: str = ""
    reason: str = ""  # why a file was not used ("" on a hit or when there was no file)
    url: str = ""


class RulesetCache:
    """Compiled rulesets under a folder or any fsspec URL (s3://bucket/prefix in a cluster)."""

    def __init__(self, url: str) -> None:
        import fsspec  # only when a cache is used: its import costs ~0.1 s

        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)

    def _path(self, key: str) -> str:
        # Two hex digits of fan-out keep a folder small when many rule versions accumulate.
        return f"{self.root}/{key[:2]}/{key}.ruleset"

    def get(self, key: str) -> tuple[Ruleset | None, str]:
        """(the cached ruleset or None, why not)."""
        path = self._path(key)
        try:
            with self.fs.open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None, ""
        except OSError as error:
            return None, f"unreadable: {error}"
        try:
            return loads(data, key), ""
        except RuleCacheError as error:
            return None, error.reason

    def put(self, key: str, ruleset: Ruleset) -> None:
        """Write whole: to a temporary name and renamed (local), or in one request (object
        stores), so a reader never sees half a file. A failed write only costs the next load."""
        data = dumps(key, ruleset)
        path = self._path(key)
        try:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
            if "file" in protocols:
                temporary = f"{path}.{uuid.uuid4().hex}.tmp"
                with self.fs.open(temporary, "wb") as f:
                    f.write(data)
                os.replace(temporary, path)
            else:
                self.fs.pipe_file(path, data)
        except (OSError, ValueError):
            pass


def cached_load(
    key: str,
    url: str | None,
    compile_ruleset: Callable[[], Ruleset],
    outcome: CacheOutcome | None = None,
) -> Ruleset:
    """The ruleset for `key` from the cache at `url` (None or "off": no cache), else compiled by
    `compile_ruleset()` and stored."""
    outcome = outcome if outcome is not None else CacheOutcome()
    outcome.key = key
    if not url or url == "off":
        return compile_ruleset()
    outcome.url = url
    store = RulesetCache(url)
    ruleset, reason = store.get(key)
    outcome.reason = reason
    if ruleset is not None:
        outcome.hit = True
        return ruleset
    ruleset = compile_ruleset()
    store.put(key, ruleset)
    return ruleset
