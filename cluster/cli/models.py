"""`sigmaray models list|eval|generate`: the data scientist's workbench.

`models eval` is `models.evaluate` behind a command line: this module reads the events (files
or the generator), brings the cluster's settings (cluster.yaml's `models.*`, mapped to the scorer
as the workers map it) and its Sigma rules as the matcher (events a rule matches are scored but
never learned, as in the cluster), and prints or writes what comes back. The scoring itself is
the workers' EntityScorer in batches of the configured size (500), each event scored before it
is learned; event time is read as the cluster's Detector reads it, and undecodable records are
skipped (the cluster dead-letters them).

Labels, in order of precedence:
- `--labels FILE`: JSON lines `{"sigmaray_event_id": ..., "label": 0|1}` or
  `{"sigmaray_event_id": ..., "attack": null|"name"}`; bad lines are counted and skipped; events
  not in the file are left out of the metrics (or count as benign with --unlabeled-as-benign).
- otherwise the event field `--label-field` (default `sigmaray_attack`): present and not
  null/false/0/"" marks an attack (its value names it), absent or empty marks benign. The field is
  removed before the event is scored, so it cannot leak into the features. When no event has the
  field there are no labels and only score statistics are reported.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import shlex
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from cluster.cli.common import fail, run_guarded
from detectors.errors import ConfigError
from models.evaluation import Evaluation, Label, evaluate, evaluate_shuttle
from models.eventtime import parse_time_ms
from models.report import ReportContext, summary_table, write_report

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OTRF = ROOT.parent / "shared" / "datasets" / "otrf"
DEFAULT_LABEL_FIELD = "sigmaray_attack"
DATASETS = ("shuttle",)


def register(commands: Any) -> None:
    models = commands.add_parser(
        "models",
        help="anomaly models: list, evaluate offline, generate labeled data; live versions on a cluster",
        description="Offline evaluation runs the same scoring code as the cluster workers.",
    )
    sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    sub.required = True

    listing = sub.add_parser("list", help="the registered anomaly models")
    listing.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    listing.set_defaults(run=lambda args: run_guarded(_list, args))

    ev = sub.add_parser(
        "eval",
        help="score labeled events (files, the generator, or Shuttle) and report ROC-AUC, PR-AUC, precision@k",
        description="Scores events with the workers' EntityScorer (models.evaluate: batches of 500, the cluster's "
        "Sigma rules deciding what it learns) and compares the model with a batch IsolationForest on the same "
        "feature rows. Labels: "
        f"--labels FILE, else the event field --label-field (default {DEFAULT_LABEL_FIELD}), else none "
        "(score statistics only).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("--model", required=True, metavar="NAME", help="a model from `sigmaray models list`")
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", nargs="+", metavar="FILE", help="JSON-lines or .evtx files, in order")
    source.add_argument("--generate", type=_positive, metavar="N", help="N events of the labeled generator")
    source.add_argument("--dataset", choices=DATASETS, help="a bundled benchmark: shuttle (River, prequential)")
    ev.add_argument("--labels", metavar="FILE", help="JSON lines of {sigmaray_event_id, label|attack} (with --events)")
    ev.add_argument("--label-field", default=DEFAULT_LABEL_FIELD, metavar="NAME",
                    help=f"event field that marks attacks when there is no labels file (default {DEFAULT_LABEL_FIELD})")
    ev.add_argument("--unlabeled-as-benign", action="store_true",
                    help="events missing from the labels file count as benign (default: left out)")
    _generator_options(ev)
    ev.add_argument("--limit", type=_positive, metavar="N", help="stop after N events (or Shuttle rows)")
    ev.add_argument("--config", metavar="FILE", help="cluster YAML: its models.* settings and rules are used")
    ev.add_argument("--rules", action="append", metavar="PATH",
                    help="Sigma rules deciding which events the model does not learn from, as in the cluster "
                    "(default: the config's rules, else the project's rules/)")
    ev.add_argument("--no-rules", action="store_true", help="no Sigma rules: the model learns from every event")
    ev.add_argument("--model-seed", type=int, metavar="S", help="the model's seed (default: the config's models.seed)")
    ev.add_argument("--no-baseline", action="store_true", help="skip the IsolationForest baseline")
    ev.add_argument("--report", metavar="DIR", help="write DIR/report.md and its PNG plots")
    ev.add_argument("--json", action="store_true", help="print one JSON object with all the numbers")
    ev.set_defaults(run=lambda args: run_guarded(_eval, args))

    gen = sub.add_parser(
        "generate",
        help="write a labeled Windows event stream: events JSONL and labels JSONL",
        description="The generator of `sigmaray demo` (background office activity with attack sequences, "
        "replayed from OTRF when present). Evaluate it with `models eval --events OUT --labels LABELS`.",
    )
    gen.add_argument("count", type=_positive, metavar="N", help="number of events")
    gen.add_argument("--events", required=True, metavar="OUT.jsonl", help="where the events go")
    gen.add_argument("--labels", required=True, metavar="OUT.jsonl", help="where the labels go")
    _generator_options(gen)
    gen.set_defaults(run=lambda args: run_guarded(_generate, args))

    # The live version commands (shadow/promote/rollback, cluster/cli/model_versions.py) share
    # the `models` command.
    from cluster.cli.model_versions import add_version_commands

    add_version_commands(sub)


def _generator_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--attack-share", type=float, default=0.01, metavar="F",
                        help="share of events in attack sequences (default 0.01)")
    parser.add_argument("--otrf", type=Path, default=DEFAULT_OTRF, metavar="DIR",
                        help="OTRF datasets to replay attacks from when present (default ../shared/datasets/otrf)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# ---------------------------------------------------------------- list


def _spec(name: str) -> Any:
    from models.registry import get_model

    return get_model(name)  # ConfigError naming the known models: one line, exit 2


def _spec_info(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "kind": spec.kind, "description": spec.description, "params": dict(spec.params)}


def _list(args: argparse.Namespace) -> int:
    from models.registry import list_models

    specs = list(list_models())
    if args.json:
        print(orjson.dumps({"models": [_spec_info(s) for s in specs]}, default=str).decode())
        return 0
    width = max((len(s.name) for s in specs), default=4)
    kinds = max((len(str(s.kind)) for s in specs), default=4)
    for spec in specs:
        print(f"{spec.name:<{width}}  {spec.kind!s:<{kinds}}  {spec.description}")
        if spec.params:
            print(f"{'':<{width}}  {'':<{kinds}}  parameters: " + ", ".join(f"{k}={v}" for k, v in spec.params.items()))
    print('\nAny parameter can be changed by name wherever a model is named, e.g. "hst(n_trees=25, window_size=1000)".')
    return 0


# ---------------------------------------------------------------- generate


def _labeled_stream(args: argparse.Namespace, count: int) -> Iterator[Any]:
    from models.datasets.generator import generate_labeled

    otrf = args.otrf if args.otrf and Path(args.otrf).is_dir() else None
    try:
        return generate_labeled(count, args.seed, args.attack_share, otrf)
    except ValueError as error:
        raise ConfigError(f"generator: {error}") from None


def _generate(args: argparse.Namespace) -> int:
    stream = _labeled_stream(args, args.count)
    attacks = 0
    with open(args.events, "wb") as events, open(args.labels, "wb") as labels:
        for item in stream:
            events.write(orjson.dumps(item.event, option=orjson.OPT_NON_STR_KEYS, default=str) + b"\n")
            labels.write(orjson.dumps({"sigmaray_event_id": item.event["sigmaray_event_id"],
                                       "label": int(item.attack is not None), "attack": item.attack}) + b"\n")
            attacks += item.attack is not None
    print(f"wrote {args.count:,} events to {args.events} ({attacks:,} in attack sequences) and their labels "
          f"to {args.labels}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- labels


@dataclass(slots=True)
class LabelFile:
    labels: dict[str, Label] = field(default_factory=dict)
    lines: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)  # the first few skipped lines, with reasons


def read_labels(path: str | Path) -> LabelFile:
    """Labels by event id; a line that is not a valid label is counted and skipped, never fatal."""
    out = LabelFile()
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            out.lines += 1
            try:
                key, label = _label_line(line)
            except ValueError as error:
                out.skipped += 1
                if len(out.errors) < 10:
                    out.errors.append(f"{path}:{number}: {error}")
                continue
            out.labels[key] = label
    return out


def _label_line(line: bytes) -> tuple[str, Label]:
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"not JSON ({error})") from None
    if not isinstance(item, dict):
        raise ValueError("not a JSON object")
    key = item.get("sigmaray_event_id")
    if key is None or isinstance(key, (dict, list, bool)) or key == "":
        raise ValueError("no sigmaray_event_id")
    attack = item.get("attack")
    if attack is not None and not isinstance(attack, str):
        raise ValueError(f"attack must be null or a name, got {attack!r}")
    if "label" in item:
        value = item["label"]
        if isinstance(value, str) or value not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {value!r}")
        return str(key), (int(value), attack if value else None)
    if "attack" in item:
        return str(key), (int(bool(attack)), attack or None)
    raise ValueError("neither label nor attack")


# ---------------------------------------------------------------- eval


@dataclass(slots=True)
class Replay:
    """What the replay read and how it was set up, beside the scores."""

    records: int = 0
    skipped: int = 0  # undecodable records (dead letters in the cluster)
    skips: list[str] = field(default_factory=list)
    detections: int = 0  # Sigma matches
    anomalies: int = 0  # anomaly detections the cluster would have emitted
    label_field_seen: bool = False
    unlabeled: int = 0
    seconds: float = 0.0
    batch_size: int = 0
    rules: int = 0
    rule_paths: list[str] = field(default_factory=list)
    threshold: float | None = None
    calibration_window: int | None = None
    model_seed: int = 0
    features: list[str] = field(default_factory=list)
    label_lines: int | None = None
    label_lines_skipped: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__ if name not in ("seconds", "label_field_seen")}

    def report_details(self) -> dict[str, Any]:
        details: dict[str, Any] = {
            "records read": self.records,
            "undecodable records skipped": self.skipped,
            "batch size (events per scorer call)": self.batch_size,
            "Sigma rules (events they match are scored, not learned)":
                f"{self.rules} from {', '.join(self.rule_paths)}" if self.rule_paths else "none (--no-rules)",
            "Sigma detections": self.detections,
            "anomaly detections the cluster would emit": self.anomalies,
            "alert threshold (calibrated score)": self.threshold,
            "calibration window (learned scores)": self.calibration_window,
            "model seed": self.model_seed,
            "features": ", ".join(self.features),
        }
        if self.label_lines is not None:
            details["label lines read / skipped"] = f"{self.label_lines:,} / {self.label_lines_skipped:,}"
        if self.unlabeled:
            details["events without a label (left out)"] = self.unlabeled
        return details


def _eval(args: argparse.Namespace) -> int:
    spec = _spec(args.model)
    if args.labels and not args.events:
        return fail("--labels goes with --events")
    started = time.perf_counter()
    if args.dataset == "shuttle":
        seed = args.model_seed or 0
        evaluation = evaluate_shuttle(spec.name, args.limit, seed=seed, baseline=not args.no_baseline)
        replay = Replay(records=evaluation.events, model_seed=seed, batch_size=500,
                        features=[f"f{i}" for i in range(1, 10)])
        dataset = (f"River's Shuttle (UCI Statlog, ODDS anomaly version): {evaluation.events:,} rows, "
                   "prequential (score, then learn, every row), raw scores, online min-max scaling")
        details = {"rows": evaluation.events, "model seed": seed, "features": ", ".join(replay.features)}
    else:
        evaluation, replay = _eval_stream(args, spec)
        dataset = (f"{', '.join(args.events)}" if args.events else
                   f"generated stream of {args.generate:,} events (seed {args.seed}, attack share {args.attack_share})")
        dataset += (f", scored by the cluster's EntityScorer in batches of {replay.batch_size}"
                    + (", Sigma rules deciding what it learns" if replay.rule_paths else ""))
        details = replay.report_details()
    replay.seconds = time.perf_counter() - started
    info = _spec_info(spec)
    command = _command_line(args)
    if args.report:
        report = write_report(evaluation, args.report, ReportContext(spec.name, command, dataset, info, details))
        print(f"report: {report}", file=sys.stderr)
    if args.json:
        payload = {"model": spec.name, "spec": info, "command": command, "dataset": dataset,
                   "input": replay.as_dict(), "seconds": round(replay.seconds, 3), **evaluation.to_dict()}
        print(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=str).decode())
    else:
        _print_summary(evaluation, spec.name, dataset, replay)
    return 0


def _eval_stream(args: argparse.Namespace, spec: Any) -> tuple[Evaluation, Replay]:
    """Reads the events, brings the cluster's settings and Sigma rules, and leaves the scoring and
    the numbers to models.evaluate."""
    from cluster.build import build_engine, load_rules, quiet_rules, scorer_config
    from cluster.config import load_config

    config = load_config(args.config)
    models = replace(config.models, model=spec.name)
    if args.model_seed is not None:
        models = replace(models, seed=args.model_seed)
    settings = scorer_config(models, config.rules.mapping)  # the workers' own mapping from cluster.yaml to the scorer
    replay = Replay(batch_size=config.processing.batch_size, threshold=settings.threshold,
                    calibration_window=settings.calibration_window, model_seed=settings.seed)
    match_errors: list[str] = []
    matched: Any = None  # no rules: the model learns from every event
    if not args.no_rules:
        # As in the cluster: events a rule matches are scored but never learned. The engine is
        # built as the workers build theirs (mapping, pipelines, placeholders, regex timeout).
        replay.rule_paths = list(args.rules or (config.rules.paths if args.config else [str(ROOT / "rules")]))
        ruleset = load_rules(config.rules, replay.rule_paths)
        replay.rules = len(ruleset.rules)
        engine = build_engine(ruleset, config.rules)
        quiet = quiet_rules(ruleset)  # base rules of `generate: false` correlations alert on nothing

        def matched(event: dict[str, Any]) -> bool:
            try:
                matches = engine.match(event)
            except Exception as error:  # noqa: BLE001 - the cluster dead-letters such an event and goes on
                match_errors.append(f"{type(error).__name__}: {error}")
                return True  # not vetted by the rules: scored, never learned
            replay.detections += len(matches)
            return any(meta.id not in quiet for meta in matches)

    labels_file = read_labels(args.labels) if args.labels else None
    if args.generate:
        # Two views of one stream, read in step by models.evaluate: nothing piles up in memory.
        for_events, for_labels = itertools.tee(_labeled_stream(args, min(args.generate, args.limit or args.generate)))
        events: Iterable[dict[str, Any]] = _counted((item.event for item in for_events), replay)
        labels: Any = (item.attack or False for item in for_labels)
        label_field = None
    else:
        for path in args.events:
            if not Path(path).is_file():
                raise ConfigError(f"{path}: no such file")
        events = _file_events(args, replay)
        labels = None if labels_file is None else {key: (name or True) if value else False
                                                   for key, (value, name) in labels_file.labels.items()}
        label_field = args.label_field  # removed from every event; the labels when there is no labels file
    evaluation = evaluate(events, labels, config=settings, matched=matched, times=_event_time_ms,
                          label_field=label_field, unlabeled_as_benign=args.unlabeled_as_benign,
                          batch_size=replay.batch_size, baseline=not args.no_baseline)
    run = evaluation.run
    assert run is not None
    replay.features = list(run.features)
    replay.anomalies = run.anomalies
    replay.unlabeled = run.unlabeled
    replay.label_field_seen = run.label_field_seen
    notes: list[str] = []
    if labels_file is not None:
        replay.label_lines, replay.label_lines_skipped = labels_file.lines, labels_file.skipped
        if labels_file.skipped:
            notes.append(f"{labels_file.skipped} of {labels_file.lines} label lines skipped")
            notes.extend(f"skipped label line {error}" for error in labels_file.errors[:5])
    if match_errors:
        notes.append(f"{len(match_errors)} events could not be matched against the rules (scored, not learned; "
                     f"the cluster dead-letters them): {match_errors[0]}")
    # Before models.evaluate's own note on unlabeled events, which closes the list.
    at = len(evaluation.notes) - (1 if run.unlabeled else 0)
    evaluation.notes[at:at] = notes
    return evaluation, replay


def _file_events(args: argparse.Namespace, replay: Replay) -> Iterator[dict[str, Any]]:
    """The decodable events of the files, in order; undecodable records are counted and skipped
    (the cluster dead-letters them)."""
    from cluster.sources.files import read_events

    for path in args.events:
        for record in read_events(path):
            if args.limit and replay.records >= args.limit:
                return
            replay.records += 1
            if record.event is None or not isinstance(record.event, dict):
                replay.skipped += 1
                if len(replay.skips) < 10:
                    replay.skips.append(f"{record.file}:{record.line}: {record.error or 'not a JSON object'}")
                continue
            yield record.event


def _counted(events: Iterator[dict[str, Any]], replay: Replay) -> Iterator[dict[str, Any]]:
    for event in events:
        replay.records += 1
        yield event


def _event_time_ms(event: Mapping[str, Any]) -> int | None:
    """The event time as the cluster's Detector reads it from an event: the first of its time
    fields that holds text reading as a time (files carry no broker timestamp to fall back on)."""
    for name in _time_fields():
        value = event.get(name)
        if isinstance(value, str) and value:
            parsed = parse_time_ms(value)
            if parsed is not None:
                return parsed
    return None


@functools.cache
def _time_fields() -> tuple[str, ...]:
    from cluster.processing.detector import DetectionSettings

    return tuple(DetectionSettings().time_fields)


def _command_line(args: argparse.Namespace) -> str:
    """The command, rebuilt from the parsed options with every default spelled out, so the
    report says exactly how to reproduce it."""
    parts = ["sigmaray", "models", "eval", "--model", args.model]
    if args.events:
        parts += ["--events", *args.events]
        if args.labels:
            parts += ["--labels", args.labels]
        else:
            parts += ["--label-field", args.label_field]
        if args.unlabeled_as_benign:
            parts.append("--unlabeled-as-benign")
    elif args.generate:
        parts += ["--generate", str(args.generate), "--seed", str(args.seed), "--attack-share", str(args.attack_share)]
        if args.otrf and Path(args.otrf).is_dir():
            parts += ["--otrf", str(args.otrf)]
    else:
        parts += ["--dataset", args.dataset]
    if args.limit:
        parts += ["--limit", str(args.limit)]
    if args.dataset is None:
        if args.config:
            parts += ["--config", args.config]
        if args.no_rules:
            parts.append("--no-rules")
        for path in args.rules or ():
            parts += ["--rules", path]
    if args.model_seed is not None:
        parts += ["--model-seed", str(args.model_seed)]
    if args.no_baseline:
        parts.append("--no-baseline")
    if args.report:
        parts += ["--report", args.report]
    return shlex.join(parts)


def _print_summary(evaluation: Evaluation, model: str, dataset: str, replay: Replay) -> None:
    out = sys.stdout
    out.write(f"{model} on {dataset}\n")
    if replay.rule_paths or replay.threshold is not None:
        out.write(f"{evaluation.events:,} events ({evaluation.labeled:,} labeled, {evaluation.positives:,} attack), "
                  f"{evaluation.rows:,} entity rows, {replay.skipped:,} undecodable records skipped, "
                  f"{replay.seconds:.1f}s\n\n")
    else:  # a benchmark data set: rows, not events
        out.write(f"{evaluation.events:,} rows ({evaluation.positives:,} anomalies), {replay.seconds:.1f}s\n\n")
    for line in summary_table(evaluation, model):
        out.write(line + "\n")
    if evaluation.top_ties > 10:
        out.write(f"note: {evaluation.top_ties:,} labeled events tie at the top score: precision@k up to that "
                  "count is the attack share among them\n")
    for note in evaluation.notes:
        out.write(f"note: {note}\n")
    for line in replay.skips:
        out.write(f"  skipped {line}\n")
    if replay.skipped > len(replay.skips):
        out.write(f"  ... and {replay.skipped - len(replay.skips)} more undecodable records\n")

