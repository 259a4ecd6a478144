"""Pictures side by side under a title (the evaluation's example pictures: ground truth beside
the predictions)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from regionspot.viz import side_by_side


def _grey(height: int, width: int, value: int = 90) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def _colour_pixels(out: Image.Image, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(np.asarray(out) == np.asarray(colour, np.uint8), axis=2)


def test_side_by_side_places_panels_under_a_title() -> None:
    left = Image.fromarray(_grey(90, 120, 40))
    right = Image.fromarray(_grey(60, 100, 200))
    sheet = side_by_side([("left", left), ("right", right)], title="image 7", legend=[((225, 30, 60), "wrong")],
                         gap=10)
    arr = np.asarray(sheet)
    assert sheet.mode == "RGB" and sheet.width == 10 + 120 + 10 + 100 + 10
    dark = np.flatnonzero((arr[:, 10:130] == 40).all(axis=(1, 2)))  # rows wholly of the left panel
    assert len(dark) == 90 and dark[0] > 20 and sheet.height > dark[-1] + 20  # title above, legend below
    light = np.flatnonzero((arr[:, 140:240] == 200).all(axis=(1, 2)))
    assert light[0] == dark[0] and len(light) == 60  # panels share their top
    assert (arr[: dark[0], :, :] < 128).any()  # title and headings are drawn
    assert _colour_pixels(sheet, (225, 30, 60))[dark[-1]:].sum() > 20  # the legend's swatch
    big = side_by_side([("big", Image.fromarray(_grey(400, 1600)))], title="t", panel_side=800)
    assert 800 <= big.width <= 800 + 2 * 12  # scaled to panel_side
    with pytest.raises(ValueError, match="at least one panel"):
        side_by_side([], title="t")
    with pytest.raises(ValueError, match="panel_side"):
        side_by_side([("a", left)], title="t", panel_side=4)
