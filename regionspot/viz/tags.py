"""Drawing region tags (placed by :mod:`regionspot.viz.labels`), the legend of the number tags,
and the caption strip under a picture."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PIL import Image, ImageDraw

from regionspot.viz.labels import place_labels
from regionspot.viz.style import (
    RGB,
    RIM,
    STRIP,
    STRIP_TEXT,
    Rect,
    Style,
    contrast_text_color,
    fit_text,
    region_color,
    style_for,
    tag_size,
)

#: A legend entry: the number tag's text, its colour and what it stands for (``"name 0.87"``).
LegendEntry = tuple[str, RGB, str]


def draw_tag(draw: ImageDraw.ImageDraw, tag: Rect, text: str, color: RGB, style: Style) -> None:
    """Filled tag with a dark rim and contrasting ``text`` centred in it."""
    draw.rectangle(tag, fill=color, outline=RIM, width=1)
    ink_w, ink_h, offset = tag_size(draw, text, style)
    origin = (tag[0] + (tag[2] - tag[0] + 1 - ink_w) // 2 + style.pad - offset[0],
              tag[1] + (tag[3] - tag[1] + 1 - ink_h) // 2 + style.pad - offset[1])
    draw.text(origin, text, fill=contrast_text_color(color), font=style.font)


def tag_text(label: str, score: float | None) -> str:
    """``"name 0.87"``, or the name alone without a score."""
    return label if score is None else f"{label} {score:.2f}"


def draw_tags(draw: ImageDraw.ImageDraw, items: Sequence[tuple[int, Rect, str]], style: Style,
              image_size: tuple[int, int], color_of: Callable[[int], RGB] = region_color) -> list[LegendEntry]:
    """Place and draw the tags of ``items`` ((region index, box rectangle, tag text), best-scoring
    first; boxes as inclusive xyxy pixel rectangles) in a ``(width, height)`` image. Region ``i``'s
    tag is filled with ``color_of(i)``; a region whose full tag finds no free spot gets a number tag
    (:func:`regionspot.viz.labels.place_labels`). Tags are drawn worst-first, so where a number tag
    cannot avoid an overlap the better region's tag is on top.

    Returns the legend entries of the numbered regions, by number.
    """
    if not items:
        return []
    sizes = [tag_size(draw, text, style)[:2] for _, _, text in items]
    widest = "8" * len(str(len(items)))
    number_w, _, _ = tag_size(draw, widest, style)
    number_h = max(tag_size(draw, digit, style)[1] for digit in "0123456789")
    placements = place_labels([rect for _, rect, _ in items], sizes, (number_w, number_h), image_size)
    legend: list[LegendEntry] = []
    for (index, _, text), placement in reversed(list(zip(items, placements, strict=True))):
        shown = text if placement.number is None else str(placement.number)
        draw_tag(draw, placement.rect, shown, color_of(index), style)
        if placement.number is not None:
            legend.append((shown, color_of(index), text))
    return sorted(legend, key=lambda entry: int(entry[0]))


def add_legend(picture: Image.Image, entries: Sequence[LegendEntry], style: Style | None = None) -> Image.Image:
    """``picture`` with a dark strip below it listing ``entries`` (number tag in its region's colour,
    then what it stands for), in as many columns as the width allows, numbers running down each
    column. Returns ``picture`` itself when there is no entry."""
    if not entries:
        return picture
    style = style or style_for(picture.height, picture.width)
    probe = ImageDraw.Draw(picture)
    gap = 2 * style.pad
    number_w = max(tag_size(probe, number, style)[0] for number, _, _ in entries)
    line_h = max(tag_size(probe, text, style)[1] for text in ("Ag", *(number for number, _, _ in entries)))
    room = max(1, picture.width - 2 * gap)
    widths = [number_w + gap + tag_size(probe, meaning, style)[0] - 2 * style.pad for _, _, meaning in entries]
    columns, entry_w = _legend_columns(widths, room, 2 * gap)
    rows = -(-len(entries) // columns)
    row_h = line_h + style.pad
    out = Image.new("RGB", (picture.width, picture.height + 2 * gap + rows * row_h - style.pad), STRIP)
    out.paste(picture.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(out)
    for k, (number, color, meaning) in enumerate(entries):
        x = gap + (k // rows) * (entry_w + 2 * gap)
        y = picture.height + gap + (k % rows) * row_h
        draw_tag(draw, (x, y, x + number_w - 1, y + line_h - 1), number, color, style)
        shown = fit_text(draw, meaning, style, entry_w - number_w - gap)
        _, ink_h, offset = tag_size(draw, shown or " ", style)
        draw.text((x + number_w + gap - offset[0], y + (line_h - ink_h) // 2 + style.pad - offset[1]), shown,
                  fill=STRIP_TEXT, font=style.font)
    return out


def _legend_columns(widths: Sequence[int], room: int, gap: int) -> tuple[int, int]:
    """(columns, column width) for legend entries ``widths`` pixels wide in ``room`` pixels, columns
    ``gap`` apart: the most columns in which at least 90% of the entries fit whole (the others are
    cut with an ellipsis), so one long name does not force a single column."""
    ordered = sorted(widths)
    typical = ordered[(len(ordered) - 1) * 9 // 10]
    columns = max(1, min(len(widths), (room + gap) // (min(typical, room) + gap)))
    entry_w = (room + gap) // columns - gap
    return columns, min(entry_w, ordered[-1])


def add_caption(picture: Image.Image, text: str, style: Style | None = None) -> Image.Image:
    """``picture`` with a dark strip below it holding ``text`` (cut with an ellipsis to fit)."""
    style = style or style_for(picture.height, picture.width)
    probe = ImageDraw.Draw(picture)
    _, text_h, _ = tag_size(probe, "Ag", style)
    strip = text_h + 4 * style.pad
    out = Image.new("RGB", (picture.width, picture.height + strip), STRIP)
    out.paste(picture.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(out)
    shown = fit_text(draw, text, style, picture.width - 4 * style.pad - 2 * style.pad)
    _, _, offset = tag_size(draw, shown or " ", style)
    draw.text((2 * style.pad - offset[0], picture.height + 2 * style.pad - offset[1]), shown,
              fill=STRIP_TEXT, font=style.font)
    return out
