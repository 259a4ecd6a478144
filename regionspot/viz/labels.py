"""Where the tags of many regions go so that no two tags overlap (pure geometry, no drawing).

Tags are placed best-scoring region first. Each full tag (``"name 0.87"``) takes the first
spot, among eight around its box, that overlaps no tag already placed: above the box or inside
its top edge (at the box's left edge, then at its right edge), then below it or inside its
bottom edge (left, then right). A region whose full tag fits nowhere gets a small number tag
instead (1, 2, ... in score order), at the first free one of its box's corners or, failing
those, at the free spot nearest to the box within a few tag heights. Among several tags, a full
tag wider than half the image (a long name on a small picture) gets a number too, rather than
covering the picture. The numbers are explained in a legend drawn below the picture
(:func:`regionspot.viz.tags.add_legend`). Only where even that finds no room (a picture packed
with tags) is a number tag drawn over another one, at the box's top-left corner.

All rectangles are inclusive pixel rectangles ``left, top, right, bottom`` (xyxy, absolute pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from regionspot.viz.style import Rect

#: How far from its box (in number-tag heights) a number tag may be moved to find room.
NUMBER_REACH = 3


@dataclass(frozen=True)
class Placement:
    """Where one region's tag goes."""

    rect: Rect         # the tag's pixel rectangle (inclusive xyxy)
    number: int | None  # None: the full tag; 1, 2, ...: a number tag, explained in the legend


def overlaps(a: Rect, b: Rect) -> bool:
    """Whether two inclusive pixel rectangles share a pixel."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _inside(rect: Rect, image_size: tuple[int, int]) -> bool:
    width, height = image_size
    return rect[0] >= 0 and rect[1] >= 0 and rect[2] < width and rect[3] < height


def _clamp_left(left: int, tag_w: int, width: int) -> int:
    return max(0, min(left, width - tag_w))


def tag_candidates(box: Rect, tag_w: int, tag_h: int, image_size: tuple[int, int]) -> list[Rect]:
    """Spots for a ``tag_w x tag_h`` full tag of ``box`` inside a ``(width, height)`` image,
    preferred first: above the box, inside its top (at the box's left edge, then at its right
    edge); below it, inside its bottom (left, then right). A tag taller than the image is pinned
    to the top."""
    width, height = image_size
    lefts = dict.fromkeys(_clamp_left(x, tag_w, width) for x in (box[0], box[2] - tag_w + 1))
    tops = ((box[1] - tag_h, box[1]), (box[3] + 1, box[3] - tag_h + 1))  # above, inside; below, inside
    places = [(left, top, left + tag_w - 1, top + tag_h - 1) for pair in tops for left in lefts for top in pair]
    places = list(dict.fromkeys(p for p in places if p[1] >= 0 and p[3] < height))
    if not places:  # taller than the image: pin to the top
        left = next(iter(lefts))
        places.append((left, 0, left + tag_w - 1, min(tag_h, height) - 1))
    return places


def number_candidates(box: Rect, tag_w: int, tag_h: int, image_size: tuple[int, int]) -> list[Rect]:
    """Spots for a small number tag at ``box``'s corners, preferred first: inside the top-left
    corner, above it, left of it; the same at the top-right corner; then inside / below the
    bottom-left and bottom-right corners. Only spots wholly inside the image."""
    x1, y1, x2, y2 = box
    right = x2 - tag_w + 1
    corners = ((x1, y1), (x1, y1 - tag_h), (x1 - tag_w, y1), (right, y1), (right, y1 - tag_h), (x2 + 1, y1),
               (x1, y2 - tag_h + 1), (x1, y2 + 1), (right, y2 - tag_h + 1), (right, y2 + 1))
    places = [(x, y, x + tag_w - 1, y + tag_h - 1) for x, y in corners]
    return list(dict.fromkeys(p for p in places if _inside(p, image_size)))


def nearest_free(box: Rect, tag_w: int, tag_h: int, image_size: tuple[int, int], placed: Sequence[Rect],
                 reach: int) -> Rect | None:
    """The spot for a ``tag_w x tag_h`` tag that overlaps no rectangle of ``placed``, lies inside
    the image and is nearest to ``box`` (at most ``reach`` pixels away; ties: nearest to its top-left
    corner), searched on a grid of a third of the tag height; None when there is none."""
    width, height = image_size
    step = max(1, tag_h // 3)
    xs = np.arange(max(0, box[0] - reach - tag_w), min(width - tag_w, box[2] + reach) + 1, step)
    ys = np.arange(max(0, box[1] - reach - tag_h), min(height - tag_h, box[3] + reach) + 1, step)
    if not len(xs) or not len(ys):
        return None
    gx, gy = (grid.reshape(-1) for grid in np.meshgrid(xs, ys))
    spots = np.stack([gx, gy, gx + tag_w - 1, gy + tag_h - 1], axis=1)
    gap_x = np.maximum.reduce([box[0] - spots[:, 2] - 1, spots[:, 0] - box[2] - 1, np.zeros(len(spots), int)])
    gap_y = np.maximum.reduce([box[1] - spots[:, 3] - 1, spots[:, 1] - box[3] - 1, np.zeros(len(spots), int)])
    free = np.maximum(gap_x, gap_y) <= reach
    if len(placed):
        taken = np.asarray(placed)
        hit = ((spots[:, None, 0] <= taken[None, :, 2]) & (taken[None, :, 0] <= spots[:, None, 2])
               & (spots[:, None, 1] <= taken[None, :, 3]) & (taken[None, :, 1] <= spots[:, None, 3]))
        free &= ~hit.any(axis=1)
    if not free.any():
        return None
    corner = np.abs(spots[:, 0] - box[0]) + np.abs(spots[:, 1] - box[1])
    best = np.lexsort((corner, gap_x + gap_y, ~free))[0]
    left, top, right, bottom = (int(v) for v in spots[best])
    return left, top, right, bottom


def _first_free(options: Sequence[Rect], placed: Sequence[Rect]) -> Rect | None:
    return next((c for c in options if not any(overlaps(c, p) for p in placed)), None)


def place_labels(boxes: Sequence[Rect], tag_sizes: Sequence[tuple[int, int]], number_size: tuple[int, int],
                 image_size: tuple[int, int]) -> list[Placement]:
    """One :class:`Placement` per box, for ``boxes`` given best-scoring first.

    ``tag_sizes``: each full tag's ``(width, height)``; ``number_size``: the ``(width, height)`` of
    every number tag; ``image_size``: ``(width, height)``. Full tags are placed first, in the given
    order (among several, a tag wider than half the image never is); the boxes left without room then get number
    tags 1, 2, ... in the same order. No two
    returned rectangles overlap unless the picture has no free spot near a box at all.
    """
    placed: list[Rect] = []
    result: list[Placement | None] = [None] * len(boxes)
    pending = []
    for i, (box, (tag_w, tag_h)) in enumerate(zip(boxes, tag_sizes, strict=True)):
        too_wide = len(boxes) > 1 and 2 * tag_w > image_size[0]
        spot = None if too_wide else _first_free(tag_candidates(box, tag_w, tag_h, image_size), placed)
        if spot is None:
            pending.append(i)
        else:
            result[i] = Placement(spot, None)
            placed.append(spot)
    number_w, number_h = number_size
    for number, i in enumerate(pending, start=1):
        options = number_candidates(boxes[i], number_w, number_h, image_size)
        spot = (_first_free(options, placed)
                or nearest_free(boxes[i], number_w, number_h, image_size, placed, NUMBER_REACH * number_h))
        if spot is None:  # no room anywhere near: on top, at the corner
            spot = options[0] if options else tag_candidates(boxes[i], number_w, number_h, image_size)[0]
        result[i] = Placement(spot, number)
        placed.append(spot)
    return [p for p in result if p is not None]
