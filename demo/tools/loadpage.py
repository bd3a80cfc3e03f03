"""The page's own protocol, as the load tool (demo.tools.loadtest) speaks it: the app's config
(which fn_index each event has), one simulated page (session hash, event stream, heartbeat,
uploads, the canvas's preview server function), and readers of an event's outputs."""
from __future__ import annotations

import json
import queue
import socket
import threading
import time
import uuid
from collections import defaultdict

import httpx


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
