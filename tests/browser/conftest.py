"""Fixtures for the browser tests: the app in untrained mode on a free localhost port,
Debian's Chromium driven by Playwright, and a screenshots folder.

The app runs with the small untrained SAM ("vit_tiny") and untrained CLIP ViT-B-32, a
two-view example gallery and a fresh cache directory, so it starts and builds in a
minute even on 2 busy cores. Tests are skipped with a reason when Chromium or
Playwright is missing (`make browser-deps` installs Chromium).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "tests" / "_artifacts" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
#: How long the app may take to come up (model build + first request).
START_TIMEOUT_S = 180


def chromium_path() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium") or "",
                      shutil.which("chromium-browser") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pytest_terminal_summary(terminalreporter):
    if SCREENSHOTS.is_dir() and any(SCREENSHOTS.glob("*.png")):
        terminalreporter.write_line(f"browser-test screenshots: {SCREENSHOTS}")


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium not found (install Debian's chromium: `make browser-deps` or "
                    "`apt-get install -y chromium`)")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    return path


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots go to {SCREENSHOTS}")
    return SCREENSHOTS


def run_app(tmp_path_factory, options: list[str], wait_for_gallery: bool = False):
    """Start `python app.py OPTIONS` on a free port with a fresh cache; yield its URL once it
    answers (and, with `wait_for_gallery`, once the example gallery is built and saved, so
    tests do not compete with the build for the CPU)."""
    port = free_port()
    cache = tmp_path_factory.mktemp("samclip_cache")
    log_path = tmp_path_factory.mktemp("app_log") / "app.log"
    env = {**os.environ, "SAMCLIP_CACHE": str(cache), "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONUNBUFFERED": "1", "SAMCLIP_OFFLINE": "1"}
    cmd = [sys.executable, str(REPO / "app.py"), "--device", "cpu", "--host", "127.0.0.1",
           "--port", str(port), *options]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited with code {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not answer on {url} within {START_TIMEOUT_S} s:\n"
                            f"{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        while wait_for_gallery and not list(cache.glob("galleries/examples-*/*/CURRENT")):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the example gallery was not built within {START_TIMEOUT_S} s:\n"
                            f"{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(f"\napp log: {log_path}")


@pytest.fixture(scope="session")
def app_url(chromium, tmp_path_factory):
    """The app in untrained mode with small models and a two-view example gallery."""
    yield from run_app(tmp_path_factory, [
        "--untrained", "--sam", "vit_tiny", "--clip", "ViT-B-32",
        "--gallery-views", "mask,crop", "--gallery-max-objects", "6"], wait_for_gallery=True)


@pytest.fixture(scope="module")
def app_without_weights(chromium, tmp_path_factory):
    """The app asked for real SAM weights that are not there (and downloads off)."""
    yield from run_app(tmp_path_factory, [
        "--sam", "vit_b", "--sam-checkpoint", str(tmp_path_factory.mktemp("w") / "nonexistent_sam.pth"),
        "--no-prebuild"])


@pytest.fixture(scope="module")
def app_with_gallery(chromium, coco_dir, tmp_path_factory):
    """The app with --gallery: 8 COCO128 images indexed by `python -m core index` (ground-truth
    masks, the app's untrained CLIP, so the model check passes); no example gallery build."""
    gallery = tmp_path_factory.mktemp("large") / "coco8"
    env = {**os.environ, "SAMCLIP_CACHE": str(tmp_path_factory.mktemp("index_cache")), "SAMCLIP_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "core", "index", "--coco", str(coco_dir / "instances.json"),
                    "--images", str(coco_dir / "images"), "--oracle-masks", "--limit", "8",
                    "--untrained", "--clip", "ViT-B-32", "--device", "cpu", "--out", str(gallery)],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=START_TIMEOUT_S)
    yield from run_app(tmp_path_factory, [
        "--untrained", "--sam", "vit_tiny", "--clip", "ViT-B-32", "--gallery-views", "crop",
        "--no-prebuild", "--gallery", str(gallery)])


@pytest.fixture(scope="session")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(app_url)
    yield page
    context.close()
