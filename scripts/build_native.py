"""Compile the correlator's hot path with mypyc: the same Python source, as a C extension.

The fusion engine (correlator/fusion.py and the modules it calls per detection) is typed
Python; mypyc compiles it to C without changing its code, about 1.7x faster per detection
(BENCHMARKS.md, "Correlator"). The compiled modules are optional: without them (no C
compiler, `SIGMARAY_NATIVE=0` at setup, or `SIGMARAY_PURE=1` at run time) the pure Python runs,
with the same results (tests/test_native.py compares the two).

The build writes the extension modules beside their sources (correlator/*.so) and
correlator/_native.json with the SHA-256 of each source compiled. At import,
`correlator/__init__.py` compares them: when a source changed since the build, every compiled
module is set aside and the Python source runs (with a warning to rebuild), so an edit is never
silently ignored.

Usage: .venv/bin/python scripts/build_native.py [--clean | --force]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "correlator"
# The modules a detection passes through (Correlator.process -> FusionEngine.fuse -> ...), in one
# group so their calls to each other are C calls.
MODULES = ("pipeline", "fusion", "risk", "alerts", "priority", "suppressions")
GROUP = "correlator._native"
MANIFEST = PACKAGE / "_native.json"
BUILD = ROOT / "build" / "native"


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compiled_files() -> list[Path]:
    """The extension modules a build leaves in the package (the group library included)."""
    names = {*MODULES, "_native__mypyc"}
    return [path for path in PACKAGE.glob("*.so") if path.name.split(".", 1)[0] in names]


def clean() -> None:
    for path in compiled_files():
        path.unlink()
    MANIFEST.unlink(missing_ok=True)
    shutil.rmtree(BUILD, ignore_errors=True)


def build() -> float:
    """Compiles MODULES into the package; the seconds it took."""
    from mypyc.build import mypycify
    from setuptools import setup  # type: ignore[import-untyped]

    started = time.perf_counter()
    clean()
    BUILD.mkdir(parents=True, exist_ok=True)
    sources = [f"correlator/{name}.py" for name in MODULES]
    os.chdir(ROOT)  # mypycify names modules by their path from here
    # Not the project's mypy settings: they check the whole tree (warn_unused_configs fails a
    # partial build), and the project's own mypy run checks these modules. What they import from
    # outside the correlator is called as Python (Any), so it is not analysed here.
    config = BUILD / "mypy.ini"
    config.write_text("[mypy]\nignore_missing_imports = True\nfollow_imports = silent\n"
                      "[mypy-models.*,detectors.*,cluster.*,evaluation.*]\nfollow_imports = skip\n", encoding="utf-8")
    extensions = mypycify([f"--config-file={config}", *sources], opt_level="3", group_name=GROUP,
                          target_dir=str(BUILD / "c"))
    setup(name="sigmaray-native", ext_modules=extensions, script_args=[
        "--quiet", "build_ext", "--inplace", "--build-temp", str(BUILD / "temp"), "--build-lib", str(BUILD / "lib")])
    manifest = {"group": GROUP, "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
                "sources": {name: source_hash(PACKAGE / f"{name}.py") for name in MODULES}}
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return time.perf_counter() - started


def up_to_date() -> bool:
    """A build of these very sources, for this Python, is in place."""
    try:
        manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (manifest.get("python") == f"{sys.version_info[0]}.{sys.version_info[1]}"
            and manifest.get("sources") == {name: source_hash(PACKAGE / f"{name}.py") for name in MODULES}
            and len(compiled_files()) == len(MODULES) + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules (the pure Python runs)")
    parser.add_argument("--force", action="store_true", help="compile even when the build is up to date")
    args = parser.parse_args()
    if args.clean:
        clean()
        print("compiled correlator modules removed: the pure Python runs")
        return
    if not args.force and up_to_date():
        print("compiled correlator modules are up to date")
        return
    seconds = build()
    print(f"compiled {', '.join(f'correlator.{name}' for name in MODULES)} with mypyc in {seconds:.0f} s "
          f"({len(compiled_files())} extension modules)")


if __name__ == "__main__":
    main()
