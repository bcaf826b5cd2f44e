"""Whether the correlator runs compiled (scripts/build_native.py) or as Python, decided once, at
the package's import: compiled modules whose source changed since the build are set aside, so an
edit is never silently ignored.

`SIGMARAY_PURE=1` runs the Python source even when compiled modules are there (to debug, or to
compare the two). `status()` says which runs and why.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

PACKAGE = Path(__file__).resolve().parent
MANIFEST = PACKAGE / "_native.json"
_STATUS: dict[str, Any] = {"compiled": [], "reason": "not checked"}


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the named modules' .py files (before the extension modules the default finder prefers)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(f"correlator.{name}" for name in names) | {"correlator._native__mypyc"}

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        source = PACKAGE / f"{fullname.rsplit('.', 1)[1]}.py"
        if not source.exists():  # the group library has no source: nothing may load it
            raise ImportError(f"{fullname} is set aside (compiled correlator modules not in use)")
        return importlib.util.spec_from_file_location(fullname, source)


def _compiled_names(manifest: dict[str, Any]) -> list[str]:
    return sorted(manifest.get("sources", {}))


def setup() -> None:
    """Decide once, before any correlator module is imported."""
    if _STATUS["reason"] != "not checked":
        return
    found = [path.name.split(".", 1)[0] for path in PACKAGE.glob("*.so") if not path.name.startswith("_native__mypyc")]
    if not MANIFEST.exists() and not found:
        _STATUS["reason"] = "no compiled modules (scripts/build_native.py builds them)"
        return
    try:
        manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
        names = _compiled_names(manifest)
    except (OSError, ValueError) as error:  # an interrupted build, say: nothing compiled is trusted
        warnings.warn(f"compiled correlator modules without a readable {MANIFEST.name} ({error}): "
                      "running the Python source; rebuild with scripts/build_native.py", stacklevel=2)
        sys.meta_path.insert(0, _SourceFirst(found))
        _STATUS["reason"] = f"unreadable manifest: {error}"
        return
    if os.environ.get("SIGMARAY_PURE", "") not in ("", "0"):
        sys.meta_path.insert(0, _SourceFirst(names))
        _STATUS["reason"] = "SIGMARAY_PURE is set"
        return
    stale = [name for name in names
             if not (PACKAGE / f"{name}.py").exists()
             or hashlib.sha256((PACKAGE / f"{name}.py").read_bytes()).hexdigest() != manifest["sources"][name]]
    if manifest.get("python") != f"{sys.version_info[0]}.{sys.version_info[1]}":
        stale = names  # built for another Python
    if stale:
        # One group: the compiled modules call each other in C, so none is used when one is stale.
        sys.meta_path.insert(0, _SourceFirst(names))
        warnings.warn(f"compiled correlator modules are older than their source ({', '.join(stale)}): "
                      "running the Python source; rebuild with scripts/build_native.py", stacklevel=2)
        _STATUS["reason"] = f"stale: {', '.join(stale)} changed since the build"
        return
    _STATUS.update(compiled=[f"correlator.{name}" for name in names], reason="compiled with mypyc")


def status() -> dict[str, Any]:
    """{"compiled": [module names running compiled], "reason": why}."""
    setup()
    return {"compiled": list(_STATUS["compiled"]), "reason": _STATUS["reason"]}
