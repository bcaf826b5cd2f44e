"""The compiled correlator (scripts/build_native.py, mypyc) is the Python correlator: the same
alerts, byte for byte, on the same detections; and a source edited after the build is what runs.

Skipped where nothing was compiled (no C compiler); CI builds it (scripts/setup.sh), so there
these tests must run (`CI=true` turns the skip into a failure).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from correlator import native

ROOT = Path(__file__).resolve().parents[1]
COMPILED = native.status()["compiled"]

pytestmark = pytest.mark.skipif(
    not COMPILED and not os.environ.get("CI"),
    reason=f"correlator not compiled here ({native.status()['reason']})")

# Runs in a fresh interpreter: the whole correlator (shipped correlation rules, fusion) over the
# fusion benchmark's stream with a noisy rule, plus malformed records, printing every alert.
PROGRAM = r"""
import json, sys
from datetime import UTC, datetime
sys.path.insert(0, sys.argv[1] + "/bench")
import fusion as bench
from correlator import native
from correlator.pipeline import Correlator
from detectors.rulefiles import load_rules_from_paths
from detectors.shipped import shipped_rules_path

detections = bench.synthetic(20000, 7, noisy_share=0.3)
for d in detections:
    d["event_time"] = datetime.fromtimestamp(d["event_time"] / 1000, UTC).isoformat()
detections[100:100] = [{"schema_version": 1, "kind": "sigma", "rule": {"id": ""}}, {"kind": "anomaly"}, "not a dict"]
correlator = Correlator.from_ruleset(load_rules_from_paths([shipped_rules_path()]),
                                     criticality=bench.criticality_table())
out = []
for detection in detections:
    out += [[a.activity, a.alert_id, a.priority, a.count, a.ocsf] for a in correlator.process(detection)]
out += [[a.activity, a.alert_id, a.priority, a.count, a.ocsf] for a in correlator.flush()]
print(json.dumps({"native": native.status(), "alerts": out, "stats": correlator.stats()}, sort_keys=True))
"""


def _run(env: dict[str, str], pythonpath: str = "") -> dict:
    environment = {**os.environ, **env}
    if pythonpath:
        environment["PYTHONPATH"] = pythonpath
    result = subprocess.run([sys.executable, "-c", PROGRAM, str(ROOT)], env=environment, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_the_correlator_is_compiled_where_ci_runs() -> None:
    assert COMPILED, native.status()["reason"]
    import correlator.fusion

    assert not correlator.fusion.__file__.endswith(".py")


def test_compiled_and_python_correlators_give_the_same_alerts_and_counts() -> None:
    compiled = _run({"SIGMARAY_PURE": "0"})
    python = _run({"SIGMARAY_PURE": "1"})
    assert compiled["native"]["compiled"] and not python["native"]["compiled"]
    assert len(compiled["alerts"]) > 1000  # creates, updates and closes, P1 to P4
    assert {alert[2] for alert in compiled["alerts"]} >= {2, 3, 4}
    assert compiled["alerts"] == python["alerts"]
    assert compiled["stats"] == python["stats"]
    assert compiled["stats"]["skipped_total"] == 3


def _import_copy(copy: Path) -> tuple[list[str], str]:
    """The files correlator.fusion and correlator.risk load from in a copy of the package, and
    stderr. The copy is imported by its path (the checkout is on sys.path first otherwise)."""
    program = (
        "import importlib.util, sys\n"
        f"package = {str(copy / 'correlator')!r}\n"
        "spec = importlib.util.spec_from_file_location('correlator', package + '/__init__.py',"
        " submodule_search_locations=[package])\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['correlator'] = module\n"
        "spec.loader.exec_module(module)\n"
        "import correlator.fusion as f, correlator.risk as r\n"
        "print(f.__file__, r.__file__)\n")
    result = subprocess.run([sys.executable, "-c", program], env={**os.environ, "SIGMARAY_PURE": "0"},
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split(), result.stderr


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "tree"
    shutil.copytree(ROOT / "correlator", copy / "correlator", ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_a_source_changed_after_the_build_runs_as_python_with_a_warning(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    assert _import_copy(copy)[0] != [str(copy / "correlator" / "fusion.py"), str(copy / "correlator" / "risk.py")]
    with (copy / "correlator" / "risk.py").open("a", encoding="utf-8") as source:
        source.write("\n# edited after the build\n")
    files, stderr = _import_copy(copy)
    assert files == [str(copy / "correlator" / "fusion.py"), str(copy / "correlator" / "risk.py")]
    assert "older than their source (risk)" in stderr and "scripts/build_native.py" in stderr


def test_compiled_modules_without_their_build_manifest_are_not_used(tmp_path: Path) -> None:
    """An interrupted build (extension modules, no manifest) is not trusted."""
    copy = _copy(tmp_path)
    (copy / "correlator" / "_native.json").unlink()
    files, stderr = _import_copy(copy)
    assert files == [str(copy / "correlator" / "fusion.py"), str(copy / "correlator" / "risk.py")]
    assert "without a readable _native.json" in stderr
