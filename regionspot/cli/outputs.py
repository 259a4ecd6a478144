"""What the commands that name regions write: the JSON document (or COCO results) naming the
model that made it, and the pictures (``--viz`` regions, ``--attention`` maps). Shared by
``predict`` and ``find``, checked before any model work where it can fail.

Two options thin out a crowded result (:func:`add_min_score_argument`,
:func:`add_max_labels_argument`): ``--min-score S`` drops the regions scoring under ``S`` from
the output *and* the pictures; ``--max-labels N`` only touches the pictures: the ``N``
best-scoring regions get tags (and attention panels), the others keep their box and mask
untagged, and the output keeps every region."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from regionspot.cli.arguments import positive_int, unit_interval

if TYPE_CHECKING:
    from regionspot.results import RegionResult


MIN_SCORE_HELP = ("drop the regions whose score (top-1) is under S, a number in [0, 1], from the output and the "
                  "pictures; with --format coco also every (box, category) pair under S (default: keep all)")
MAX_LABELS_HELP = ("name only the N best-scoring regions in the --viz picture (the others keep their box and mask, "
                   "untagged){attention}; the output keeps every region. Tags that find no room become numbers "
                   "listed in a legend below the picture (default: tag every region)")


def add_min_score_argument(parser: argparse.ArgumentParser, help: str = MIN_SCORE_HELP) -> None:  # noqa: A002
    """``--min-score S`` into ``args.min_score`` (float in [0, 1], None when not given)."""
    parser.add_argument("--min-score", type=unit_interval, metavar="S", help=help)


def add_max_labels_argument(parser: argparse.ArgumentParser, *, attention: bool) -> None:
    """``--max-labels N`` into ``args.max_labels`` (int >= 1, None when not given); ``attention``:
    the command also draws ``--attention`` panels, limited to the same N regions."""
    note = " and draw --attention panels for those N only" if attention else ""
    parser.add_argument("--max-labels", type=positive_int, metavar="N", help=MAX_LABELS_HELP.format(attention=note))


def keep_min_score(result: RegionResult, min_score: float | None) -> RegionResult:
    """The regions of ``result`` whose top-1 score is at least ``min_score`` (all when None), in
    their order."""
    if min_score is None:
        return result
    return result[np.flatnonzero(np.asarray(result.scores) >= min_score)]


def best_regions(result: RegionResult, count: int | None) -> np.ndarray:
    """Indices of the ``count`` best-scoring regions of ``result`` (all when None), in increasing order."""
    order = np.argsort(-np.asarray(result.scores), kind="stable")
    return np.sort(order if count is None else order[:count])


def default_image_id(image_path: str) -> int:
    digits = "".join(ch for ch in Path(image_path).stem if ch.isdigit())
    return int(digits) if digits else 0


def model_summary(description: dict[str, Any]) -> dict[str, Any]:
    """What the output documents say about the model: method, trained or not, origin, scores,
    the input mode (``native`` for a recognizer without one) and, for an ONNX export run in
    onnxruntime, ``runtime: onnx``."""
    summary = {key: description[key] for key in ("method", "trained", "origin", "score_kind")}
    runtime = {"runtime": description["runtime"]} if "runtime" in description else {}
    return {**summary, "inputs": description.get("inputs", "native"), **runtime}


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
        min_score = getattr(args, "min_score", None)
        if min_score is not None:
            document = [pair for pair in document if pair["score"] >= min_score]
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
                  caption: str | None = None, max_labels: int | None = None) -> None:
    """``--viz``: regions with masks, tags (only the ``max_labels`` best-scoring ones tagged) and
    the clicks that prompted them (``result.extras["clicks"]``),
    ``caption`` under the photo; ``--attention``: one attention-map panel for each of the
    ``max_labels`` best regions (``result.extras["attention"]``, float [R, g, g]), none when the
    result has no region. ``image``: the HxWx3 uint8 photo; boxes xyxy in its pixels."""
    from regionspot.viz import draw_attention_figure, draw_regions, save_figure

    if viz:
        save_figure(draw_regions(image, result.boxes, result.labels, result.scores, result.masks, caption=caption,
                                 max_labels=max_labels, clicks=result.extras.get("clicks")), viz)
        print(f"wrote {viz}", file=sys.stderr)
    if attention and not len(result):
        print(f"note: no region left to draw, {attention} not written", file=sys.stderr)
    elif attention:
        chosen = best_regions(result, max_labels)
        best = result[chosen]
        figure = draw_attention_figure(image, best.boxes, best.extras["attention"], best.labels, best.scores,
                                       color_indices=chosen.tolist())  # the colours of the --viz picture
        save_figure(figure, attention)
        print(f"wrote {attention}", file=sys.stderr)


def _category_ids(vocab_spec: str, names: list[str]) -> list[int] | None:
    """Dataset category ids for a built-in vocabulary (e.g. COCO's 1..90), else None (index + 1)."""
    from regionspot.vocab import BUILTIN_VOCABULARIES, builtin_category_ids

    key = vocab_spec.strip().casefold()
    return builtin_category_ids(key) if key in BUILTIN_VOCABULARIES else None
