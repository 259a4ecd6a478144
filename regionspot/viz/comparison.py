"""Pictures side by side under one title: e.g. an image's ground truth beside a model's named
regions (the evaluation's example pictures).

    sheet = side_by_side([("ground truth", truth_drawing), ("predictions", predicted_drawing)],
                         title="image 139 (000000000139.jpg)", legend=[((60, 180, 75), "correct")])

Each panel keeps its aspect ratio and is scaled so its longer side is at most ``panel_side``
(never enlarged), under a heading; a title strip runs across the top and an optional legend
(colour swatches with their meaning) across the bottom. Text is sized like the region tags of
:func:`regionspot.viz.draw_regions` for a photo of the panel's size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from PIL import Image, ImageDraw

from regionspot.viz.style import RGB, RIM, Style, fit_text, font_of_size, style_for, tag_size

_BACKGROUND: RGB = (255, 255, 255)
_TEXT: RGB = (20, 20, 20)
_MUTED: RGB = (70, 70, 70)


def side_by_side(panels: Sequence[tuple[str, Image.Image]], *, title: str,
                 legend: Sequence[tuple[RGB, str]] = (), panel_side: int = 800, gap: int = 12) -> Image.Image:
    """``panels`` ((heading, picture) pairs) left to right on a white sheet, ``title`` above them
    and ``legend`` ((colour, meaning) pairs, one line each) below. Returns a new RGB image.

    Raises:
        ValueError: no panel, ``panel_side`` under 16 or a negative ``gap``.
    """
    if not panels:
        raise ValueError("side_by_side needs at least one panel")
    if panel_side < 16 or gap < 0:
        raise ValueError(f"panel_side must be >= 16 and gap >= 0, got {panel_side} and {gap}")
    pictures = [_fit(picture.convert("RGB"), panel_side) for _, picture in panels]
    height = max(picture.height for picture in pictures)
    style = style_for(height, max(picture.width for picture in pictures))
    heading = _title_style(style)
    line = _line_height(style)
    top = gap + _line_height(heading) + line + gap  # the title, then the panel headings
    bottom = gap + len(legend) * line + (gap if legend else 0)
    width = sum(picture.width for picture in pictures) + gap * (len(pictures) + 1)
    sheet = Image.new("RGB", (width, top + height + bottom), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    _text(draw, (gap, gap), title, heading, _TEXT, width - 2 * gap)
    left = gap
    for (name, _), picture in zip(panels, pictures, strict=True):
        _text(draw, (left, top - gap - line), name, style, _MUTED, picture.width)
        sheet.paste(picture, (left, top))
        left += picture.width + gap
    for number, (color, meaning) in enumerate(legend):
        _legend_line(draw, (gap, top + height + gap + number * line), color, meaning, style, width - 2 * gap)
    return sheet


def _fit(picture: Image.Image, side: int) -> Image.Image:
    """``picture`` scaled down so its longer side is at most ``side``."""
    scale = side / max(picture.width, picture.height)
    if scale >= 1:
        return picture
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.Resampling.LANCZOS)


def _title_style(style: Style) -> Style:
    """``style`` with a font a quarter larger, for the title."""
    size = getattr(style.font, "size", None)
    return style if size is None else dataclasses.replace(style, font=font_of_size(round(size * 1.25)))


def _line_height(style: Style) -> int:
    """Height of one line of text with its padding."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    return tag_size(probe, "Ag", style)[1] + style.pad


def _text(draw: ImageDraw.ImageDraw, origin: tuple[int, int], text: str, style: Style, color: RGB,
          room: int) -> None:
    """``text`` with its ink's top-left at ``origin``, cut with an ellipsis to ``room`` pixels."""
    shown = fit_text(draw, text, style, room)
    _, _, offset = tag_size(draw, shown or " ", style)
    draw.text((origin[0] - offset[0], origin[1] - offset[1]), shown, fill=color, font=style.font)


def _legend_line(draw: ImageDraw.ImageDraw, origin: tuple[int, int], color: RGB, meaning: str, style: Style,
                 room: int) -> None:
    """A filled square of ``color`` with a dark rim, then ``meaning``."""
    side = tag_size(draw, "Ag", style)[1] - 2 * style.pad
    x, y = origin
    draw.rectangle((x, y, x + side, y + side), fill=color, outline=RIM, width=1)
    _text(draw, (x + side + 2 * style.pad, y), meaning, style, _TEXT, room - side - 2 * style.pad)
