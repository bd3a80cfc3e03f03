"""What a person waits for in the browser: the app driven in headless Chromium on localhost.

    python -m demo.tools.bench_browser [--sam vit_b] [--clicks 20] [--baseline DIR] [--json out.json]

Starts the app with untrained models (the timings do not depend on the weights' values)
and measures in the page (performance.now(), from the input event to the frame that
shows the result). With --baseline DIR (another checkout of this project, e.g.
`git worktree add /tmp/base <commit>`), that checkout's app is measured too, in the same
run, so the two columns compare like with like on a noisy machine:

- click -> overlay visible (median and p95 over --clicks clicks),
- drag-box -> mask,
- hover-preview updates per second while the pointer moves,
- upload -> first mask (a click made right after the upload), with the encoder time,
- Everything -> first masks drawn (while it runs) and -> all masks drawn
  (`SAMCLIP_POINTS_PER_SIDE=16` in the environment gives both apps the trained path's grid),

and prints them as a table with the CPU model, its AMX / AVX512-BF16 / AVX2 flags and the
load average (other processes on the machine slow everything down: say so when quoting).
Needs Chromium (/usr/bin/chromium) and the playwright package, like the browser tests.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from core.bench.timing import CpuInfo, cpu_info

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def machine() -> dict:
    """The CPU (core.bench.timing.cpu_info) and the load average now."""
    return {**asdict(cpu_info()), "loadavg": round(os.getloadavg()[0], 2)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class App:
    """`python app.py --untrained --sam SAM ...` from checkout `repo` on a free port, with its
    own cache folder; `extra` adds app options (e.g. ["--mcp"]). Used by the benchmarks and
    by tests that drive the app from outside."""

    def __init__(self, sam: str, repo: Path = REPO, extra: tuple[str, ...] = (), start_timeout_s: float = 300):
        self.port = _free_port()
        self.cache = Path(tempfile.mkdtemp(prefix="samclip_app_"))
        env = {**os.environ, "SAMCLIP_CACHE": str(self.cache), "GRADIO_ANALYTICS_ENABLED": "False",
               "SAMCLIP_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.log = open(self.cache / "app.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(repo / "app.py"), "--untrained", "--sam", sam, "--clip", "ViT-B-32",
             "--device", "cpu", "--host", "127.0.0.1", "--port", str(self.port), "--no-prebuild",
             "--gallery-views", "crop", *extra], cwd=repo, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}/"
        self._wait_until_up(start_timeout_s)

    def _wait_until_up(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited: {self.log_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not start within {timeout_s:.0f} s") from None
                time.sleep(0.5)

    def log_text(self) -> str:
        return (self.cache / "app.log").read_text()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.cache, ignore_errors=True)


def _summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    arr = np.asarray(values, dtype=float)
    return {"n": len(values), "median": round(float(np.median(arr)), 1),
            "p95": round(float(np.percentile(arr, 95)), 1), "max": round(float(arr.max()), 1)}


def _photo(path: Path, seed: int) -> Path:
    """A fresh picture (new content, so nothing is cached) of 800x600."""
    rng = np.random.default_rng(seed)
    base = np.asarray(Image.open(REPO / "examples" / "coffee.jpg").convert("RGB").resize((800, 600)))
    noise = rng.integers(-6, 7, base.shape)
    Image.fromarray(np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8)).save(path, quality=92)
    return path


def _wait_models(page) -> None:
    page.wait_for_function("() => { const b = document.querySelector('#banner');"
                           " return !!b && /UNTRAINED MODE/.test(b.innerText); }", timeout=600_000)


def _ready_ms(status: str) -> float | None:
    found = re.search(r"ready in (\d+) ms", status)
    return float(found.group(1)) if found else None


# ------------------------------------------------------------------ the browser canvas
def bench_canvas(browser, url: str, clicks: int, tmp: Path) -> dict:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    page.goto(url)
    _wait_models(page)
    S = "window.samcanvas.canvas"
    out: dict = {}

    def stat(name: str) -> list:
        return page.evaluate(f"{S}.stats.{name}")

    def at(fx: float, fy: float):
        box = page.locator("#canvas canvas.sc-view").bounding_box()
        return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy

    # upload -> first mask: the click comes as soon as the picture is shown
    photo = _photo(tmp / "upload_photo.jpg", 1)
    page.locator("#canvas input.sc-file").set_input_files(str(photo))
    page.wait_for_function(f"() => {S}.state().name === 'upload_photo.jpg' && "
                           "document.querySelector('#canvas canvas.sc-view').dataset.loaded === '1'")
    page.locator("#canvas .sc-hover").uncheck()
    page.mouse.click(*at(0.5, 0.5))
    page.wait_for_function(f"() => {S}.stats.firstMask.length > 0")
    out["upload_first_mask_ms"] = round(stat("firstMask")[0], 1)
    out["encoder_ms"] = page.evaluate(f"() => {S}.stats.encodeMs")

    # clicks: each on a fresh prompt (Esc clears), spread over the picture
    page.keyboard.press("Escape")
    page.wait_for_timeout(500)
    before = len(stat("clicks"))
    for i in range(clicks):
        fx, fy = 0.2 + 0.6 * ((i * 7) % clicks) / clicks, 0.3 + 0.4 * ((i * 3) % 5) / 5
        page.mouse.click(*at(fx, fy))
        page.wait_for_function(f"() => {S}.stats.clicks.length > {before + i}")
        page.wait_for_timeout(150)                    # the commit (info line, exports) settles
        page.keyboard.press("Escape")
        page.wait_for_timeout(150)
    out["click_overlay_ms"] = _summary(stat("clicks")[before:])
    out["preview_server_ms"] = _summary(stat("serverMs"))

    # drag a box
    n = max(5, clicks // 4)
    for i in range(n):
        page.mouse.move(*at(0.15 + 0.02 * i, 0.2))
        page.mouse.down()
        page.mouse.move(*at(0.4, 0.5), steps=3)
        page.mouse.move(*at(0.7 - 0.02 * i, 0.8), steps=3)
        page.mouse.up()
        page.wait_for_function(f"() => {S}.stats.boxes.length > {i}")
        page.wait_for_timeout(150)
        page.keyboard.press("Escape")
        page.wait_for_timeout(150)
    out["drag_box_mask_ms"] = _summary(stat("boxes"))

    # hover: the pointer moves continuously for 5 s
    page.locator("#canvas .sc-hover").check()
    page.wait_for_timeout(300)
    start_count, t0 = stat("hovers"), time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < 5.0:
        angle = k * 0.15
        page.mouse.move(*at(0.5 + 0.3 * np.cos(angle), 0.5 + 0.3 * np.sin(angle)))
        page.wait_for_timeout(16)
        k += 1
    seconds = time.perf_counter() - t0
    out["hover_updates_per_s"] = round((stat("hovers") - start_count) / seconds, 1)
    out["hover_request_ms"] = _summary(stat("hoverTimes"))
    page.locator("#canvas .sc-hover").uncheck()
    page.mouse.move(*at(0.5, 0.5))

    # Everything
    page.locator("#canvas .sc-everything").click()
    page.wait_for_function(f"() => {S}.stats.everything.length > 0 || "
                           "/No automatic masks/.test((document.querySelector('#status') || {innerText: ''}).innerText)")
    ev = stat("everything")
    out["everything_overlay_ms"] = round(ev[0], 1) if ev else None
    said = re.search(r"automatic masks? in (\d+) ms", page.locator("#status").inner_text())
    out["everything_server_ms"] = float(said.group(1)) if said else None   # as the status line says
    first = stat("everythingFirst") or []   # a checkout without partial answers has no such list
    out["everything_first_masks_ms"] = round(first[0], 1) if first else out["everything_overlay_ms"]
    page.close()
    return out


def _fmt(value) -> str:
    if isinstance(value, dict):
        if not value.get("n"):
            return "-"
        return f"{value['median']:.0f} / {value['p95']:.0f}"
    if value is None:
        return "-"
    return f"{value:.0f}" if isinstance(value, (int, float)) and value >= 20 else f"{value}"


def table(results: dict, cpu: dict, sam: str, clicks: int) -> str:
    rows = [("click -> overlay visible, median / p95 ms", "click_overlay_ms"),
            ("drag-box -> mask, median / p95 ms", "drag_box_mask_ms"),
            ("hover-preview updates per second", "hover_updates_per_s"),
            ("upload -> first mask, ms", "upload_first_mask_ms"),
            ("  encoder time of that upload, ms", "encoder_ms"),
            ("Everything -> first masks drawn, ms", "everything_first_masks_ms"),
            ("Everything -> all masks drawn, ms", "everything_overlay_ms"),
            ("  server time of that Everything, ms", "everything_server_ms")]
    names = list(results)
    head = "| measure | " + " | ".join(names) + " |"
    lines = [f"SAM {sam} (untrained), CLIP ViT-B-32 (untrained), {clicks} clicks, headless Chromium, localhost",
             f"CPU: {CpuInfo(**{k: cpu[k] for k in CpuInfo.__dataclass_fields__}).describe()}; "
             f"load average {cpu['loadavg']} before, "
             f"{cpu.get('loadavg_after', '?')} after",
             "", head, "|---|" + "---|" * len(names)]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(results[n].get(key)) for n in names) + " |")
    for name, result in results.items():
        lines.append(f"\n{name}: server time of the fast path (preview) median / p95 ms: "
                     f"{_fmt(result.get('preview_server_ms'))}; one hover request "
                     f"median / p95 ms: {_fmt(result.get('hover_request_ms'))}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sam", default="vit_b", help="vit_tiny | vit_b | vit_l | vit_h (untrained)")
    parser.add_argument("--clicks", type=int, default=20, help="clicks to time (at least 20 for a p95)")
    parser.add_argument("--baseline", type=Path, help="another checkout of the project to measure in the same run")
    parser.add_argument("--baseline-sam", help="the baseline's SAM (default: --sam), e.g. its own default")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    cpu = machine()
    results: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="samclip_bench_files_"))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        try:
            checkouts = [("this checkout", REPO)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
            for name, repo in checkouts:
                app = App(args.sam if repo == REPO else (args.baseline_sam or args.sam), repo)
                try:
                    print(f"measuring the {name} path on {app.url} ...", file=sys.stderr)
                    results[name] = bench_canvas(browser, app.url, args.clicks, tmp)
                except Exception as exc:  # keep the other path's numbers
                    import traceback

                    traceback.print_exc()
                    print(f"the {name} path failed: {exc}", file=sys.stderr)
                    results[name] = {}
                finally:
                    app.close()
        finally:
            browser.close()
    cpu["loadavg_after"] = round(os.getloadavg()[0], 2)
    print(table(results, cpu, args.sam, args.clicks))
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu, "sam": args.sam, "clicks": args.clicks,
                                               "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
