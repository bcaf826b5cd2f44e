"""`sigmaray alerts tail|verdict|forward`: the analyst's and the SOAR's side of the alerts topic.

- `tail` prints one line per alert (time, priority, activity, entity, title, why, alert id), or
  with `--json` each alert's OCSF Detection Finding, one per line. Alerts carry event values
  (host and user names, titles built from them): they are attacker-controlled, so every control
  and format character (ANSI escapes, newlines, bidi overrides) is printed as its escape
  (`\\x1b`), never sent to the terminal.
- `verdict` writes an analyst's verdict (`correlator.records.Verdict`) to the verdicts topic and
  waits for the broker's acknowledgement.
- `forward` runs `cluster.kafka.alert_forwarder.AlertForwarder` until Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import signal
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from cluster.cli.common import fail, run_guarded
from cluster.config import ClusterConfig, load_config
from cluster.kafka.alert_forwarder import AlertForwarder, webhook_secret
from cluster.kafka.alerts_topic import AlertsTopicError, read_alerts, write_verdict
from cluster.sinks.webhook import redact_url
from correlator.records import VERDICTS, Verdict
from correlator.summary import alert_line, inert, json_line, priority_number


def register(commands: Any) -> None:
    alerts = commands.add_parser(
        "alerts",
        help="follow alerts, give verdicts, forward alerts to a SOAR webhook",
        description="The correlator's alerts (OCSF Detection Findings on correlator.alerts_topic): follow them, "
        "record an analyst's verdict, or forward them to the signed webhook of correlator.webhook.",
    )
    sub = alerts.add_subparsers(dest="alerts_command", metavar="ACTION")
    sub.required = True

    tail = sub.add_parser("tail", help="print alerts as they arrive, one line each",
                          description="One line per alert: time, priority, activity, entity, title, why (rules "
                          "with counts, tactics, anomaly score, criticality, priority reasons) and alert id. "
                          "Starts at the newest alert unless --from-beginning; Ctrl-C stops.")
    _add_kafka_options(tail)
    tail.add_argument("--min-priority", type=_priority, default=4, metavar="P",
                      help="show P1..P (P1, P2, P3 or P4; default P4: every alert)")
    tail.add_argument("--json", action="store_true", help="print each alert's OCSF JSON, one per line")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest alert the topic holds")
    tail.add_argument("--max", type=int, default=0, metavar="N", help="stop after N alerts (default 0: no limit)")
    tail.add_argument("--idle-timeout", type=float, default=0, metavar="S",
                      help="stop when no record arrives for S seconds (default 0: never)")
    tail.set_defaults(run=lambda args: run_guarded(_tail, args))

    verdict = sub.add_parser("verdict", help="record an analyst's verdict on an alert",
                             description="Writes the verdict to correlator.verdicts_topic (keyed by alert id) and "
                             "waits for the broker's acknowledgement. Every correlator applies it: an fp verdict "
                             "suppresses the alert's rules on its entity (unless --no-suppress) and lowers their "
                             "weight there.")
    verdict.add_argument("alert_id", metavar="ALERT_ID")
    verdict.add_argument("verdict", choices=VERDICTS, help="tp (true positive), fp (false positive), benign")
    verdict.add_argument("--reason", default="", help="why (kept with the verdict)")
    verdict.add_argument("--analyst", default=None, help="who (default: the login name)")
    verdict.add_argument("--no-suppress", action="store_true", help="an fp verdict adds no suppression")
    verdict.add_argument("--suppress-hours", type=float, default=None, metavar="H",
                         help="how long an fp verdict suppresses (default: the correlator's feedback setting)")
    verdict.add_argument("--timeout", type=float, default=30, metavar="S",
                         help="seconds to wait for the broker's acknowledgement (default 30)")
    _add_kafka_options(verdict)
    verdict.set_defaults(run=lambda args: run_guarded(_verdict, args))

    forward = sub.add_parser("forward", help="forward alerts to correlator.webhook.url until Ctrl-C",
                             description="Consumes the alerts topic (group <kafka.group_id>.webhook) and POSTs each "
                             "alert, signed with the secret in the environment variable correlator.webhook.secret_env "
                             "names; offsets are committed once alerts are delivered or dead-lettered.")
    forward.add_argument("--config", metavar="FILE", required=True, help="cluster YAML with correlator.webhook.url")
    forward.add_argument("--drain", type=float, default=5, metavar="S",
                         help="at stop, seconds to deliver what is queued (the rest is sent after a restart)")
    forward.set_defaults(run=lambda args: run_guarded(_forward, args))


def _add_kafka_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="cluster YAML (topics, kafka.client settings)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="broker address (overrides kafka.bootstrap_servers)")


def _priority(text: str) -> int:
    number = priority_number(text)
    if number is None:
        raise argparse.ArgumentTypeError(f"expected P1, P2, P3 or P4, got {text!r}")
    return number


def _config(args: argparse.Namespace) -> ClusterConfig:
    config = load_config(args.config)
    if args.bootstrap:
        config = dataclasses.replace(config, kafka=dataclasses.replace(config.kafka, bootstrap_servers=args.bootstrap))
    return config


# -- printing alerts --------------------------------------------------------------------------------

# -- tail -----------------------------------------------------------------------------------------------

def _tail(args: argparse.Namespace) -> int:
    config = _config(args)
    shown = 0
    last = time.monotonic()

    def problem(text: str) -> None:
        print(f"sigmaray: {inert(text)}", file=sys.stderr)

    try:
        alerts = read_alerts(config, from_beginning=args.from_beginning, on_problem=problem)
        for alert in alerts:
            if args.max and shown >= args.max:
                break
            if alert is None:
                if args.idle_timeout and time.monotonic() - last >= args.idle_timeout:
                    break
                continue
            last = time.monotonic()
            if alert.priority > args.min_priority:
                continue
            sys.stdout.write((json_line(alert.ocsf) if args.json else alert_line(alert)) + "\n")
            sys.stdout.flush()
            shown += 1
        alerts.close()
    except AlertsTopicError as error:
        return fail(str(error))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a tail ends
    return 0


# -- verdict --------------------------------------------------------------------------------------------

def _verdict(args: argparse.Namespace) -> int:
    config = _config(args)
    topic = config.correlator.verdicts_topic
    analyst = args.analyst if args.analyst is not None else _login()
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    try:
        verdict = Verdict.from_dict(Verdict(
            alert_id=args.alert_id, verdict=args.verdict, verdict_id=str(uuid.uuid4()), reason=args.reason,
            analyst=analyst, time=now, suppress=not args.no_suppress, suppress_hours=args.suppress_hours,
        ).to_dict())  # validated as every correlator will read it
    except ValueError as error:
        return fail(str(error))
    try:
        partition, offset = write_verdict(config, verdict, args.timeout)
    except AlertsTopicError as error:
        return fail(str(error))
    print(f"verdict written to {topic}[{partition}] offset {offset}: {inert(verdict.to_json().decode())}")
    return 0


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return ""


# -- forward --------------------------------------------------------------------------------------------

def _forward(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    webhook = config.correlator.webhook
    if not webhook.url:
        return fail(f"correlator.webhook.url is not set in {args.config}: there is no endpoint to forward to")
    forwarder = AlertForwarder(config, webhook_secret(config), drain_s=args.drain)
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, stopping) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"sigmaray: forwarding {config.correlator.alerts_topic} to {redact_url(webhook.url)} (P1..P{webhook.min_priority}, "
          f"group {forwarder.group}, dead letters to {config.correlator.alerts_dead_letter_topic}); Ctrl-C stops",
          file=sys.stderr, flush=True)
    try:
        stats = forwarder.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sent = stats["webhook"].get("sent", 0)
    print(f"sigmaray: {stats['consumed']} alerts read, {sent} delivered, {stats['skipped']} below P{webhook.min_priority}, "
          f"{stats['dead_letters']} dead-lettered, {stats['uncommitted']} left for the next start", file=sys.stderr)
    return 0
