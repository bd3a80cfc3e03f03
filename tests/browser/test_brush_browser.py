"""Brush and eraser in a real browser: a stroke painted, part of it erased, undone and
redone; the mask PNG download equals what the canvas shows; the brush keys never fire
while typing in a text box. Set ANNOTATE_SCREENS=/some/dir for desktop and phone
screenshots of brushing (besides tests/_artifacts/screenshots/)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_app_browser import at, hover_off, pick_example, state, wait_state, wait_text

pytestmark = pytest.mark.browser


def shot(page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / name))
    extra = os.environ.get("ANNOTATE_SCREENS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshots / name, Path(extra) / name)


def drag(page, start, end, steps: int = 12) -> None:
    page.mouse.move(*at(page, *start))
    page.mouse.down()
    page.mouse.move(*at(page, *end), steps=steps)
    page.mouse.up()


def canvas_mask(page) -> np.ndarray:
    s = state(page)
    flat = page.evaluate("() => { const m = window.samcanvas.canvas.selected(); return m ? Array.from(m) : []; }")
    return np.asarray(flat, dtype=bool).reshape(s["display"]) if flat else np.zeros(s["display"], bool)


def downloaded_mask(page) -> np.ndarray:
    page.wait_for_function("() => !document.querySelector('#dl-png').disabled")
    with page.expect_download() as download:
        page.locator("#dl-png").click()
    return np.asarray(Image.open(download.value.path())) > 0


def test_brush_erase_undo_redo_and_the_download_is_what_the_canvas_shows(page, screenshots):
    s = pick_example(page, "chelsea_cat")
    assert s["display"] == s["size"]       # one pixel grid: the canvas and the PNG compare 1:1
    hover_off(page)
    page.locator("#canvas [data-tool=brush]").click()
    drag(page, (0.15, 0.2), (0.6, 0.25))
    painted = wait_state(page, "s.strokes === 1 && s.selArea > 0 && window.samcanvas.canvas.brush().echoed")["selArea"]
    wait_text(page, "#status", "1 brush/eraser stroke")
    page.keyboard.press("e")                        # the canvas has the focus after drawing
    assert state(page)["tool"] == "erase"
    drag(page, (0.4, 0.05), (0.4, 0.45))
    erased = wait_state(page, "s.strokes === 2 && window.samcanvas.canvas.brush().echoed")["selArea"]
    assert 0 < erased < painted
    shot(page, screenshots, "annotate_brush_desktop.png")
    page.keyboard.press("Control+z")
    assert wait_state(page, "s.strokes === 1 && window.samcanvas.canvas.brush().echoed")["selArea"] == painted
    page.keyboard.press("Control+Shift+z")
    assert wait_state(page, "s.strokes === 2 && window.samcanvas.canvas.brush().echoed")["selArea"] == erased
    wait_text(page, "#status", "2 brush/eraser stroke")
    shown = canvas_mask(page)
    for _ in range(20):                             # the downloads follow the commit
        png = downloaded_mask(page)
        if png.shape == shown.shape and (png != shown).sum() == 0:
            break
        page.wait_for_timeout(500)
    assert png.shape == shown.shape and int((png != shown).sum()) == 0, int((png != shown).sum())
    ms = state_stats(page)
    print(f"\nstroke-to-pixels (ms, busy machine): median {np.median(ms):.1f}, p95 {np.percentile(ms, 95):.1f}, n={len(ms)}")
    page.locator("#canvas .sc-root").focus()       # the download button had the focus
    page.keyboard.press("Escape")
    assert state(page)["tool"] == "pos"


def state_stats(page) -> list[float]:
    return page.evaluate("() => window.samcanvas.canvas.stats.brushMs || []")


def test_brush_size_keys_and_no_shortcut_while_typing(page):
    pick_example(page, "coffee")
    hover_off(page)
    page.locator("#canvas .sc-root").focus()
    page.keyboard.press("b")
    assert state(page)["tool"] == "brush"
    size = page.locator("#canvas .sc-brush-size")
    before = int(size.input_value())
    page.keyboard.press("]")
    assert int(size.input_value()) > before
    page.keyboard.press("[")
    page.keyboard.press("[")
    assert int(size.input_value()) < before
    page.keyboard.press("Escape")
    assert state(page)["tool"] == "pos"
    # typing in a text box (pointer resting on the picture): no shortcut fires
    page.get_by_role("tab", name="Search").click()
    box = page.locator("textarea:visible, input[type=text]:visible").first
    page.mouse.move(*at(page, 0.5, 0.5))
    box.focus()
    page.keyboard.type("be[]")
    assert state(page)["tool"] == "pos" and box.input_value().endswith("be[]")
