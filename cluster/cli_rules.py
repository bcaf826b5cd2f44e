"""`sigmaray rules check`: load and compile rules, report every rejection with its reason."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

import orjson

from cluster.cli_common import add_rule_options, load_rules_from_args, run_guarded


def register(commands: Any) -> None:
    rules = commands.add_parser("rules", help="work with Sigma rules")
    sub = rules.add_subparsers(dest="rules_command", metavar="ACTION")
    sub.required = True
    check = sub.add_parser(
        "check",
        help="load and compile rules; print counts and every rejection",
        description="Loads rules through pySigma, applies filters, resolves correlations and compiles "
        "every rule. Exits 0 even when rules are rejected; non-zero only when it cannot run.",
    )
    add_rule_options(check, flag=None)
    check.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    check.set_defaults(run=lambda args: run_guarded(_check, args))


def _check(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    ruleset = load_rules_from_args(args)
    elapsed = time.perf_counter() - started
    if args.json:
        sys.stdout.write(orjson.dumps(ruleset.summary()).decode() + "\n")
        return 0
    out = sys.stdout
    out.write(
        f"loaded {ruleset.loaded} rule documents, compiled {ruleset.compiled} "
        f"({len(ruleset.rules)} detection, {len(ruleset.correlations)} correlation), "
        f"rejected {len(ruleset.rejections)}, in {elapsed:.1f}s\n"
    )
    if ruleset.filters_applied:
        out.write(f"applied {ruleset.filters_applied} filter documents\n")
    levels = Counter(r.meta.level or "none" for r in ruleset.rules)
    if levels:
        out.write("by level: " + ", ".join(f"{k} {v}" for k, v in levels.most_common()) + "\n")
    out.write(f"ruleset version {ruleset.version}\n")
    for rejection in ruleset.rejections:
        ident = f" id={rejection.id}" if rejection.id else ""
        out.write(f"REJECTED {rejection.path}{ident}: {rejection.reason}\n")
    return 0
