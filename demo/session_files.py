"""Serving housekeeping: which page each session belongs to, the files sessions hold
(download folders, uploads, canvas pictures), and deleting them when a session ends or
nobody holds them any more."""
from __future__ import annotations

import secrets
import shutil
import threading
import weakref
from pathlib import Path
from typing import Callable

from demo.context import AppContext
from demo.state import Session, UserError


class SessionFiles:
    """Live sessions by page and the files they hold; safe to call from any thread."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        #: Folders uploads arrive in (Gradio's upload folder; set by the shell).
        self.upload_dirs: list[str] = []
        # session hash -> that session's Session, so closing the page frees it at once
        self._live: dict[str, Session] = {}
        # every session with an image or files, by id, not kept alive (Gradio owns them)
        self._sessions: weakref.WeakValueDictionary[int, Session] = weakref.WeakValueDictionary()
        self._live_lock = threading.Lock()

    def register(self, session: Session, session_hash: str | None) -> None:
        """Remember which page `session` belongs to (for `end_session_of` on page close)."""
        if not isinstance(session, Session):
            return
        with self._live_lock:
            self._sessions[id(session)] = session
            if session_hash:
                self._live[session_hash] = session

    def live_sessions(self) -> int:
        with self._live_lock:
            return len(self._live)

    def end_session_of(self, session_hash: str | None) -> None:
        """The page `session_hash` was closed: free its session now."""
        with self._live_lock:
            session = self._live.pop(session_hash, None) if session_hash else None
        if session is not None:
            self.end_session(session)

    def hold(self, session: Session, change: Callable[[], None]) -> None:
        """Apply `change` to `session` and record it as holding files, in one step (a sweep
        never sees the new upload or picture unheld)."""
        with self._live_lock:
            change()
            self._sessions[id(session)] = session

    def in_use(self) -> set[str]:
        """Files sessions still hold (download folders, uploads, canvas pictures): never
        deleted by a sweep, nor by another session's end."""
        with self._live_lock:
            sessions = list(self._sessions.values())
        held = set()
        for s in sessions:
            held.update(p for p in (s.files_dir, s.source) if p)
            if s.image_key:
                held.add(str(self.ctx.display_path(s.image_key)))
        return held

    def files_dir(self, session: Session) -> Path:
        """The session's own folder for downloads (made on first use, under the app's
        session-files folder; the name is unguessable, as it is served in place)."""
        with self._live_lock:   # made and recorded at once: the orphan sweep never sees it bare
            if not session.files_dir:
                folder = self.ctx.files_root / f"session_{secrets.token_hex(16)}"
                folder.mkdir(parents=True)
                session.files_dir = str(folder)
            self._sessions[id(session)] = session
        return Path(session.files_dir)

    def sweep_session_folders(self) -> int:
        """Delete session folders no live session owns (e.g. its session was dropped without
        `end_session`); returns how many."""
        root = self.ctx.files_root
        found = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
        held = self.in_use()   # after listing: a folder is recorded before anyone can list it
        orphans = [p for p in found if str(p) not in held]
        for folder in orphans:
            shutil.rmtree(folder, ignore_errors=True)
        return len(orphans)

    def is_upload(self, path: str) -> bool:
        if not path:
            return False
        resolved = Path(path).resolve()
        return any(d and resolved.is_relative_to(Path(d).resolve()) for d in self.upload_dirs)

    def forget_upload(self, path: str) -> None:
        """Delete an uploaded file (and its folder when empty)."""
        if not self.is_upload(path):
            return
        file = Path(path)
        file.unlink(missing_ok=True)
        try:
            file.parent.rmdir()
        except OSError:
            pass

    def release(self, upload: str = "", key: str = "") -> None:
        """Delete the upload `upload` and the canvas picture of image `key` unless a session
        still holds them (uploads and pictures are named by content: two people may share one)."""
        held = self.in_use()
        if upload and upload not in held:
            self.forget_upload(upload)
        if key and str(self.ctx.display_path(key)) not in held:
            self.ctx.forget_display(key)

    def end_session(self, session) -> None:
        """A session ended (time to live passed, or its page was closed): delete its files
        (downloads folder, its upload and picture unless others hold them) and drop its
        arrays. Safe to call twice."""
        if not isinstance(session, Session):
            return
        with self._live_lock:
            for key, value in list(self._live.items()):
                if value is session:
                    del self._live[key]
            self._sessions.pop(id(session), None)
            folder, upload, key = session.files_dir, session.source, session.image_key
            session.files_dir = session.source = session.image_key = ""
        if session.dataset is not None:           # stop its "apply to all"; its files are in `folder`
            session.dataset.close()
            session.dataset, session.dataset_queue, session.dataset_pick = None, [], None
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        self.release(upload, key)
        session.image = session.embedding = None
        session.auto = session.candidates = session.selection = None
        session.user_images, session.user_embeddings, session.user_records = {}, {}, []
        session.hits, session.page_query, session.labels = [], None, None

    def upload_path(self, path, allowed_dirs: list[str]) -> str:
        """`path` from the canvas's upload, checked to lie in one of `allowed_dirs`
        (Gradio's upload folder): the browser must not name arbitrary server files."""
        if not path or not isinstance(path, str):
            raise UserError("The upload did not arrive; please try again.")
        resolved = Path(path).resolve()
        for folder in allowed_dirs:
            if folder and resolved.is_relative_to(Path(folder).resolve()):
                return str(resolved)
        raise UserError("That file is not an upload of this session.")
