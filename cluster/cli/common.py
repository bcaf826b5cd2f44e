"""Options shared by the subcommands that load rules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from cluster.config import RulesConfig
from detectors.errors import ConfigError, SigmaRayError
from detectors.loader import Ruleset


def add_rule_options(parser: argparse.ArgumentParser, flag: str | None = "--rules") -> None:
    """--rules (or positional PATH), --pipeline, --placeholder, --placeholders."""
    if flag is None:
        parser.add_argument("paths", nargs="+", metavar="PATH", help="rule files or folders (recursive *.yml)")
    else:
        parser.add_argument(
            flag, dest="paths", action="append", required=True, metavar="PATH",
            help="rule file or folder (recursive *.yml); repeat for more",
        )
    parser.add_argument(
        "--pipeline", action="append", default=[], metavar="NAME",
        help="pySigma processing pipeline: sysmon, windows, or a pipeline YAML file (repeatable; none by default)",
    )
    parser.add_argument(
        "--placeholder", action="append", default=[], metavar="NAME=VALUE",
        help="value for an `expand` placeholder %%NAME%%; repeat a name for a list",
    )
    parser.add_argument(
        "--placeholders", metavar="FILE",
        help="YAML mapping of placeholder name to a value or list of values",
    )


def placeholders_from_args(args: argparse.Namespace) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    if args.placeholders:
        try:
            data: Any = yaml.safe_load(Path(args.placeholders).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read placeholders file {args.placeholders}: {error}") from error
        if not isinstance(data, dict):
            raise ConfigError(f"placeholders file {args.placeholders} must be a mapping of name to values")
        for name, value in data.items():
            values[str(name)] = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    for item in args.placeholder:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--placeholder expects NAME=VALUE, got {item!r}")
        values.setdefault(name, []).append(value)
    return values


def rules_config_from_args(args: argparse.Namespace) -> RulesConfig:
    """The `rules` section of a config, from --rules/--pipeline/--placeholder(s)/--mapping."""
    return RulesConfig(paths=tuple(str(p) for p in args.paths), pipelines=tuple(args.pipeline),
                       placeholders=placeholders_from_args(args), mapping=getattr(args, "mapping", None) or "")


def load_rules_from_args(args: argparse.Namespace) -> Ruleset:
    from cluster.build import load_rules

    return load_rules(rules_config_from_args(args))


def fail(message: str, code: int = 2) -> int:
    print(f"sigmaray: error: {message}", file=sys.stderr)
    return code


def run_guarded(func: Any, args: argparse.Namespace) -> int:
    """Turns the project's own errors into a one-line message and exit code 2."""
    try:
        return int(func(args) or 0)
    except SigmaRayError as error:
        return fail(str(error))
    except BrokenPipeError:
        raise  # the reader went away (`| head`): cli.main ends quietly
    except OSError as error:
        return fail(f"{error.filename or ''}: {error.strerror or error}")
