"""The web page in a real browser: Debian's chromium driven by Selenium through chromedriver.

The session fixture ``live_server`` (tests/serve/conftest.py) serves the app with a tiny model
(MobileSAM + tiny random CLIP, untrained head). The tests upload a COCO photo, draw a box with
the mouse, recognize it, inspect the region (top-k list, attention map), check API errors are
shown, and run the page's RLE decoder and drawing helpers against the Python side. Screenshots
go to ``test-artifacts/browser/`` at the repository root.

Without chromium the tests are skipped, except under CI (``CI`` set), where they fail:
``.ci/run`` installs ``chromium`` and ``chromium-driver`` with apt.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from regionspot.ops.masks import encode_rle
from regionspot.viz import HEAT_RAMP, PALETTE, upsample_attention

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
PHOTO = "000000000009.jpg"
VOCABULARY = ["bowl", "broccoli", "orange", "dining table"]
WAIT_S = 300  # recognition runs MobileSAM on a slow, shared CPU: be generous
NETWORK_ERROR = "the server responded with a status of"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _browser_paths() -> tuple[str | None, str | None]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return chromium, driver


@pytest.fixture(scope="session")  # session: set up (or skipped) before the live server starts
def driver() -> Iterator[Any]:
    chromium, chromedriver = _browser_paths()
    if chromium is None or chromedriver is None:
        message = "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        if _in_ci():
            pytest.fail(f"CI is set but {message}")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1100", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(chromedriver))
    browser.set_script_timeout(60)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def photo(coco_sample: Path) -> Path:
    return (coco_sample / "images" / PHOTO).resolve()


# ------------------------------------------------------------------------------------------- helpers


def _wait(browser: Any, condition: Any, what: str, timeout: float = WAIT_S) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, timeout, poll_frequency=0.2).until(condition)
    except TimeoutException:
        error = browser.execute_script("return document.getElementById('error').textContent")
        pytest.fail(f"timed out waiting for {what}; the page's error message: {error!r}")


def _element(browser: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id)


def _open_page(browser: Any, base_url: str) -> None:
    browser.get_log("browser")  # empty the console log; errors while the page loads count
    browser.get(base_url + "/")
    _wait(browser, lambda b: not _element(b, "info").text.startswith("Loading"), "the model information", 60)


def _upload(browser: Any, photo: Path) -> None:
    _element(browser, "file").send_keys(str(photo))
    _wait(browser, lambda b: b.execute_script("return document.getElementById('canvas').width > 0"),
          "the image on the canvas", 60)


def _drag_box(browser: Any, start: tuple[int, int], end: tuple[int, int]) -> None:
    """Mouse drag on the canvas between two points given in canvas (CSS) pixels from its top-left."""
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = _element(browser, "canvas")
    width, height = canvas.size["width"], canvas.size["height"]
    to_center = lambda point: (point[0] - width // 2, point[1] - height // 2)  # noqa: E731 - offsets are from the centre
    actions = ActionChains(browser)
    actions.move_to_element_with_offset(canvas, *to_center(start)).click_and_hold()
    for step in (1, 2, 3):
        x = start[0] + (end[0] - start[0]) * step // 3
        y = start[1] + (end[1] - start[1]) * step // 3
        actions.move_to_element_with_offset(canvas, *to_center((x, y)))
    actions.release().perform()


def _console_errors(browser: Any, allow_network_errors: bool = False) -> list[str]:
    entries = browser.get_log("browser")
    return [e["message"] for e in entries if e["level"] == "SEVERE"
            and not (allow_network_errors and NETWORK_ERROR in e["message"])]


def _screenshot(browser: Any, name: str) -> Path:
    """Save a screenshot of the whole page (Chrome DevTools, beyond the viewport); print its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = browser.execute_cdp_cmd("Page.captureScreenshot",
                                   {"format": "png", "captureBeyondViewport": True, "clip": clip})
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path}")
    return path


def _canvas_pixels(browser: Any, element_id: str) -> np.ndarray:
    """A canvas's pixels as an ``HxWx3`` uint8 array (through a PNG data URL)."""
    import io

    url = browser.execute_script(f"return document.getElementById('{element_id}').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


# --------------------------------------------------------------------------------------------- tests


def test_upload_draw_recognize_and_inspect_a_region(driver: Any, live_server: str, photo: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _open_page(driver, live_server)
    with urllib.request.urlopen(live_server + "/v1/info", timeout=30) as response:
        info = json.load(response)
    assert _element(driver, "untrained-note").is_displayed() == (info["trained"] is False)
    assert "SAM" in _element(driver, "info").text
    assert _element(driver, "method-note").text.startswith("Answering: ") and info["model"] in \
        _element(driver, "method-note").text
    _upload(driver, photo)
    shown_width = driver.execute_script("return document.getElementById('canvas').getBoundingClientRect().width")
    assert shown_width > 200
    scale = Image.open(photo).size[0] / shown_width  # image pixels per CSS pixel

    _drag_box(driver, (40, 60), (260, 240))
    boxes = driver.find_elements(By.CSS_SELECTOR, "#box-list li")
    assert len(boxes) == 1
    box = json.loads(boxes[0].text.split("]")[0] + "]")  # "[x0, y0, x1, y1] Delete"
    np.testing.assert_allclose(box, np.array([40, 60, 260, 240]) * scale, atol=2 * scale + 1)

    _element(driver, "vocabulary").send_keys(", ".join(VOCABULARY))
    _element(driver, "recognize").click()
    _wait(driver, lambda b: b.find_elements(By.CSS_SELECTOR, "#results li"), "labels in #results")
    results = driver.find_elements(By.CSS_SELECTOR, "#results li")
    assert len(results) == 1
    label = results[0].find_element(By.CSS_SELECTOR, ".label").text
    assert label in VOCABULARY
    assert not _element(driver, "error").is_displayed()
    assert not _element(driver, "busy").is_displayed()
    tag_pixels = np.all(_canvas_pixels(driver, "canvas") == PALETTE[0], axis=2)  # region 0's tag on the image
    assert tag_pixels.sum() > 100

    canvas = _element(driver, "canvas")  # click inside the region on the image
    ActionChains(driver).move_to_element_with_offset(
        canvas, 150 - canvas.size["width"] // 2, 150 - canvas.size["height"] // 2).click().perform()
    _wait(driver, lambda b: _element(b, "details").is_displayed(), "the region details", 30)
    topk = driver.find_elements(By.CSS_SELECTOR, "#topk-list li")
    assert 1 <= len(topk) <= len(VOCABULARY)
    assert topk[0].find_element(By.CSS_SELECTOR, ".label").text == label
    assert {item.find_element(By.CSS_SELECTOR, ".label").text for item in topk} <= set(VOCABULARY)
    attention = _element(driver, "attention")
    assert attention.is_displayed() and attention.size["width"] > 100
    heat = _canvas_pixels(driver, "attention").astype(float)
    plain = np.asarray(Image.open(photo).convert("RGB").resize((heat.shape[1], heat.shape[0])), float)
    assert np.abs(heat - plain).mean() > 10  # the photo under a heat map
    assert np.corrcoef(heat.mean(axis=2).ravel(), plain.mean(axis=2).ravel())[0, 1] > 0.3  # ... still visible
    _screenshot(driver, "recognize.png")
    assert _console_errors(driver) == []


def test_api_errors_are_shown_and_drop_loads_an_image(driver: Any, live_server: str, photo: Path) -> None:
    """A file dropped on the drop zone is loaded; the server's 422 message appears in #error."""
    from selenium.webdriver.common.by import By

    _open_page(driver, live_server)
    _element(driver, "recognize").click()  # nothing loaded yet: a message, no request
    assert "image" in _element(driver, "error").text.lower()
    driver.execute_script("""
        const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], arguments[1], {type: 'image/jpeg'}));
        document.getElementById('dropzone').dispatchEvent(
            new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));""",
                          base64.b64encode(photo.read_bytes()).decode("ascii"), photo.name)
    _wait(driver, lambda b: b.execute_script("return document.getElementById('canvas').width > 0"),
          "the dropped image on the canvas", 60)
    assert photo.name in _element(driver, "file-name").text
    _drag_box(driver, (30, 30), (200, 160))
    _element(driver, "vocabulary").send_keys("cat, dog, Cat")  # duplicate names: the server says 422
    _element(driver, "recognize").click()
    _wait(driver, lambda b: _element(b, "error").is_displayed() and _element(b, "error").text, "an error message")
    message = _element(driver, "error").text
    assert message.startswith("Recognition failed:") and "cat" in message.lower()
    assert not _element(driver, "busy").is_displayed()
    assert driver.find_elements(By.CSS_SELECTOR, "#results li") == []
    _screenshot(driver, "api-error.png")
    assert _console_errors(driver, allow_network_errors=True) == []


def test_auto_boxes_with_a_builtin_vocabulary(driver: Any, live_server: str, photo: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from regionspot.vocab import parse_vocabulary

    _open_page(driver, live_server)
    _upload(driver, photo)
    driver.execute_script("""
        window.sentFields = [];
        const send = window.fetch;
        window.fetch = (url, options) => {
            if (options && options.body instanceof FormData)
                window.sentFields.push([url, Array.from(options.body.keys())]);
            return send(url, options);
        };""")  # record which fields each request sends
    _element(driver, "auto-boxes").click()
    _wait(driver, lambda b: b.find_elements(By.CSS_SELECTOR, "#box-list li") or _element(b, "error").is_displayed(),
          "automatic boxes")
    assert not _element(driver, "error").is_displayed(), _element(driver, "error").text
    count = len(driver.find_elements(By.CSS_SELECTOR, "#box-list li"))
    Select(_element(driver, "builtin-vocabulary")).select_by_value("coco")
    assert not _element(driver, "vocabulary").is_enabled()
    _element(driver, "recognize").click()
    _wait(driver, lambda b: b.find_elements(By.CSS_SELECTOR, "#results li") or _element(b, "error").is_displayed(),
          "labels in #results")
    assert not _element(driver, "error").is_displayed(), _element(driver, "error").text
    labels = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#results li .label")]
    assert len(labels) == count and set(labels) <= set(parse_vocabulary("coco"))
    (propose_url, propose_fields), (recognize_url, recognize_fields) = driver.execute_script("return window.sentFields")
    assert propose_url.endswith("v1/propose") and "image" in propose_fields
    assert recognize_url.endswith("v1/recognize") and "image_id" in recognize_fields  # not uploaded again
    assert "image" not in recognize_fields and {"boxes", "vocabulary", "attention"} <= set(recognize_fields)
    _element(driver, "masks").click()  # masks off: the canvas is redrawn without them, no error
    _screenshot(driver, "auto-boxes.png")
    assert _console_errors(driver) == []


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
    decoded = driver.execute_script("""
        return arguments[0].map(r => {
            const m = window.RegionSpotRle.decodeMask(r);
            return [m.height, m.width, Array.from(m.data).join('')];
        });""", rles)
    for mask, (height, width, bits) in zip(masks, decoded, strict=True):
        assert (height, width) == mask.shape
        np.testing.assert_array_equal(np.frombuffer(bits.encode(), np.uint8).reshape(height, width) - 48, mask)
    broken = driver.execute_script("""
        try { window.RegionSpotRle.decodeMask({size: [4, 4], counts: '3'}); return 'no error'; }
        catch (e) { return e.message; }""")
    assert "cover" in broken


def test_page_drawing_matches_viz(driver: Any, live_server: str) -> None:
    """draw.js uses viz.py's palette and heat ramp, and upsamples attention the same way."""
    _open_page(driver, live_server)
    palette, ramp = driver.execute_script(
        "return [window.RegionSpotDraw.PALETTE, window.RegionSpotDraw.HEAT_RAMP]")
    assert [tuple(c) for c in palette] == list(PALETTE)
    assert [tuple(c) for c in ramp] == list(HEAT_RAMP)
    grid = np.random.default_rng(1).random((4, 4)).astype(np.float32)
    in_page = driver.execute_script(
        "return Array.from(window.RegionSpotDraw.upsampleGrid(arguments[0], 40, 30))", grid.tolist())
    np.testing.assert_allclose(np.array(in_page).reshape(30, 40), upsample_attention(grid, 30, 40), atol=0.02)
    mask_pixels = driver.execute_script("""
        const data = new Uint8Array(20 * 10);
        for (let y = 2; y < 8; y++) for (let x = 5; x < 15; x++) data[y * 20 + x] = 1;
        const overlay = window.RegionSpotDraw.maskOverlay([{height: 10, width: 20, data: data}], [0], 20, 10, 0.45);
        const px = overlay.getContext('2d').getImageData(0, 0, 20, 10).data;
        const at = (x, y) => Array.from(px.slice(4 * (y * 20 + x), 4 * (y * 20 + x) + 4));
        return [at(10, 5), at(5, 5), at(10, 2), at(0, 0), at(15, 5)];""")
    inside, left_edge, top_edge, outside, right_of = (np.array(p) for p in mask_pixels)
    assert inside[3] == round(0.45 * 255) and np.abs(inside[:3] - PALETTE[0]).max() <= 2
    assert left_edge.tolist() == top_edge.tolist() == [*PALETTE[0], 255]  # solid contour
    assert outside[3] == right_of[3] == 0
