"""Load and fault test of the app: N simulated people against a local app, through its queue.

    python -m demo.tools.loadtest [--users 8] [--seconds 120] [--port 7931] [--sam vit_t] [--faults]

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
time. Exit status 0 when the targets hold (0 errors, 0 cross-user answers).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from core.bench.timing import cpu_info
from demo import settings as serving
from demo.api import ENDPOINTS

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
MAX_REQUESTS_PER_USER = 2000


# ----------------------------------------------------------------------------- the app
def start_app(port: int, sam: str, workdir: Path, extra_env: dict, repo: Path = REPO) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(workdir / "tmp"), "GRADIO_TEMP_DIR": str(workdir / "tmp" / "gradio"),
           "SAMCLIP_CACHE": str(workdir / "cache"), "SAMCLIP_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "SAMCLIP_CACHE_SWEEP": "5",
           "SAMCLIP_CACHE_MAX_AGE": "20", **extra_env}
    (workdir / "tmp" / "gradio").mkdir(parents=True, exist_ok=True)
    log = open(workdir / "app.log", "w")
    return subprocess.Popen([sys.executable, str(repo / "app.py"), "--untrained", "--sam", sam,
                             "--host", HOST, "--port", str(port), "--gallery-max-objects", "6"],
                            cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its children (from /proc)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def files_under(folder: Path) -> set[str]:
    """Paths of the files under `folder`, relative to it."""
    return {os.path.relpath(os.path.join(root, name), folder)
            for root, _, files in os.walk(folder) for name in files}


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(bytes, files) under `folder`."""
    size = count = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                size += os.path.getsize(os.path.join(root, name))
                count += 1
            except OSError:
                pass
    return size, count


class Memory(threading.Thread):
    """Samples the app's RSS every 0.25 s; `peak` is the highest seen."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(0.25)


# ----------------------------------------------------------------------------- protocol
class App:
    """The app's page config: which fn_index each event has."""

    def __init__(self, base: str):
        self.base = base
        config = httpx.get(f"{base}/config", timeout=30).json()
        self.components = {c["id"]: c for c in config["components"]}
        self.by_elem = {c.get("props", {}).get("elem_id"): c["id"] for c in config["components"]
                        if c.get("props", {}).get("elem_id")}
        self.deps = config["dependencies"]

    def fn(self, elem_id: str, event: str) -> dict:
        cid = self.by_elem[elem_id]
        for dep in self.deps:
            if [cid, event] in [list(t) for t in dep.get("targets", [])]:
                return dep
        raise KeyError(f"no {event} event on #{elem_id}")

    def then(self, dep: dict) -> dict:
        for other in self.deps:
            if other.get("trigger_after") == dep["id"]:
                return other
        raise KeyError(f"nothing follows fn {dep['id']}")


class Page:
    """One simulated browser page: its session hash and one open event stream."""

    def __init__(self, app: App, deadline: float):
        self.app, self.base = app, app.base
        self.session = uuid.uuid4().hex[:11]
        self.client = httpx.Client(timeout=httpx.Timeout(120.0, connect=10.0))
        self.waiting: dict[str, queue.Queue] = {}
        self.lock = threading.Lock()
        self.early: dict[str, list] = defaultdict(list)
        self.closed = threading.Event()
        self.deadline = deadline
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.started = False
        self.wanted = threading.Event()
        self.heartbeat = self._open_heartbeat()

    def _open_heartbeat(self) -> socket.socket:
        """The page's client keeps GET /gradio_api/heartbeat/<session> open while the page is
        open (never read here: Gradio writes a few bytes every 15 s); Gradio runs the unload
        event when it ends."""
        url = httpx.URL(self.base)
        sock = socket.create_connection((url.host, url.port), timeout=10)
        sock.sendall(f"GET /gradio_api/heartbeat/{self.session} HTTP/1.1\r\nHost: {url.host}:"
                     f"{url.port}\r\nAccept: text/event-stream\r\n\r\n".encode())
        return sock

    def _read(self):
        """Like the page: an event stream is open while events are pending; Gradio ends it
        when none are left ("close_stream"), and it is opened again for the next event."""
        url = f"{self.base}/gradio_api/queue/data?session_hash={self.session}"
        with httpx.Client(timeout=httpx.Timeout(None, connect=10.0)) as stream_client:
            while not self.closed.is_set() and time.monotonic() < self.deadline + 600:
                with self.lock:
                    busy = bool(self.waiting)
                if not busy:
                    self.wanted.wait(timeout=0.5)
                    self.wanted.clear()
                    continue
                try:
                    with stream_client.stream("GET", url) as resp:
                        for line in resp.iter_lines():
                            if self.closed.is_set():
                                return
                            if not line.startswith("data:"):
                                continue
                            msg = json.loads(line[5:])
                            if msg.get("msg") == "close_stream":
                                break
                            eid = msg.get("event_id")
                            with self.lock:
                                target = self.waiting.get(eid)
                                if target is None:
                                    self.early[eid].append(msg)
                                    continue
                            target.put(msg)
                except httpx.HTTPError:
                    time.sleep(0.2)

    def call(self, dep: dict, data: list, event_data=None, trigger_id=None, timeout: float = 120.0) -> list:
        """Run one event through the queue; its output data (raises on failure)."""
        body = {"data": data, "event_data": event_data, "fn_index": dep["id"],
                "trigger_id": trigger_id, "session_hash": self.session}
        resp = self.client.post(f"{self.base}/gradio_api/queue/join", json=body)
        resp.raise_for_status()
        eid = resp.json()["event_id"]
        box: queue.Queue = queue.Queue()
        with self.lock:
            self.waiting[eid] = box
            for msg in self.early.pop(eid, []):
                box.put(msg)
        self.wanted.set()
        if not self.started:
            self.reader.start()
            self.started = True
        end = time.monotonic() + timeout
        try:
            while True:
                msg = box.get(timeout=max(0.1, end - time.monotonic()))
                if msg.get("msg") == "process_completed":
                    if not msg.get("success"):
                        out = msg.get("output") or {}
                        raise RuntimeError(f"event failed: {str(out.get('error') or out)[:200]}")
                    return msg["output"]["data"]
        except queue.Empty:
            raise TimeoutError(f"no answer in {timeout:.0f} s") from None
        finally:
            with self.lock:
                self.waiting.pop(eid, None)

    def preview(self, payload: dict) -> dict:
        body = {"session_hash": self.session, "component_id": self.app.by_elem["canvas"],
                "fn_name": "preview", "data": [payload]}
        resp = self.client.post(f"{self.base}/gradio_api/component_server", json=body)
        resp.raise_for_status()
        return resp.json()

    def upload(self, name: str, content: bytes) -> tuple[int, str]:
        resp = self.client.post(f"{self.base}/gradio_api/upload",
                                files={"files": (name, content, "image/png")})
        if resp.status_code != 200:
            return resp.status_code, resp.text[:200]
        return 200, resp.json()[0]

    def close(self):
        """The page is closed: its heartbeat request ends (Gradio runs the unload event)."""
        self.closed.set()
        self.client.close()
        try:
            self.heartbeat.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.heartbeat.close()


def status_of(outputs: list) -> str:
    """The status line among a Segment event's outputs (session, canvas, info, status, ...)."""
    value = outputs[3] if len(outputs) > 3 else ""
    return value if isinstance(value, str) else ""


def canvas_of(outputs: list) -> dict:
    try:
        return json.loads(outputs[1]) if isinstance(outputs[1], str) and outputs[1] else {}
    except (ValueError, IndexError, TypeError):
        return {}


# ----------------------------------------------------------------------------- users
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
        self.stuck: list[str] = []   # sessions that never finished loading a picture
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


def run_switcher(app: App, user: int, stats: Stats, deadline: float):
    """A person who picks another picture while the first is still encoding (issue 26 #1):
    upload A and start its encoding, upload B 0.3 s later and encode it. B must end ready:
    its encode answers "Loaded ...", and a click preview on B answers with masks, not
    "not encoded". A session left waiting for good counts as "stuck"."""
    page = Page(app, deadline)
    upload_dep = app.fn("canvas", "upload")
    encode_dep = app.then(upload_dep)
    mine, pair = marker(user), 0

    def show(name: str, content: bytes) -> str | None:
        code, path = page.upload(name, content)
        if code != 200:
            stats.error(f"user {user} upload HTTP {code}: {path}")
            return None
        out = page.call(upload_dep, [None], event_data={"path": path, "name": name},
                        trigger_id=app.by_elem["canvas"])
        return canvas_of(out).get("key")

    def encode(results: list):
        try:
            results.append(status_of(page.call(encode_dep, [None], timeout=300)))
        except Exception as exc:   # reported by the caller
            results.append(f"⚠️ {type(exc).__name__}: {exc}")

    try:
        while time.monotonic() < deadline and pair < MAX_REQUESTS_PER_USER // 4:
            pair += 1
            start = time.perf_counter()
            first = show(f"{mine}_switch{pair}a.png", user_image(user, 1000 + 2 * pair))
            first_done: list = []
            worker = threading.Thread(target=encode, args=(first_done,), daemon=True)
            worker.start()
            time.sleep(0.3)
            second = show(f"{mine}_switch{pair}b.png", user_image(user, 1001 + 2 * pair))
            second_done: list = []
            encode(second_done)
            worker.join(300)
            if first is None or second is None:
                continue
            reply = page.preview({"key": second, "points": [[5, 5, 1]], "box": None})
            if not reply.get("ok"):
                with stats.lock:
                    stats.stuck.append(f"user {user} pair {pair}: the second picture never became ready "
                                       f"({reply.get('reason')}; encode said {second_done[:1]})")
            else:
                stats.add("switch: second picture ready", time.perf_counter() - start)
            if second_done and "⚠️" in second_done[0]:
                stats.error(f"user {user} switch encode: {second_done[0][:200]}")
            time.sleep(1.0)
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
                        help="how many of the users pick a second picture while the first is still "
                             "encoding, again and again (each pair must end ready: else 'stuck')")
    args = parser.parse_args(argv)
    if not 1 <= args.users <= 32 or not 1 <= args.seconds <= 1800:
        parser.error("--users 1..32, --seconds 1..1800")
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
            report["faults"] = run_faults(app, serving.MAX_UPLOAD_BYTES)
        stats = Stats()
        encoding = threading.Event()
        deadline = time.monotonic() + args.seconds
        switchers = min(args.switchers, args.users)
        threads = [threading.Thread(target=run_switcher, args=(app, u, stats, deadline), daemon=True)
                   for u in range(switchers)]
        threads += [threading.Thread(target=run_user, args=(app, u, args.users, stats, deadline, encoding,
                                                            args.typing_cps), daemon=True)
                    for u in range(switchers, args.users)]
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
        report.update(requests=stats.requests, errors=stats.errors, cross_user=stats.cross, stuck=stats.stuck,
                      switchers=switchers,
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
          f"stuck sessions {len(r.get('stuck', []))} (of {r.get('switchers', 0)} user(s) switching pictures while encoding)")
    for line in (r["errors"] + r["cross_user"] + r.get("stuck", []))[:10]:
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
