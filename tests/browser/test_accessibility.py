"""Accessibility in a real browser: axe-core (npm package `axe-core`, installed by
`make browser-deps` into tests/_artifacts/node, never committed) finds no serious or
critical violation on the empty page nor with an image loaded in each tab; the canvas can be
used with the keyboard alone (issue 26 #8)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser.test_app_browser import open_tab, pick_example, state, wait_state, wait_text

pytestmark = pytest.mark.browser
AXE = Path(__file__).resolve().parents[1] / "_artifacts" / "node" / "node_modules" / "axe-core" / "axe.min.js"
TABS = ("Compare views", "Search", "Refer", "Find & label")


def axe_violations(page) -> list[dict]:
    """axe-core's violations of the page as it is now: [{"id", "impact", "nodes", "targets"}]."""
    if not AXE.is_file():
        pytest.skip(f"axe-core not installed at {AXE} (`make browser-deps` installs it from npm)")
    if not page.evaluate("() => !!window.axe"):
        page.add_script_tag(path=str(AXE))
    found = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length,
                                       targets: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
    }""")
    return found


def serious(violations: list[dict]) -> list[dict]:
    return [v for v in violations if v["impact"] in ("serious", "critical")]


def counts(violations: list[dict]) -> dict:
    out: dict = {}
    for v in violations:
        out[v["impact"]] = out.get(v["impact"], 0) + v["nodes"]
    return out


def test_axe_finds_no_serious_violation_empty_and_in_each_tab(page):
    page.wait_for_selector("#canvas canvas.sc-view")
    report = {"empty page": axe_violations(page)}
    pick_example(page, "astronaut")
    for tab in TABS:
        open_tab(page, tab)
        page.wait_for_timeout(300)
        report[f"image loaded, {tab}"] = axe_violations(page)
    print({where: counts(v) for where, v in report.items()})
    (AXE.parents[3] / "axe_report.json").write_text(json.dumps(report, indent=1))
    bad = {where: serious(v) for where, v in report.items() if serious(v)}
    assert not bad, bad


def test_segmenting_with_the_keyboard_alone(page):
    """Tab to the canvas (a focus ring), arrows move a cross-hair, Space / Shift+Space add
    points, C twice makes a box, Enter picks an 'Everything' mask; a live region says what
    is selected; Tab leaves the canvas."""
    pick_example(page, "astronaut")
    page.locator("#canvas .sc-hover").uncheck()
    root = page.locator("#canvas .sc-root")
    page.locator("#canvas .sc-tool").first.focus()
    page.keyboard.press("Shift+Tab")                         # the canvas comes before its toolbar
    assert page.evaluate("() => document.activeElement.classList.contains('sc-root')")
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    page.keyboard.press("ArrowLeft")
    s = state(page)
    assert s["cursor"] is not None and s["cursor"][0] < s["size"][1] / 2
    page.keyboard.press("Space")
    s = wait_state(page, "s.points.length === 1 && s.points[0][2] === 1 && s.selArea > 0")
    wait_text(page, "#info", "1 positive")
    assert "positive point added" in page.locator("#canvas .sc-live").inner_text()
    for _ in range(3):
        page.keyboard.press("Shift+ArrowUp")
    page.keyboard.press("Shift+Space")
    s = wait_state(page, "s.points.length === 2 && s.points[1][2] === 0")
    page.keyboard.press("c")
    wait_state(page, "s.corner !== null")
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("Shift+ArrowDown")
    page.keyboard.press("Shift+ArrowDown")
    page.keyboard.press("c")
    s = wait_state(page, "s.box !== null && s.corner === null")
    assert s["box"][2] > s["box"][0] and s["box"][3] > s["box"][1]
    page.keyboard.press("Control+z")                        # undo works from the keyboard too
    wait_state(page, "s.box === null")
    page.locator("#canvas .sc-everything").click()
    wait_state(page, "s.tool === 'pick' && s.autoCount > 0 && !s.busy", timeout=120_000)
    root.focus()
    for _ in range(40):                                      # find an object under the cross-hair
        page.keyboard.press("Enter")
        if state(page)["autoPick"] >= 0:
            break
        page.keyboard.press("Shift+ArrowRight" if _ % 2 else "Shift+ArrowDown")
    assert state(page)["autoPick"] >= 0
    assert "picked" in page.locator("#canvas .sc-live").inner_text()
    page.keyboard.press("Tab")
    assert not page.evaluate("() => document.activeElement.classList.contains('sc-root')")
    assert outline != "none"
