"""The web page's ES modules in a real browser (chromium through Selenium): rle.js decodes the
server's masks exactly, draw.js uses viz's palette, heat ramp and contour-only rule and
upsamples attention as viz does, labels.js places crowded labels without overlaps. Nothing here
runs the model; the page is served by ``live_server`` (tests/serve/conftest.py). The browser
fixture and helpers are test_browser.py's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from test_browser import _in_module, _open_page, driver  # tests/serve is on sys.path

from regionspot.ops.masks import encode_rle
from regionspot.viz import CONTOUR_ONLY_AREA, HEAT_RAMP, PALETTE, upsample_attention

__all__ = ["driver"]  # a fixture, imported to be used here


def test_rle_decoder_matches_the_server_encoder(driver: Any, live_server: str) -> None:
    """rle.js decodes the server's COCO compressed RLE (regionspot.ops.masks.encode_rle) exactly."""
    _open_page(driver, live_server)
    rng = np.random.default_rng(0)
    masks = [np.zeros((7, 5), bool), np.ones((6, 9), bool), rng.random((33, 47)) > 0.5]
    blob = np.zeros((300, 420), bool)
    blob[40:260, 100:400] = True  # long runs: multi-character numbers
    blob[100:120, :] = False
    blob[5, 3] = True  # and a short run after a long one: a negative delta
    masks.append(blob)
    rles = [encode_rle(m[None])[0] for m in masks]
    assert any(len(r["counts"]) > 2 for r in rles)
    decoded = _in_module(driver, "rle.js", """
        return args[0].map(r => {
            const mask = m.decodeMask(r);
            return [mask.height, mask.width, Array.from(mask.data).join('')];
        });""", rles)
    for mask, (height, width, bits) in zip(masks, decoded, strict=True):
        assert (height, width) == mask.shape
        np.testing.assert_array_equal(np.frombuffer(bits.encode(), np.uint8).reshape(height, width) - 48, mask)
    broken = _in_module(driver, "rle.js", """
        try { m.decodeMask({size: [4, 4], counts: '3'}); return 'no error'; }
        catch (e) { return e.message; }""")
    assert "cover" in broken


def test_page_drawing_matches_viz(driver: Any, live_server: str) -> None:
    """draw.js uses viz's palette, heat ramp and contour-only rule, and upsamples attention the same way."""
    _open_page(driver, live_server)
    palette, ramp, share = _in_module(driver, "draw.js", "return [m.PALETTE, m.HEAT_RAMP, m.LARGE_MASK_SHARE]")
    assert [tuple(c) for c in palette] == list(PALETTE)
    assert [tuple(c) for c in ramp] == list(HEAT_RAMP)
    assert share == CONTOUR_ONLY_AREA
    assert not driver.execute_script("return Object.keys(window).some(k => k.startsWith('RegionSpot'))")
    grid = np.random.default_rng(1).random((4, 4)).astype(np.float32)
    in_page = _in_module(driver, "draw.js", "return Array.from(m.upsampleGrid(args[0], 40, 30))", grid.tolist())
    np.testing.assert_allclose(np.array(in_page).reshape(30, 40), upsample_attention(grid, 30, 40), atol=0.02)
    small, large = _in_module(driver, "draw.js", """
        const paint = (x0, x1) => {
            const data = new Uint8Array(20 * 10);
            for (let y = 2; y < 8; y++) for (let x = x0; x < x1; x++) data[y * 20 + x] = 1;
            const shape = m.prepareMask({height: 10, width: 20, data: data});
            const overlay = m.maskOverlay([{shape: shape, rgb: m.PALETTE[0]}], 20, 10, 0.45);
            const px = overlay.getContext('2d').getImageData(0, 0, 20, 10).data;
            const at = (x, y) => Array.from(px.slice(4 * (y * 20 + x), 4 * (y * 20 + x) + 4));
            return [at(10, 5), at(x0, 5), at(10, 2), at(0, 0), at(x1, 5)];
        };
        return [paint(5, 15), paint(1, 19)];""")  # 30% and 54% of the image
    inside, left_edge, top_edge, outside, right_of = (np.array(p) for p in small)
    assert inside[3] == round(0.45 * 255) and np.abs(inside[:3] - PALETTE[0]).max() <= 2
    assert left_edge.tolist() == top_edge.tolist() == [*PALETTE[0], 255]  # solid contour
    assert outside[3] == right_of[3] == 0
    inside, left_edge, top_edge, _, _ = (np.array(p) for p in large)
    assert inside[3] == 0 and left_edge.tolist() == top_edge.tolist() == [*PALETTE[0], 255]  # contour only


def test_crowded_labels_do_not_overlap(driver: Any, live_server: str) -> None:
    """labels.js: 30 regions on a few spots get full tags where there is room and number tags
    at their box corners elsewhere; no two full tags overlap."""
    _open_page(driver, live_server)
    boxes = [[20 + 40 * (i % 3), 30 + 10 * (i % 5), 200 + 40 * (i % 3), 160 + 10 * (i % 5)] for i in range(30)]
    tags = _in_module(driver, "labels.js", """
        const canvas = document.createElement('canvas');
        canvas.width = 400; canvas.height = 300;
        const items = args[0].map((box, i) => ({box: box, text: 'dining table 0.' + (99 - i), number: i + 1,
                                                rgb: [230, 25, 75]}));
        return m.placeTags(canvas.getContext('2d'), items, 13, 400, 300);""", boxes)
    full = [tag["rect"] for tag in tags if tag["full"]]
    numbers = [tag for tag in tags if not tag["full"]]
    assert tags[0]["full"] and tags[0]["text"] == "dining table 0.99" and len(full) >= 3 and numbers
    for i, a in enumerate(full):
        assert a[0] >= 0 and a[2] <= 400 and a[1] >= 0 and a[3] <= 300
        for b in full[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    for tag, box in zip(tags, boxes, strict=True):
        if not tag["full"]:
            assert tag["text"] == str(tags.index(tag) + 1)
            corner_x = min(abs(tag["rect"][0] - box[0]), abs(tag["rect"][2] - box[2]))
            corner_y = min(abs(tag["rect"][1] - box[1]), abs(tag["rect"][3] - box[3]))
            assert corner_x < 1 and corner_y < 1  # at a corner of its box
