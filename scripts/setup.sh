#!/usr/bin/env bash
# One-time setup on a fresh machine: a virtualenv in .venv with sigmaray and its test tools.
# pip's download cache (~/.cache/pip) is reused by later runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
echo "sigmaray is installed in .venv: run .venv/bin/sigmaray --help"
