#!/usr/bin/env bash
# Engine benchmark: all 3,757 SigmaHQ rules (rules, emerging threats, threat hunting,
# compliance) over all 56,563 OTRF events, indexed vs plain, on one core.
# Usage: bash bench/engine.sh [extra sigmaray bench engine options]
# compile_s is a load from the compiled-ruleset cache when it holds these rules (the usual case
# after a first run); SIGMARAY_RULE_CACHE=off bash bench/engine.sh times parsing them instead.
# Loading itself (cold, warm, live pushes) and the rsigma comparison: bench/load.py.
set -euo pipefail
cd "$(dirname "$0")/.."
S=../shared/sigma
exec .venv/bin/sigmaray bench engine \
  --rules "$S/rules" --rules "$S/rules-emerging-threats" --rules "$S/rules-threat-hunting" --rules "$S/rules-compliance" \
  --placeholder known_cdcs=DC01.corp.example \
  --events ../shared/datasets/otrf/jsonl --repeat 3 --json "$@"
