"""Load and fault test of the app: N simulated people against a local app, through its queue.

    python -m demo.tools.loadtest [--users 8] [--seconds 120] [--port 7931] [--sam vit_t] [--faults] [--switchers 1]

Starts `app.py --untrained` on 127.0.0.1 (its own temporary folder, short cache ages so
reclaimed files can be seen), then runs `--users` simulated people for `--seconds`. Each one
speaks the page's own protocol (POST /gradio_api/upload, /gradio_api/queue/join with the
event's fn_index and one open /gradio_api/queue/data stream per session, the canvas's
preview server function at /gradio_api/component_server): every event here is private, so
`gradio_client` (which calls named public endpoints only) cannot reach them -- by design.
Each person uploads their own images (a different picture each time), clicks (the canvas's
fast path, then the commit), searches by text and refers to objects, in a loop. Like the
page's own client, each page holds one /gradio_api/heartbeat/<session> request open while it
is open; at the end their pages close: that request ends and Gradio runs the unload event
(it runs it for nothing else: a page without a heartbeat is only ended by its time to live).

Reports requests, errors, latency per kind of event (p50 / p95 / max, seconds), the app's
peak memory (RSS of its process), its temporary files at start, under load and after the
sessions end, and every answer that names another person's image or text (cross-user).
"Start" is measured once the app is up and one page has searched and closed: the example
thumbnails Gradio copies when the page is built (shared by every page, made once) and that
search's result tiles (swept by age later, so the end can be a little below the start).
After the sessions end it waits (at most 60 s: the short cache ages plus a sweep) for the
folder to shrink back to that size; `left` lists the files that are new since the start.
`--faults` first sends bad input (a 100-megapixel PNG, a file over the upload limit, random
bytes, an empty file, over-long text, a call to the untrained-models switch, the API listing:
only the public endpoints of demo/api.py)
and prints the one-line reason each gets. Localhost only; every loop is bounded in count and
time. `--switchers` of the users (default 1) change their mind instead: a second image 0.1-0.5 s
after the first, while it is still encoding (`run_switcher`); a session whose image is then
never encoded counts as stuck.
Exit status 0 when the targets hold (0 errors, 0 cross-user answers, 0 stuck sessions).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from core import config
from core.bench.timing import cpu_info
from demo.api import ENDPOINTS
from demo.tools.loadapp import (HOST, REPO, Memory, files_under, folder_bytes, log_tracebacks, rss_bytes,
                                 start_app)
from demo.tools.loadpage import App, Page, canvas_of, status_of

MAX_REQUESTS_PER_USER = 2000


def user_image(user: int, index: int, side: int = 640) -> bytes:
    """A different picture per user and upload: coloured shapes on noise, as PNG bytes."""
    rng = np.random.default_rng(user * 1000 + index)
    h, w = side * 3 // 4, side
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w - 120)), int(rng.integers(0, h - 120))
        img[y0:y0 + int(rng.integers(60, 120)), x0:x0 + int(rng.integers(60, 120))] = rng.integers(80, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.cross: list[str] = []
        self.requests = 0

    def add(self, kind: str, seconds: float):
        with self.lock:
            self.latency[kind].append(seconds)
            self.requests += 1

    def error(self, text: str):
        with self.lock:
            self.errors.append(text[:300])
            self.requests += 1


def marker(user: int) -> str:
    return f"u{user:02d}x"


def run_user(app: App, user: int, users: int, stats: Stats, deadline: float, encoding: threading.Event,
             typing_cps: float = 0.0):
    page = Page(app, deadline)
    upload_dep = app.fn("canvas", "upload")
    encode_dep = app.then(upload_dep)
    prompts_dep = app.fn("canvas", "prompts")
    search_dep = app.fn("search-btn", "click")
    refer_btn = app.fn("refer-btn", "click")
    refer_dep = app.then(refer_btn)
    prepare_dep = app.fn("refer-text", "focus") if typing_cps > 0 else None
    others = [marker(u) for u in range(users) if u != user]
    mine = marker(user)
    rng = random.Random(user)
    key, size, version, uploads, step = None, (0, 0), 0, 0, 0

    def check(kind: str, text: str):
        for other in others:
            if other in text:
                with stats.lock:
                    stats.cross.append(f"user {user} {kind} answer names {other}")

    def timed(kind: str, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:
            stats.error(f"user {user} {kind}: {type(exc).__name__}: {exc}")
            return None
        stats.add(kind, time.perf_counter() - start)
        return out

    try:
        while time.monotonic() < deadline and step < MAX_REQUESTS_PER_USER:
            step += 1
            if key is None or rng.random() < 0.12:            # a new picture of one's own
                uploads += 1
                name = f"{mine}_img{uploads}.png"
                code, path = page.upload(name, user_image(user, uploads))
                if code != 200:
                    stats.error(f"user {user} upload HTTP {code}: {path}")
                    continue
                out = timed("upload (show)", page.call, upload_dep, [None],
                            event_data={"path": path, "name": name}, trigger_id=app.by_elem["canvas"])
                if out is None:
                    continue
                check("upload", json.dumps(out[1:4]))
                if "⚠️" in status_of(out):
                    stats.error(f"user {user} upload: {status_of(out)}")
                    continue
                message = canvas_of(out)
                key, size = message.get("key"), tuple(message.get("size", (0, 0)))
                encoding.set()
                out = timed("encode (queue+SAM)", page.call, encode_dep, [None], timeout=300)
                encoding.clear()
                if out is not None:
                    check("encode", json.dumps(out[1:4]))
                    if "⚠️" in status_of(out):
                        stats.error(f"user {user} encode: {status_of(out)}")
                continue
            action = rng.random()
            h, w = size
            if action < 0.6:                                   # click: preview, then commit
                x, y = rng.uniform(5, w - 5), rng.uniform(5, h - 5)
                payload = {"key": key, "points": [[x, y, 1]], "box": None}
                kind = "click preview" + (" (others encoding)" if encoding.is_set() else "")
                r = timed(kind, page.preview, payload)
                if r is not None:
                    if r.get("key") != key:
                        stats.cross.append(f"user {user} preview answered key {r.get('key')}")
                    if not r.get("ok") and r.get("reason") not in ("not encoded",):
                        stats.error(f"user {user} preview: {r.get('reason')}")
                version += 1
                out = timed("click commit", page.call, prompts_dep, [None],
                            event_data={**payload, "chosen": 0, "version": version},
                            trigger_id=app.by_elem["canvas"])
                if out is not None:
                    check("click", json.dumps(out[2:4]))
                    if "⚠️" in status_of(out):
                        stats.error(f"user {user} click: {status_of(out)}")
            elif action < 0.85:                                # search by text
                text = f"a red square {mine}"
                out = timed("search", page.call, search_dep,
                            [None, "examples", "text", text, "crop", "cosine", 4, True])
                if out is not None:
                    status = out[2] if isinstance(out[2], str) else ""
                    check("search", status)
                    if "⚠️" in status or mine not in status:
                        stats.error(f"user {user} search: {status[:200]}")
            else:                                              # refer
                text = f"the square on the left {mine}"
                if typing_cps > 0:                             # focus the box, type, then Enter
                    timed("refer box focused", page.call, prepare_dep, [None])
                    time.sleep(len(text) / typing_cps)
                out = timed("refer", page.call, refer_dep, [None, text], timeout=300)
                if out is not None:
                    check("refer", json.dumps(out[2:4]))
                    if "⚠️" in status_of(out):
                        stats.error(f"user {user} refer: {status_of(out)}")
            time.sleep(rng.uniform(0.2, 0.8))                  # a person's pause
    finally:
        page.close()


def run_switcher(app: App, user: int, users: int, stats: Stats, deadline: float, stuck: list):
    """A person who changes their mind: picks an image, and another one 0.1-0.5 s later while
    the first is still encoding (upload then upload, example then upload, upload then example,
    in turn). Like the page, each load chains its encode event; a second encode of the same
    event while the first runs is handled as the page does by the event's trigger mode in the
    app's config ("always_last": sent when the first ends; "once": dropped), encodes of
    different events are sent at once. The session is stuck when, after both answers, the
    image it shows is not encoded (the canvas's preview says "not encoded"): counted in
    `stuck` (issue 26 #1: an app whose page drops that encode fails here)."""
    page = Page(app, deadline)
    upload_dep, example_dep = app.fn("canvas", "upload"), app.fn("examples", "select")
    encodes = {upload_dep["id"]: app.then(upload_dep), example_dep["id"]: app.then(example_dep)}
    rng = random.Random(1000 + user)
    mine, step, uploads = marker(user), 0, 0
    orders = (("upload", "upload"), ("example", "upload"), ("upload", "example"))

    def load(kind: str) -> tuple[dict, dict] | None:
        nonlocal uploads
        if kind == "example":
            dep, index = example_dep, rng.randrange(2)
            out = page.call(dep, [None], event_data={"index": index, "value": None, "selected": True},
                            trigger_id=app.by_elem["examples"])
        else:
            uploads += 1
            name = f"{mine}_switch{uploads}.png"
            code, path = page.upload(name, user_image(user + 100, uploads))
            if code != 200:
                raise RuntimeError(f"upload HTTP {code}: {path}")
            dep = upload_dep
            out = page.call(dep, [None], event_data={"path": path, "name": name},
                            trigger_id=app.by_elem["canvas"])
        if "⚠️" in status_of(out):
            raise RuntimeError(status_of(out)[:200])
        return dep, canvas_of(out)

    def encode(dep: dict, box: list):
        try:
            box.append(page.call(encodes[dep["id"]], [None], timeout=300))
        except Exception as exc:  # reported by the caller
            box.append(exc)

    try:
        while time.monotonic() < deadline and step < MAX_REQUESTS_PER_USER // 10:
            first, second = orders[step % len(orders)]
            step += 1
            start = time.perf_counter()
            try:
                dep_a, _ = load(first)
                box_a: list = []
                worker = threading.Thread(target=encode, args=(dep_a, box_a), daemon=True)
                worker.start()
                time.sleep(rng.uniform(0.1, 0.5))
                dep_b, shown = load(second)
                box_b: list = []
                mode = encodes[dep_b["id"]].get("trigger_mode", "once")
                if dep_b["id"] != dep_a["id"] or mode == "multiple":
                    encode(dep_b, box_b)                 # another event (or "multiple"): sent at once
                    worker.join(330)
                elif mode == "always_last":
                    worker.join(330)                     # the page defers the same event
                    encode(dep_b, box_b)
                else:
                    worker.join(330)                     # "once": the page drops it while one runs
            except Exception as exc:
                stats.error(f"user {user} switch: {type(exc).__name__}: {exc}")
                continue
            for box in (box_a, box_b):
                if box and isinstance(box[0], Exception):
                    stats.error(f"user {user} switch encode: {type(box[0]).__name__}: {box[0]}")
                elif box and "⚠️" in status_of(box[0]):
                    stats.error(f"user {user} switch encode: {status_of(box[0])[:200]}")
            answer = page.preview({"key": shown.get("key"), "points": [[5, 5, 1]], "box": None})
            if not answer.get("ok"):
                with stats.lock:
                    stuck.append(f"user {user} {first} then {second}: {answer.get('reason')}")
            stats.add(f"switch ({first} then {second})", time.perf_counter() - start)
            time.sleep(rng.uniform(0.2, 0.8))
    finally:
        page.close()


# ----------------------------------------------------------------------------- faults
def big_png(width: int, height: int) -> bytes:
    """A valid, tiny PNG of width x height black pixels (a 'decompression bomb')."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        import struct
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    import struct
    raw = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * width
    body = b"".join(raw.compress(row) for _ in range(height)) + raw.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def run_faults(app: App, max_upload: int) -> list[tuple[str, str, bool]]:
    """Bad inputs; returns (case, the one-line reason the app gave, ok)."""
    page = Page(app, time.monotonic() + 300)
    upload_dep = app.fn("canvas", "upload")
    results = []

    def upload_case(case: str, name: str, content: bytes):
        code, path = page.upload(name, content)
        if code != 200:
            results.append((case, f"HTTP {code}: {path.strip()[:160]}", code in (400, 413)))
            return
        out = page.call(upload_dep, [None], event_data={"path": path, "name": name},
                        trigger_id=app.by_elem["canvas"])
        status = status_of(out).replace("\n", " ")
        results.append((case, status[:200], status.startswith("⚠️") and "Traceback" not in status))

    upload_case("100-megapixel PNG (bomb)", "bomb.png", big_png(10_000, 10_000))
    upload_case("file over the upload limit", "huge.png", b"\x89PNG" + os.urandom(max_upload + 1024))
    upload_case("random bytes named .png", "noise.png", os.urandom(50_000))
    upload_case("empty file", "empty.png", b"")
    search_dep = app.fn("search-btn", "click")
    out = page.call(search_dep, [None, "examples", "text", "x" * 5000, "crop", "cosine", 4, True])
    status = out[2] if isinstance(out[2], str) else ""
    results.append(("5000-character search text", status[:200], status.startswith("⚠️")))
    out = page.call(app.fn("refer-btn", "click"), ["y" * 5000])
    status = out[1] if isinstance(out[1], str) else ""
    results.append(("5000-character referring expression", status[:200], status.startswith("⚠️")))
    before = httpx.get(f"{app.base}/config", timeout=30).status_code
    out = page.call(app.fn("use-untrained", "click"), [])
    banner = out[0] if out and isinstance(out[0], str) else "(unchanged)"
    results.append(("'use untrained models' called from outside", f"refused; banner {banner[:80]!r}",
                    before == 200 and "Switching" not in json.dumps(out)))
    info = httpx.get(f"{app.base}/gradio_api/info", timeout=30)
    named = list(info.json().get("named_endpoints", {})) if info.status_code == 200 else []
    public = sorted(f"/{name}" for name in ENDPOINTS)
    results.append(("API listing (/gradio_api/info)", f"named endpoints: {named or 'none'}",
                    sorted(named) == public))         # the deliberate public API only, no UI event
    page.close()
    return results


# ----------------------------------------------------------------------------- main
def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--port", type=int, default=7931)
    parser.add_argument("--sam", default="vit_t")
    parser.add_argument("--faults", action="store_true", help="send bad input first")
    parser.add_argument("--start-timeout", type=float, default=420)
    parser.add_argument("--json", help="also write the report here")
    parser.add_argument("--app-repo", type=Path, default=REPO,
                        help="the checkout whose app.py to load (default: this one)")
    parser.add_argument("--typing-cps", type=float, default=0.0,
                        help="Refer as a person does it: focus the box (which starts the image's "
                             "analysis), type the sentence at this many characters per second, "
                             "then press Enter (0: send it at once, no focus)")
    parser.add_argument("--switchers", type=int, default=1,
                        help="how many of the users switch images while encoding (see run_switcher)")
    args = parser.parse_args(argv)
    if not 1 <= args.users <= 32 or not 1 <= args.seconds <= 1800:
        parser.error("--users 1..32, --seconds 1..1800")
    if not 0 <= args.switchers <= args.users:
        parser.error("--switchers 0..--users")
    workdir = Path(tempfile.mkdtemp(prefix="samclip_loadtest_"))
    base = f"http://{HOST}:{args.port}"
    proc = start_app(args.port, args.sam, workdir, {}, args.app_repo.resolve())
    report: dict = {"users": args.users, "seconds": args.seconds, "sam": args.sam, "typing_cps": args.typing_cps,
                    "points_per_side": os.environ.get("SAMCLIP_POINTS_PER_SIDE", "app default"),
                    "cpu": cpu_info().describe()}
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.start_timeout:
            if proc.poll() is not None:
                print((workdir / "app.log").read_text()[-3000:], file=sys.stderr)
                raise SystemExit("the app exited during start-up")
            try:
                if httpx.get(f"{base}/config", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        app = App(base)
        # warm up: one session encodes and searches (builds the example gallery) before timing
        warm = Page(app, time.monotonic() + args.start_timeout)
        warm.call(app.fn("search-btn", "click"), [None, "examples", "text", "warm up", "crop", "cosine", 4, True],
                        timeout=args.start_timeout)
        warm.close()
        time.sleep(2)
        tmp = workdir / "tmp"
        disk_start, files_start = folder_bytes(tmp), files_under(tmp)
        mem_start = rss_bytes(proc.pid)
        memory = Memory(proc.pid)
        memory.start()
        report["load_start"] = os.getloadavg()
        if args.faults:
            report["faults"] = run_faults(app, config.MAX_IMAGE_BYTES)
        stats = Stats()
        encoding = threading.Event()
        deadline = time.monotonic() + args.seconds
        stuck: list[str] = []
        switchers = range(args.users - args.switchers, args.users)
        threads = [threading.Thread(target=run_switcher, args=(app, u, args.users, stats, deadline, stuck),
                                    daemon=True) if u in switchers else
                   threading.Thread(target=run_user, args=(app, u, args.users, stats, deadline, encoding, args.typing_cps),
                                    daemon=True) for u in range(args.users)]
        for i, t in enumerate(threads):
            t.start()
            time.sleep(0.3)
        disk_peak = (0, 0)
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline + 360:
            disk_peak = max(disk_peak, folder_bytes(tmp))
            time.sleep(1)
        report["load_end"] = os.getloadavg()
        # sessions have ended (pages closed): wait for files to be reclaimed (bounded)
        disk_end = folder_bytes(tmp)
        for _ in range(60):
            disk_end = folder_bytes(tmp)
            if disk_end[0] <= disk_start[0]:
                break
            time.sleep(1)
        memory.stop.set()
        left = sorted(files_under(tmp) - files_start)
        report["left_behind"], report["left_behind_count"] = left[:12], len(left)
        report.update(requests=stats.requests, errors=stats.errors, cross_user=stats.cross, stuck=stuck,
                      switchers=args.switchers,
                      mem_start_gb=mem_start / 1e9, mem_peak_gb=memory.peak / 1e9,
                      mem_end_gb=rss_bytes(proc.pid) / 1e9,
                      disk_start=disk_start, disk_peak=disk_peak, disk_end=disk_end,
                      latency={k: {"n": len(v), "p50": pct(v, .5), "p95": pct(v, .95), "max": max(v)}
                               for k, v in sorted(stats.latency.items())})
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        report["tracebacks"] = log_tracebacks(workdir / "app.log")
        shutil.rmtree(workdir, ignore_errors=True)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    return 0 if not report.get("errors") and not report.get("cross_user") and not report.get("stuck") else 1


def print_report(r: dict) -> None:
    print(f"\n{r['users']} users x {r['seconds']:.0f} s, SAM {r['sam']} (untrained), automatic-mask grid "
          f"{r.get('points_per_side')}, Refer typed at {r.get('typing_cps') or 'no'} characters/s; load average "
          f"at start {r['load_start'][0]:.2f}, at end {r['load_end'][0]:.2f}")
    print(f"CPU: {r.get('cpu', '?')}")
    for case, reason, ok in r.get("faults", []):
        print(f"  fault {'ok ' if ok else 'BAD'} {case}: {reason}")
    print(f"requests {r['requests']}, errors {len(r['errors'])}, cross-user answers {len(r['cross_user'])}, "
          f"stuck sessions {len(r.get('stuck', []))} (of {r.get('switchers', 0)} user(s) switching pictures "
          "while encoding)")
    for line in (r["errors"] + r["cross_user"] + r.get("stuck", []))[:10]:
        print("   ", line)
    print(f"tracebacks in the app's log: {len(r.get('tracebacks', []))}")
    for line in r.get("tracebacks", [])[:5]:
        print("   ", line)
    print(f"{'event':34s} {'n':>5s} {'p50 s':>7s} {'p95 s':>7s} {'max s':>7s}")
    for kind, v in r["latency"].items():
        print(f"{kind:34s} {v['n']:5d} {v['p50']:7.3f} {v['p95']:7.3f} {v['max']:7.3f}")
    print(f"app memory: start {r['mem_start_gb']:.2f} GB, peak {r['mem_peak_gb']:.2f} GB, "
          f"end {r['mem_end_gb']:.2f} GB")
    print(f"temporary files: start {r['disk_start'][0] / 1e6:.1f} MB ({r['disk_start'][1]} files), "
          f"peak {r['disk_peak'][0] / 1e6:.1f} MB, after the sessions ended "
          f"{r['disk_end'][0] / 1e6:.1f} MB ({r['disk_end'][1]} files)")
    print(f"files new since the start still there: {r.get('left_behind_count', 0)}")
    for path in r.get("left_behind", []):
        print("    left:", path)


if __name__ == "__main__":
    sys.exit(main())
