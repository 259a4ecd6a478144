"""Colours, fonts and sizes shared by every drawing in :mod:`regionspot.viz`.

Each region gets a colour from a fixed qualitative palette (region ``i`` always gets
``PALETTE[i % len(PALETTE)]``); line width and font size scale with the image size; text on a
coloured tag is black or white, whichever contrasts more with the tag colour. Only PIL is used.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from PIL import ImageDraw, ImageFont

RGB = tuple[int, int, int]
#: An inclusive pixel rectangle ``left, top, right, bottom`` (xyxy, absolute pixels).
Rect = tuple[int, int, int, int]

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

RIM: RGB = (20, 20, 20)  # thin dark rim around outlines and tags
BLACK: RGB = (0, 0, 0)
WHITE: RGB = (255, 255, 255)
STRIP: RGB = (32, 32, 32)  # background of the caption and legend strips under a picture
STRIP_TEXT: RGB = (240, 240, 240)  # text on those strips


@dataclass(frozen=True)
class Style:
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
    return BLACK if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else WHITE


@functools.lru_cache(maxsize=32)
def font_of_size(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's built-in scalable font (Pillow >= 10.1); the fixed bitmap font otherwise."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # old Pillow or no FreeType
        return ImageFont.load_default()


def style_for(height: int, width: int) -> Style:
    """Line width, contour width, font and tag padding for an image of ``height x width`` pixels."""
    side = max(height, width)
    line = max(1, round(side / 320))
    font_size = max(11, round(side * 0.025))
    return Style(
        line=line,
        contour=max(1, round(line * 0.75)),
        font=font_of_size(font_size),
        pad=max(1, round(font_size * 0.2)),
    )


def tag_size(draw: ImageDraw.ImageDraw, text: str, style: Style) -> tuple[int, int, tuple[int, int]]:
    """Tag width and height (pixels, padding included) for ``text``, and the offset of the text's ink box."""
    bbox = draw.textbbox((0, 0), text, font=style.font)
    left, top, right, bottom = (round(v) for v in bbox)
    return right - left + 2 * style.pad, bottom - top + 2 * style.pad, (left, top)


def fit_text(draw: ImageDraw.ImageDraw, text: str, style: Style, room: int) -> str:
    """``text`` cut with an ellipsis so that its ink is at most ``room`` pixels wide."""
    shown = text
    while shown and tag_size(draw, shown, style)[0] - 2 * style.pad > room:
        shown = shown[:-2] + "…" if len(shown) > 2 else ""
    return shown
