"""The web page's Masks picker in a real browser (chromium through Selenium), on the
``live_server`` of tests/serve/conftest.py (MobileSAM + tiny random CLIP, untrained head).

A mask image at the photo's size (a binary mask, or a label image with one region per
non-black colour) is decoded in the page (mask_upload.js) into one uncompressed COCO RLE per
region (run lengths, column-major) and sent as ``region_masks``; the answer replaces the
regions shown. One page load: the RLE builder against numpy (in the page's module), the page's own errors (no photo,
no vocabulary, wrong size, nothing but black, too many regions: no request for any), then a
two-rectangle label image recognized, then a server 422 shown. The browser fixture and helpers
are test_browser.py's; screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_browser import (  # the page's browser fixture and helpers (tests/serve is on sys.path)
    _console_errors,
    _element,
    _in_module,
    _open_page,
    _record_requests,
    _screenshot,
    _upload,
    _wait,
    driver,
)

from regionspot.ops.masks import decode_rle

__all__ = ["driver"]  # a fixture, imported to be used here

PHOTO = "000000000009.jpg"  # 640 x 480
VOCABULARY = "orange, broccoli, bowl, dining table"
RED = (230, 40, 40)
GREEN = (40, 200, 60)
TIMES = " \N{MULTIPLICATION SIGN} "  # the page writes sizes as "W x H" with this sign
FIRST = (slice(50, 150), slice(60, 200))  # rows, columns: the red rectangle (met first reading the image)
SECOND = (slice(250, 400), slice(300, 639))  # the green one, up to the last column but one


@pytest.fixture(scope="module")
def photo(coco_sample: Path) -> Path:
    return (coco_sample / "images" / PHOTO).resolve()


def _runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts of a bool [H, W] mask: column-major runs, 0s first."""
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(edges).tolist()
    return [0, *runs] if flat[0] else runs


def _decoded(rle: dict[str, Any]) -> np.ndarray:
    """A run-length RLE decoded by pycocotools (frPyObjects, then regionspot's decode_rle)."""
    from pycocotools import mask as mask_utils

    height, width = rle["size"]
    return decode_rle([dict(mask_utils.frPyObjects(rle, height, width))])[0]


def _png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def _pick(browser: Any, path: Path) -> None:
    _element(browser, "mask-file").send_keys(str(path))


def _error_after_pick(browser: Any, path: Path, *words: str) -> str:
    """Pick `path` as the mask image; wait for a page error holding all `words`; return it."""
    _pick(browser, path)
    _wait(browser, lambda b: all(w in _element(b, "error").text for w in words) and _element(b, "error").is_displayed(),
          f"an error naming {words}", 30)
    return _element(browser, "error").text


def _sent(browser: Any) -> list[tuple[str, dict[str, str]]]:
    return [(url, fields) for url, fields in browser.execute_script("return window.sentFields")]


def _listed(browser: Any) -> list[tuple[str, str]]:
    return [tuple(row) for row in browser.execute_script("""
        return Array.from(document.querySelectorAll('#results li button')).map(
            b => [b.querySelector('.label').textContent, b.querySelector('.origin').textContent]);""")]


def _check_rle_builder(browser: Any) -> None:
    """mask_upload.js's regionsFromPixels: one column-major run-length RLE per non-black colour,
    in reading order, transparent pixels ignored, regions touching the first and last pixel."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (9, 13))  # 0: black, 1..3: colours; neighbours of other regions
    labels[0, 0] = 2
    labels[-1, -1] = 3
    colours = np.array([(0, 0, 0), (255, 255, 255), (1, 0, 0), (0, 0, 1)], np.uint8)
    rgba = np.concatenate([colours[labels], np.full((9, 13, 1), 255, np.uint8)], axis=2)
    rgba[4, 5] = (9, 9, 9, 0)  # fully transparent: no region, whatever its colour
    labels[4, 5] = 0
    colors, masks = _in_module(browser, "mask_upload.js", """
        const found = m.regionsFromPixels(new Uint8ClampedArray(args[0]), 13, 9);
        return [found.colors, found.masks];""", rgba.flatten().tolist())
    order = list(dict.fromkeys(int(v) for v in labels.flatten() if v))  # first met reading rows
    assert order[0] == 2 and sorted(order) == [1, 2, 3]
    assert colors == ["rgb({}, {}, {})".format(*colours[v]) for v in order]
    for value, rle in zip(order, masks, strict=True):
        assert rle["size"] == [9, 13]
        assert rle["counts"] == _runs(labels == value) and sum(rle["counts"]) == 9 * 13
        np.testing.assert_array_equal(_decoded(rle), labels == value)


def test_mask_image_regions_are_recognized(driver: Any, live_server: str, photo: Path, tmp_path: Path) -> None:
    width, height = Image.open(photo).size
    _open_page(driver, live_server)
    _check_rle_builder(driver)
    _record_requests(driver)

    label = np.zeros((height, width, 4), np.uint8)
    label[..., 3] = 255
    label[FIRST] = (*RED, 255)
    label[SECOND] = (*GREEN, 255)
    label[5:20, 400:420] = (0, 0, 255, 0)  # blue but fully transparent: ignored
    good = _png(tmp_path / "labels.png", label)
    expected = [np.zeros((height, width), bool) for _ in range(2)]
    expected[0][FIRST] = True
    expected[1][SECOND] = True

    # the page's own errors, before any request
    assert "photo first" in _error_after_pick(driver, good, "photo")
    _upload(driver, photo)
    assert "vocabulary" in _error_after_pick(driver, good, "names")
    _element(driver, "vocabulary").send_keys(VOCABULARY)
    small = _png(tmp_path / "small.png", np.full((height // 2, width // 2), 255, np.uint8))
    _error_after_pick(driver, small, f"{width // 2}{TIMES}{height // 2}", f"{width}{TIMES}{height}", "small.png")
    black = _png(tmp_path / "black.png", np.zeros((height, width, 3), np.uint8))
    _error_after_pick(driver, black, "black.png", "no region")
    many = np.zeros((height, width, 3), np.uint8)
    many[0, :101, 0] = np.arange(1, 102)  # 101 colours, one pixel each
    _error_after_pick(driver, _png(tmp_path / "many.png", many), "101 regions", "at most 100")
    assert _sent(driver) == []

    # the two rectangles: two run-length RLEs, recognized; the answer's regions are listed
    _pick(driver, good)
    _wait(driver, lambda b: len(_sent(b)) == 1 and not _element(b, "busy").is_displayed(), "the mask answer")
    assert not _element(driver, "error").is_displayed(), _element(driver, "error").text
    url, fields = _sent(driver)[0]
    assert url.endswith("v1/recognize") and "image" in fields and fields["vocabulary"] == VOCABULARY
    assert "boxes" not in fields and "points" not in fields
    rles = json.loads(fields["region_masks"])
    assert len(rles) == 2
    for rle, mask in zip(rles, expected, strict=True):
        assert rle["size"] == [height, width] and rle["counts"] == _runs(mask)
        np.testing.assert_array_equal(_decoded(rle), mask)
    rows = _listed(driver)
    assert len(rows) == 2 and {origin for _, origin in rows} == {"mask"}
    assert {name for name, _ in rows} <= set(VOCABULARY.split(", "))
    _screenshot(driver, "masks.png")

    # the server's 422 (a duplicate name) is shown; the regions stay
    _element(driver, "vocabulary").send_keys(", Orange")
    _pick(driver, good)
    _wait(driver, lambda b: len(_sent(b)) == 2 and _element(b, "error").is_displayed(), "the server's error")
    assert "image_id" in _sent(driver)[1][1] and "region_masks" in _sent(driver)[1][1]
    message = _element(driver, "error").text
    assert message.startswith("Recognition of the mask image failed:") and "orange" in message.lower()
    assert len(_listed(driver)) == 2
    assert _console_errors(driver, allow_network_errors=True) == []
