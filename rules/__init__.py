"""The Sigma rules sigmaray ships: installed as the package `sigmaray_rules` (pyproject.toml), found
with detectors.shipped.shipped_rules_path(). Only the *.yml files below this folder are rules."""
