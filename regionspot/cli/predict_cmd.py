"""``regionspot predict IMAGE --boxes BOXES|auto | --points CLICKS --vocab NAMES [--checkpoint CKPT]``: without a
checkpoint the zero-shot recognizer answers (CLIP on SAM-mask crops); every output names the
method that made it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from regionspot.cli.arguments import add_overrides_argument, add_progress_argument, check_output_path, positive_int
from regionspot.cli.model_args import add_model_arguments, load_model_from_args
from regionspot.ops.boxes import BoxError, as_box_array, parse_boxes_text, validate_boxes
from regionspot.ops.prompts import as_point_prompts, parse_points_text

if TYPE_CHECKING:
    from regionspot.results import RegionResult


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "predict", help="name the given boxes of one image",
        description="Name each box of IMAGE against a vocabulary; write JSON (or COCO results) and a picture.",
    )
    parser.add_argument("image", help="image file (JPEG, PNG, ...)")
    regions = parser.add_mutually_exclusive_group(required=True)
    regions.add_argument("--boxes",
                         help="boxes xyxy in pixels: inline 'x1,y1,x2,y2;x1,y1,x2,y2', a JSON file "
                              "(a list of [x1,y1,x2,y2], or {\"boxes\": [...]}), or auto (class-agnostic "
                              "boxes from SAM's point grid)")
    regions.add_argument("--points",
                         help="clicks in pixels, 'x,y;x,y': each names the object under it (SAM's best mask for "
                              "the click, recognised from the mask's tight box)")
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
    add_overrides_argument(parser, "model config overrides with dotted keys, e.g. --set sam.name_or_path=/local/sam "
                                   "text.templates=single")
    add_progress_argument(parser)
    parser.set_defaults(handler=run)


def read_boxes(spec: str) -> np.ndarray:
    """Boxes from a JSON file path or inline text (see ``--boxes``) -> float [R, 4]."""
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


def default_image_id(image_path: str) -> int:
    digits = "".join(ch for ch in Path(image_path).stem if ch.isdigit())
    return int(digits) if digits else 0


def run(args: argparse.Namespace) -> int:
    from regionspot.config import ConfigError
    from regionspot.ops.image import load_image
    from regionspot.vocab import parse_vocabulary, validate_vocabulary

    names = validate_vocabulary(parse_vocabulary(args.vocab))
    image = load_image(args.image)
    auto = args.boxes is not None and args.boxes.strip().lower() == "auto"
    clicks = None
    if args.points is not None:  # fail before loading models
        clicks, _ = as_point_prompts(parse_points_text(args.points), None, image.shape[:2])
    boxes = None if auto or clicks is not None else validate_boxes(read_boxes(args.boxes), image.shape[:2])
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
    if boxes is None and clicks is None:
        boxes = auto_boxes(predictor, args.max_boxes)
    result = predictor.predict(boxes=boxes, vocabulary=names, topk=args.topk, with_masks=not args.no_masks,
                               with_attention=bool(args.attention), points=clicks)
    description = model.describe()
    write_document(args, result, names, description)
    for box, label, score in zip(result.boxes, result.labels, result.scores, strict=True):
        print(f"  [{', '.join(f'{v:.0f}' for v in box)}]  {label}  {score:.3f}", file=sys.stderr)
    write_figures(image, result, viz=args.viz, attention=args.attention, caption=method_caption(description))
    return 0


def auto_boxes(predictor: Any, max_boxes: int) -> np.ndarray:
    """The best ``max_boxes`` class-agnostic boxes of the predictor's image (SAM's point grid)."""
    from regionspot.proposals.auto import AutoProposalConfig

    proposals = predictor.propose(AutoProposalConfig(max_proposals=max_boxes))
    if not len(proposals.boxes):
        raise BoxError("--boxes auto found no object in this image; give boxes")
    print(f"--boxes auto: {len(proposals.boxes)} proposals from SAM's point grid", file=sys.stderr)
    return np.asarray(proposals.boxes, dtype=np.float64)


def model_summary(description: dict[str, Any]) -> dict[str, Any]:
    """What the output documents say about the model: method, trained or not, origin, scores,
    and the input mode (``native`` for a recognizer without one)."""
    summary = {key: description[key] for key in ("method", "trained", "origin", "score_kind")}
    return {**summary, "inputs": description.get("inputs", "native")}


def method_caption(description: dict[str, Any]) -> str:
    """One line naming what made a picture (the zero-shot method or the head)."""
    method, origin = description["method"], description["origin"]
    if method != "regionspot":
        return f"zero-shot CLIP ({method}), no trained head; softmax scores"
    if not description["trained"]:
        return "regionspot with an UNTRAINED head: labels are random"
    inputs = " on the authors' inputs" if description.get("inputs") == "official" else ""
    return f"regionspot head: {origin.get('checkpoint')}; {description['score_kind']} scores{inputs}"


def write_document(args: argparse.Namespace, result: RegionResult, names: list[str],
                   description: dict[str, Any]) -> None:
    """``--out`` (or stdout): regionspot's JSON document with the model that made it, or COCO results."""
    document: Any
    if args.format == "coco":
        image_id = args.image_id if args.image_id is not None else default_image_id(args.image)
        document = result.to_coco(image_id=image_id, category_ids=_category_ids(args.vocab, names))
    else:
        document = {"model": model_summary(description), **result.to_dict()}
        document["image"]["file"] = str(args.image)
    text = json.dumps(document, indent=1 if args.format == "json" else None)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)


def check_picture_suffix(option: str, path: str | None) -> None:
    """Fail fast (before loading models) when ``path`` has no suffix of a format PIL writes."""
    from PIL import Image

    from regionspot.config import ConfigError

    if path and Path(path).suffix.lower() not in Image.registered_extensions():
        raise ConfigError(f"{option} {path}: give a picture file name ending in .png or .jpg")


def write_figures(image: np.ndarray, result: RegionResult, viz: str | None, attention: str | None,
                  caption: str | None = None) -> None:
    """``--viz``: regions with masks and tags, ``caption`` under the photo; ``--attention``: one
    attention-map panel per region (``result.extras["attention"]``, float [R, g, g]). ``image``:
    the HxWx3 uint8 photo."""
    from regionspot.viz import draw_attention_figure, draw_regions, save_figure

    if viz:
        save_figure(draw_regions(image, result.boxes, result.labels, result.scores, result.masks, caption=caption),
                    viz)
        print(f"wrote {viz}", file=sys.stderr)
    if attention:
        figure = draw_attention_figure(image, result.boxes, result.extras["attention"], result.labels,
                                       result.scores)
        save_figure(figure, attention)
        print(f"wrote {attention}", file=sys.stderr)


def _category_ids(vocab_spec: str, names: list[str]) -> list[int] | None:
    """Dataset category ids for a built-in vocabulary (e.g. COCO's 1..90), else None (index + 1)."""
    from regionspot.vocab import BUILTIN_VOCABULARIES, builtin_category_ids

    key = vocab_spec.strip().casefold()
    return builtin_category_ids(key) if key in BUILTIN_VOCABULARIES else None
