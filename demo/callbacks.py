"""The app's callbacks, one object per panel, composed over one shared workspace.

No gradio here, so the callbacks are testable without a browser. Each takes the session's
`Session` plus plain values and returns plain values (`demo.outputs`); they raise
`UserError` (or a core ValueError) for anything the person can fix, and the shell turns
every exception into a readable message.
"""
from __future__ import annotations

from demo.context import AppContext
from demo.galleries import SessionGalleries
from demo.panels.compare import CompareCallbacks
from demo.panels.dataset import DatasetCallbacks
from demo.panels.find import FindCallbacks
from demo.panels.refer import ReferCallbacks
from demo.panels.search import SearchCallbacks
from demo.panels.segment import SegmentCallbacks
from demo.session_files import SessionFiles
from demo.workspace import Workspace


class Callbacks:
    """All panels' callbacks, bound to the shared `AppContext` (models, example gallery):
    `files` (sessions and their files), `ws` (shared helpers), `segment`, `galleries`,
    `compare`, `search`, `refer`, `find`, `dataset`."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.files = SessionFiles(ctx)
        self.ws = Workspace(ctx, self.files)
        self.segment = SegmentCallbacks(self.ws)
        self.galleries = SessionGalleries(self.ws)
        self.compare = CompareCallbacks(self.ws, self.galleries)
        self.search = SearchCallbacks(self.ws, self.galleries)
        self.refer = ReferCallbacks(self.ws)
        self.find = FindCallbacks(self.ws)
        self.dataset = DatasetCallbacks(self.ws)
