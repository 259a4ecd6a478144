"""Attention maps (the cross-attention maps of the paper's Fig. 4) are drawn by
:func:`draw_attention` (one region) and :func:`draw_attention_figure` (one panel per region):
the region's cross-attention over CLIP's ``g x g`` patch grid is upsampled bilinearly to the
whole image (CLIP sees the whole image squashed to a square, so the grid spans the image),
coloured with :data:`HEAT_RAMP` and blended over the photo, with the region's box and tag on top.
The figure ends with a colour bar (:func:`add_heat_bar`): the ramp from low (left) to high (right).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from regionspot.ops.image import load_image
from regionspot.viz.regions import check_drawing_inputs, draw_box_outline, pixel_rect
from regionspot.viz.style import RGB, RIM, WHITE, Style, region_color, style_for, tag_size
from regionspot.viz.tags import draw_tags, tag_text

_BAR_TEXT: RGB = (20, 20, 20)

#: Heat-map colour ramp, low to high attention: Google's Turbo sampled at 9 even steps
#: (interpolated linearly in between): dark blue, blue, cyan, green, yellow-green, yellow, orange,
#: red, dark red. The web page's draw.js uses the same ramp.
HEAT_RAMP: tuple[RGB, ...] = (
    (48, 18, 59), (70, 107, 227), (40, 188, 235), (50, 242, 152), (164, 252, 60),
    (238, 207, 58), (251, 126, 33), (208, 47, 5), (122, 4, 3),
)


def heat_colors(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] of any shape ``S`` -> ``uint8 [*S, 3]`` colours on :data:`HEAT_RAMP`
    (0 -> first colour, 1 -> last, linear in between; values outside [0, 1] are clipped)."""
    ramp = np.asarray(HEAT_RAMP, dtype=np.float64)
    position = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * (len(ramp) - 1)
    low = np.minimum(np.floor(position).astype(np.int64), len(ramp) - 2)
    frac = (position - low)[..., None]
    return np.round(ramp[low] * (1.0 - frac) + ramp[low + 1] * frac).astype(np.uint8)


def upsample_attention(attention: np.ndarray, height: int, width: int) -> np.ndarray:
    """Attention over a ``[gh, gw]`` patch grid -> float32 ``[height, width]`` in [0, 1].

    Bilinear (PIL, pixel-centre aligned) over the whole image, then divided by its maximum so
    the most attended spot is 1; an all-zero map stays zero.

    Raises:
        ValueError: not 2-D, empty, non-finite or negative values.
    """
    grid = np.asarray(attention, dtype=np.float32)
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"attention must be a 2-D [g, g] grid, got shape {grid.shape}")
    if not np.isfinite(grid).all() or (grid < 0).any():
        raise ValueError("attention must hold finite, non-negative weights")
    heat = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BILINEAR))
    peak = float(heat.max())
    return (heat / peak if peak > 0 else heat).clip(0.0, 1.0).astype(np.float32)


def draw_attention(
    image: np.ndarray,
    box: Sequence[float] | np.ndarray,
    attention: np.ndarray,
    label: str | None = None,
    *,
    score: float | None = None,
    alpha: float = 0.5,
    color_index: int = 0,
) -> Image.Image:
    """One region's attention map over the image (the paper's Figure 4); a new RGB PIL image.

    ``image``: ``HxWx3`` ``uint8`` RGB (anything ``load_image`` accepts; not modified).
    ``box``: ``x1, y1, x2, y2`` absolute pixels, drawn in ``region_color(color_index)``.
    ``attention``: ``[g, g]`` non-negative weights over CLIP's patch grid. ``label``: tag text
    at the box (with ``score`` when given); no tag when None. ``alpha``: heat opacity in [0, 1].

    Raises:
        ValueError: bad box, attention or ``alpha``.
    """
    rgb = load_image(image)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    boxes, _ = check_drawing_inputs(rgb, np.asarray(box, dtype=np.float64).reshape(1, -1), ["region"], None, None)
    height, width = rgb.shape[:2]
    heat = heat_colors(upsample_attention(attention, height, width)).astype(np.float32)
    blended = np.round(rgb.astype(np.float32) * (1.0 - alpha) + heat * alpha).astype(np.uint8)
    out = Image.fromarray(blended)
    rect = pixel_rect(boxes[0], height, width)
    if rect is None:
        return out
    draw = ImageDraw.Draw(out)
    style = style_for(height, width)
    draw_box_outline(draw, rect, region_color(color_index), style)
    if label is not None:
        draw_tags(draw, [(color_index, rect, tag_text(label, score))], style, (width, height))
    return out


def draw_attention_figure(
    image: np.ndarray,
    boxes: np.ndarray,
    attentions: np.ndarray,
    labels: Sequence[str] | None = None,
    scores: np.ndarray | None = None,
    *,
    columns: int = 4,
    panel_side: int = 480,
    gap: int = 6,
    color_indices: Sequence[int] | None = None,
) -> Image.Image:
    """One :func:`draw_attention` panel per region, tiled left to right, top to bottom.

    ``boxes``: ``[R, 4]`` xyxy absolute pixels of ``image``; ``attentions``: ``[R, g, g]``;
    ``labels``/``scores``: optional ``R`` names and ``[R]`` scores for the tags. Each panel shows
    the image scaled so its longer side is at most ``panel_side`` (never enlarged); ``columns``
    panels per row, ``gap`` white pixels between panels. Panel ``i``'s box is drawn in
    ``region_color(color_indices[i])`` (default ``i``): pass the regions' indices in a
    :func:`~regionspot.viz.draw_regions` picture of more regions to keep its colours. Below the
    panels, the colour bar of :data:`HEAT_RAMP` from low to high attention (:func:`add_heat_bar`;
    each map is scaled to its own maximum, so "high" is the region's most attended spot).

    Raises:
        ValueError: no regions, mismatched lengths (``color_indices`` too) or bad sizes.
    """
    rgb = load_image(image)
    if color_indices is not None and len(color_indices) != len(attentions):
        raise ValueError(f"got {len(attentions)} attention maps but {len(color_indices)} color_indices")
    colors = list(range(len(attentions))) if color_indices is None else [int(i) for i in color_indices]
    attentions = np.asarray(attentions, dtype=np.float32)
    count = len(attentions)
    names = list(labels) if labels is not None else [f"region {i + 1}" for i in range(count)]
    boxes, scores = check_drawing_inputs(rgb, boxes, names, scores, None)
    if count == 0 or attentions.ndim != 3 or len(boxes) != count:
        raise ValueError(f"need R >= 1 boxes and [R, g, g] attentions, got {len(boxes)} boxes and "
                         f"attentions of shape {attentions.shape}")
    if columns < 1 or panel_side < 16 or gap < 0:
        raise ValueError("columns must be >= 1, panel_side >= 16 and gap >= 0")
    height, width = rgb.shape[:2]
    scale = min(1.0, panel_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS)) if scale < 1 else rgb
    cols = min(columns, count)
    rows = -(-count // cols)
    sheet = Image.new("RGB", (cols * size[0] + (cols - 1) * gap, rows * size[1] + (rows - 1) * gap), WHITE)
    for i in range(count):
        panel = draw_attention(small, boxes[i] * scale, attentions[i], names[i],
                               score=None if scores is None else float(scores[i]), color_index=colors[i])
        sheet.paste(panel, ((i % cols) * (size[0] + gap), (i // cols) * (size[1] + gap)))
    return add_heat_bar(sheet, style_for(size[1], size[0]))


def add_heat_bar(picture: Image.Image, style: Style | None = None) -> Image.Image:
    """``picture`` with a white strip below it holding the colour bar of :data:`HEAT_RAMP`:
    ``low``, the ramp from its first colour (left) to its last (right), ``high``; centred.

    The bar's pixel column ``j`` of ``n`` has colour ``heat_colors(j / (n - 1))``; a one-pixel dark
    rim surrounds it. Returns a new RGB image as wide as ``picture``.
    """
    style = style or style_for(picture.height, picture.width)
    probe = ImageDraw.Draw(picture)
    gap = 2 * style.pad
    (low_w, text_h, low_at), (high_w, _, high_at) = (tag_size(probe, word, style) for word in ("low", "high"))
    low_w, high_w = low_w - 2 * style.pad, high_w - 2 * style.pad
    bar_w = max(16, min(360, picture.width - 2 * gap - low_w - high_w - 4 * gap))
    bar_h = max(6, text_h - 2 * style.pad)
    out = Image.new("RGB", (picture.width, picture.height + bar_h + 4 * gap), WHITE)
    out.paste(picture.convert("RGB"), (0, 0))
    left = max(gap, (picture.width - (low_w + bar_w + high_w + 4 * gap)) // 2)
    top = picture.height + 2 * gap
    bar = heat_colors(np.linspace(0.0, 1.0, bar_w))[None].repeat(bar_h, axis=0)
    bar_left = left + low_w + 2 * gap
    out.paste(Image.fromarray(bar), (bar_left, top))
    draw = ImageDraw.Draw(out)
    draw.rectangle((bar_left - 1, top - 1, bar_left + bar_w, top + bar_h), outline=RIM, width=1)
    for word, x, offset in (("low", left, low_at), ("high", bar_left + bar_w + 2 * gap, high_at)):
        draw.text((x - offset[0], top + (bar_h - (text_h - 2 * style.pad)) // 2 - offset[1]), word,
                  fill=_BAR_TEXT, font=style.font)
    return out
