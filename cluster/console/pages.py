"""Rendering: the Jinja2 environment (autoescape on for every template, whatever its name) and its
filters. Events are attacker-controlled: nothing here marks a value safe except chart markup."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jinja2
import orjson

from cluster.console import charts
from cluster.console.templates import TEMPLATES

__all__ = ["NAV", "render"]

NAV = [("/", "Alert queue"), ("/entities", "Entity risk"), ("/attack", "ATT&CK"), ("/rules", "Rules"),
       ("/cluster", "Cluster")]
MAX_SHOWN = 4000  # characters of one event field shown (the rest is cut with a marker)


def when(ms: Any) -> str:
    if not isinstance(ms, int | float) or isinstance(ms, bool) or ms <= 0:
        return "-"
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "-"


def show(value: Any) -> str:
    """An event value as text (escaped later by autoescape), cut to MAX_SHOWN characters."""
    text = value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode(
        "utf-8", "replace") if not isinstance(value, bytes) else value.decode("utf-8", "replace")
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN]}… ({len(text) - MAX_SHOWN} more characters)"


def pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.DictLoader(TEMPLATES), autoescape=True, undefined=jinja2.ChainableUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=when, show=show, pretty=pretty)
    env.globals.update(nav=NAV, bar=charts.bar)
    return env


ENV = _environment()


def render(name: str, **context: Any) -> str:
    return ENV.get_template(name).render(**context)
