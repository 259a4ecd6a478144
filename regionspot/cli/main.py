"""``regionspot`` command line: ``predict``, ``info``, ``bench``, ``train``, ``eval``, ``serve``, ...

User mistakes (bad boxes, vocabulary, image, checkpoint or config) end with a one-line
``error: ...`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

EXIT_USER_ERROR = 2


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the user gave something wrong", reported without traceback."""
    from regionspot.backbones.loading import BackboneLoadError
    from regionspot.cache.shards import CacheError
    from regionspot.config import ConfigError
    from regionspot.datasets.coco_format import DatasetError
    from regionspot.devices import DeviceError
    from regionspot.ops.boxes import BoxError
    from regionspot.ops.image import ImageLoadError
    from regionspot.processes import LaunchError
    from regionspot.train.errors import TrainingError
    from regionspot.vocab import VocabularyError
    from regionspot.weights import CheckpointError

    return (BackboneLoadError, BoxError, CacheError, CheckpointError, ConfigError, DatasetError, DeviceError,
            ImageLoadError, LaunchError, TrainingError, VocabularyError, FileNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    """The ``regionspot`` parser; every (nested) subcommand parser states option defaults in its help."""
    from regionspot import __version__
    from regionspot.cli import (
        bench_cmd,
        convert_cmd,
        convert_official_cmd,
        download_cmd,
        eval_cmd,
        export_cmd,
        extract_cmd,
        find_cmd,
        info_cmd,
        predict_batch_cmd,
        predict_cmd,
        serve_cmd,
        train_cmd,
    )
    from regionspot.cli.arguments import RegionspotArgumentParser

    parser = RegionspotArgumentParser(
        prog="regionspot",
        description="Open-world region recognition: name any box of an image against any vocabulary.",
    )
    parser.add_argument("--version", action="version", version=f"regionspot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (predict_cmd, find_cmd, predict_batch_cmd, info_cmd, bench_cmd, train_cmd, eval_cmd, convert_cmd,
                   convert_official_cmd, extract_cmd, export_cmd, serve_cmd, download_cmd):
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from regionspot.cli.arguments import merge_legacy_overrides

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # deprecated positional key=value overrides may also come after options (argparse stops positionals at the
    # first option); commands that still accept them have ``legacy_overrides`` (regionspot.cli.arguments)
    legacy = getattr(args, "legacy_overrides", None)
    if extra and isinstance(legacy, list) and all("=" in item and not item.startswith("-") for item in extra):
        legacy.extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    merge_legacy_overrides(args)
    handler: Callable[[argparse.Namespace], int] = args.handler
    with progress_bars(not getattr(args, "no_progress", False)):
        try:
            return handler(args)
        except user_error_types() as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130


@contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """``--no-progress``: switch off every progress bar for the duration of the command: ours
    (given the flag, or reading ``TQDM_DISABLE`` when they start), the Hugging Face Hub's
    downloads, and those of processes started meanwhile (tqdm reads ``TQDM_DISABLE`` on import)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    previous = os.environ.get("TQDM_DISABLE")
    hub_was_quiet = are_progress_bars_disabled()
    if not enabled:
        os.environ["TQDM_DISABLE"] = "1"
        disable_progress_bars()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous
        if not enabled and not hub_was_quiet:
            enable_progress_bars()


if __name__ == "__main__":
    sys.exit(main())
