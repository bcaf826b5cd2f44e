"""`sigmaray alerts tail|verdict|forward` on the test run's broker, with alerts made by the real
correlator from real OTRF events (some of them made hostile)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from cluster.cli import main
from cluster.kafka import client as kafka
from correlator.fusion import Alert
from correlator.records import Verdict
from correlator.summary import inert, json_line
from tests.conftest import ROOT
from tests.test_alert_forwarder import (
    DEFENSE_EVASION,
    Receiver,
    idempotency_key,
    produce,
    read_topic,
    real_alerts,
    record_of,
)

# ESC [2J clears a terminal; CSI (0x9b) is the one-byte form some terminals honour; U+202E reverses text.
HOSTILE = "ws5\x1b[2J\x9b31m<script>alert(1)</script>\u202e"


@pytest.fixture(scope="module")
def alerts() -> list[Alert]:
    return real_alerts(DEFENSE_EVASION)


@pytest.fixture(scope="module")
def hostile_alerts(tmp_path_factory: pytest.TempPathFactory) -> list[Alert]:
    """Real events whose host name and command line an attacker chose."""
    source = DEFENSE_EVASION[0].parent / "cmd_mshta_javascript_getobject_sct.jsonl"
    path = tmp_path_factory.mktemp("hostile") / "hostile.jsonl"
    with path.open("wb") as out:
        for line in source.read_bytes().splitlines():
            event = orjson.loads(line)
            event.update({name: HOSTILE if name == "Computer" else f"cmd /c {HOSTILE}"
                          for name in ("Computer", "CommandLine") if name in event})
            out.write(orjson.dumps(event) + b"\n")
    found = real_alerts([path])
    assert found and all("\x1b[2j" in alert.entity for alert in found)  # it reaches the alerts
    return found


def config_file(tmp_path: Path, broker: str, **correlator: Any) -> tuple[Path, dict[str, str]]:
    """A cluster YAML naming fresh topics (created unless `create=False`)."""
    run = uuid.uuid4().hex[:8]
    topics = {"alerts_topic": f"alerts-{run}", "verdicts_topic": f"verdicts-{run}"}
    create = correlator.pop("create", True)
    if create:
        kafka.create_topics(broker, {name: 1 for name in topics.values()})
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": "127.0.0.1:1", "group_id": f"sigmaray-{run}"},
                                    "models": {"enabled": False}, "correlator": {**topics, **correlator}}))
    return path, topics


def tail(path: Path, broker: str, *options: str) -> int:
    return main(["alerts", "tail", "--config", str(path), "--bootstrap", broker, "--from-beginning",
                 "--idle-timeout", "20", *options])


# -- verdict ----------------------------------------------------------------------------------------------

def test_a_verdict_is_written_to_the_verdicts_topic_and_reads_back_as_a_verdict(
    broker: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, topics = config_file(tmp_path, broker)
    common = ["--config", str(path), "--bootstrap", broker]
    assert main(["alerts", "verdict", "a1b2c3", "fp", "--reason", "admin script", "--analyst", "alice",
                 "--suppress-hours", "12", *common]) == 0
    assert main(["alerts", "verdict", "d4e5f6", "benign", "--no-suppress", *common]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and all(line.startswith(f"verdict written to {topics['verdicts_topic']}[0]")
                                     for line in printed)

    messages = read_topic(broker, topics["verdicts_topic"], 2)
    assert [message.key() for message in messages] == [b"a1b2c3", b"d4e5f6"]
    first, second = (Verdict.from_dict(orjson.loads(message.value() or b"")) for message in messages)
    assert (first.alert_id, first.verdict, first.reason, first.analyst, first.suppress, first.suppress_hours) == \
        ("a1b2c3", "fp", "admin script", "alice", True, 12.0)
    assert (second.verdict, second.suppress, second.suppress_hours) == ("benign", False, None)
    assert uuid.UUID(first.verdict_id) != uuid.UUID(second.verdict_id)
    written = datetime.fromisoformat(first.time.replace("Z", "+00:00"))
    assert first.time.endswith("Z") and abs((datetime.now(UTC) - written).total_seconds()) < 60
    assert first.verdict_id in printed[0]


def test_a_verdict_for_a_missing_topic_is_a_clear_error_with_exit_code_2(
    broker: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, topics = config_file(tmp_path, broker, create=False)
    assert main(["alerts", "verdict", "a1", "tp", "--config", str(path), "--bootstrap", broker]) == 2
    err = capsys.readouterr().err
    assert f"topic {topics['verdicts_topic']} does not exist" in err and "Traceback" not in err
    assert main(["alerts", "verdict", "a1", "fp", "--suppress-hours", "-1", "--config", str(path)]) == 2
    assert "suppress_hours" in capsys.readouterr().err


# -- tail -------------------------------------------------------------------------------------------------

def test_tail_json_prints_each_alert_as_its_ocsf_one_per_line(
    broker: str, tmp_path: Path, alerts: list[Alert], capsys: pytest.CaptureFixture[str]
) -> None:
    path, topics = config_file(tmp_path, broker)
    produce(broker, topics["alerts_topic"], [record_of(alert) for alert in alerts])
    assert tail(path, broker, "--json", "--max", str(len(alerts))) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [orjson.loads(line) for line in lines] == [alert.ocsf for alert in alerts]


def test_tail_prints_one_line_per_alert_with_time_priority_activity_entity_title_why_and_id(
    broker: str, tmp_path: Path, alerts: list[Alert], capsys: pytest.CaptureFixture[str]
) -> None:
    path, topics = config_file(tmp_path, broker)
    produce(broker, topics["alerts_topic"], [(b"x", b"{not an alert", [])] + [record_of(alert) for alert in alerts])
    urgent = [alert for alert in alerts if alert.priority <= 2]
    assert tail(path, broker, "--min-priority", "P2", "--max", str(len(urgent))) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == len(urgent)
    for line, alert in zip(lines, urgent, strict=True):
        when = datetime.fromtimestamp(alert.ocsf["time"] / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert line.startswith(f"{when} P{alert.priority} {alert.activity}")
        assert alert.entity in line and alert.ocsf["finding_info"]["title"] in line
        assert line.endswith(f"id {alert.alert_id}")
        why = line.split("  why: ", 1)[1]
        rule = alert.explanation["rules"][0]
        assert f"{rule['title']} x{rule['count']}" in why
        assert all(tactic in why for tactic in alert.explanation["tactics"][:4])
        assert all(reason in why for reason in alert.explanation["priority"]["reasons"][:2])
    assert "offset 0: not an alert: invalid JSON" in captured.err


def test_tail_prints_hostile_event_values_inert(
    broker: str, tmp_path: Path, hostile_alerts: list[Alert], capsys: pytest.CaptureFixture[str]
) -> None:
    path, topics = config_file(tmp_path, broker)
    produce(broker, topics["alerts_topic"], [record_of(alert) for alert in hostile_alerts])
    count = str(len(hostile_alerts))
    assert tail(path, broker, "--max", count) == 0
    assert tail(path, broker, "--json", "--max", count) == 0
    lines = capsys.readouterr().out.splitlines()
    plain, as_json = lines[: len(hostile_alerts)], lines[len(hostile_alerts):]
    assert all(line.isprintable() for line in lines)  # no ESC, CSI, bidi override, newline
    assert all("ws5\\x1b[2j\\x9b31m<script>alert(1)</script>\\u202e" in line for line in plain)
    assert [orjson.loads(line) for line in as_json] == [alert.ocsf for alert in hostile_alerts]  # still the same JSON


def test_tail_ends_cleanly_on_ctrl_c(broker: str, tmp_path: Path, alerts: list[Alert]) -> None:
    path, topics = config_file(tmp_path, broker)
    produce(broker, topics["alerts_topic"], [record_of(alerts[0])])
    process = subprocess.Popen([sys.executable, "-m", "cluster.cli", "alerts", "tail", "--config", str(path),
                                "--bootstrap", broker, "--from-beginning"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # tail is up and reading
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert alerts[0].alert_id in first and process.returncode == 0 and "Traceback" not in err


def test_tail_of_a_missing_topic_is_a_clear_error(broker: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, topics = config_file(tmp_path, broker, create=False)
    assert tail(path, broker) == 2
    assert f"topic {topics['alerts_topic']} does not exist" in capsys.readouterr().err


def test_inert_and_json_line_escape_every_control_and_format_character() -> None:
    assert inert("plain CORP\\alice é") == "plain CORP\\alice é"
    assert inert("a\x1b[31mb\nc\x9bd\u202ee\x00") == "a\\x1b[31mb\\nc\\x9bd\\u202ee\\x00"
    value = {"name": "x\x1b\x7f\x85\u2028\u202e\U000e0041y"}
    line = json_line(value)
    assert line.isprintable() and orjson.loads(line) == value


# -- forward ------------------------------------------------------------------------------------------------

def test_forward_without_the_secret_in_the_environment_names_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    variable = f"SIGMARAY_TEST_SECRET_{uuid.uuid4().hex[:6].upper()}"
    monkeypatch.delenv(variable, raising=False)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"models": {"enabled": False}, "correlator": {
        "webhook": {"url": "https://soar.example/hooks?token=t0ps3cret", "secret_env": variable}}}))
    assert main(["alerts", "forward", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert variable in err and "Traceback" not in err
    path.write_text(yaml.safe_dump({"models": {"enabled": False}}))
    assert main(["alerts", "forward", "--config", str(path)]) == 2
    assert "correlator.webhook.url is not set" in capsys.readouterr().err


def test_forward_runs_standalone_until_ctrl_c_and_delivers_signed_alerts(
    broker: str, tmp_path: Path, alerts: list[Alert]
) -> None:
    run = uuid.uuid4().hex[:8]
    topics = {"alerts_topic": f"alerts-{run}", "alerts_dead_letter_topic": f"alerts-dead-{run}"}
    kafka.create_topics(broker, {name: 1 for name in topics.values()})
    produce(broker, topics["alerts_topic"], [record_of(alert) for alert in alerts])
    receiver = Receiver()
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": broker, "group_id": f"sigmaray-{run}"}, "models": {"enabled": False},
        "correlator": {**topics, "webhook": {"url": receiver.url, "min_priority": 4, "secret_env": "TEST_HOOK_SECRET"}},
    }))
    process = subprocess.Popen([sys.executable, "-m", "cluster.cli", "alerts", "forward", "--config", str(path)],
                               cwd=ROOT, env={**os.environ, "TEST_HOOK_SECRET": "s3cret"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert kafka.wait_until(lambda: len(receiver.delivered()) >= len(alerts) or process.poll() is not None, 60,
                                every=0.1)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
        receiver.close()
    assert process.returncode == 0 and "Traceback" not in err, err
    assert [r.headers["Idempotency-Key"] for r in receiver.delivered()] == [idempotency_key(a) for a in alerts]
    assert f"{len(alerts)} delivered" in err and "s3cret" not in err and "token=abc" not in err  # URL shown redacted
    assert kafka.committed_total(broker, f"sigmaray-{run}.webhook", topics["alerts_topic"], 1) == len(alerts)
