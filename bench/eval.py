"""`sigmaray eval` over several seeds of a built-in scenario, for BENCHMARKS.md: each seed's table
and, per mode, the median and the range of every column.

    .venv/bin/python bench/eval.py --scenario enterprise --seeds 1 2 3 [--json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation import EvalOptions, evaluate_scenario
from evaluation.metrics import MODES

COLUMNS = ("alerts_per_day", "precision", "recall", "recall_p1_p2", "median_ttd_minutes", "p1_precision",
           "precision_at_k", "reduction")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="enterprise")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rules", action="append", metavar="PATH")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tables = []
    for seed in args.seeds:
        evaluation = evaluate_scenario(args.scenario, seed, EvalOptions(rule_paths=args.rules or ()))
        tables.append(evaluation.table)
        if not args.json:
            meta = evaluation.table.meta
            print(f"\n## {args.scenario}, seed {seed}: {meta['events']:,} events, {meta['days']:.1f} days, "
                  f"{meta['incidents']} incidents, replay {meta['replay_seconds']} s\n")
            print(evaluation.table.markdown())
    summary: dict[str, dict[str, list[float | None]]] = {mode: {} for mode in MODES}
    for mode in MODES:
        for column in COLUMNS:
            values = [getattr(table.row(mode), column) for table in tables]
            known = [value for value in values if value is not None]
            summary[mode][column] = [statistics.median(known), min(known), max(known)] if known else [None, None, None]
    if args.json:
        print(orjson.dumps({"scenario": args.scenario, "seeds": args.seeds, "tables": [t.to_dict() for t in tables],
                            "summary": summary}, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"\n## median (min-max) over seeds {args.seeds}; reduction = 1 - N_mode/N_sigma-only at equal recall "
          "(negative: more alerts)\n")
    print("| mode | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    for mode in MODES:
        cells = []
        for column in COLUMNS:
            middle, low, high = summary[mode][column]
            cells.append("-" if middle is None else f"{middle:.2f} ({low:.2f}-{high:.2f})")
        print(f"| {mode} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
