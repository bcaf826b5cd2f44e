"""The compiled-ruleset cache: a hit is the cold load, any change of input misses, and a bad
file is rebuilt, never trusted (detectors/cache.py, detectors/literals.py)."""

from __future__ import annotations

import zlib
from pathlib import Path

import orjson
import pytest

from cluster.build import build_engine, load_rules
from cluster.config import RulesConfig
from cluster.sources.files import read_events
from detectors import cache, literals
from detectors.cache import CacheOutcome, RulesetCache
from detectors.engine import SigmaEngine
from detectors.ruleset import Ruleset
from tests.conftest import CORPUS_PLACEHOLDERS, RULE_DIRS, otrf_files
from tests.ruletools import rule_yaml

RULE = rule_yaml("sel:\n    Image|endswith: '\\\\whoami.exe'\ncondition: sel", rule_id="0f6a8c3e-5b8f-4b0e-9a57-2d0c7b1d9e11")
OTHER = rule_yaml("sel:\n    CommandLine|re: 'net\\s+user'\n    Hashes|cidr: '10.0.0.0/8'\ncondition: sel",
                  rule_id="5c1d0c55-9f5e-4c3e-8a4c-6a2f1f0e7b21")
PLACEHOLDER = rule_yaml("sel:\n    Computer|expand: '%dcs%'\ncondition: sel", rule_id="7e0c3a7b-8f61-4d55-b7a3-8a3c1f5e2d10")


def _rules(tmp_path: Path, texts: dict[str, str]) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir(exist_ok=True)
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _load(config: RulesConfig, url: Path) -> tuple[Ruleset, CacheOutcome]:
    outcome = CacheOutcome()
    return load_rules(config, cache_url=str(url), outcome=outcome), outcome


def _cache_files(url: Path) -> list[Path]:
    return sorted(url.rglob("*.ruleset"))


def test_second_load_hits_and_equals_the_first(tmp_path: Path) -> None:
    config = RulesConfig(paths=(str(_rules(tmp_path, {"a.yml": RULE, "b.yml": OTHER})),))
    cold, first = _load(config, tmp_path / "cache")
    warm, second = _load(config, tmp_path / "cache")
    assert (first.hit, second.hit) == (False, True)
    assert warm.rules == cold.rules and warm.version == cold.version and warm.summary() == cold.summary()
    event = {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, "Image": "C:\\x\\WHOAMI.exe"}
    assert [m.id for m in build_engine(warm, config).match(event)] == ["0f6a8c3e-5b8f-4b0e-9a57-2d0c7b1d9e11"]


@pytest.mark.parametrize("change", ["rule text", "pipeline", "placeholder", "mapping", "added file"])
def test_a_changed_input_misses_the_cache(tmp_path: Path, change: str) -> None:
    folder = _rules(tmp_path, {"a.yml": RULE, "p.yml": PLACEHOLDER})
    mapping = Path(__file__).resolve().parents[1] / "detectors" / "logsources" / "windows.yml"
    config = RulesConfig(paths=(str(folder),), placeholders={"dcs": ["DC01"]})
    _, first = _load(config, tmp_path / "cache")
    assert not first.hit and _load(config, tmp_path / "cache")[1].hit
    if change == "rule text":
        (folder / "a.yml").write_text(RULE.replace("whoami.exe", "whoami2.exe"), encoding="utf-8")
    elif change == "pipeline":
        config = RulesConfig(paths=config.paths, placeholders=config.placeholders, pipelines=("sysmon",))
    elif change == "placeholder":
        config = RulesConfig(paths=config.paths, placeholders={"dcs": ["DC02"]})
    elif change == "mapping":
        custom = tmp_path / "mapping.yml"
        custom.write_text(mapping.read_text(encoding="utf-8") + "\n# a site's own copy\n", encoding="utf-8")
        config = RulesConfig(paths=config.paths, placeholders=config.placeholders, mapping=str(custom))
    else:
        (folder / "b.yml").write_text(OTHER, encoding="utf-8")
    ruleset, outcome = _load(config, tmp_path / "cache")
    assert not outcome.hit and outcome.key != first.key
    assert _load(config, tmp_path / "cache")[1].hit  # and the new input is cached in turn
    if change == "placeholder":
        assert "dc02" in repr(ruleset.rules[1].condition)


def test_a_pipeline_yaml_file_is_keyed_by_its_text(tmp_path: Path) -> None:
    pipeline = tmp_path / "pipe.yml"
    body = "name: p\npriority: 10\ntransformations:\n  - type: field_name_mapping\n    mapping: {Image: %s}\n"
    pipeline.write_text(body % "NewProcessName", encoding="utf-8")
    config = RulesConfig(paths=(str(_rules(tmp_path, {"a.yml": RULE})),), pipelines=(str(pipeline),))
    assert not _load(config, tmp_path / "cache")[1].hit
    assert _load(config, tmp_path / "cache")[1].hit
    pipeline.write_text(body % "ProcessImage", encoding="utf-8")
    ruleset, outcome = _load(config, tmp_path / "cache")
    assert not outcome.hit and ruleset.rules[0].fields == frozenset({"ProcessImage"})


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "empty", "other key"])
def test_a_damaged_cache_file_is_rebuilt_not_trusted(tmp_path: Path, damage: str) -> None:
    config = RulesConfig(paths=(str(_rules(tmp_path, {"a.yml": RULE, "b.yml": OTHER})),))
    cold, first = _load(config, tmp_path / "cache")
    [path] = _cache_files(tmp_path / "cache")
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flipped byte":
        path.write_bytes(data[:-10] + bytes([data[-10] ^ 0x40]) + data[-9:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(data.replace(first.key.encode(), b"0" * 64, 1))
    rebuilt, outcome = _load(config, tmp_path / "cache")
    assert not outcome.hit and outcome.reason
    assert rebuilt.rules == cold.rules
    assert path.read_bytes() == data  # written again whole
    assert _load(config, tmp_path / "cache")[1].hit


def _plant(store: RulesetCache, key: str, body: object) -> None:
    payload = zlib.compress(orjson.dumps(body))
    data = cache.MAGIC + b" %d %s\n" % (cache.FORMAT, key.encode()) + cache.hashlib.sha256(payload).hexdigest().encode()
    path = Path(store._path(key))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data + b"\n" + payload)


@pytest.mark.parametrize("entry", [["posix.system", "echo planted"], ["builtins.eval", "1"], ["RuleMeta", "too", "few"]])
def test_a_planted_file_naming_anything_but_engine_data_is_refused(tmp_path: Path, entry: list[str]) -> None:
    # The bucket beside the checkpoints is writable by others: a cache file can only ever
    # make the engine's own dataclasses, from plain values.
    config = RulesConfig(paths=(str(_rules(tmp_path, {"a.yml": RULE})),))
    _, first = _load(config, tmp_path / "cache")
    store = RulesetCache(str(tmp_path / "cache"))
    body = {"rules": [entry], "correlations": [], "rejections": [], "warnings": [], "loaded": 1,
            "filters_applied": 0, "version": "x"}
    _plant(store, first.key, body)
    ruleset, outcome = _load(config, tmp_path / "cache")
    assert not outcome.hit and ("unknown" in outcome.reason or "malformed" in outcome.reason)
    assert len(ruleset.rules) == 1 and ruleset.rules[0].meta.id == "0f6a8c3e-5b8f-4b0e-9a57-2d0c7b1d9e11"


def test_a_pickle_in_place_of_the_cache_is_refused_unread(tmp_path: Path) -> None:
    import pickle

    config = RulesConfig(paths=(str(_rules(tmp_path, {"a.yml": RULE})),))
    _, first = _load(config, tmp_path / "cache")
    [path] = _cache_files(tmp_path / "cache")
    path.write_bytes(pickle.dumps(Ruleset()))
    _, outcome = _load(config, tmp_path / "cache")
    assert not outcome.hit and outcome.reason == "not a ruleset cache file"


def test_cache_off_compiles_every_time(tmp_path: Path) -> None:
    config = RulesConfig(paths=(str(_rules(tmp_path, {"a.yml": RULE})),))
    outcome = CacheOutcome()
    load_rules(config, cache_url="off", outcome=outcome)
    load_rules(config, cache_url="off", outcome=outcome)
    assert not outcome.hit and not list(tmp_path.rglob("*.ruleset"))


@pytest.mark.skipif(not literals._HYPERSCAN, reason="hyperscan not installed")
def test_a_damaged_hyperscan_database_file_is_compiled_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(literals, "_DATABASES", {})
    literals.set_database_cache(tmp_path)
    try:
        words = ["alpha", "beta", "gamma"]
        assert literals.HyperscanLiterals(words).find("xxbetaxx") == {1}
        [path] = list(tmp_path.glob("*.hsdb"))
        data = path.read_bytes()
        path.write_bytes(data[:40] + bytes([data[40] ^ 0xFF]) + data[41:])
        literals._DATABASES.clear()
        assert literals.HyperscanLiterals(words).find("gammaalpha") == {0, 2}
        assert path.read_bytes() == data  # the checksum caught it: compiled and written again
    finally:
        literals.set_database_cache(None)


@pytest.mark.slow
def test_cache_hit_matches_the_cold_load_on_all_rules_and_all_otrf_events(
    tmp_path: Path, sigmahq_ruleset: Ruleset
) -> None:
    config = RulesConfig(paths=tuple(str(p) for p in RULE_DIRS), placeholders=CORPUS_PLACEHOLDERS)
    _load(config, tmp_path / "cache")
    warm, outcome = _load(config, tmp_path / "cache")
    assert outcome.hit and len(warm.rules) == len(sigmahq_ruleset.rules) == 3757
    assert warm.rules == sigmahq_ruleset.rules
    assert (warm.correlations, warm.rejections, warm.warnings) == (
        sigmahq_ruleset.correlations, sigmahq_ruleset.rejections, sigmahq_ruleset.warnings)
    cold_engine, warm_engine = SigmaEngine(sigmahq_ruleset.rules), SigmaEngine(warm.rules)
    events = matched = 0
    for path in otrf_files():
        for record in read_events(path):
            assert record.event is not None
            want = cold_engine.match_positions(record.event)
            assert warm_engine.match_positions(record.event) == want, f"{record.file}:{record.line}"
            events += 1
            matched += len(want)
    assert events == 56_563 and matched > 500


def test_the_cache_sits_beside_the_checkpoints_at_a_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cluster.build import rule_cache_url
    from cluster.config import ModelsConfig

    monkeypatch.delenv("SIGMARAY_RULE_CACHE", raising=False)
    assert rule_cache_url(ModelsConfig(checkpoint_url="memory://bucket/ckpt/")) == "memory://bucket/ckpt/rulesets"
    assert rule_cache_url(ModelsConfig()).endswith("/.cache/sigmaray/rulesets")
    config = RulesConfig(paths=(str(_rules(tmp_path, {"a.yml": RULE})),))
    url = f"memory://bucket-{tmp_path.name}/ckpt/rulesets"
    first, second = CacheOutcome(), CacheOutcome()
    cold = load_rules(config, cache_url=url, outcome=first)
    warm = load_rules(config, cache_url=url, outcome=second)
    assert (first.hit, second.hit) == (False, True) and warm.rules == cold.rules
