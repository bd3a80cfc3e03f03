"""The Dataset tab in Chromium: upload a zip (a bad entry is reported), step with the keys,
apply a phrase and a vocabulary to all, review the most doubtful proposal, accept it with
Enter, export the set. Screenshots
of each step land in tests/_artifacts/screenshots/ (20_... to 24_...)."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser


def text_of(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def wait_text(page, selector: str, want: str, timeout: int = 120_000) -> str:
    """Wait until the element's text contains `want`; returns the text."""
    page.wait_for_function("([sel, want]) => { const el = document.querySelector(sel); "
                           "return !!el && el.innerText.includes(want); }", arg=[selector, want], timeout=timeout)
    return text_of(page, selector)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _zip(path) -> None:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as z:
        for i in range(3):
            image = np.full((90, 120, 3), rng.integers(0, 255, 3), np.uint8)
            image[20:60, 30:80] = rng.integers(0, 255, 3)
            out = io.BytesIO()
            Image.fromarray(image).save(out, format="PNG")
            z.writestr(f"photos/{i}.png", out.getvalue())
        z.writestr("../outside.png", b"x")


def test_a_set_uploaded_applied_reviewed_and_exported(page, tmp_path, screenshots):
    archive = tmp_path / "set.zip"
    _zip(archive)
    open_tab(page, "Dataset")
    page.locator("#set-upload input[type=file]").set_input_files(str(archive))
    wait_text(page, "#set-summary", "3 image(s)")
    assert "unsafe path" in text_of(page, "#set-notes")
    assert page.locator("#set-strip img").count() == 3
    page.locator("#set-strip img").first.click()
    wait_text(page, "#set-objects", "photos/0.png")
    page.locator("body").press("d")                       # keys: D / -> next, A / <- previous
    wait_text(page, "#set-objects", "photos/1.png (2 of 3)")
    page.locator("body").press("ArrowLeft")
    wait_text(page, "#set-objects", "photos/0.png (1 of 3)")
    page.screenshot(path=str(screenshots / "20_dataset_uploaded.png"), full_page=True)

    page.locator("#set-phrase textarea").fill("dogs")
    page.locator("#set-vocab textarea").fill("cup, table")
    page.locator("#set-apply").click()
    wait_text(page, "#set-progress", "applying")
    page.screenshot(path=str(screenshots / "21_dataset_applying.png"), full_page=True)
    wait_text(page, "#set-progress", "done: 3 of 3", timeout=300_000)
    wait_text(page, "#set-summary", "proposal(s) to review")
    page.screenshot(path=str(screenshots / "22_dataset_proposed.png"), full_page=True)

    page.locator("#set-queue-btn").click()
    cell = page.locator("#set-queue >> text=photos/ >> visible=true").first
    try:
        cell.wait_for(timeout=60_000)
    except Exception:
        page.screenshot(path=str(screenshots / "23_debug.png"), full_page=True)
        raise
    cell.click()
    wait_text(page, "#set-objects", "proposal")
    page.screenshot(path=str(screenshots / "23_dataset_review.png"), full_page=True)
    page.locator("body").press("Enter")                   # Enter accepts the picked proposal
    wait_text(page, "#set-summary", "1 reviewed object(s)")

    page.locator("#set-export").click()
    page.wait_for_function("() => document.querySelector('#set-file').innerText.includes('dataset.zip')",
                           timeout=60_000)
    page.screenshot(path=str(screenshots / "24_dataset_exported.png"), full_page=True)
