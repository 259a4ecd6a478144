"""``regionspot`` command line: ``predict``, ``info``, ``bench``, ``train``, ``eval``, ``serve``, ...

User mistakes (bad boxes, vocabulary, image, checkpoint or config) end with a one-line
``error: ...`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

EXIT_USER_ERROR = 2


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the user gave something wrong", reported without traceback."""
    from regionspot.backbones.loading import BackboneLoadError
    from regionspot.cache.shards import CacheError
    from regionspot.config import ConfigError
    from regionspot.datasets.coco_format import DatasetError
    from regionspot.weights import CheckpointError
    from regionspot.ops.boxes import BoxError
    from regionspot.ops.image import ImageLoadError
    from regionspot.vocab import VocabularyError

    return (BackboneLoadError, BoxError, CacheError, CheckpointError, ConfigError, DatasetError, ImageLoadError,
            VocabularyError, FileNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    from regionspot import __version__
    from regionspot.cli import (bench_cmd, convert_cmd, convert_official_cmd, eval_cmd, extract_cmd, info_cmd,
                                predict_batch_cmd, predict_cmd, serve_cmd, train_cmd)

    parser = argparse.ArgumentParser(
        prog="regionspot",
        description="Open-world region recognition: name any box of an image against any vocabulary.",
    )
    parser.add_argument("--version", action="version", version=f"regionspot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (predict_cmd, predict_batch_cmd, info_cmd, bench_cmd, train_cmd, eval_cmd, convert_cmd,
                   convert_official_cmd, extract_cmd, serve_cmd):
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also come after options (argparse stops positionals at the first one)
    if extra and isinstance(getattr(args, "overrides", None), list) and \
            all("=" in item and not item.startswith("-") for item in extra):
        args.overrides.extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except user_error_types() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
