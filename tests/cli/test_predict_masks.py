"""``regionspot predict --masks PATH``: every accepted file format reads back to the same regions,
and every bad file is one error line before any model is loaded (no model runs here; the answer
against the Python API is checked in test_predict_cmd.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from regionspot.cli.main import main
from regionspot.cli.region_masks import read_region_masks
from regionspot.ops.masks import encode_rle
from regionspot.ops.prompts import PromptError

SIZE = (12, 16)  # (H, W) of the masks of the format tests


def three_masks() -> np.ndarray:
    """Bool [3, 12, 16]: a rectangle, an L shape and a single pixel, disjoint."""
    masks = np.zeros((3, *SIZE), bool)
    masks[0, 1:4, 2:9] = True
    masks[1, 6:11, 1:3] = True
    masks[1, 9:11, 1:7] = True
    masks[2, 5, 14] = True
    return masks


def labels_of(masks: np.ndarray, values: list[int]) -> np.ndarray:
    """Int [H, W] label image holding ``values[i]`` on mask i (0 elsewhere)."""
    labels = np.zeros(masks.shape[1:], np.int64)
    for mask, value in zip(masks, values, strict=True):
        labels[mask] = value
    return labels


def write_png_grey(path: Path, masks: np.ndarray) -> None:
    Image.fromarray(labels_of(masks, [3, 80, 255]).astype(np.uint8), mode="L").save(path)


def write_png_16bit(path: Path, masks: np.ndarray) -> None:
    Image.fromarray(labels_of(masks, [7, 300, 65000]).astype(np.uint16)).save(path)


def write_png_palette(path: Path, masks: np.ndarray) -> None:
    image = Image.fromarray(labels_of(masks, [1, 2, 9]).astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0] + [200, 10, 10] * 255)  # two labels share a colour: the index counts
    image.save(path)


def write_png_rgb(path: Path, masks: np.ndarray) -> None:
    colours = np.array([[0, 0, 0], [0, 40, 200], [10, 0, 0], [255, 255, 0]], np.uint8)  # by 0xRRGGBB value
    Image.fromarray(colours[labels_of(masks, [1, 2, 3])]).save(path)


def write_png_rgba(path: Path, masks: np.ndarray) -> None:
    rgba = np.full((*SIZE, 4), (250, 250, 250, 0), np.uint8)  # white but fully transparent: background
    for mask, colour in zip(masks, [(1, 1, 1), (9, 0, 0), (9, 0, 1)], strict=True):
        rgba[mask] = (*colour, 255)
    Image.fromarray(rgba, mode="RGBA").save(path)


def write_npy_labels(path: Path, masks: np.ndarray) -> None:
    np.save(path, labels_of(masks, [-4, 2, 100]).astype(np.int16))


def write_npy_float_labels(path: Path, masks: np.ndarray) -> None:
    np.save(path, labels_of(masks, [1, 2, 3]).astype(np.float32))


def write_npy_stack(path: Path, masks: np.ndarray) -> None:
    np.save(path, masks)


def write_npy_stack_uint8(path: Path, masks: np.ndarray) -> None:
    np.save(path, masks.astype(np.uint8) * 255)


def write_json_list(path: Path, masks: np.ndarray) -> None:
    path.write_text(json.dumps(encode_rle(masks)))


def write_json_document(path: Path, masks: np.ndarray) -> None:  # as `regionspot predict --out` writes
    regions = [{"box": [0, 0, 1, 1], "label": "cat", "score": 0.5, "mask": rle} for rle in encode_rle(masks)]
    path.write_text(json.dumps({"image": {"height": SIZE[0], "width": SIZE[1]}, "regions": regions}))


def write_json_uncompressed(path: Path, masks: np.ndarray) -> None:
    rles = []
    for mask in masks:  # COCO's uncompressed RLE: run lengths, column-major, starting with a 0 run
        flat = mask.T.reshape(-1).astype(np.int8)
        changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
        rles.append({"size": list(SIZE), "counts": np.diff(np.concatenate([[0], changes])).tolist()})
    path.write_text(json.dumps(rles))


STACK_FORMATS: dict[str, Callable[[Path, np.ndarray], None]] = {
    "grey.png": write_png_grey, "wide.png": write_png_16bit, "palette.png": write_png_palette,
    "colours.png": write_png_rgb, "transparent.png": write_png_rgba, "labels.npy": write_npy_labels,
    "float-labels.npy": write_npy_float_labels, "stack.npy": write_npy_stack, "stack-uint8.npy": write_npy_stack_uint8,
    "rles.json": write_json_list, "document.json": write_json_document, "uncompressed.json": write_json_uncompressed,
}


@pytest.mark.parametrize("name", list(STACK_FORMATS))
def test_each_format_reads_back_the_same_regions(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    STACK_FORMATS[name](path, three_masks())
    masks = read_region_masks(str(path), SIZE)
    assert masks.dtype == bool
    np.testing.assert_array_equal(masks, three_masks())


def write_png_binary(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def write_png_bilevel(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask).save(path)  # PIL mode "1"


def write_png_white_on_black(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=2)).save(path)


def write_npy_bool(path: Path, mask: np.ndarray) -> None:
    np.save(path, mask)


def write_json_dict(path: Path, mask: np.ndarray) -> None:
    path.write_text(json.dumps(encode_rle(mask[None])[0]))


SINGLE_FORMATS: dict[str, Callable[[Path, np.ndarray], None]] = {
    "binary.png": write_png_binary, "bilevel.png": write_png_bilevel, "white.png": write_png_white_on_black,
    "mask.npy": write_npy_bool, "rle.json": write_json_dict,
}


@pytest.mark.parametrize("name", list(SINGLE_FORMATS))
def test_a_binary_mask_is_one_region(tmp_path: Path, name: str) -> None:
    mask = three_masks().any(axis=0)  # three blobs, one region
    path = tmp_path / name
    SINGLE_FORMATS[name](path, mask)
    np.testing.assert_array_equal(read_region_masks(str(path), SIZE), mask[None])


def test_masks_of_a_stack_may_overlap(tmp_path: Path) -> None:
    masks = np.zeros((2, *SIZE), bool)
    masks[0, 2:8, 2:8] = masks[1, 4:10, 4:12] = True
    np.save(tmp_path / "overlap.npy", masks)
    np.testing.assert_array_equal(read_region_masks(str(tmp_path / "overlap.npy"), SIZE), masks)


# --- mistakes: one line, before the model is loaded --------------------------------------------------


def write_bad(path: Path, size: tuple[int, int]) -> None:
    """The bad file ``path`` names (its file name says what is wrong with it); ``size`` is the
    image's (H, W)."""
    height, width = size
    name = path.name
    if name == "small.png":
        Image.new("L", (width - 1, height), 255).save(path)
    elif name == "small.npy":
        np.save(path, np.ones((2, height, width + 3), bool))
    elif name == "small.json":
        path.write_text(json.dumps(encode_rle(np.ones((1, height + 1, width), bool))))
    elif name == "black.png":
        Image.new("RGB", (width, height)).save(path)
    elif name == "zeros.npy":
        np.save(path, np.zeros((height, width), np.uint8))
    elif name == "empty-second.npy":
        stack = np.zeros((3, height, width), bool)
        stack[0, 5, 5] = stack[2, 1, 1] = True
        np.save(path, stack)
    elif name == "empty.json":
        path.write_text(json.dumps(encode_rle(np.zeros((1, height, width), bool))))
    elif name in ("garbage.png", "garbage.npy", "garbage.json"):
        path.write_bytes(b"\x89 definitely not a mask \xff")
    elif name == "short-runs.json":
        path.write_text(json.dumps([{"size": [height, width], "counts": ""}]))
    elif name == "bad-counts.json":
        path.write_text(json.dumps([{"size": [height, width], "counts": "zzzz"}]))
    elif name == "not-rle.json":
        path.write_text(json.dumps([[0, 0, 10, 10]]))
    elif name == "strings.npy":
        np.save(path, np.array([["a"] * width] * height))
    elif name == "four-d.npy":
        np.save(path, np.ones((1, 1, height, width), bool))
    elif name == "nan.npy":
        np.save(path, np.full((height, width), np.nan))


@pytest.mark.parametrize(("name", "message"), [
    ("small.png", "small.png: masks are {w1}x{h} (WxH) but the image is {w}x{h}: give masks at the image's size"),
    ("small.npy", "small.npy: masks are {w3}x{h} (WxH) but the image is {w}x{h}"),
    ("small.json", "small.json: mask 0 has size [{h1}, {w}] ([H, W]: {w} wide, {h1} high) but the image is "
                   "[{h}, {w}]"),
    ("black.png", "black.png: no region in this label image: every pixel is 0 (background)"),
    ("zeros.npy", "zeros.npy: no region in this label image"),
    ("empty-second.npy", "empty-second.npy: mask 1 is empty: a region needs at least one pixel"),
    ("empty.json", "empty.json: mask 0 is empty"),
    ("garbage.png", "garbage.png: not an image file PIL can read"),
    ("garbage.npy", "garbage.npy: not a readable .npy array"),
    ("garbage.json", "garbage.json is not valid JSON"),
    ("short-runs.json", "short-runs.json: mask 0's run lengths do not add up to its {h}x{w} pixels"),
    ("bad-counts.json", "bad-counts.json: mask 0's run lengths do not add up"),
    ("not-rle.json", 'not-rle.json: mask 0 must be a COCO RLE {{"size": [H, W], "counts": "..."}}'),
    ("strings.npy", "strings.npy: the array must be bool, integer or float"),
    ("four-d.npy", "four-d.npy: the array must be a label image [H, W] or masks [R, H, W], got shape"),
    ("nan.npy", "nan.npy: the label image holds NaN or infinite values"),
    ("missing.png", "--masks: file not found:"),
])
def test_bad_mask_files_are_one_error_line_before_loading(photo: Path, tmp_path: Path, capsys, name: str,
                                                          message: str) -> None:
    width, height = Image.open(photo).size
    path = tmp_path / name
    write_bad(path, (height, width))
    code = main(["predict", str(photo), "--masks", str(path), "--vocab", "cat", "--checkpoint",
                 str(tmp_path / "not-loaded")])
    err = capsys.readouterr().err
    expected = message.format(w=width, h=height, w1=width - 1, w3=width + 3, h1=height + 1)
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and expected in err, err


def test_a_folder_is_not_a_mask_file(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="is a folder"):
        read_region_masks(str(tmp_path), SIZE)


def test_a_photo_given_as_masks_is_refused(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "photo.png")
    with pytest.raises(PromptError, match=r"more than 1000: is it a photo"):
        read_region_masks(str(tmp_path / "photo.png"), (64, 64))


def test_masks_with_boxes_are_refused(photo: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["predict", str(photo), "--boxes", "1,2,30,40", "--masks", str(tmp_path / "m.png"), "--vocab", "cat"])
    assert exited.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@pytest.fixture(scope="module")
def photo(coco_sample: Path) -> Path:
    return coco_sample / "images" / "000000000009.jpg"
