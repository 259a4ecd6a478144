"""``regionspot find IMAGE --query "red umbrella,dog" [--checkpoint CKPT]``: every instance of
each named thing in one image, with masks (open-vocabulary detection). Class-agnostic boxes
come from SAM's point grid (or ``--boxes``), are named against the queries, kept above the
threshold and de-duplicated per query (see :meth:`regionspot.predictor.RegionPredictor.find`).

``--threshold`` is find's score filter (it drops low scores from the output and the picture, as
``predict --min-score`` does), so find has no ``--min-score``; ``--max-labels N`` tags only the
N best finds in the picture."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING

from regionspot.cli.arguments import (
    add_overrides_argument,
    add_progress_argument,
    check_output_path,
    positive_int,
    read_boxes,
    unit_interval,
    unit_intervals,
)
from regionspot.cli.model_args import add_model_arguments, load_model_from_args
from regionspot.cli.outputs import (
    add_max_labels_argument,
    check_picture_suffix,
    method_caption,
    write_document,
    write_figures,
)

if TYPE_CHECKING:
    from regionspot.proposals.auto import AutoProposalConfig


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "find", help="find every instance of the named things in one image",
        description="Find every instance of each query in IMAGE: SAM's class-agnostic boxes, named against the "
                    "queries, kept above a threshold, de-duplicated per query; write JSON and a picture.",
    )
    parser.add_argument("image", help="image file (JPEG, PNG, ...)")
    parser.add_argument("--query", required=True,
                        help="names to find: inline 'red umbrella,dog' or a file, one per line")
    add_model_arguments(parser)
    parser.add_argument("--boxes", help="candidate boxes instead of SAM's point grid (as predict --boxes)")
    parser.add_argument("--threshold", type=unit_intervals,
                        help="keep a region for a query scoring at least this: one value, or one per query "
                             "separated by commas, in the order of --query (default: 0.3 for a head's sigmoid "
                             "scores, 0.5 for softmax scores; not calibrated, see the README); find's score filter, "
                             "as predict's --min-score, for the output and the picture")
    parser.add_argument("--nms-iou", type=unit_interval, default=0.5,
                        help="drop a region overlapping a better one of the same query by more than this IoU (of "
                             "boxes, or of masks with --nms mask)")
    parser.add_argument("--max-per-query", type=positive_int, default=100, help="at most this many per query")
    parser.add_argument("--high-recall", action="store_true",
                        help="SAM's candidate boxes with the high-recall preset (32x32 grid, looser thresholds, up "
                             "to 300 boxes): finds more, several times slower on CPU; see docs/benchmarks.md")
    parser.add_argument("--nms", choices=("box", "mask"), default="box",
                        help="de-duplicate by box IoU or by the IoU of the regions' SAM masks")
    parser.add_argument("--points-per-side", type=positive_int,
                        help="SAM's point grid for the candidate boxes (default 16, or 32 with --high-recall; "
                             "denser: more recall, slower)")
    parser.add_argument("--crop-layers", type=positive_int, metavar="N",
                        help="also propose on crops of the image, each encoded on its own (1: four crops): finds "
                             "more small objects, about twice the time; with --high-recall it reached recall@0.5 "
                             "0.79 on 94 COCO photos (docs/benchmarks.md)")
    parser.add_argument("--out", help="write the result here (default: print to stdout)")
    parser.add_argument("--format", choices=("json", "coco"), default="json",
                        help="json: regionspot's document; coco: a COCO results list")
    parser.add_argument("--image-id", type=int, help="image_id for --format coco (default: digits of the file name)")
    parser.add_argument("--viz", help="write a picture of what was found (PNG/JPEG)")
    parser.add_argument("--no-masks", action="store_true", help="skip mask pasting and RLE")
    add_max_labels_argument(parser, attention=False)
    add_overrides_argument(parser, "model config overrides with dotted keys, e.g. --set text.templates=single")
    add_progress_argument(parser)
    parser.set_defaults(handler=run, attention=None, vocab="")


def proposal_config(args: argparse.Namespace) -> AutoProposalConfig:
    """The candidate-box settings: the default or ``--high-recall`` preset, with ``--points-per-side``
    and ``--crop-layers``."""
    from regionspot.proposals.auto import AutoProposalConfig, check_auto_config

    config = AutoProposalConfig.high_recall() if args.high_recall else AutoProposalConfig()
    if args.points_per_side is not None:
        config = dataclasses.replace(config, points_per_side=args.points_per_side)
    if args.crop_layers is not None:
        config = dataclasses.replace(config, crop_layers=args.crop_layers)
    return check_auto_config(config)


def run(args: argparse.Namespace) -> int:
    from regionspot.config import ConfigError
    from regionspot.ops.boxes import validate_boxes
    from regionspot.ops.image import load_image
    from regionspot.vocab import parse_vocabulary, validate_vocabulary

    queries = validate_vocabulary(parse_vocabulary(args.query))
    if isinstance(args.threshold, list) and len(args.threshold) != len(queries):
        raise ConfigError(f"--threshold has {len(args.threshold)} values for {len(queries)} queries; give one value, "
                          "or one per query")
    args.vocab = args.query
    image = load_image(args.image)
    boxes = None
    if args.boxes is not None and (args.high_recall or args.points_per_side is not None
                                   or args.crop_layers is not None):
        raise ConfigError("--high-recall, --points-per-side and --crop-layers set SAM's candidate boxes; with --boxes "
                          "there are none to set")
    if args.boxes is not None:  # fail before loading models
        boxes = validate_boxes(read_boxes(args.boxes), image.shape[:2])
    proposals = proposal_config(args)
    check_picture_suffix("--viz", args.viz)
    for option, path in (("--out", args.out), ("--viz", args.viz)):
        check_output_path(option, path)
    model = load_model_from_args(args, args.overrides)
    predictor = model.predictor()
    predictor.set_image(image)
    found = predictor.find(queries, boxes=boxes, threshold=args.threshold, nms_iou=args.nms_iou,
                           max_per_query=args.max_per_query, with_masks=not args.no_masks,
                           proposals=proposals, nms=args.nms,
                           progress=not args.no_progress)
    description = model.describe()
    write_document(args, found, queries, description)
    counts = {name: int((found.label_ids == index).sum()) for index, name in enumerate(queries)}
    print("found: " + ", ".join(f"{count} {name}" for name, count in counts.items()), file=sys.stderr)
    write_figures(image, found, viz=args.viz, attention=None, caption=method_caption(description),
                  max_labels=args.max_labels)
    return 0
