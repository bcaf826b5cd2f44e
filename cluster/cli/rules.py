"""`sigmaray rules check`: load and compile rules, report every rejection with its reason.

Both `check` and `push` also warn about `|re` values that a backtracking engine could take
exponential time on, naming the engine each runs on; a warning never rejects a rule.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

import orjson

from cluster.cli.common import add_rule_options, load_rules_from_args, run_guarded
from cluster.config import load_config
from cluster.kafka.live_rules import push, rule_documents
from detectors.loader import Ruleset
from detectors.regex_safety import engine_counts
from detectors.rulefiles import load_rules_from_paths


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

    push = sub.add_parser(
        "push",
        help="publish rules to the live rules topic (running workers pick them up between batches)",
        description="Publishes each rule document keyed by its id to a compacted topic. Rules are "
        "checked first: nothing is published when any of them is rejected.",
    )
    push.add_argument("paths", nargs="+", metavar="PATH", help="rule files or folders")
    _topic_options(push)
    push.set_defaults(run=lambda args: run_guarded(_push, args))

    delete = sub.add_parser("delete", help="remove rules from the live rules topic (tombstones)")
    delete.add_argument("ids", nargs="+", metavar="ID", help="rule ids")
    _topic_options(delete)
    delete.set_defaults(run=lambda args: run_guarded(_delete, args))


def _topic_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="cluster YAML: its kafka and rules.topic settings")
    parser.add_argument("--topic", help="rules topic (default: rules.topic of the config, else sigmaray.rules)")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (default: from the config)")


def _target(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    config = load_config(args.config)
    topic = args.topic or config.rules.topic or "sigmaray.rules"
    return args.bootstrap_servers or config.kafka.bootstrap_servers, topic, dict(config.kafka.client)


def _push(args: argparse.Namespace) -> int:
    ruleset = load_rules_from_paths(args.paths)
    if ruleset.rejections:
        for rejection in ruleset.rejections:
            print(f"REJECTED {rejection.path}: {rejection.reason}", file=sys.stderr)
        print("sigmaray: nothing pushed; fix the rejected rules first", file=sys.stderr)
        return 1
    _write_warnings(ruleset, sys.stderr)  # pushed all the same: RE2 or a timeout guards them
    bootstrap, topic, client = _target(args)
    count = push(bootstrap, topic, rule_documents(args.paths), client)
    print(f"pushed {count} rules to {topic} (ruleset of these files: {ruleset.version})")
    return 0


def _delete(args: argparse.Namespace) -> int:
    bootstrap, topic, client = _target(args)
    count = push(bootstrap, topic, [(rule_id, None) for rule_id in args.ids], client)
    print(f"deleted {count} rules from {topic}")
    return 0


def _check(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    ruleset = load_rules_from_args(args)
    elapsed = time.perf_counter() - started
    if args.json:
        report = ruleset.summary()
        report["regex_engines"] = engine_counts(ruleset.rules)
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
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
    engines = engine_counts(ruleset.rules)
    if any(engines.values()):
        out.write(
            f"|re values: {engines['re2']} on RE2, {engines['re2-ascii']} on RE2 for ASCII text only, "
            f"{engines['regex']} on the regex module under a timeout\n"
        )
    for rejection in ruleset.rejections:
        ident = f" id={rejection.id}" if rejection.id else ""
        out.write(f"REJECTED {rejection.path}{ident}: {rejection.reason}\n")
    _write_warnings(ruleset, out)
    return 0


def _write_warnings(ruleset: Ruleset, out: Any) -> None:
    for warning in ruleset.warnings:
        out.write(f"WARNING {warning.path} id={warning.rule_id}: {warning.message()}\n")
