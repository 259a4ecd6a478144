"""Drawing recognised regions on an image (used by ``regionspot predict --viz`` and the demo).

Each region gets a colour from a fixed qualitative palette (region ``i`` always gets
``PALETTE[i % len(PALETTE)]``), its mask as a translucent fill with a crisp contour (the contour
alone for a mask covering more than half of the image, so a whole-image region does not tint the
whole photo), its box as an outline, and a tag ``"name 0.87"`` next to the box. Tags never
overlap: the best-scoring regions are labelled first and a region whose tag finds no room gets a
small number tag explained in a legend below the picture (:mod:`regionspot.viz.labels`). Line
width and font size scale with the image size; tag text is black or white, whichever contrasts
more with the tag colour, and outlines get a thin dark rim so they stay visible on light and dark
photos alike. Only PIL and numpy are used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from regionspot.ops.image import load_image
from regionspot.viz.clicks import RegionClicks, check_clicks, draw_clicks
from regionspot.viz.style import (
    PALETTE,
    RGB,
    RIM,
    Rect,
    Style,
    contrast_text_color,
    region_color,
    style_for,
)
from regionspot.viz.tags import add_caption, add_legend, draw_tags, tag_text

__all__ = ["PALETTE", "RGB", "add_caption", "contrast_text_color", "draw_regions", "region_color", "save_figure"]

#: A mask covering more than this share of the image is drawn as its contour only (no fill).
CONTOUR_ONLY_AREA = 0.5


def check_drawing_inputs(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[str],
    scores: np.ndarray | None,
    masks: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate shapes; return boxes as float ``[R, 4]`` and scores as float ``[R]`` or None."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (R, 4) as x1, y1, x2, y2, got {boxes.shape}")
    count = len(boxes)
    if not np.isfinite(boxes).all():
        raise ValueError("boxes contain NaN or infinite coordinates")
    if len(labels) != count:
        raise ValueError(f"got {count} boxes but {len(labels)} labels")
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(scores) != count:
            raise ValueError(f"got {count} boxes but {len(scores)} scores")
    if masks is not None:
        expected = (count, image.shape[0], image.shape[1])
        if np.shape(masks) != expected:
            raise ValueError(f"masks must have shape {expected} (R, H, W), got {np.shape(masks)}")
    return boxes, scores


def _erode(mask: np.ndarray) -> np.ndarray:
    """One step of 4-neighbour binary erosion; outside the image counts as background."""
    out = mask.copy()
    out[1:, :] &= mask[:-1, :]
    out[:-1, :] &= mask[1:, :]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    out[0, :] = False
    out[-1, :] = False
    out[:, 0] = False
    out[:, -1] = False
    return out


def _paint_mask(canvas: np.ndarray, mask: np.ndarray, color: RGB, alpha: float, contour: int) -> None:
    """Blend a translucent fill into ``canvas`` (float ``HxWx3``) and paint a solid contour
    ``contour`` pixels wide; ``mask`` is ``HxW`` bool. A mask covering more than
    :data:`CONTOUR_ONLY_AREA` of the image gets its contour only."""
    if not mask.any():
        return
    fill = np.asarray(color, dtype=np.float32)
    if mask.mean() <= CONTOUR_ONLY_AREA:
        canvas[mask] = canvas[mask] * (1.0 - alpha) + fill * alpha
    inner = mask
    for _ in range(contour):
        inner = _erode(inner)
    canvas[mask & ~inner] = fill


def pixel_rect(box: np.ndarray, height: int, width: int) -> Rect | None:
    """Inclusive pixel rectangle covered by an xyxy box, clipped; None when wholly outside."""
    x1, x2 = sorted((float(box[0]), float(box[2])))
    y1, y2 = sorted((float(box[1]), float(box[3])))
    if x2 < 0 or y2 < 0 or x1 > width or y1 > height:
        return None
    left = int(np.clip(np.floor(x1), 0, width - 1))
    top = int(np.clip(np.floor(y1), 0, height - 1))
    right = int(np.clip(np.ceil(x2) - 1, left, width - 1))
    bottom = int(np.clip(np.ceil(y2) - 1, top, height - 1))
    return left, top, right, bottom


def draw_box_outline(draw: ImageDraw.ImageDraw, rect: Rect, color: RGB, style: Style) -> None:
    """Box outline in ``color`` with a one-pixel dark rim on its outer side."""
    left, top, right, bottom = rect
    if style.line >= 2:
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), outline=RIM, width=1)
    draw.rectangle(rect, outline=color, width=style.line)


def _paint_masks(rgb: np.ndarray, masks: np.ndarray, order: np.ndarray, color_of: Callable[[int], RGB],
                 alpha: float, style: Style) -> np.ndarray:
    """``rgb`` (``HxWx3`` uint8) with the ``[R, H, W]`` masks painted in ``order`` (last on top)."""
    canvas = rgb.astype(np.float32)
    for i in order:
        _paint_mask(canvas, np.asarray(masks[i], dtype=bool), color_of(int(i)), alpha, style.contour)
    return np.round(canvas).astype(np.uint8)


def _color_picker(colors: Sequence[RGB] | None, count: int) -> Callable[[int], RGB]:
    """Region index -> colour: ``colors[i]`` when given (one per region), else :func:`region_color`."""
    if colors is None:
        return region_color
    if len(colors) != count:
        raise ValueError(f"got {count} boxes but {len(colors)} colors")
    chosen = [(int(c[0]), int(c[1]), int(c[2])) for c in colors]
    return chosen.__getitem__


def draw_regions(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: Sequence[str],
    scores: np.ndarray | None,
    masks: np.ndarray | None = None,
    *,
    mask_alpha: float = 0.45,
    caption: str | None = None,
    colors: Sequence[RGB] | None = None,
    max_labels: int | None = None,
    clicks: Sequence[RegionClicks] | None = None,
) -> Image.Image:
    """Draw regions with their names and scores; returns a new RGB PIL image as wide as the
    photo, taller by a legend strip when some tags got numbers and by a caption strip when
    ``caption`` is given (photo, then legend, then caption).

    Args:
        image: ``HxWx3`` ``uint8`` RGB array (anything :func:`regionspot.ops.image.load_image`
            accepts also works); it is not modified.
        boxes: ``[R, 4]`` boxes, ``x1, y1, x2, y2`` in absolute pixel coordinates. Boxes are
            clipped to the image; boxes wholly outside it are not drawn.
        labels: ``R`` names.
        scores: ``[R]`` scores shown with two decimals after the name, or None for names only
            (then a later region counts as better: drawn on top, labelled first).
        masks: optional ``[R, H, W]`` boolean masks, drawn as translucent fills with a solid
            contour; a mask covering more than half of the image as its contour only.
        mask_alpha: opacity of the mask fill, in [0, 1].
        caption: one line under the photo, e.g. which model named the regions.
        colors: ``R`` RGB colours, one per region (e.g. right and wrong names); None: region
            ``i`` gets :func:`region_color` ``(i)``.
        max_labels: tag only the ``max_labels`` best-scoring regions (the others keep their
            box and mask, untagged); None: every region.
        clicks: per region, the clicks that prompted it: ``(points [P, 2] xy pixels,
            labels [P])``, drawn as markers (foreground: a disc in the region's colour;
            background: a dark disc with a white cross); None: no markers.

    Regions are drawn in increasing score order; tags are placed best-score first and never
    overlap: a region without room gets a number tag, listed with its ``name score`` in the
    legend below the photo (see :mod:`regionspot.viz.labels`).

    Raises:
        ValueError: mismatched lengths or shapes, non-finite boxes, ``mask_alpha`` out of range,
            ``max_labels`` under 1.
    """
    rgb = load_image(image)
    if not 0.0 <= mask_alpha <= 1.0:
        raise ValueError(f"mask_alpha must be in [0, 1], got {mask_alpha}")
    if max_labels is not None and max_labels < 1:
        raise ValueError(f"max_labels must be at least 1, got {max_labels}")
    boxes, scores = check_drawing_inputs(rgb, boxes, labels, scores, masks)
    if clicks is not None:
        check_clicks(clicks, len(boxes))
    color_of = _color_picker(colors, len(boxes))
    height, width = rgb.shape[:2]
    style = style_for(height, width)
    order = np.argsort(scores, kind="stable") if scores is not None else np.arange(len(boxes))
    if masks is not None:
        rgb = _paint_masks(rgb, masks, order, color_of, mask_alpha, style)
    out = Image.fromarray(rgb)
    draw = ImageDraw.Draw(out)
    rects = {int(i): pixel_rect(boxes[i], height, width) for i in order}
    for i, rect in rects.items():
        if rect is not None:
            draw_box_outline(draw, rect, color_of(i), style)
    if clicks is not None:
        draw_clicks(draw, clicks, [int(i) for i in order], color_of, style)
    ranked = np.argsort(-scores, kind="stable") if scores is not None else np.arange(len(boxes))
    best_first = [(int(i), rect) for i in ranked if (rect := rects[int(i)]) is not None][:max_labels]
    tags = [(i, rect, tag_text(str(labels[i]), None if scores is None else float(scores[i])))
            for i, rect in best_first]
    legend = draw_tags(draw, tags, style, (width, height), color_of)
    out = add_legend(out, legend, style)
    return out if caption is None else add_caption(out, caption, style)


def save_figure(img: Image.Image | np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Save a drawing (PIL image or ``HxWx3`` array) to ``path``; the format follows the suffix.

    Parent folders are created. Returns the path written.

    Raises:
        ValueError: the suffix names no image format PIL can write.
    """
    target = Path(path)
    if isinstance(img, np.ndarray):
        img = Image.fromarray(load_image(img))
    if not target.suffix:
        raise ValueError(f"{target}: give a file suffix such as .png or .jpg")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix.lower() in (".jpg", ".jpeg"):
        img.convert("RGB").save(target, quality=92)
    else:
        img.save(target)
    return target
