"""``regionspot predict IMAGE --boxes BOXES|auto | --points CLICKS [--point-labels L] | --masks FILE --vocab NAMES``:
without a checkpoint the zero-shot recognizer answers (CLIP on SAM-mask crops); every output names
the method that made it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from regionspot.cli.arguments import (
    add_overrides_argument,
    add_progress_argument,
    check_output_path,
    positive_int,
    read_boxes,
)
from regionspot.cli.model_args import add_model_arguments, load_model_from_args
from regionspot.cli.outputs import (
    add_max_labels_argument,
    add_min_score_argument,
    check_picture_suffix,
    keep_min_score,
    method_caption,
    write_document,
    write_figures,
)
from regionspot.cli.region_masks import read_region_masks
from regionspot.ops.boxes import BoxError, validate_boxes
from regionspot.ops.prompts import ClickRegions, PromptError, as_point_prompts, parse_points_text


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict", help="name the given regions (boxes, clicks or masks) of one image",
        description="Name each region of IMAGE against a vocabulary; write JSON (or COCO results) and a picture.",
    )
    parser.add_argument("image", help="image file (JPEG, PNG, ...)")
    regions = parser.add_mutually_exclusive_group(required=True)
    regions.add_argument("--boxes",
                         help="boxes xyxy in pixels: inline 'x1,y1,x2,y2;x1,y1,x2,y2', a JSON file "
                              "(a list of [x1,y1,x2,y2], or {\"boxes\": [...]}), or auto (class-agnostic "
                              "boxes from SAM's point grid)")
    regions.add_argument("--points",
                         help="clicks in pixels, 'x,y;x,y': each names the object under it (SAM's best mask for "
                              "the click, recognised from the mask's tight box); join the clicks of one region "
                              "with +: '320,240+350,260;100,80' is two regions, the first clicked twice")
    regions.add_argument("--masks", metavar="PATH",
                         help="masks at the image's size: a PNG (a binary mask, or a label image: each distinct "
                              "non-zero value, or non-black colour, one region), a .npy label image [H, W] or masks "
                              "[R, H, W], or a .json COCO RLE mask or list of them (as --out writes); each region "
                              "is recognised from its mask's tight box and keeps its mask")
    parser.add_argument("--point-labels", metavar="LABELS",
                        help="with --points: 1 (foreground) or 0 (background: not this) per click, nested as the "
                             "points, e.g. '1+0;1' (default: all 1)")
    parser.add_argument("--vocab", required=True,
                        help="names: inline 'cat,dog', a file with one name per line, or lvis|coco|objects365")
    add_model_arguments(parser)
    parser.add_argument("--out", help="write the result here (default: print to stdout)")
    parser.add_argument("--format", choices=("json", "coco"), default="json",
                        help="json: regionspot's document; coco: a COCO results list")
    parser.add_argument("--viz", help="write a picture of the result (PNG/JPEG)")
    parser.add_argument("--attention", metavar="PATH",
                        help="write a figure of each region's cross-attention map over the image (PNG/JPEG; "
                             "needs the CLIP vision tower)")
    parser.add_argument("--topk", type=positive_int, default=5, help="(label, score) pairs per box (default 5)")
    parser.add_argument("--no-masks", action="store_true", help="skip mask pasting and RLE")
    parser.add_argument("--image-id", type=int, help="image_id for --format coco (default: digits of the file name)")
    parser.add_argument("--max-boxes", type=positive_int, default=20,
                        help="with --boxes auto: name the best N proposals")
    add_min_score_argument(parser)
    add_max_labels_argument(parser, attention=True)
    add_overrides_argument(parser, "model config overrides with dotted keys, e.g. --set sam.name_or_path=/local/sam "
                                   "text.templates=single")
    add_progress_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from regionspot.config import ConfigError
    from regionspot.ops.image import load_image
    from regionspot.vocab import parse_vocabulary, validate_vocabulary

    names = validate_vocabulary(parse_vocabulary(args.vocab))
    image = load_image(args.image)
    boxes, clicks, masks = given_regions(args, image.shape[:2])  # fail before loading models
    for option, path in (("--viz", args.viz), ("--attention", args.attention)):
        check_picture_suffix(option, path)
    for option, path in (("--out", args.out), ("--viz", args.viz), ("--attention", args.attention)):
        check_output_path(option, path)  # before any model work, not after it
    model = load_model_from_args(args, args.overrides)
    if args.attention and not model.has_attention:
        raise ConfigError(f"--attention needs a RegionSpot head with the CLIP vision tower; {model.method} has "
                          "no attention maps" + (" (clip.enabled=false)" if model.method == "regionspot" else ""))
    predictor = model.predictor()
    predictor.set_image(image)
    if boxes is None and clicks is None and masks is None:
        boxes = auto_boxes(predictor, args.max_boxes)
    result = predictor.predict(boxes=boxes, vocabulary=names, topk=args.topk, with_masks=not args.no_masks,
                               with_attention=bool(args.attention), masks=masks,
                               points=None if clicks is None else clicks.points,
                               point_labels=None if clicks is None else clicks.labels)
    named = len(result)
    result = keep_min_score(result, args.min_score)
    if len(result) < named:
        print(f"--min-score {args.min_score:g}: kept {len(result)} of {named} regions", file=sys.stderr)
    description = model.describe()
    write_document(args, result, names, description)
    for box, label, score in zip(result.boxes, result.labels, result.scores, strict=True):
        print(f"  [{', '.join(f'{v:.0f}' for v in box)}]  {label}  {score:.3f}", file=sys.stderr)
    write_figures(image, result, viz=args.viz, attention=args.attention, caption=method_caption(description),
                  max_labels=args.max_labels)
    return 0


Regions = tuple[np.ndarray | None, ClickRegions | None, np.ndarray | None]


def given_regions(args: argparse.Namespace, image_size: tuple[int, int]) -> Regions:
    """(boxes float [R, 4], clicks, masks bool [R, H, W]) of ``--boxes``, ``--points``
    or ``--masks``, checked against the image's ``(H, W)``: one of them is set, or none for
    ``--boxes auto`` (the proposals need the model)."""
    if args.point_labels is not None and args.points is None:
        raise PromptError("--point-labels needs --points")
    if args.points is not None:
        return None, as_point_prompts(*parse_points_text(args.points, args.point_labels), image_size), None
    if args.masks is not None:
        return None, None, read_region_masks(args.masks, image_size)
    if args.boxes.strip().lower() == "auto":
        return None, None, None
    return validate_boxes(read_boxes(args.boxes), image_size), None, None


def auto_boxes(predictor: Any, max_boxes: int) -> np.ndarray:
    """The best ``max_boxes`` class-agnostic boxes of the predictor's image (SAM's point grid)."""
    from regionspot.proposals.auto import AutoProposalConfig

    proposals = predictor.propose(AutoProposalConfig(max_proposals=max_boxes))
    if not len(proposals.boxes):
        raise BoxError("--boxes auto found no object in this image; give boxes")
    print(f"--boxes auto: {len(proposals.boxes)} proposals from SAM's point grid", file=sys.stderr)
    return np.asarray(proposals.boxes, dtype=np.float64)
