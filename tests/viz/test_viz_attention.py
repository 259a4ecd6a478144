"""Attention maps (the paper's Figure 4): the heat ramp, upsampling, panels and the colour bar."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from regionspot.viz import (
    HEAT_RAMP,
    draw_attention,
    draw_attention_figure,
    heat_colors,
    region_color,
    upsample_attention,
)


def _grey(height: int, width: int, value: int = 90) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def _colour_pixels(out: Image.Image, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(np.asarray(out) == np.asarray(colour, np.uint8), axis=2)


def _hot_cell(grid: int = 4, row: int = 0, col: int = 3) -> np.ndarray:
    attention = np.full((grid, grid), 0.01, np.float32)
    attention[row, col] = 1.0
    return attention / attention.sum()


def test_heat_colors_follow_the_ramp() -> None:
    colours = heat_colors(np.array([0.0, 1.0, 0.5, -3.0, 7.0]))
    assert colours.dtype == np.uint8 and colours.shape == (5, 3)
    np.testing.assert_array_equal(colours[[0, 1, 2]], np.array([HEAT_RAMP[0], HEAT_RAMP[-1], HEAT_RAMP[4]]))
    np.testing.assert_array_equal(colours[3], HEAT_RAMP[0])  # clipped
    np.testing.assert_array_equal(colours[4], HEAT_RAMP[-1])
    halfway = heat_colors(np.array([0.5 / (len(HEAT_RAMP) - 1)]))[0]
    np.testing.assert_allclose(halfway, (np.add(HEAT_RAMP[0], HEAT_RAMP[1])) / 2, atol=0.6)


def test_upsample_attention_spans_the_whole_image() -> None:
    heat = upsample_attention(_hot_cell(), 80, 120)
    assert heat.shape == (80, 120) and heat.dtype == np.float32
    assert heat.max() == pytest.approx(1.0) and heat.min() >= 0
    # the hot cell is the top-right 20x30 block of a 4x4 grid stretched over 80x120
    assert np.unravel_index(heat.argmax(), heat.shape)[0] < 20
    assert np.unravel_index(heat.argmax(), heat.shape)[1] >= 90
    assert heat[60:, :60].max() < 0.05
    assert upsample_attention(np.zeros((3, 3)), 6, 6).max() == 0  # all-zero map stays zero


@pytest.mark.parametrize(("attention", "match"), [
    (np.ones(16), "2-D"), (np.zeros((0, 0)), "2-D"), (np.full((2, 2), np.nan), "finite"),
    (-np.ones((2, 2)), "non-negative"),
])
def test_upsample_attention_errors(attention: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        upsample_attention(attention, 10, 10)


def test_draw_attention_blends_heat_and_draws_box_and_tag() -> None:
    image = _grey(160, 240, 90)
    before = image.copy()
    out = draw_attention(image, [20, 90, 100, 150], _hot_cell(), "cat", score=0.75, alpha=0.5)
    arr = np.asarray(out)
    assert out.size == (240, 160) and out.mode == "RGB"
    np.testing.assert_array_equal(image, before)
    hot = np.round(90 * 0.5 + np.asarray(HEAT_RAMP[-1], float) * 0.5)
    cold = np.round(90 * 0.5 + heat_colors(np.array([0.01]))[0] * 0.5)  # background is 1% of the peak
    np.testing.assert_allclose(arr[5, 230], hot, atol=1)  # inside the hot cell (top right)
    np.testing.assert_allclose(arr[125, 200], cold, atol=1)  # far from it
    np.testing.assert_array_equal(arr[120, 20], region_color(0))  # box left edge
    assert _colour_pixels(out, region_color(0))[60:90, 20:100].sum() > 100  # tag above the box
    no_tag = draw_attention(image, [20, 90, 100, 150], _hot_cell(), None, color_index=2)
    assert _colour_pixels(no_tag, region_color(2))[60:89].sum() == 0
    np.testing.assert_array_equal(np.asarray(no_tag)[120, 20], region_color(2))


def test_draw_attention_alpha_zero_keeps_the_photo_outside_the_box() -> None:
    image = _grey(60, 60, 140)
    out = np.asarray(draw_attention(image, [10, 10, 20, 20], _hot_cell(), alpha=0.0))
    np.testing.assert_array_equal(out[30:, 30:], image[30:, 30:])


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(alpha=1.5), "alpha"), (dict(box=[0, 0, np.inf, 4]), "NaN or infinite"),
    (dict(box=[0, 0, 4]), r"shape \(R, 4\)"), (dict(attention=np.ones((2, 2, 2))), "2-D"),
])
def test_draw_attention_errors(kwargs: dict, match: str) -> None:
    args = dict(image=_grey(20, 20), box=[1, 1, 10, 10], attention=np.ones((2, 2)))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        draw_attention(**args)


def test_attention_figure_tiles_one_panel_per_region() -> None:
    image = _grey(300, 600, 90)
    boxes = np.array([[30, 150, 200, 280], [300, 100, 580, 290], [10, 10, 100, 100]], float)
    attentions = np.stack([_hot_cell(col=3), _hot_cell(col=0), _hot_cell(row=3, col=0)])
    sheet = draw_attention_figure(image, boxes, attentions, ["cat", "dog", "cup"], np.array([.9, .5, .2]),
                                  columns=2, panel_side=300, gap=4)
    # panels are 300x150 (longer side 300), 2 per row, 2 rows, 4 px white gaps, then the colour bar
    assert sheet.width == 2 * 300 + 4 and 2 * 150 + 4 + 10 < sheet.height < 2 * 150 + 4 + 60
    arr = np.asarray(sheet)
    assert (arr[:304, 300:304] == 255).all() and (arr[150:154, :] == 255).all()
    assert (arr[154:304, 304:] == 255).all()  # no fourth panel
    hot = np.round(90 * 0.5 + np.asarray(HEAT_RAMP[-1], float) * 0.5)
    np.testing.assert_allclose(arr[5, 295], hot, atol=1)  # panel 1: hot top right
    np.testing.assert_allclose(arr[5, 309], hot, atol=1)  # panel 2: hot top left
    np.testing.assert_allclose(arr[154 + 145, 5], hot, atol=1)  # panel 3: hot bottom left
    for index, (x, y) in enumerate([(15, 110), (304 + 150, 75), (5, 154 + 25)]):  # scaled box left edges
        assert _colour_pixels(sheet, region_color(index))[y - 3:y + 3, x - 2:x + 2].any(), index


def test_attention_figure_keeps_the_colours_it_is_given() -> None:
    image = _grey(100, 200, 90)
    boxes = np.array([[10, 10, 90, 90], [110, 10, 190, 90]], float)
    sheet = draw_attention_figure(image, boxes, np.stack([_hot_cell()] * 2), color_indices=[3, 7])
    assert _colour_pixels(sheet, region_color(3)).sum() > 100 and _colour_pixels(sheet, region_color(7)).sum() > 100
    assert _colour_pixels(sheet, region_color(0)).sum() == 0
    with pytest.raises(ValueError, match="2 attention maps but 1 color_indices"):
        draw_attention_figure(image, boxes, np.stack([_hot_cell()] * 2), color_indices=[3])


def test_attention_figure_errors() -> None:
    image = _grey(20, 20)
    with pytest.raises(ValueError, match="R >= 1"):
        draw_attention_figure(image, np.zeros((0, 4)), np.zeros((0, 2, 2)))
    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        draw_attention_figure(image, np.array([[0, 0, 5, 5], [1, 1, 6, 6]]), np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="columns"):
        draw_attention_figure(image, np.array([[0, 0, 5, 5]]), np.ones((1, 2, 2)), columns=0)


def _bar_run(strip: np.ndarray) -> tuple[int, int, int]:
    """(row, first column, last column) of the colour bar in ``strip`` (HxWx3): the row whose
    pixels run from HEAT_RAMP's first colour to its last."""
    low, high = np.asarray(HEAT_RAMP[0], np.uint8), np.asarray(HEAT_RAMP[-1], np.uint8)
    for row in range(strip.shape[0]):
        starts = np.flatnonzero((strip[row] == low).all(axis=1))
        ends = np.flatnonzero((strip[row] == high).all(axis=1))
        if len(starts) and len(ends) and ends[-1] > starts[0]:
            return row, int(starts[0]), int(ends[-1])
    raise AssertionError("no colour bar below the panels")


@pytest.mark.parametrize("count", [1, 3])
def test_attention_figure_ends_with_a_heat_colour_bar(count: int) -> None:
    image = _grey(200, 400, 90)
    boxes = np.array([[20, 20, 120, 120]] * count, float)
    sheet = np.asarray(draw_attention_figure(image, boxes, np.stack([_hot_cell()] * count), panel_side=400))
    strip = sheet[200:]  # below the one row of panels (at most 4 per row)
    row, first, last = _bar_run(strip)
    width = last - first + 1
    assert width >= 0.4 * min(sheet.shape[1], 360)  # a bar, not a dot
    expected = heat_colors(np.linspace(0.0, 1.0, width))  # low (left) to high (right) along HEAT_RAMP
    np.testing.assert_array_equal(strip[row, first:last + 1], expected)
    bar_rows = np.flatnonzero((strip[:, first:last + 1] == expected).all(axis=(1, 2)))
    assert len(bar_rows) >= 6  # several pixels tall
    ink = strip.astype(int).sum(axis=2) < 300  # dark text on the white strip
    assert ink[:, :first - 2].sum() > 10 and ink[:, last + 3:].sum() > 10  # "low" left, "high" right (not the rim)
