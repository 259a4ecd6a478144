"""Readable pictures of crowded scenes: tags that never overlap (number tags and a legend for the
regions without room), ``max_labels``, and whole-image masks drawn as contours only."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from regionspot.viz import draw_regions, region_color
from regionspot.viz.labels import nearest_free, number_candidates, overlaps, place_labels, tag_candidates
from regionspot.viz.style import STRIP, style_for
from regionspot.viz.tags import draw_tags


def _grey(height: int, width: int, value: int = 90) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def _colour_pixels(out: Image.Image | np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(np.asarray(out) == np.asarray(colour, np.uint8), axis=2)


def _crowd(count: int, seed: int = 0, size: tuple[int, int] = (640, 480)) -> list[tuple[int, int, int, int]]:
    """``count`` boxes (inclusive xyxy pixel rectangles) piled around the middle of a ``size`` image."""
    rng = np.random.default_rng(seed)
    width, height = size
    boxes = []
    for _ in range(count):
        x1, y1 = int(rng.integers(width // 4, width // 2)), int(rng.integers(height // 4, height // 2))
        boxes.append((x1, y1, x1 + int(rng.integers(20, 160)), y1 + int(rng.integers(20, 160))))
    return boxes


@pytest.mark.parametrize("count", [30, 50])
def test_no_two_tags_overlap_in_a_crowd(count: int) -> None:
    boxes = _crowd(count)
    placements = place_labels(boxes, [(110, 20)] * count, (22, 18), (640, 480))
    rects = [p.rect for p in placements]
    assert len(rects) == count
    assert not [(i, j) for i in range(count) for j in range(i) if overlaps(rects[i], rects[j])]
    assert all(r[0] >= 0 and r[1] >= 0 and r[2] < 640 and r[3] < 480 for r in rects)
    numbered = [i for i, p in enumerate(placements) if p.number is not None]
    assert numbered and placements[0].number is None  # the best region keeps its full tag
    assert [placements[i].number for i in numbered] == list(range(1, len(numbered) + 1))  # best first
    for i in numbered:  # number tags: the right size, next to their box
        left, top, right, bottom = placements[i].rect
        assert (right - left + 1, bottom - top + 1) == (22, 18)
        box = boxes[i]
        assert max(box[0] - right, left - box[2], box[1] - bottom, top - box[3]) <= 3 * 18


def test_full_tags_prefer_the_spot_above_then_inside() -> None:
    box = (100, 100, 300, 200)
    assert tag_candidates(box, 50, 20, (640, 480))[:2] == [(100, 80, 149, 99), (100, 100, 149, 119)]
    first, second = place_labels([box, box], [(50, 20), (50, 20)], (20, 16), (640, 480))
    assert first.rect == (100, 80, 149, 99) and second.rect == (100, 100, 149, 119)  # above, then inside the top
    assert first.number is None and second.number is None
    assert all(r[3] < 480 for r in tag_candidates((0, 470, 50, 479), 30, 20, (640, 480)))
    assert number_candidates(box, 20, 16, (640, 480))[0] == (100, 100, 119, 115)  # inside the top-left corner


def test_nearest_free_spot_avoids_taken_ones() -> None:
    box = (100, 100, 140, 140)
    taken = [(60, 60, 180, 180)]  # everything around the box is taken ...
    assert nearest_free(box, 20, 16, (640, 480), taken, reach=10) is None
    spot = nearest_free(box, 20, 16, (640, 480), taken, reach=60)  # ... until the reach goes past it
    assert spot is not None and not overlaps(spot, taken[0])


def test_regions_without_room_are_numbered_in_the_legend() -> None:
    image = _grey(200, 300)
    boxes = [(40, 60, 200, 160)] * 10  # ten regions on the same box: at most 8 full tags fit around it
    style = style_for(200, 300)
    picture = Image.fromarray(image)
    items = [(i, box, f"thing{i} 0.{9 - i}") for i, box in enumerate(boxes)]  # best first
    legend = draw_tags(ImageDraw.Draw(picture), items, style, (300, 200))
    assert [number for number, _, _ in legend] == [str(n) for n in range(1, len(legend) + 1)]
    assert [text for _, _, text in legend] == [text for _, _, text in items[8:]]
    assert all(colour == region_color(int(text[5])) for _, colour, text in legend)
    scores = np.linspace(0.9, 0.0, 10)
    xyxy = np.array(boxes, float) + np.array([0, 0, 1, 1])  # the inclusive rectangles as xyxy boxes
    out = np.asarray(draw_regions(image, xyxy, [f"thing{i}" for i in range(10)], scores))
    assert out.shape[0] > 200 and out.shape[1] == 300  # a legend strip below the photo
    strip = out[200:]
    assert (strip == STRIP).all(axis=2).mean() > 0.5
    for _, colour, _ in legend:  # each numbered region's number tag, in its colour, in the legend
        assert _colour_pixels(strip, colour).sum() > 20
    assert _colour_pixels(strip, region_color(0)).sum() == 0  # the best region has its full tag, no entry


def test_no_legend_when_every_tag_fits() -> None:
    image = _grey(200, 300)
    out = draw_regions(image, np.array([[20, 60, 120, 180], [160, 60, 280, 180]], float), ["a", "b"],
                       np.array([0.9, 0.4]))
    assert out.size == (300, 200)


def test_max_labels_tags_only_the_best_regions() -> None:
    image = _grey(200, 400)
    boxes = np.array([[10, 80, 120, 190], [140, 80, 250, 190], [270, 80, 390, 190]], float)
    scores = np.array([0.3, 0.9, 0.6])
    out = draw_regions(image, boxes, ["a", "b", "c"], scores, max_labels=2)
    assert out.size == (400, 200)  # the untagged region gets no number and no legend either
    above = np.asarray(out)[:79]
    assert _colour_pixels(above, region_color(1)).sum() > 50  # the best ...
    assert _colour_pixels(above, region_color(2)).sum() > 50  # ... and the second best are tagged
    assert _colour_pixels(above, region_color(0)).sum() == 0  # the worst is not
    np.testing.assert_array_equal(np.asarray(out)[120, 10], region_color(0))  # but its box is drawn
    with pytest.raises(ValueError, match="max_labels"):
        draw_regions(image, boxes, ["a", "b", "c"], scores, max_labels=0)


def test_a_mask_over_half_the_image_is_drawn_as_its_contour_only() -> None:
    image = _grey(100, 100, 90)
    masks = np.zeros((2, 100, 100), bool)
    masks[0, 5:95, 5:95] = True  # 81% of the image
    masks[1, 40:60, 40:60] = True  # 4%: filled as usual
    boxes = np.array([[0, 0, 100, 100], [30, 30, 70, 70]], float)
    out = np.asarray(draw_regions(image, boxes, ["room", "cup"], np.array([0.5, 0.9]), masks, mask_alpha=0.5))
    np.testing.assert_array_equal(out[50, 5], region_color(0))  # the contour is painted
    np.testing.assert_array_equal(out[94, 50], region_color(0))
    np.testing.assert_array_equal(out[80:90, 10:30], image[80:90, 10:30])  # its interior is untouched
    filled = np.round(90 * 0.5 + np.asarray(region_color(1), float) * 0.5)
    np.testing.assert_array_equal(out[50, 50], filled)  # the small mask is filled
    half = np.zeros((1, 100, 100), bool)
    half[0, :50] = True  # exactly half: still filled
    out = np.asarray(draw_regions(image, np.array([[0, 0, 100, 50]], float), ["x"], None, half, mask_alpha=0.5))
    np.testing.assert_array_equal(out[30, 50], np.round(90 * 0.5 + np.asarray(region_color(0), float) * 0.5))


def test_among_several_a_tag_wider_than_half_the_image_becomes_a_number() -> None:
    boxes = [(10, 50, 60, 90), (150, 50, 190, 90)]
    wide, narrow = place_labels(boxes, [(120, 16), (40, 16)], (14, 14), (200, 100))
    assert wide.number == 1 and narrow.number is None
    alone = place_labels(boxes[:1], [(120, 16)], (14, 14), (200, 100))[0]
    assert alone.number is None  # a single tag is never numbered for its width


def test_one_long_name_does_not_force_a_single_legend_column() -> None:
    from regionspot.viz.tags import _legend_columns

    columns, width = _legend_columns([60] * 9 + [400], room=300, gap=8)
    assert columns == 4 and width == (300 + 8) // 4 - 8  # the long entry is cut to the column width
    assert _legend_columns([60, 80], room=300, gap=8) == (2, 80)  # no wider than the widest entry
    assert _legend_columns([500], room=300, gap=8) == (1, 300)
