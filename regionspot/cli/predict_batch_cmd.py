"""``regionspot predict-batch --images DIR | --data ANN.json --boxes gt|auto|PROPOSALS.json
--vocab V [--checkpoint CKPT] --out results.json``: name the regions of many images, also under
``torchrun`` (images split across processes, one output written by rank 0).

A folder has no ground-truth boxes, so its boxes come from ``auto`` proposals or a proposals
file. ``--format coco`` writes a COCO results list (each image's best (box, category) pairs, as
an evaluation keeps them); ``--format json`` one ``regionspot predict`` document per image.
``--min-score S`` drops what scores under ``S`` from the output (COCO pairs, or a document's
regions); there are no pictures, so there is no ``--max-labels``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from regionspot.cli.arguments import check_output_path, positive_int
from regionspot.cli.dataset_args import add_run_options, config_from_args
from regionspot.cli.outputs import add_min_score_argument


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict-batch", help="name the regions of a folder of images or of a COCO dataset",
        description="Run RegionSpot (or a CLIP crop baseline) over a folder of images (--images) or a COCO/LVIS "
                    "annotation's images (--data) with boxes from the annotation (gt), SAM proposals (auto) or "
                    "a detector's proposals file, and write one JSON file. Under torchrun the images are split "
                    "across processes.",
    )
    parser.add_argument("--data", help="COCO/LVIS annotation JSON (its images, boxes and categories)")
    parser.add_argument("--out", required=True, help="output JSON file")
    parser.add_argument("--format", choices=("coco", "json"), default="coco",
                        help="coco: a COCO results list (default); json: one regionspot document per image")
    parser.add_argument("--masks", action="store_true", default=None, help="SAM masks as RLE in the output")
    parser.add_argument("--topk", type=positive_int, metavar="K",
                        help="categories per box (json default 5; coco default: as --pairs-per-box)")
    parser.add_argument("--pairs-per-image", type=positive_int, metavar="N",
                        help="coco format: (box, category) pairs kept per image (default 900)")
    add_min_score_argument(parser, help="drop what scores under S, a number in [0, 1], from the output: coco: the "
                                        "(box, category) pairs under S; json: the regions whose top-1 score is "
                                        "under S (default: keep all)")
    add_run_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from regionspot.eval.batch_predict import run_batch_prediction
    from regionspot.processes import init_distributed, shutdown

    if args.topk is not None:
        args.pairs_per_box = args.topk
    elif args.format == "json" and args.pairs_per_box is None:
        args.pairs_per_box = 5
    check_output_path("--out", args.out)
    config = config_from_args(args)
    if config.annotations is None and args.boxes is None and config.boxes == "gt":
        config.boxes = "auto"  # a folder has no ground truth
    ctx = init_distributed(args.device, command="predict-batch")
    try:
        run_batch_prediction(config, Path(args.out), output_format=args.format, ctx=ctx, progress=not args.no_progress,
                             min_score=args.min_score)
    finally:
        shutdown(ctx)
    return 0
