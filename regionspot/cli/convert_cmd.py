"""``regionspot convert``: make and check the COCO-format datasets training reads.

* ``convert openimages --boxes CSV --classes CSV --images DIR --out OUT.json``
* ``convert check ANN.json [--images DIR] [--sizes] [--json]`` (exit 1 when it finds problems)

Both print progress lines on stderr unless ``--no-progress`` (alias ``--quiet``) is given.

Bad inputs raise :class:`~regionspot.datasets.coco_format.DatasetError`: ``error: ...``, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from regionspot.cli.arguments import add_progress_argument


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "convert", help="convert datasets to COCO format and check them",
        description="Convert OpenImages box annotations to COCO format, or check a "
                    "COCO-format dataset (LVIS, Objects365, V3Det, ...) before training on it.",
    )
    kinds = parser.add_subparsers(dest="convert_kind", required=True, metavar="KIND")

    openimages = kinds.add_parser("openimages", help="OpenImages V6/V7 box CSV -> COCO JSON",
                                  description="Stream an OpenImages *-annotations-bbox.csv into a COCO JSON. "
                                              "Image sizes come from the image files' headers; images "
                                              "missing from --images are reported and skipped.")
    openimages.add_argument("--boxes", required=True, help="the *-annotations-bbox.csv file")
    openimages.add_argument("--classes", required=True, help="class-descriptions-boxable.csv (MID,name)")
    openimages.add_argument("--images", required=True, help="folder of <ImageID>.jpg files")
    openimages.add_argument("--out", required=True, help="output COCO JSON")
    add_progress_argument(openimages, "--quiet", help="no progress lines")
    openimages.set_defaults(handler=run_openimages)

    check = kinds.add_parser("check", help="report on a COCO-format annotation file",
                             description="Counts, crowd and degenerate boxes, unknown ids, category names "
                                         "after cleaning, and (with --images) missing image files. "
                                         "Exit status 1 when problems are found.")
    check.add_argument("annotations", help="COCO-format JSON")
    check.add_argument("--images", help="image folder; check that every image file exists")
    check.add_argument("--sizes", action="store_true", help="with --images: also compare each file's size")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    add_progress_argument(check, "--quiet", help="no progress lines")
    check.set_defaults(handler=run_check)


class _Progress:
    """Progress lines on stderr, at most one every ``interval`` seconds."""

    def __init__(self, quiet: bool, interval: float = 5.0) -> None:
        self.quiet, self.interval = quiet, interval
        self.start = self.last = time.monotonic()

    def __call__(self, text: str) -> None:
        now = time.monotonic()
        if not self.quiet and now - self.last >= self.interval:
            self.last = now
            print(f"  [{now - self.start:6.0f}s] {text}", file=sys.stderr, flush=True)


def run_openimages(args: argparse.Namespace) -> int:
    from regionspot.datasets.openimages import convert_openimages

    ticker = _Progress(args.no_progress)
    report = convert_openimages(
        args.boxes, args.classes, args.images, args.out, progress_every=100_000,
        progress=lambda r: ticker(f"{r.rows:,} rows, {r.images:,} images, {r.annotations:,} boxes"),
    )
    for line in report.lines():
        print(line, file=sys.stderr)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def run_check(args: argparse.Namespace) -> int:
    from regionspot.datasets.coco_format import DatasetError
    from regionspot.datasets.convert import check_coco

    if args.sizes and not args.images:
        raise DatasetError("convert check: --sizes needs --images")
    ticker = _Progress(args.no_progress)
    report = check_coco(args.annotations, args.images, check_sizes=args.sizes,
                        progress=lambda stage, done, total: ticker(f"{stage}: {done:,} / {total:,}"))
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print("\n".join(report.lines()))
    return 1 if report.problems() else 0
