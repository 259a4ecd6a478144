"""regionspot.viz.draw_regions: boxes, masks and tags on a photo; saving figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from regionspot.ops.image import load_image
from regionspot.viz import PALETTE, contrast_text_color, draw_regions, region_color, save_figure


def _grey(height: int, width: int, value: int = 90) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def _colour_pixels(out: Image.Image, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(np.asarray(out) == np.asarray(colour, np.uint8), axis=2)


def test_output_size_mode_and_input_untouched() -> None:
    image = _grey(120, 200)
    before = image.copy()
    out = draw_regions(image, np.array([[20.0, 30.0, 120.0, 100.0]]), ["cat"], np.array([0.87]))
    assert isinstance(out, Image.Image)
    assert out.size == (200, 120) and out.mode == "RGB"
    np.testing.assert_array_equal(image, before)
    assert not np.array_equal(np.asarray(out), image)


def test_mask_fill_blend_and_untouched_background() -> None:
    image = _grey(100, 160, 90)
    mask = np.zeros((1, 100, 160), bool)
    mask[0, 40:90, 30:130] = True
    box = np.array([[30, 40, 130, 90]])
    out = np.asarray(draw_regions(image, box, ["dog"], np.array([0.5]), mask, mask_alpha=0.5))
    colour = np.asarray(region_color(0), np.float64)
    expected = np.round(90 * 0.5 + colour * 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[65, 80], expected)  # deep inside the mask
    np.testing.assert_array_equal(out[45:85, 40:120].reshape(-1, 3).min(0), expected)
    np.testing.assert_array_equal(out[95:, 140:], image[95:, 140:])  # far from everything
    np.testing.assert_array_equal(out[40, 60], region_color(0))  # on the contour / box edge


def test_mask_contour_is_solid_colour() -> None:
    image = _grey(100, 100, 90)
    mask = np.zeros((1, 100, 100), bool)
    mask[0, 50:80, 50:80] = True  # mask well inside its box: contour separate from the outline
    out = np.asarray(draw_regions(image, np.array([[10, 10, 95, 95]]), ["x"], np.array([0.9]), mask))
    np.testing.assert_array_equal(out[65, 50], region_color(0))
    np.testing.assert_array_equal(out[79, 65], region_color(0))
    assert not np.array_equal(out[65, 65], np.asarray(region_color(0), np.uint8))  # interior translucent


def test_box_outline_and_tag_above() -> None:
    image = _grey(200, 300)
    out = draw_regions(image, np.array([[50, 100, 250, 180]]), ["person"], np.array([0.87]))
    arr = np.asarray(out)
    colour = region_color(0)
    np.testing.assert_array_equal(arr[140, 50], colour)  # left edge
    np.testing.assert_array_equal(arr[179, 150], colour)  # bottom edge
    tag = _colour_pixels(out, colour)[:100, :]  # above the box: only the tag has the colour
    assert tag.sum() > 100
    rows = np.flatnonzero(tag.any(axis=1))
    assert 96 <= rows.max() <= 99 and rows.min() > 60  # right above the box edge


def test_tag_inside_when_box_touches_top() -> None:
    image = _grey(200, 300)
    out = draw_regions(image, np.array([[50, 0, 250, 150]]), ["person"], np.array([0.87]))
    filled = _colour_pixels(out, region_color(0))
    # the tag fills a patch inside the box, next to its top-left corner
    assert filled[3:12, 55:90].mean() > 0.5
    assert filled[60:140, 60:240].sum() == 0  # box interior below the tag untouched


def test_colors_replace_the_palette() -> None:
    image = _grey(200, 300)
    boxes = np.array([[20, 60, 120, 180], [160, 60, 280, 180]], float)
    masks = np.zeros((2, 200, 300), bool)
    masks[0, 100:170, 30:110] = True
    chosen = [(40, 170, 70), (225, 30, 60)]
    out = draw_regions(image, boxes, ["a", "b"], np.array([0.9, 0.4]), masks, colors=chosen)
    arr = np.asarray(out)
    np.testing.assert_array_equal(arr[120, 20], chosen[0])  # left edge of box 0
    np.testing.assert_array_equal(arr[120, 160], chosen[1])  # left edge of box 1
    np.testing.assert_array_equal(arr[100, 70], chosen[0])  # mask 0's contour
    assert _colour_pixels(out, region_color(0)).sum() == 0 and _colour_pixels(out, region_color(1)).sum() == 0
    assert _colour_pixels(out, chosen[1])[:60].sum() > 50  # box 1's tag, above it, in its colour


def test_text_pixels_contrast_with_tag() -> None:
    image = _grey(200, 300)
    out = np.asarray(draw_regions(image, np.array([[50, 100, 250, 180]]), ["person"], np.array([0.87])))
    text_colour = np.asarray(contrast_text_color(region_color(0)), float)
    other = 255.0 - text_colour  # the colour the text would have with the wrong choice
    tag_area = out[60:100, 50:250].astype(float)
    near_text = np.abs(tag_area - text_colour).max(axis=2) < 60
    near_other = np.abs(tag_area - other).max(axis=2) < 60
    assert near_text.sum() > 20 and near_other.sum() == 0


@pytest.mark.parametrize("box", [[0, 0, 64, 48], [-20, -20, 90, 70], [60, 40, 64, 48], [0, 47, 64, 48]])
def test_boxes_touching_or_crossing_edges(box: list[float]) -> None:
    image = _grey(48, 64)
    masks = np.zeros((1, 48, 64), bool)
    masks[0, 40:, 50:] = True  # mask touching the bottom-right corner
    out = draw_regions(image, np.array([box], float), ["edge"], np.array([0.3]), masks)
    assert out.size == (64, 48)
    assert _colour_pixels(out, region_color(0)).sum() > 0


def test_box_outside_image_not_drawn() -> None:
    image = _grey(50, 50)
    out = draw_regions(image, np.array([[100, 100, 150, 150]]), ["far"], np.array([0.9]))
    np.testing.assert_array_equal(np.asarray(out), image)


def test_one_pixel_high_region() -> None:
    image = _grey(60, 80)
    mask = np.zeros((1, 60, 80), bool)
    mask[0, 30, 10:70] = True
    out = np.asarray(draw_regions(image, np.array([[10, 30, 70, 31]]), ["wire"], np.array([0.6]), mask))
    np.testing.assert_array_equal(out[30, 40], region_color(0))
    np.testing.assert_array_equal(out[45:, :], image[45:, :])  # the tag goes above, not below


def test_one_pixel_high_image() -> None:
    image = _grey(1, 50)
    mask = np.ones((1, 1, 50), bool)
    out = draw_regions(image, np.array([[5, 0, 45, 1]]), ["strip"], np.array([0.4]), mask)
    assert out.size == (50, 1)
    assert _colour_pixels(out, region_color(0)).sum() > 0


def test_no_regions_returns_the_image() -> None:
    image = _grey(30, 40)
    out = draw_regions(image, np.zeros((0, 4)), [], np.zeros(0), np.zeros((0, 30, 40), bool))
    np.testing.assert_array_equal(np.asarray(out), image)


def test_distinct_colours_per_region() -> None:
    assert len(set(PALETTE)) == len(PALETTE) >= 10
    image = _grey(100, 300, 0)
    boxes = np.array([[10 + 60 * i, 40, 50 + 60 * i, 90] for i in range(4)], float)
    out = draw_regions(image, boxes, ["a", "b", "c", "d"], np.array([0.1, 0.2, 0.3, 0.4]))
    for i in range(4):
        np.testing.assert_array_equal(np.asarray(out)[65, 10 + 60 * i], region_color(i))
    assert region_color(len(PALETTE)) == region_color(0)


def test_each_mask_gets_its_region_colour() -> None:
    image = _grey(100, 200, 90)
    masks = np.zeros((2, 100, 200), bool)
    masks[0, 40:90, 10:90] = True
    masks[1, 40:90, 110:190] = True
    boxes = np.array([[10, 40, 90, 90], [110, 40, 190, 90]], float)
    out = np.asarray(draw_regions(image, boxes, ["a", "b"], np.array([0.5, 0.6]), masks, mask_alpha=0.5))
    for i, x in enumerate((50, 150)):
        expected = np.round(90 * 0.5 + np.asarray(region_color(i), float) * 0.5).astype(np.uint8)
        np.testing.assert_array_equal(out[70, x], expected)


def test_overlapping_tags_are_moved_apart() -> None:
    image = _grey(300, 300, 90)
    boxes = np.array([[50, 100, 250, 280], [52, 102, 240, 270]], float)
    out = draw_regions(image, boxes, ["best", "other"], np.array([0.9, 0.5]))
    best, other = _colour_pixels(out, region_color(0)), _colour_pixels(out, region_color(1))
    assert best[60:99].sum() > 100  # the best-scoring tag keeps the spot above its box
    assert other[:100].sum() == 0  # the other tag is not stacked on it ...
    assert other[102:118, 52:100].sum() > 150  # ... but moved inside its own box's top


def test_scores_none_draws_names_only() -> None:
    image = _grey(100, 200)
    with_score = np.asarray(draw_regions(image, np.array([[20, 50, 180, 90]]), ["cat"], np.array([0.87])))
    without = np.asarray(draw_regions(image, np.array([[20, 50, 180, 90]]), ["cat"], None))
    tag_width = [
        _colour_pixels(Image.fromarray(a), region_color(0))[:50].any(axis=0).sum()
        for a in (with_score, without)
    ]
    assert tag_width[1] < tag_width[0]  # "cat" is a shorter tag than "cat 0.87"


def test_line_width_and_font_scale_with_image_size() -> None:
    def measure(side: int) -> tuple[int, int]:
        image = _grey(side, side, 0)
        box = np.array([[side * 0.25, side * 0.5, side * 0.75, side * 0.9]])
        filled = _colour_pixels(draw_regions(image, box, ["cat"], np.array([0.5])), region_color(0))
        line = int(filled[int(side * 0.7), : side // 2].sum())
        tag_height = int(filled[: int(side * 0.5), int(side * 0.25) + 2].sum())
        return line, tag_height

    small, large = measure(200), measure(2000)
    assert large[0] >= 4 * small[0]
    assert large[1] >= 4 * small[1]


def test_contrast_text_color() -> None:
    assert contrast_text_color((255, 255, 255)) == (0, 0, 0)
    assert contrast_text_color((255, 225, 25)) == (0, 0, 0)
    assert contrast_text_color((0, 0, 0)) == (255, 255, 255)
    assert contrast_text_color((0, 0, 128)) == (255, 255, 255)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(labels=["a"]), "2 boxes but 1 labels"),
    (dict(scores=np.array([0.1])), "2 boxes but 1 scores"),
    (dict(masks=np.zeros((2, 10, 11), bool)), "masks must have shape"),
    (dict(boxes=np.array([[0, 0, np.nan, 5], [0, 0, 5, 5]])), "NaN"),
    (dict(mask_alpha=1.5), "mask_alpha"),
    (dict(boxes=np.array([0, 0, 5, 5, 1, 1, 6, 6], float)), r"shape \(R, 4\)"),
    (dict(colors=[(1, 2, 3)]), "2 boxes but 1 colors"),
])
def test_input_errors(kwargs: dict, match: str) -> None:
    args = dict(image=_grey(10, 10), boxes=np.array([[0, 0, 5, 5], [1, 1, 6, 6]], float),
                labels=["a", "b"], scores=np.array([0.1, 0.2]), masks=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        draw_regions(**args)


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")  # numpy 2 notice
def test_real_coco_photo(coco_sample: Path, tmp_path: Path) -> None:
    coco = COCO(str(coco_sample / "annotations.json"))
    image_id = 9
    info = coco.loadImgs(image_id)[0]
    image = load_image(coco_sample / "images" / info["file_name"])
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False))
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
    labels = [coco.cats[a["category_id"]]["name"] for a in anns]
    masks = np.stack([coco.annToMask(a).astype(bool) for a in anns])
    scores = np.linspace(0.3, 0.95, len(anns))
    out = draw_regions(image, boxes, labels, scores, masks)
    assert out.size == (image.shape[1], image.shape[0])
    changed = np.any(np.asarray(out) != image, axis=2)
    assert changed[masks.any(axis=0)].mean() > 0.99  # every masked pixel is tinted
    path = save_figure(out, tmp_path / "figs" / "coco_9.png")
    assert path.is_file()
    np.testing.assert_array_equal(load_image(path), np.asarray(out))


def test_save_figure_array_and_jpeg(tmp_path: Path) -> None:
    arr = _grey(20, 30, 200)
    png = save_figure(arr, tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(png), arr)
    jpg = save_figure(Image.fromarray(arr), tmp_path / "b.jpg")
    assert Image.open(jpg).format == "JPEG"


@pytest.mark.parametrize(("name", "message"), [
    ("no_suffix", r"no_suffix: give a file suffix such as \.png or \.jpg"),
    ("x.notaformat", r"unknown file extension: \.notaformat"),  # PIL's own message
])
def test_save_figure_bad_suffix(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        save_figure(_grey(5, 5), tmp_path / name)


# --- legibility on real dark and light photos -------------------------------------------------------


def _darkest_and_lightest(coco_sample: Path) -> list[Path]:
    """The sample's darkest and lightest photos by mean grey level (JPEG draft decode: fast)."""
    levels = []
    for path in sorted((coco_sample / "images").glob("*.jpg")):
        with Image.open(path) as photo:
            photo.draft("RGB", (80, 80))
            levels.append((float(np.asarray(photo.convert("L")).mean()), path))
    levels.sort()
    return [levels[0][1], levels[-1][1]]


def test_tags_are_solid_on_dark_and_light_photos(coco_sample: Path) -> None:
    """On the darkest and the lightest photo each tag is its own opaque patch: only the region
    colour, the contrasting text colour and their anti-aliased blends, none of the photo."""
    for path in _darkest_and_lightest(coco_sample):
        image = load_image(path)
        height, width = image.shape[:2]
        boxes = np.array([[width * 0.2, height * 0.4, width * 0.6, height * 0.9],
                          [width * 0.5, height * 0.2, width * 0.9, height * 0.7]])
        out = np.asarray(draw_regions(image, boxes, ["person", "frisbee"], np.array([0.9, 0.4]))).astype(float)
        for index, box in enumerate(boxes):
            fill = np.asarray(region_color(index), float)
            text = np.asarray(contrast_text_color(region_color(index)), float)
            rows = (out[: int(box[1]), int(box[0]) + 2] == fill).all(axis=1)  # tag column above the box
            assert rows.sum() >= 8, path.name
            top, bottom = np.flatnonzero(rows)[[0, -1]]
            patch = out[top:bottom + 1, int(box[0]) + 2:int(box[0]) + 40].reshape(-1, 3)
            # every pixel lies on the segment between fill and text colour
            t = np.clip(((patch - fill) @ (text - fill)) / ((text - fill) @ (text - fill)), 0, 1)
            off_segment = np.abs(patch - (fill + t[:, None] * (text - fill))).max(axis=1)
            assert off_segment.max() <= 3, path.name
            assert (t > 0.8).sum() > 5, path.name  # and there is text


def test_click_markers_foreground_in_region_colour_background_dark_with_a_white_cross() -> None:
    image = _grey(200, 300, 140)
    box = np.array([[50.0, 40.0, 250.0, 180.0]])
    clicks = [(np.array([[100.0, 100.0], [200.0, 100.0]]), np.array([1, 0]))]
    bare = np.asarray(draw_regions(image, box, ["cat"], np.array([0.9])))
    marked = np.asarray(draw_regions(image, box, ["cat"], np.array([0.9]), clicks=clicks))
    changed = np.argwhere((bare != marked).any(axis=-1))
    assert len(changed) and (np.abs(changed - [100, 100]).max(axis=1) <= 8).sum() > 0
    assert ((np.abs(changed - [100, 100]).max(axis=1) <= 8) | (np.abs(changed - [100, 200]).max(axis=1) <= 8)).all()
    assert tuple(marked[100, 100]) == region_color(0)  # foreground: a disc in the region's colour
    assert tuple(marked[100, 200]) == (255, 255, 255)  # background: the cross's centre is white
    assert marked[100, 203].max() < 60  # ... on a dark disc
    with pytest.raises(ValueError, match="clicks must be given for each of the 1 regions"):
        draw_regions(image, box, ["cat"], np.array([0.9]), clicks=clicks * 2)
