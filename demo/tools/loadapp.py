"""The app under load (demo.tools.loadtest): started as its own process on 127.0.0.1 in a
temporary folder, and what is measured of it from outside (resident memory, its temporary
files, the tracebacks in its log)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


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



def log_tracebacks(log: Path) -> list[str]:
    """The last line (exception type and message) of every traceback in the app's log."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found, inside = [], False
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            inside = True
        elif inside and line and not line.startswith((" ", "\t", "During handling", "The above exception")):
            found.append(line[:200])
            inside = False
    return found
