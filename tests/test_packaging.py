"""Packaging: pyproject.toml agrees with itself and with the tree, and the wheel built from it
carries the code, the shipped rules (installed as `sigmaray_rules`) and the license, built
without warnings.

The wheel is built once per module from a copy of the files it is made of (so no build/ or
*.egg-info lands in the checkout), with the virtualenv's setuptools and no network.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from detectors.shipped import CHECKOUT_RULES, shipped_rules_path
from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS.get("package-dir", {})
PYTHON_CLASSIFIER = re.compile(r"Programming Language :: Python :: (3\.\d+)")


def _rule_files() -> list[str]:
    """Every file below rules/ (the rules and rules/__init__.py), relative, as the wheel names them."""
    return sorted(
        p.relative_to(CHECKOUT_RULES).as_posix()
        for p in CHECKOUT_RULES.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )


def test_requires_python_and_classifiers_agree() -> None:
    spec = SpecifierSet(PROJECT["requires-python"])
    claimed = {m.group(1) for c in PROJECT.get("classifiers", []) if (m := PYTHON_CLASSIFIER.fullmatch(c))}
    admitted = {f"3.{minor}" for minor in range(0, 40) if spec.contains(f"3.{minor}")}
    assert claimed == admitted, (
        f"requires-python {spec} admits {sorted(admitted, key=Version)} but the classifiers claim "
        f"{sorted(claimed, key=Version)}: change both (scripts/check-python-versions.sh checks the wheels)"
    )
    assert spec.contains(f"{sys.version_info.major}.{sys.version_info.minor}"), "the running Python is outside requires-python"


def test_license_is_an_spdx_expression_with_its_text() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    # A license expression replaces the License :: classifiers (PEP 639).
    assert not [c for c in PROJECT.get("classifiers", []) if c.startswith("License ::")]


def test_every_code_folder_is_a_listed_package() -> None:
    """pyproject.toml lists the packages (it has to, to map rules/ to `sigmaray_rules`): a folder
    of Python code left out of the list would be missing from the wheel."""
    listed = set(SETUPTOOLS["packages"])
    tops = {p.split(".")[0] for p in listed} - set(PACKAGE_DIR)
    found = set()
    for top in tops:
        for folder in (ROOT / top, *(ROOT / top).rglob("*")):
            if folder.is_dir() and "__pycache__" not in folder.parts and any(folder.glob("*.py")):
                found.add(".".join(folder.relative_to(ROOT).parts))
    assert listed - set(PACKAGE_DIR) == found, "pyproject.toml [tool.setuptools] packages differs from the folders"
    for package in found:
        assert (ROOT / package.replace(".", "/") / "__init__.py").is_file(), f"{package} has no __init__.py"
    assert PACKAGE_DIR == {"sigmaray_rules": "rules"} and "sigmaray_rules" in listed


def test_shipped_rules_path_in_the_checkout() -> None:
    # An editable install maps sigmaray_rules to rules/; without an install it is the fallback.
    assert shipped_rules_path() == ROOT / "rules"
    assert list(shipped_rules_path().rglob("*.yml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(the wheel, pip's verbose build output)."""
    setuptools_version = Version(importlib.metadata.version("setuptools"))
    assert setuptools_version >= Version("77"), (
        f"setuptools {setuptools_version} in the virtualenv cannot build this pyproject.toml; "
        "run scripts/setup.sh (the test extra pins setuptools)"
    )
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", *PROJECT["license-files"]):
        shutil.copy2(ROOT / name, src / name)
    folders = {p.split(".")[0] for p in SETUPTOOLS["packages"] if p not in PACKAGE_DIR} | set(PACKAGE_DIR.values())
    for folder in folders:
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), "."],
        cwd=src, capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    [whl] = out.glob("sigmaray-*.whl")
    return whl, build.stdout + build.stderr


def test_wheel_builds_without_warnings(wheel: tuple[Path, str]) -> None:
    _, log = wheel
    # Python warnings from the backend (deprecated license table, data folders outside `packages`, ...).
    warnings = sorted({line.strip() for line in log.splitlines() if re.search(r"[A-Za-z]+Warning\b", line)})
    assert not warnings, "\n".join(warnings)


def test_wheel_carries_every_rule_file(wheel: tuple[Path, str]) -> None:
    whl, _ = wheel
    names = set(zipfile.ZipFile(whl).namelist())
    rule_files = _rule_files()
    assert any(name.endswith(".yml") for name in rule_files)
    missing = [f for f in rule_files if f"sigmaray_rules/{f}" not in names]
    assert not missing, f"not in the wheel: {missing}"
    # The engine's data files ride along too.
    assert {"detectors/logsources/windows.yml", "cluster/kafka/pom.xml"} <= names


def test_wheel_metadata(wheel: tuple[Path, str]) -> None:
    whl, _ = wheel
    with zipfile.ZipFile(whl) as z:
        info = next(n.split("/")[0] for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = z.read(f"{info}/METADATA").decode()
        assert z.read(f"{info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert f"Requires-Python: {SpecifierSet(PROJECT['requires-python'])}" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()


def test_installed_wheel_finds_its_rules(wheel: tuple[Path, str], tmp_path: Path) -> None:
    """From outside the checkout, the installed detectors.shipped finds the installed rules."""
    whl, _ = wheel
    site = tmp_path / "site-packages"
    zipfile.ZipFile(whl).extractall(site)  # a pure-Python wheel installs as exactly these files
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(site)!r})\n"
        "import detectors.shipped\n"
        "print(detectors.shipped.__file__)\n"
        "print(detectors.shipped.shipped_rules_path())\n"
    )
    run = subprocess.run([sys.executable, "-I", "-B", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    module_file, rules = run.stdout.splitlines()[-2:]
    assert Path(module_file).is_relative_to(site)
    assert Path(rules) == site / "sigmaray_rules"
    installed = sorted(
        p.relative_to(rules).as_posix() for p in Path(rules).rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    assert installed == _rule_files()


def test_python_version_check_script_parses() -> None:
    script = ROOT / "scripts" / "check-python-versions.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert subprocess.run(["bash", str(script), "--help"], capture_output=True).returncode == 0
