"""The web page's clicks, touch, Find and display filters in a real browser (chromium through
Selenium), on the ``live_server`` of tests/serve/conftest.py (MobileSAM + tiny random CLIP,
untrained head). One page load walks through the steps, since each one runs the model:

click an object (a region with a mask appears) -> Shift-click a background point (the same
region is asked again with ``point_labels`` [[1, 0]]) -> tap with a finger (touch pointer: a
second click region) -> the Background point toggle refines it -> Find "orange" with threshold 0
-> the score and top-N sliders and the Masks / Labels toggles change what is drawn and listed.

The browser fixture and helpers are test_browser.py's; screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_browser import (  # the page's browser fixture and helpers (tests/serve is on sys.path)
    ARTIFACTS,
    _canvas_offset,
    _canvas_pixels,
    _console_errors,
    _element,
    _open_page,
    _record_requests,
    _screenshot,
    _show_canvas,
    _upload,
    _wait,
    driver,
)

__all__ = ["driver"]  # a fixture, imported to be used here

PHOTO = "000000000009.jpg"  # 640 x 480: bowls of oranges and broccoli
VOCABULARY = "orange, broccoli, bowl, dining table"
ORANGE = (414, 110)  # image pixels: the middle of one orange (COCO box [386, 74, 84, 71])
BACKGROUND = (300, 150)  # another point, marked as background for the orange's region
TAP = (200, 350)  # the broccoli in the front bowl
TAP_BACKGROUND = (380, 300)
FOREGROUND_DOT = (40, 200, 70)  # draw.js
BACKGROUND_DOT = (230, 30, 40)


@pytest.fixture(scope="module")
def photo(coco_sample: Path) -> Path:
    return (coco_sample / "images" / PHOTO).resolve()


def _sent(browser: Any) -> list[tuple[str, dict[str, str]]]:
    return [(url, fields) for url, fields in browser.execute_script("return window.sentFields")]


def _idle_after(browser: Any, requests: int, what: str) -> None:
    """Wait until the page has sent `requests` forms and shows no busy indicator."""
    _wait(browser, lambda b: len(b.execute_script("return window.sentFields")) >= requests
          and not _element(b, "busy").is_displayed(), what)
    assert not _element(browser, "error").is_displayed(), _element(browser, "error").text


def _css_point(browser: Any, image_point: tuple[float, float], image_width: int) -> tuple[float, float]:
    shown = browser.execute_script("return document.getElementById('canvas').getBoundingClientRect().width")
    return image_point[0] * shown / image_width, image_point[1] * shown / image_width


def _click(browser: Any, image_point: tuple[float, float], image_width: int, shift: bool = False) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    canvas = _show_canvas(browser)
    actions = ActionChains(browser).move_to_element_with_offset(
        canvas, *_canvas_offset(canvas, _css_point(browser, image_point, image_width)))
    if shift:
        actions.key_down(Keys.SHIFT).click().key_up(Keys.SHIFT)
    else:
        actions.click()
    actions.perform()


def _tap(browser: Any, image_point: tuple[float, float], image_width: int) -> None:
    """A finger tap (a touch pointer through WebDriver actions) at an image point."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    canvas = _show_canvas(browser)
    actions = ActionBuilder(browser, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"))
    offset = _canvas_offset(canvas, _css_point(browser, image_point, image_width))
    actions.pointer_action.move_to(canvas, *offset).pointer_down().pause(0.05).pointer_up()
    actions.perform()


def _listed(browser: Any) -> list[tuple[int, str, float, str]]:
    """The region list: (number, label, score, origin) per entry, in list order."""
    rows = browser.execute_script("""
        return Array.from(document.querySelectorAll('#results li button')).map(b => [
            b.querySelector('.number').textContent, b.querySelector('.label').textContent,
            b.querySelector('.score').textContent, b.querySelector('.origin').textContent]);""")
    return [(int(n), label, float(score), origin) for n, label, score, origin in rows]


def _near(points: list[list[float]], expected: list[tuple[float, float]]) -> bool:
    return len(points) == len(expected) and all(
        abs(p[0] - e[0]) <= 3 and abs(p[1] - e[1]) <= 3 for p, e in zip(points, expected, strict=True))


def _dot_pixels(browser: Any, rgb: tuple[int, int, int]) -> int:
    return int(np.all(np.abs(_canvas_pixels(browser, "canvas").astype(int) - rgb) <= 2, axis=2).sum())


def _shot(browser: Any, name: str) -> None:
    """A screenshot of the window (a whole-page one makes Chrome lay the page out again, at
    another width, so the canvas's pixels would change size); the last step takes a whole page."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / name))


def _set_slider(browser: Any, element_id: str, value: float) -> None:
    browser.execute_script("""
        const slider = document.getElementById(arguments[0]);
        slider.value = String(arguments[1]);
        slider.dispatchEvent(new Event('input', {bubbles: true}));""", element_id, value)


@pytest.mark.slow
def test_click_shift_click_tap_find_and_filter(driver: Any, live_server: str, photo: Path) -> None:
    width = Image.open(photo).size[0]
    _open_page(driver, live_server)
    _upload(driver, photo)
    _element(driver, "vocabulary").send_keys(VOCABULARY)
    _record_requests(driver)
    driver.execute_script("""window.pointerTypes = [];
        document.getElementById('canvas').addEventListener(
            'pointerdown', e => window.pointerTypes.push(e.pointerType));""")

    # a click recognizes the object under it: one region with a mask, selected, and a green dot
    _click(driver, ORANGE, width)
    _idle_after(driver, 1, "the clicked object's region")
    url, fields = _sent(driver)[0]
    assert url.endswith("v1/recognize") and "image" in fields and "boxes" not in fields
    assert _near(json.loads(fields["points"])[0], [ORANGE]) and json.loads(fields["point_labels"]) == [[1]]
    [(number, label, _, origin)] = _listed(driver)
    assert (number, origin) == (1, "click") and label in VOCABULARY.split(", ")
    assert _element(driver, "details").is_displayed()  # the new region is shown at once
    assert _dot_pixels(driver, FOREGROUND_DOT) > 20
    masked = driver.execute_script("return document.getElementById('canvas').toDataURL()")
    _shot(driver, "click.png")
    # the notice ("Clicked object: ...") grows the sticky bar: the photo is refitted under it, so
    # scrolled to its bottom at a laptop's window size the bar still hides none of it
    assert _element(driver, "notice").is_displayed()
    driver.set_window_size(1280, 800)
    hidden = driver.execute_script("""
        const canvas = document.getElementById('canvas');
        canvas.scrollIntoView({block: 'end'});
        return document.getElementById('actionbar').getBoundingClientRect().bottom
            - canvas.getBoundingClientRect().top;""")
    assert hidden <= 1, f"the action bar covers the top {hidden:.0f} px of the photo"
    driver.set_window_size(1400, 1100)
    driver.execute_script("window.scrollTo(0, 0)")

    # Shift-click: a background point for the same region, asked again; still one region
    _click(driver, BACKGROUND, width, shift=True)
    _idle_after(driver, 2, "the refined region")
    url, fields = _sent(driver)[1]
    assert "image_id" in fields and "image" not in fields
    assert _near(json.loads(fields["points"])[0], [ORANGE, BACKGROUND])
    assert json.loads(fields["point_labels"]) == [[1, 0]]
    assert [row[3] for row in _listed(driver)] == ["click"]
    assert _dot_pixels(driver, BACKGROUND_DOT) > 20
    assert driver.execute_script("return document.getElementById('canvas').toDataURL()") != masked

    # a finger tap recognizes like a click (a second region); with the Background point toggle
    # on, the next tap refines that region
    _tap(driver, TAP, width)
    _idle_after(driver, 3, "the tapped object's region")
    assert driver.execute_script("return window.pointerTypes").count("touch") == 1
    fields = _sent(driver)[2][1]
    assert _near(json.loads(fields["points"])[0], [TAP]) and json.loads(fields["point_labels"]) == [[1]]
    assert [row[3] for row in _listed(driver)] == ["click", "click"]
    _element(driver, "negative").click()
    _tap(driver, TAP_BACKGROUND, width)
    _idle_after(driver, 4, "the tapped region refined")
    fields = _sent(driver)[3][1]
    assert _near(json.loads(fields["points"])[0], [TAP, TAP_BACKGROUND])
    assert json.loads(fields["point_labels"]) == [[1, 0]]
    assert len(_listed(driver)) == 2
    _element(driver, "negative").click()

    # Find marks every instance of a name (threshold 0: the untrained head's scores mean nothing)
    _element(driver, "find-text").send_keys("orange")
    _element(driver, "find-threshold").send_keys("0")
    _element(driver, "find").click()
    _idle_after(driver, 5, "the Find answer")
    url, fields = _sent(driver)[4]
    assert url.endswith("v1/find") and fields["queries"] == "orange" and float(fields["threshold"]) == 0
    found = [row for row in _listed(driver) if row[3] == "find"]
    if not found:
        assert "Nothing found" in _element(driver, "notice").text
        pytest.skip("Find answered no region at threshold 0: the filter steps need some")
    assert {row[1] for row in found} == {"orange"}
    rows = _listed(driver)
    assert [row[0] for row in rows] == list(range(1, len(rows) + 1))  # numbered best first
    assert [row[2] for row in rows] == sorted((row[2] for row in rows), reverse=True)
    _shot(driver, "find.png")

    # the sliders filter what is listed and drawn, without a request
    everything = _canvas_pixels(driver, "canvas")
    _set_slider(driver, "top-n", 2)
    assert len(_listed(driver)) == 2 and "2 of " in _element(driver, "results-count").text
    assert np.abs(_canvas_pixels(driver, "canvas").astype(int) - everything).sum() > 0
    _set_slider(driver, "top-n", len(rows))
    assert len(_listed(driver)) == len(rows)
    scores = sorted(row[2] for row in rows)
    assert scores[0] < scores[-1], f"all scores equal: {scores}"
    threshold = round((scores[0] + scores[-1]) / 2, 2)
    _set_slider(driver, "score-threshold", threshold)
    kept = _listed(driver)
    assert 0 < len(kept) < len(rows) and all(row[2] >= threshold - 0.005 for row in kept)
    _shot(driver, "sliders.png")
    _set_slider(driver, "score-threshold", 0)

    # Masks and Labels toggles redraw without them
    photo_pixels = np.asarray(Image.open(photo).convert("RGB").resize(everything.shape[1::-1]), float)
    with_masks = np.abs(_canvas_pixels(driver, "canvas") - photo_pixels).mean()
    _element(driver, "masks").click()
    without_masks = np.abs(_canvas_pixels(driver, "canvas") - photo_pixels).mean()
    assert without_masks < with_masks
    _element(driver, "labels").click()
    assert np.abs(_canvas_pixels(driver, "canvas") - photo_pixels).mean() < without_masks
    assert len(_sent(driver)) == 5  # filtering and toggles ask nothing
    _screenshot(driver, "toggles.png")
    assert _console_errors(driver) == []
