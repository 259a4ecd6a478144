"""The web page in a real browser: Debian's chromium driven by Selenium through chromedriver.

The session fixture ``live_server`` (tests/serve/conftest.py) serves the app with a tiny model
(MobileSAM + tiny random CLIP, untrained head). The tests upload a COCO photo, draw a box with
the mouse, recognize it, inspect the region (top-k list, attention map), check API errors are
shown. The page's ES modules (RLE decoder, drawing, label placement) are checked against the
Python side in test_page_modules.py; clicks, touch, Find and the display filters in
test_page_clicks.py. Both use this module's ``driver`` fixture and helpers. Screenshots go to
``test-artifacts/browser/`` at the repository root.

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

from regionspot.viz import HEAT_RAMP, PALETTE

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


def _show_canvas(browser: Any) -> Any:
    """Scroll the whole canvas into view, below the sticky action bar (selenium's offsets are from
    the centre of an element's visible part); returns the canvas element."""
    canvas = _element(browser, "canvas")
    browser.execute_script("arguments[0].scrollIntoView({block: 'end'})", canvas)
    top, bar = browser.execute_script("""return [arguments[0].getBoundingClientRect().top,
        document.getElementById('actionbar').getBoundingClientRect().bottom]""", canvas)
    assert top >= bar, "the canvas does not fit in the window below the action bar"
    return canvas


def _canvas_offset(canvas: Any, point: tuple[float, float]) -> tuple[int, int]:
    """A point in canvas (CSS) pixels from its top-left -> selenium's offset from its centre."""
    return round(point[0] - canvas.size["width"] / 2), round(point[1] - canvas.size["height"] / 2)


def _drag_box(browser: Any, start: tuple[int, int], end: tuple[int, int]) -> None:
    """Mouse drag on the canvas between two points given in canvas (CSS) pixels from its top-left."""
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = _show_canvas(browser)
    to_center = lambda point: _canvas_offset(canvas, point)  # noqa: E731
    actions = ActionChains(browser)
    actions.move_to_element_with_offset(canvas, *to_center(start)).click_and_hold()
    for step in (1, 2, 3):
        x = start[0] + (end[0] - start[0]) * step // 3
        y = start[1] + (end[1] - start[1]) * step // 3
        actions.move_to_element_with_offset(canvas, *to_center((x, y)))
    actions.release().perform()


def _in_module(browser: Any, module: str, body: str, *args: Any) -> Any:
    """Run ``body`` (a function body seeing ``m``, the page's ES module ``/static/<module>``, and
    ``args``) in the page and return what it returns; a thrown error fails the test."""
    answer = browser.execute_async_script(f"""
        const done = arguments[arguments.length - 1];
        const args = Array.from(arguments).slice(0, -1);
        import('/static/{module}')
            .then((m) => done({{value: ((m, args) => {{ {body} }})(m, args)}}))
            .catch((e) => done({{error: String(e && e.stack || e)}}));""", *args)
    if "error" in answer:
        pytest.fail(f"{module}: {answer['error']}")
    return answer.get("value")


def _record_requests(browser: Any) -> None:
    """From now on the page keeps, in ``window.sentFields``, [url, {field: text value}] of each
    form it posts (a file field shows as its file name)."""
    browser.execute_script("""
        window.sentFields = [];
        const send = window.fetch;
        window.fetch = (url, options) => {
            if (options && options.body instanceof FormData) {
                const fields = {};
                for (const [key, value] of options.body.entries())
                    fields[key] = typeof value === 'string' ? value : value.name;
                window.sentFields.push([String(url), fields]);
            }
            return send(url, options);
        };""")


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

    _element(driver, "mode-inspect").click()  # clicks now select regions instead of recognizing
    canvas = _show_canvas(driver)  # click inside the region on the image
    ActionChains(driver).move_to_element_with_offset(canvas, *_canvas_offset(canvas, (150, 150))).click().perform()
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
    assert _element(driver, "heat-legend").is_displayed()
    bar = _canvas_pixels(driver, "heat-bar")
    np.testing.assert_allclose(bar[bar.shape[0] // 2, [0, -1]], [HEAT_RAMP[0], HEAT_RAMP[-1]], atol=3)
    assert "dark blue is low" in _element(driver, "attention-note").text
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


@pytest.mark.slow
def test_auto_boxes_with_a_builtin_vocabulary(driver: Any, live_server: str, photo: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from regionspot.vocab import parse_vocabulary

    _open_page(driver, live_server)
    _upload(driver, photo)
    _record_requests(driver)
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
    numbers = [int(e.text) for e in driver.find_elements(By.CSS_SELECTOR, "#results li .number")]
    scores = [float(e.text) for e in driver.find_elements(By.CSS_SELECTOR, "#results li .score")]
    assert numbers == list(range(1, count + 1)) and scores == sorted(scores, reverse=True)  # best first
    _element(driver, "masks").click()  # masks off: the canvas is redrawn without them, no error
    _screenshot(driver, "auto-boxes.png")
    assert _console_errors(driver) == []
