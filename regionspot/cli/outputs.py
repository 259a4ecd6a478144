"""What the commands that name regions write: the JSON document (or COCO results) naming the
model that made it, and the pictures (``--viz`` regions, ``--attention`` maps). Shared by
``predict`` and ``find``, checked before any model work where it can fail."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from regionspot.results import RegionResult


def default_image_id(image_path: str) -> int:
    digits = "".join(ch for ch in Path(image_path).stem if ch.isdigit())
    return int(digits) if digits else 0


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
