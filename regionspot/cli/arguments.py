"""Argument helpers shared by every ``regionspot`` subcommand: one grammar for the whole command line.

* argparse types: :func:`positive_int`, :func:`non_negative_int`, :func:`port_number`;
* ``--set KEY=VALUE [KEY=VALUE ...]`` configuration overrides (:func:`add_overrides_argument`), and the
  deprecated positional ``KEY=VALUE`` form some commands still accept
  (:func:`add_legacy_overrides_argument`, merged by :func:`merge_legacy_overrides`);
* ``--no-progress`` (:func:`add_progress_argument`);
* :class:`DefaultsHelpFormatter` / :class:`RegionspotArgumentParser`: every option's help states its default.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import numpy as np

LEGACY_OVERRIDES_NOTE = "note: positional KEY=VALUE overrides are deprecated; use --set KEY=VALUE"


def _bounded_int(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _bounded_int(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _bounded_int(text, 0)


def unit_interval(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def unit_intervals(text: str) -> float | list[float]:
    """argparse type: one number in [0, 1], or several separated by commas (a list)."""
    parts = [part.strip() for part in text.split(",")]
    values = [unit_interval(part) for part in parts]
    return values[0] if len(values) == 1 else values


def port_number(text: str) -> int:
    """argparse type: a TCP port 1..65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {value}")
    return value


def add_overrides_argument(parser: argparse.ArgumentParser, help: str) -> None:  # noqa: A002 (argparse's name)
    """``--set KEY=VALUE [KEY=VALUE ...]`` into ``args.overrides`` (a list, [] when not given; repeatable)."""
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help=help)


def add_progress_argument(parser: argparse.ArgumentParser, *aliases: str,
                          help: str = "no progress bars") -> None:  # noqa: A002 (argparse's name)
    """``--no-progress`` (``args.no_progress``); ``aliases`` are older names for the same flag, e.g. ``--quiet``."""
    parser.add_argument("--no-progress", *aliases, dest="no_progress", action="store_true", help=help)


def add_legacy_overrides_argument(parser: argparse.ArgumentParser) -> None:
    """The deprecated positional ``KEY=VALUE ...`` overrides, into ``args.legacy_overrides`` (hidden from help).

    Add it after the command's other positionals; :func:`merge_legacy_overrides` folds it into
    ``args.overrides`` (``regionspot.cli.main.main`` does so for every command) with a note on stderr.
    """
    parser.add_argument("legacy_overrides", nargs="*", metavar="KEY=VALUE", help=argparse.SUPPRESS)


def merge_legacy_overrides(args: argparse.Namespace, stream: TextIO | None = None) -> None:
    """Move ``args.legacy_overrides`` in front of ``args.overrides`` (so ``--set`` wins), noting the deprecation.

    The note is printed once, and only when positional overrides were given.
    """
    legacy = getattr(args, "legacy_overrides", None) or []
    if legacy:
        print(LEGACY_OVERRIDES_NOTE, file=stream or sys.stderr)
        args.overrides = [*legacy, *(getattr(args, "overrides", None) or [])]
    args.legacy_overrides = []


def has_default(action: argparse.Action) -> bool:
    """Whether the help of ``action`` should state its default: a meaningful value on a valued option.

    Flags (``store_true`` and the like), ``None``, ``False``, empty lists and ``SUPPRESS`` have none to state;
    required positionals neither.
    """
    default: Any = action.default
    if default is None or default is False or default is argparse.SUPPRESS:
        return False
    if isinstance(default, (list, tuple, dict, set)) and not default:
        return False
    if action.nargs == 0:  # store_true/store_false/store_const/count-like flags
        return False
    return bool(action.option_strings) or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends `` (default: X)`` to an option's help unless the help already mentions its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if has_default(action) and "default" not in text.lower():
            text += " (default: %(default)s)"
        return text


class RegionspotArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser using :class:`DefaultsHelpFormatter` unless told otherwise.

    Subparsers inherit the parser class of their parent (``add_subparsers`` defaults ``parser_class`` to
    ``type(self)``), so every subcommand and nested subcommand of a ``RegionspotArgumentParser`` gets the
    formatter without its module having to remember it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def check_output_path(option: str, path: str | None, *, folder: bool = False) -> None:
    """Fail before any work is done when ``path`` cannot be written: a file name that is an
    existing folder (or, with ``folder``, a folder name that is an existing file), or a place
    under a file or in a folder this user may not write. Raises ConfigError naming the option."""
    from regionspot.config import ConfigError

    if not path:
        return
    target = Path(path)
    if folder and target.exists() and not target.is_dir():
        raise ConfigError(f"{option} {path} is a file; give a folder")
    if not folder and target.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name")
    ancestor = target.parent if not folder else target
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{option} {path}: {ancestor} is a file, so nothing can be written under it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: this user may not write in {ancestor}")


def read_boxes(spec: str) -> np.ndarray:
    """Boxes from a JSON file path or inline text (see ``predict --boxes``) -> float [R, 4]."""
    import json

    import numpy as np

    from regionspot.ops.boxes import BoxError, as_box_array, parse_boxes_text

    path = Path(spec)
    if path.suffix.lower() == ".json" or path.is_file():
        if not path.is_file():
            raise BoxError(f"boxes file not found: {path}")
        try:
            data: Any = json.loads(path.read_text())
        except (ValueError, RecursionError) as exc:  # also integers of over 4300 digits, and non-UTF-8 text
            raise BoxError(f"{path} is not valid JSON: {str(exc)[:200]}") from None
        if isinstance(data, dict):
            data = data.get("boxes")
        if not isinstance(data, list):
            raise BoxError(f"{path} must hold a list of [x1, y1, x2, y2] or {{\"boxes\": [...]}}")
        return as_box_array(data) if data else np.zeros((0, 4))
    return parse_boxes_text(spec)
