"""Incident labels for `sigmaray eval`: both forms, and clear errors for bad labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.labels import LabelError, parse_labels, read_labels, write_labels


def _events(tmp_path: Path, name: str, lines: int) -> str:
    path = tmp_path / name
    path.write_text("".join(f'{{"n": {n}}}\n' for n in range(1, lines + 1)))
    return str(path)


def test_jsonl_and_csv_name_the_same_incidents(tmp_path: Path) -> None:
    campaign, stream = _events(tmp_path, "campaign.jsonl", 5), _events(tmp_path, "stream.jsonl", 40)
    (tmp_path / "labels.jsonl").write_text(
        '{"incident": "c1", "file": "campaign.jsonl", "techniques": ["T1003.001", "t1059"], "title": "dump"}\n'
        '\n{"incident": "s2", "file": "stream.jsonl", "first_line": 10, "last_line": 12}\n'
        '{"incident": "s2", "file": "stream.jsonl", "first_line": 30, "last_line": 30}\n')
    (tmp_path / "labels.csv").write_text(
        "incident,file,first_line,last_line,techniques,title\n"
        "c1,campaign.jsonl,,,T1003.001;T1059,dump\n"
        "s2,stream.jsonl,10,12,,\n"
        "s2,stream.jsonl,30,30,,\n")
    for name in ("labels.jsonl", "labels.csv"):
        labels = read_labels(tmp_path / name, [campaign, stream])
        assert sorted(labels.incidents) == ["c1", "s2"]
        assert labels.incidents["c1"].techniques == ("T1003.001", "T1059")
        assert labels.incidents["c1"].title == "dump"
        assert [labels.incident_at(campaign, n) for n in (1, 5)] == ["c1", "c1"]
        assert [labels.incident_at(stream, n) for n in (9, 10, 12, 13, 29, 30, 31)] == \
            [None, "s2", "s2", None, None, "s2", None]
        assert labels.incident_at(str(tmp_path / "other.jsonl"), 1) is None


def test_written_labels_read_back_the_same(tmp_path: Path) -> None:
    stream = _events(tmp_path, "stream.jsonl", 20)
    labels = parse_labels('{"incident": "a", "file": "stream.jsonl", "first_line": 2, "last_line": 4, '
                          '"techniques": ["T1021"]}\n{"incident": "b", "file": "stream.jsonl", "first_line": 5, '
                          '"last_line": 9}', "jsonl")
    for name in ("out.csv", "out.jsonl"):
        write_labels(tmp_path / name, labels.incidents.values())
        again = read_labels(tmp_path / name, [stream])
        assert {ident: (inc.techniques, [(r.first_line, r.last_line) for r in inc.ranges])
                for ident, inc in again.incidents.items()} == \
            {"a": (("T1021",), [(2, 4)]), "b": ((), [(5, 9)])}


@pytest.mark.parametrize(("text", "message"), [
    ('{"incident": "a", "file": "nowhere.jsonl"}', "labels line 1: unknown file"),
    ('{"incident": "a", "file": "e.jsonl", "first_line": 3, "last_line": 8}\n'
     '{"incident": "b", "file": "e.jsonl", "first_line": 8, "last_line": 9}', "labels line 2: lines 8-9"),
    ('{"incident": "a", "file": "e.jsonl"}\n{"incident": "b", "file": "e.jsonl", "first_line": 1, "last_line": 1}',
     "of incident 'a' overlaps lines 1-1"),
    ('{"incident": "a", "file": "e.jsonl", "first_line": 0, "last_line": 2}', "first_line must be 1 or more"),
    ('{"incident": "a", "file": "e.jsonl", "first_line": "x", "last_line": 2}', "first_line must be a line number"),
    ('{"incident": "a", "file": "e.jsonl", "first_line": 5, "last_line": 2}', "last_line 2 is before first_line 5"),
    ('{"incident": "a", "file": "e.jsonl", "first_line": 5}', "give both first_line and last_line"),
    ('{"incident": "a", "file": "e.jsonl", "first_line": 5, "last_line": 11}', "last_line 11 is past the end"),
    ('{"incident": "a", "file": "e.jsonl", "techniques": ["lsass"]}', "not an ATT&CK technique id"),
    ('{"incident": "a", "file": "e.jsonl", "lines": 3}', "unknown key(s) lines"),
    ('{"file": "e.jsonl"}', "labels line 1: no incident id"),
    ("not json", "labels line 1: not JSON"),
])
def test_bad_labels_give_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    events = _events(tmp_path, "e.jsonl", 10)
    (tmp_path / "labels.jsonl").write_text(text)
    with pytest.raises(LabelError) as error:
        read_labels(tmp_path / "labels.jsonl", [events])
    assert message in str(error.value)
    assert str(tmp_path / "labels.jsonl") in str(error.value)  # which labels file


def test_bad_csv_header_is_named(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("id,path\na,e.jsonl\n")
    with pytest.raises(LabelError, match="the CSV header must name incident, file"):
        read_labels(tmp_path / "labels.csv")
