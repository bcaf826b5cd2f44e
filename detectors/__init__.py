r"""Sigma rules in, matching rules out: load rules, build an engine, match events.

Quick start, with a rule given as text (a folder of rule files works the same way, below):

>>> import detectors
>>> rule = '''
... title: Whoami run
... id: 0f6a8c3e-5b8f-4b0e-9a57-2d0c7b1d9e11
... status: test
... level: medium
... logsource: {product: windows, category: process_creation}
... detection:
...     selection: {Image|endswith: '\\whoami.exe'}
...     condition: selection
... '''
>>> ruleset = detectors.load_ruleset([detectors.RuleSource("whoami.yml", rule)])
>>> ruleset.summary()
{'loaded': 1, 'compiled': 1, 'rejected': [], 'warnings': []}
>>> engine = detectors.SigmaEngine(ruleset.rules)

`match` returns the metadata of the rules that fire, in rule order. Matching follows Sigma:
plain values ignore case.

>>> event = {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1,
...          "Image": "C:\\Windows\\System32\\WHOAMI.EXE"}
>>> [(meta.title, meta.level) for meta in engine.match(event)]
[('Whoami run', 'medium')]

A rule only sees the events of its logsource. `LogsourceMapping.default()`, which the engine
uses unless given another (`SigmaEngine(rules, mapping=LogsourceMapping.from_yaml(path))`),
places Windows events by `Channel` and `EventID`: this one is in the `sysmon` service and,
within it, the `process_creation` category, so rules of either see it. An event it cannot
place reaches no rule:

>>> route = detectors.LogsourceMapping.default().route(event)
>>> [(ls.category, ls.service) for ls in sorted(route.logsources, key=lambda ls: ls.sort_key())]
[(None, 'sysmon'), ('process_creation', 'sysmon')]
>>> engine.match({"Image": "C:\\Windows\\System32\\whoami.exe"})
[]

A rule that cannot be loaded becomes a `Rejection` with its path and reason; the others load:

>>> mixed = detectors.load_ruleset([detectors.RuleSource("whoami.yml", rule),
...                                  detectors.RuleSource("broken.yml", "title: [unclosed")])
>>> len(mixed.rules), [(r.path, r.reason.split(":")[0]) for r in mixed.rejections]
(1, [('broken.yml', 'invalid YAML')])

Rule files and folders (`.yml`/`.yaml` below a folder) load with `load_rules_from_paths`; a
file that cannot be read is a rejection too, a path that does not exist raises a
`SigmaRayError` (the root of every error this package raises on purpose):

>>> import pathlib, tempfile
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "whoami.yml").write_text(rule, encoding="utf-8")
>>> [meta.id for meta in detectors.SigmaEngine(detectors.load_rules_from_paths([folder]).rules).match(event)]
['0f6a8c3e-5b8f-4b0e-9a57-2d0c7b1d9e11']
>>> try:
...     detectors.load_rules_from_paths([folder / "missing"])
... except detectors.SigmaRayError as error:
...     print(type(error).__name__)
ConfigError

Loading installs byte-exact `wide`/`utf16*`/`base64*` modifiers in pySigma's process-wide
table (`register_modifiers`); importing this package changes nothing in pySigma.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detectors.encodings import register_modifiers
    from detectors.engine import SigmaEngine
    from detectors.errors import SigmaRayError
    from detectors.ir import RuleMeta
    from detectors.loader import load_ruleset
    from detectors.routing import LogsourceMapping
    from detectors.rulefiles import load_rules_from_paths
    from detectors.ruleset import Rejection, Ruleset, RuleSource

# Imported on first use: importing pySigma costs ~0.2 s, and a load from the compiled-ruleset
# cache (detectors.cache) never needs it.
_EXPORTS = {
    "LogsourceMapping": "detectors.routing",
    "Rejection": "detectors.ruleset",
    "RuleMeta": "detectors.ir",
    "RuleSource": "detectors.ruleset",
    "Ruleset": "detectors.ruleset",
    "SigmaEngine": "detectors.engine",
    "SigmaRayError": "detectors.errors",
    "load_rules_from_paths": "detectors.rulefiles",
    "load_ruleset": "detectors.loader",
    "register_modifiers": "detectors.encodings",
}

__all__ = [
    "LogsourceMapping",
    "Rejection",
    "RuleMeta",
    "RuleSource",
    "Ruleset",
    "SigmaEngine",
    "SigmaRayError",
    "load_rules_from_paths",
    "load_ruleset",
    "register_modifiers",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'detectors' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
