#!/usr/bin/env bash
# One-time setup on a fresh machine: a virtualenv in .venv with sigmaray and its test tools.
# pip's download cache (~/.cache/pip) is reused by later runs.
set -euo pipefail
cd "$(dirname "$0")/.."
# The development Kafka broker needs Java 17 and Maven (to fetch it from Maven Central).
if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -q && apt-get install -y -q openjdk-17-jre-headless maven
  else
    echo "warning: java and mvn are needed for 'sigmaray kafka up' (install openjdk-17 and maven)" >&2
  fi
fi
# The console's browser test drives Debian's chromium through its chromedriver: a browser that
# Selenium or Playwright would download cannot be fetched here.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -q && apt-get install -y -q chromium chromium-driver
  else
    echo "warning: chromium and chromium-driver are needed for the console's browser test (tests/test_console_browser.py)" >&2
  fi
fi
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
# The correlator's hot path compiled with mypyc (scripts/build_native.py: about 5 minutes, once per
# change of its source); without a C compiler, or with SIGMARAY_NATIVE=0, the same Python runs.
if [ "${SIGMARAY_NATIVE:-1}" != 0 ]; then
  .venv/bin/python scripts/build_native.py ||
    echo "warning: the correlator was not compiled (see above); it runs as Python, with the same results" >&2
fi
echo "sigmaray is installed in .venv: run .venv/bin/sigmaray --help"
