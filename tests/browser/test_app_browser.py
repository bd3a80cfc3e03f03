"""The app in a real browser (Chromium via Playwright), untrained small models.

Covers what a person does: load the page, pick an example, click -> mask overlay, a
negative point, a box, undo, switch views (Compare), search the gallery -> result tiles,
a referring expression -> parsed noun/direction, errors shown in the UI, and two browser
contexts at once that never see each other's state. Screenshots are saved to
tests/_artifacts/screenshots/ (the folder is printed at the end of the run).
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

# ----------------------------------------------------------------------------- helpers

CANVAS_STATS = """() => {
  const img = document.querySelector('#canvas img');
  if (!img || !img.complete || !img.naturalWidth) return null;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let r = 0, gr = 0, b = 0;
  for (let i = 0; i < d.length; i += 4) { r += d[i]; gr += d[i + 1]; b += d[i + 2]; }
  const n = d.length / 4;
  return {w: c.width, h: c.height, r: r / n, g: gr / n, b: b / n, src: img.src};
}"""


def text_of(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def wait_text(page, selector: str, want: str, timeout: int = 120_000) -> str:
    """Wait until the element's text contains `want`; returns the text."""
    page.wait_for_function(
        "([sel, want]) => { const el = document.querySelector(sel); "
        "return !!el && el.innerText.includes(want); }",
        arg=[selector, want], timeout=timeout)
    return text_of(page, selector)


def canvas_stats(page, previous_src: str | None = None, timeout: int = 60_000) -> dict:
    """Pixel statistics of the canvas image, once it differs from `previous_src`."""
    page.wait_for_function(
        "([prev, js]) => { const s = (new Function('return ' + js))()(); "
        "return s !== null && s.src !== prev; }",
        arg=[previous_src, CANVAS_STATS], timeout=timeout)
    return page.evaluate(CANVAS_STATS)


def click_canvas(page, fx: float, fy: float) -> None:
    """Click at a fraction (fx, fy) of the displayed canvas image."""
    img = page.locator("#canvas img")
    box = img.bounding_box()
    img.click(position={"x": box["width"] * fx, "y": box["height"] * fy})


def set_mode(page, label_part: str) -> None:
    page.locator("#mode label", has_text=label_part).click()


def pick_example(page, name: str) -> dict:
    page.locator("#examples button.thumbnail-item", has_text=name).click()
    wait_text(page, "#status", f"Loaded {name}")
    return canvas_stats(page)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


# ----------------------------------------------------------------------------- tests


def test_page_loads_with_untrained_label_and_examples(page, screenshots):
    page.wait_for_function("() => document.title.startsWith('Find and select objects')")
    banner = wait_text(page, "#banner", "UNTRAINED MODE")
    assert "vit_tiny" in banner
    thumbs = page.locator("#examples button.thumbnail-item")
    assert thumbs.count() == 4
    assert {"astronaut", "chelsea_cat", "coffee", "rocket"} <= set(
        page.locator("#examples .caption-label").all_inner_texts())
    page.screenshot(path=str(screenshots / "01_page_loaded.png"))


def test_click_negative_point_box_and_views(page, screenshots):
    base = pick_example(page, "chelsea_cat")
    assert (base["w"], base["h"]) == (451, 300)

    # positive click -> mask overlay (blue tint) and 3 candidates with scores
    click_canvas(page, 0.5, 0.5)
    wait_text(page, "#status", "Mask updated")
    overlay = canvas_stats(page, base["src"])
    assert overlay["b"] - overlay["r"] > base["b"] - base["r"] + 1.0, (base, overlay)
    captions = page.locator("#candidates .caption-label").all_inner_texts()
    assert len(captions) == 3 and all("score" in c for c in captions)
    assert "1 positive, 0 negative" in text_of(page, "#info")

    # the selected mask downloads as PNG and as COCO RLE JSON
    with page.expect_download() as download:
        page.locator("#dl-png").click()
    assert download.value.suggested_filename.endswith("_mask.png")
    with page.expect_download() as download:
        page.locator("#dl-rle").click()
    rle_file = download.value.path()
    assert '"segmentation"' in open(rle_file).read()

    # negative point
    set_mode(page, "negative")
    click_canvas(page, 0.1, 0.15)
    wait_text(page, "#info", "1 positive, 1 negative")
    page.screenshot(path=str(screenshots / "02_segment_points.png"), full_page=False)

    # box: two clicks
    set_mode(page, "box")
    click_canvas(page, 0.2, 0.2)
    wait_text(page, "#status", "first corner")
    click_canvas(page, 0.8, 0.9)
    wait_text(page, "#info", ", 1 box")
    # undo removes the box again
    page.locator("#undo").click()
    page.wait_for_function("() => !document.querySelector('#info').innerText.includes('1 box')")

    # switch views: Compare tab shows every view, neighbours for the indexed ones
    open_tab(page, "Compare views")
    page.locator("#compare-btn").click()
    wait_text(page, "#status", "Compared", timeout=180_000)
    for name in ("mask", "crop", "mask_crop", "dim", "blur", "context"):
        assert page.locator(f"#view-{name} img").count() == 1, name
    assert page.locator("#nn-crop button.thumbnail-item").count() >= 1
    assert page.locator("#nn-mask button.thumbnail-item").count() >= 1
    page.screenshot(path=str(screenshots / "03_compare_views.png"), full_page=True)


def test_everything_overlay_and_pick(page, screenshots):
    base = pick_example(page, "coffee")
    page.locator("#everything").click()
    status = wait_text(page, "#status", "automatic mask", timeout=180_000)
    page.wait_for_function("() => /automatic masks in|No automatic masks/.test("
                           "document.querySelector('#status').innerText)", timeout=180_000)
    status = text_of(page, "#status")
    if "No automatic masks" in status:
        pytest.skip("the untrained model produced no automatic masks")
    canvas_stats(page, base["src"])
    # the click mode switched to picking; a click selects the mask under it
    assert page.locator("#mode input[type=radio]:checked").evaluate("e => e.value").startswith("pick")
    click_canvas(page, 0.5, 0.5)
    page.wait_for_function("() => /Picked automatic mask|No automatic mask covers/.test("
                           "document.querySelector('#status').innerText)")
    page.screenshot(path=str(screenshots / "04_everything.png"))


def test_gallery_search_shows_tiles_and_source(page, screenshots):
    pick_example(page, "astronaut")
    open_tab(page, "Search")
    page.locator("#query-source label", has_text="text").click()
    page.locator("#query-text textarea").fill("a cup of coffee")
    page.locator("#search-btn").click()
    status = wait_text(page, "#status", "results for text", timeout=240_000)
    tiles = page.locator("#results button.thumbnail-item")
    assert tiles.count() >= 1, status
    captions = page.locator("#results .caption-label").all_inner_texts()
    assert captions[0].startswith("#1 cos") and "crop" in captions[0]
    # metric switch: L2 distances
    page.locator("#metric label", has_text="l2").click()
    page.locator("#search-btn").click()
    page.wait_for_function("() => document.querySelector('#results .caption-label')"
                           " && document.querySelector('#results .caption-label').innerText.includes('d²')")
    # selecting a result shows its source image with the object outlined
    tiles.first.click()
    page.locator("#hit-image img").wait_for()
    assert "score" in wait_text(page, "#hit-info", "source")
    page.screenshot(path=str(screenshots / "05_search.png"), full_page=True)


def test_refer_shows_parsed_noun_and_direction(page, screenshots):
    pick_example(page, "chelsea_cat")
    open_tab(page, "Refer")
    page.locator("#refer-text textarea").fill("the cat on the left")
    page.locator("#refer-btn").click()
    parsed = wait_text(page, "#refer-parsed", "noun")
    assert "cat" in parsed and "left" in parsed
    page.wait_for_function("() => /Grounded|⚠️/.test(document.querySelector('#status').innerText)",
                           timeout=180_000)
    status = text_of(page, "#status")
    # untrained SAM may find no candidates: that must be explained, not crash
    assert "Something went wrong" not in status, status
    if "Grounded" in status:
        assert page.locator("#refer-candidates button.thumbnail-item").count() >= 1
        page.locator("#refer-image img").wait_for()
    page.screenshot(path=str(screenshots / "06_refer.png"), full_page=True)


def test_upload_an_image_file(page, tmp_path):
    from PIL import Image

    path = tmp_path / "my photo.png"
    Image.new("RGB", (200, 120), (40, 160, 90)).save(path)
    page.locator("#upload input[type=file]").set_input_files(str(path))
    wait_text(page, "#status", "Loaded upload.png (200x120)")
    assert (canvas_stats(page)["w"], canvas_stats(page)["h"]) == (200, 120)


def test_errors_are_shown_and_the_session_stays_usable(page):
    open_tab(page, "Compare views")
    page.locator("#compare-btn").click()
    assert "No image yet" in wait_text(page, "#status", "⚠️")
    open_tab(page, "Refer")
    page.locator("#refer-btn").click()
    wait_text(page, "#status", "Type a referring expression")
    assert "Traceback" not in page.content()
    # still usable
    pick_example(page, "rocket")
    click_canvas(page, 0.5, 0.5)
    wait_text(page, "#status", "Mask updated")


def test_two_browser_contexts_do_not_share_state(browser, app_url, screenshots):
    ctx_a = browser.new_context(viewport={"width": 1400, "height": 1000})
    ctx_b = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        a, b = ctx_a.new_page(), ctx_b.new_page()
        for p in (a, b):
            p.set_default_timeout(60_000)
            p.goto(app_url)
        stats_a = pick_example(a, "astronaut")
        stats_b = pick_example(b, "rocket")
        click_canvas(a, 0.5, 0.4)
        wait_text(a, "#status", "Mask updated")
        set_mode(a, "negative")
        click_canvas(a, 0.1, 0.1)
        wait_text(a, "#info", "1 positive, 1 negative")
        # B still has its own image and no prompts, its canvas unchanged
        info_b = text_of(b, "#info")
        assert "rocket" in info_b and "0 positive, 0 negative" in info_b
        assert b.evaluate(CANVAS_STATS)["src"] == stats_b["src"]
        assert (stats_a["w"], stats_a["h"]) == (512, 512) and (stats_b["w"], stats_b["h"]) == (640, 427)
        # A adds its object to its own gallery; B does not see it
        open_tab(a, "Search")
        a.locator("#add-selected").click()
        wait_text(a, "#my-gallery", "1 object(s)", timeout=120_000)
        open_tab(b, "Search")
        assert "empty" in text_of(b, "#my-gallery")
        # a click in B does not touch A
        click_canvas(b, 0.5, 0.5)
        wait_text(b, "#status", "Mask updated")
        assert "astronaut" in text_of(a, "#info") and "1 negative" in text_of(a, "#info")
        a.screenshot(path=str(screenshots / "07_session_a.png"))
        b.screenshot(path=str(screenshots / "07_session_b.png"))
    finally:
        ctx_a.close()
        ctx_b.close()


def test_missing_weights_are_explained_and_untrained_mode_offered(browser, app_without_weights):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(app_without_weights)
        banner = wait_text(page, "#banner", "weights are missing")
        assert "nonexistent_sam.pth" in banner
        page.locator("#use-untrained").wait_for(state="visible")
        page.locator("#examples button.thumbnail-item").first.click()
        status = wait_text(page, "#status", "⚠️")
        assert "not available" in status and "untrained" in status
    finally:
        context.close()
