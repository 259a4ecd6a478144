"""Drawing recognised regions on an image (used by ``regionspot predict --viz`` and the demo).

Each region gets a colour from a fixed qualitative palette (region ``i`` always gets
``PALETTE[i % len(PALETTE)]``), its mask as a translucent fill with a crisp contour, its box as
an outline, and a tag ``"name 0.87"`` above the box (inside it when the box touches the image
top). Line width and font size scale with the image size; tag text is black or white,
whichever contrasts more with the tag colour, and outlines get a thin dark rim so they stay
visible on light and dark photos alike. Only PIL and numpy are used.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from regionspot.ops.image import load_image

RGB = tuple[int, int, int]

#: Fixed qualitative palette: saturated colours that read on both dark and light photos
#: (after Sasha Trubetskoy's "20 distinct colours", pale and near-grey entries dropped).
PALETTE: tuple[RGB, ...] = (
    (230, 25, 75),    # red
    (60, 180, 75),    # green
    (255, 225, 25),   # yellow
    (0, 130, 200),    # blue
    (245, 130, 48),   # orange
    (145, 30, 180),   # purple
    (70, 240, 240),   # cyan
    (240, 50, 230),   # magenta
    (210, 245, 60),   # lime
    (0, 128, 128),    # teal
    (170, 110, 40),   # brown
    (128, 128, 0),    # olive
    (250, 190, 212),  # pink
    (128, 0, 0),      # maroon
)

_RIM: RGB = (20, 20, 20)  # thin dark rim around outlines and tags
_BLACK: RGB = (0, 0, 0)
_WHITE: RGB = (255, 255, 255)


@dataclass(frozen=True)
class _Style:
    """Sizes derived from the image size."""

    line: int      # box outline width in pixels
    contour: int   # mask contour width in pixels
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont
    pad: int       # padding inside a tag


def region_color(index: int) -> RGB:
    """Colour of region ``index``: ``PALETTE[index % len(PALETTE)]``."""
    return PALETTE[index % len(PALETTE)]


def _luminance(color: RGB) -> float:
    """WCAG relative luminance of an sRGB colour."""
    channels = []
    for value in color:
        c = value / 255.0
        channels.append(c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4)
    return 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]


def contrast_text_color(background: RGB) -> RGB:
    """Black or white, whichever has the higher WCAG contrast ratio against ``background``."""
    lum = _luminance(background)
    return _BLACK if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else _WHITE


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's built-in scalable font (Pillow >= 10.1); the fixed bitmap font otherwise."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # old Pillow or no FreeType
        return ImageFont.load_default()


def _style(height: int, width: int) -> _Style:
    """Line width, contour width, font and tag padding for an image of this size."""
    side = max(height, width)
    line = max(1, round(side / 320))
    font_size = max(11, round(side * 0.025))
    return _Style(
        line=line,
        contour=max(1, round(line * 0.75)),
        font=_font(font_size),
        pad=max(1, round(font_size * 0.2)),
    )


def _check_inputs(
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
    """Blend a translucent fill into ``canvas`` (float HxWx3) and paint a solid contour."""
    if not mask.any():
        return
    fill = np.asarray(color, dtype=np.float32)
    canvas[mask] = canvas[mask] * (1.0 - alpha) + fill * alpha
    inner = mask
    for _ in range(contour):
        inner = _erode(inner)
    canvas[mask & ~inner] = fill


def _pixel_box(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int] | None:
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


def _draw_box(draw: ImageDraw.ImageDraw, rect: tuple[int, int, int, int], color: RGB, style: _Style) -> None:
    """Box outline in ``color`` with a one-pixel dark rim on its outer side."""
    left, top, right, bottom = rect
    if style.line >= 2:
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), outline=_RIM, width=1)
    draw.rectangle(rect, outline=color, width=style.line)


Rect = tuple[int, int, int, int]


def _tag_size(draw: ImageDraw.ImageDraw, text: str, style: _Style) -> tuple[int, int, tuple[int, int]]:
    """Tag width and height for ``text``, and the offset of the text's ink box."""
    bbox = draw.textbbox((0, 0), text, font=style.font)
    left, top, right, bottom = (round(v) for v in bbox)
    return right - left + 2 * style.pad, bottom - top + 2 * style.pad, (left, top)


def _tag_candidates(rect: Rect, tag_w: int, tag_h: int, image_size: tuple[int, int]) -> list[Rect]:
    """Places for a tag, preferred first: above the box, inside its top, below it, inside its bottom."""
    width, height = image_size
    left = max(0, min(rect[0], width - tag_w))
    tops = [rect[1] - tag_h, rect[1], rect[3] + 1, rect[3] - tag_h + 1]
    places = []
    for top in tops:
        if top >= 0 and top + tag_h <= height:
            places.append((left, top, left + tag_w - 1, top + tag_h - 1))
    if not places:  # taller than the image: pin to the top
        places.append((left, 0, left + tag_w - 1, min(tag_h, height) - 1))
    return places


def _overlaps(a: Rect, b: Rect) -> bool:
    """Whether two inclusive pixel rectangles share a pixel."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _place_tags(candidates: list[list[Rect]]) -> list[Rect]:
    """Greedy placement in the given (best-first) order: the first candidate that overlaps no
    tag already placed, else the first candidate."""
    placed: list[Rect] = []
    for options in candidates:
        free = [c for c in options if not any(_overlaps(c, p) for p in placed)]
        placed.append(free[0] if free else options[0])
    return placed


def _draw_tag(draw: ImageDraw.ImageDraw, tag: Rect, text: str, offset: tuple[int, int],
              color: RGB, style: _Style) -> None:
    """Filled tag with a dark rim and contrasting text."""
    draw.rectangle(tag, fill=color, outline=_RIM, width=1)
    origin = (tag[0] + style.pad - offset[0], tag[1] + style.pad - offset[1])
    draw.text(origin, text, fill=contrast_text_color(color), font=style.font)


def _draw_tags(draw: ImageDraw.ImageDraw, items: list[tuple[int, Rect, str]], style: _Style,
               image_size: tuple[int, int], color_of: Callable[[int], RGB] = region_color) -> None:
    """Place tags best-first (``items`` is in increasing score order), draw them worst-first
    so the best-scoring tag is on top where overlaps cannot be avoided. Region ``i``'s tag is
    filled with ``color_of(i)``."""
    sizes = [_tag_size(draw, text, style) for _, _, text in items]
    candidates = [_tag_candidates(rect, w, h, image_size) for (_, rect, _), (w, h, _) in zip(items, sizes, strict=True)]
    places = _place_tags(candidates[::-1])[::-1]
    for (index, _, text), (_, _, offset), tag in zip(items, sizes, places, strict=True):
        _draw_tag(draw, tag, text, offset, color_of(index), style)


def _tag_text(label: str, score: float | None) -> str:
    """``"name 0.87"``, or the name alone without a score."""
    return label if score is None else f"{label} {score:.2f}"


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
) -> Image.Image:
    """Draw regions with their names and scores; returns a new RGB PIL image of the same size
    (taller by a caption strip below the photo when ``caption`` is given).

    Args:
        image: ``HxWx3`` ``uint8`` RGB array (anything :func:`regionspot.ops.image.load_image`
            accepts also works); it is not modified.
        boxes: ``[R, 4]`` boxes, ``x1, y1, x2, y2`` in absolute pixel coordinates. Boxes are
            clipped to the image; boxes wholly outside it are not drawn.
        labels: ``R`` names.
        scores: ``[R]`` scores shown with two decimals after the name, or None for names only.
        masks: optional ``[R, H, W]`` boolean masks, drawn as translucent fills with a solid
            contour.
        mask_alpha: opacity of the mask fill, in [0, 1].
        caption: one line under the photo, e.g. which model named the regions.
        colors: ``R`` RGB colours, one per region (e.g. right and wrong names); None: region
            ``i`` gets :func:`region_color` ``(i)``.

    Regions are drawn in increasing score order. Tags are placed best-score first, each at
    the first free spot among: above the box, inside its top edge, below it, inside its
    bottom edge; where all are taken the best-scoring tag stays on top.

    Raises:
        ValueError: mismatched lengths or shapes, non-finite boxes, ``mask_alpha`` out of range.
    """
    rgb = load_image(image)
    if not 0.0 <= mask_alpha <= 1.0:
        raise ValueError(f"mask_alpha must be in [0, 1], got {mask_alpha}")
    boxes, scores = _check_inputs(rgb, boxes, labels, scores, masks)
    color_of = _color_picker(colors, len(boxes))
    height, width = rgb.shape[:2]
    style = _style(height, width)
    order = np.argsort(scores, kind="stable") if scores is not None else np.arange(len(boxes))
    if masks is not None:
        canvas = rgb.astype(np.float32)
        for i in order:
            mask = np.asarray(masks[i], dtype=bool)
            _paint_mask(canvas, mask, color_of(int(i)), mask_alpha, style.contour)
        rgb = np.round(canvas).astype(np.uint8)
    out = Image.fromarray(rgb)
    draw = ImageDraw.Draw(out)
    rects = {int(i): _pixel_box(boxes[i], height, width) for i in order}
    for i, rect in rects.items():
        if rect is not None:
            _draw_box(draw, rect, color_of(i), style)
    tags = [
        (i, rect, _tag_text(str(labels[i]), None if scores is None else float(scores[i])))
        for i, rect in rects.items() if rect is not None
    ]
    _draw_tags(draw, tags, style, (width, height), color_of)
    return out if caption is None else add_caption(out, caption, style)


def add_caption(picture: Image.Image, text: str, style: _Style | None = None) -> Image.Image:
    """``picture`` with a dark strip below it holding ``text`` (cut with an ellipsis to fit)."""
    style = style or _style(picture.height, picture.width)
    probe = ImageDraw.Draw(picture)
    _, text_h, _ = _tag_size(probe, "Ag", style)
    strip = text_h + 4 * style.pad
    out = Image.new("RGB", (picture.width, picture.height + strip), (32, 32, 32))
    out.paste(picture.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(out)
    room = picture.width - 4 * style.pad
    shown = text
    while shown and _tag_size(draw, shown, style)[0] > room:
        shown = shown[:-2] + "…" if len(shown) > 2 else ""
    _, _, offset = _tag_size(draw, shown or " ", style)
    draw.text((2 * style.pad - offset[0], picture.height + 2 * style.pad - offset[1]), shown,
              fill=(240, 240, 240), font=style.font)
    return out


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
