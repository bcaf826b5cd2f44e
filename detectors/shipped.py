"""Where the Sigma rules the project ships are.

They live in `rules/` at the project root; the wheel installs that folder as the package
`sigmaray_rules` (pyproject.toml maps it), so an installed sigmaray finds them without a checkout.
Only the location is computed here; the rule files are read by the caller (detectors/rulefiles.py).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

RULES_PACKAGE = "sigmaray_rules"
CHECKOUT_RULES = Path(__file__).resolve().parent.parent / "rules"


def shipped_rules_path() -> Path:
    """The folder holding the shipped rules (the *.yml files below it).

    The installed package `sigmaray_rules` when there is one (a wheel, or an editable install of
    this checkout, which maps it to `rules/`), else the `rules/` folder of the checkout this module
    is in. The path is returned even when it does not exist, so a caller's error names it.
    """
    try:
        installed = resources.files(RULES_PACKAGE)
    except ModuleNotFoundError:
        return CHECKOUT_RULES
    # A wheel installs as plain files, so this is a folder on disk; a zip import is not supported.
    if isinstance(installed, Path) and installed.is_dir():
        return installed
    return CHECKOUT_RULES
