"""One command-line grammar: shared argument types, ``--set KEY=VALUE``, ``--no-progress`` and help texts
that state every option's default (``regionspot.cli.arguments``)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from regionspot.cli.arguments import (
    LEGACY_OVERRIDES_NOTE,
    DefaultsHelpFormatter,
    add_overrides_argument,
    add_progress_argument,
    has_default,
    non_negative_int,
    port_number,
    positive_int,
)
from regionspot.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "tiny_coco_sample.yaml"


def all_parsers(parser: argparse.ArgumentParser,
                name: str = "regionspot") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The parser and every (nested) subcommand parser under it, with its command line name."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, child in action.choices.items():
                yield from all_parsers(child, f"{name} {command}")


def action_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text of one option as ``--help`` prints it, unwrapped."""
    formatter = parser.formatter_class(prog=parser.prog, width=100_000)
    formatter.add_argument(action)
    return " ".join(formatter.format_help().split())


PARSERS = dict(all_parsers(build_parser()))


def test_every_command_is_reached() -> None:
    for command in ("predict", "predict-batch", "info", "bench predict", "bench train", "train", "eval",
                    "convert openimages", "convert check", "convert-official", "extract-tokens", "serve"):
        assert f"regionspot {command}" in PARSERS


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_states_every_default(name: str, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "100000")  # no wrapping (argparse wraps at hyphens of long defaults)
    parser = PARSERS[name]
    assert parser.formatter_class is DefaultsHelpFormatter, f"{name} does not use the shared help formatter"
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if not has_default(action) or action.help == argparse.SUPPRESS:
            continue
        help_text = action_help(parser, action)
        assert "default" in help_text.lower(), f"{name}: {action.option_strings or action.dest} hides its default"
        if isinstance(action.default, (int, float, str)) and not isinstance(action.default, bool):
            assert str(action.default) in help_text, f"{name}: {action.option_strings} says another default"
        assert help_text in text  # and --help prints it


def test_formatter_appends_defaults_only_where_useful() -> None:
    parser = argparse.ArgumentParser(prog="x", formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--size", type=int, default=32, help="images per shard")
    parser.add_argument("--port", type=int, default=80, help="port (default 80)")
    parser.add_argument("--name", help="a name")
    parser.add_argument("--fast", action="store_true", help="go fast")
    parser.add_argument("--slow", action="store_false", help="go slow")
    add_overrides_argument(parser, help="overrides")
    text = " ".join(parser.format_help().split())
    assert "images per shard (default: 32)" in text
    assert "port (default 80)" in text and "(default: 80)" not in text
    for bare in ("a name", "go fast", "go slow", "overrides"):
        assert f"{bare} (default" not in text


def test_set_collects_key_values() -> None:
    parser = argparse.ArgumentParser()
    add_overrides_argument(parser, help="overrides")
    add_progress_argument(parser, "--quiet")
    assert parser.parse_args([]).overrides == [] and not parser.parse_args([]).no_progress
    args = parser.parse_args(["--set", "a.b=1", "c=x y", "--quiet", "--set", "d=2"])
    assert args.overrides == ["a.b=1", "c=x y", "d=2"] and args.no_progress
    with pytest.raises(SystemExit):
        parser.parse_args(["--set"])


@pytest.mark.parametrize(("kind", "text", "value"), [
    (positive_int, "3", 3), (non_negative_int, "0", 0), (port_number, "65535", 65535),
])
def test_integer_types_accept(kind, text: str, value: int) -> None:
    assert kind(text) == value


@pytest.mark.parametrize(("kind", "text", "message"), [
    (positive_int, "0", "at least 1"), (non_negative_int, "-1", "at least 0"), (positive_int, "x", "not an integer"),
    (port_number, "65536", "at most 65535"), (port_number, "0", "at least 1"),
])
def test_integer_types_reject(kind, text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        kind(text)


@pytest.mark.parametrize("command", [["convert", "check", "ann.json"], ["convert", "openimages", "--boxes", "b",
                                     "--classes", "c", "--images", "i", "--out", "o"]])
def test_convert_quiet_is_an_alias_of_no_progress(command: list[str]) -> None:
    parser = build_parser()
    assert parser.parse_args([*command, "--quiet"]).no_progress
    assert parser.parse_args([*command, "--no-progress"]).no_progress
    assert not parser.parse_args(command).no_progress


@pytest.fixture
def trained_configs(monkeypatch) -> list:
    """Runs ``regionspot train`` up to the Trainer, recording the config it gets instead of training."""
    import torch

    import regionspot.train.trainer as trainer
    from regionspot import processes
    from regionspot.processes import DistributedContext

    seen: list = []

    class FakeTrainer:
        def __init__(self, config, ctx, resume: bool = False, progress: bool = True) -> None:
            seen.append(config)

        def run(self) -> None:
            return None

    context = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)
    monkeypatch.setattr(trainer, "Trainer", FakeTrainer)
    monkeypatch.setattr(processes, "init_distributed", lambda *args, **kwargs: context)
    return seen


@pytest.mark.parametrize(("argv", "note"), [
    (["--set", "iterations=7", "optim.lr=0.01"], False),
    (["iterations=7", "optim.lr=0.01"], True),  # deprecated positional form
    (["iterations=7", "--no-progress", "optim.lr=0.01"], True),  # ... also after options
    (["iterations=3", "optim.lr=0.01", "--set", "iterations=7"], True),  # --set wins
])
def test_train_overrides_reach_the_config(trained_configs: list, capsys, argv: list[str], note: bool) -> None:
    assert main(["train", str(TINY_CONFIG), *argv]) == 0
    (config,) = trained_configs
    assert config.iterations == 7 and config.optim.lr == pytest.approx(0.01)
    err = capsys.readouterr().err
    assert err.count(LEGACY_OVERRIDES_NOTE) == (1 if note else 0)


def test_train_rejects_stray_arguments(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", str(TINY_CONFIG), "--no-progress", "stray"])
    assert "unrecognized arguments: stray" in capsys.readouterr().err
