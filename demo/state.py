"""Per-session state: everything one browser tab has done, held in a `gr.State`.

Nothing here is shared between sessions: models live in the one Engine the app creates
at start-up; each tab gets its own `Session` (a deep copy of a fresh one). Records hold
numpy arrays and core records only. Coordinates: points (x, y) and boxes XYXY in pixels
of the session's image; masks (H, W) bool.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

ClickMode = Literal["positive", "negative", "box", "pick"]

#: The labels of the click-mode radio, in order, and the mode each one means.
CLICK_MODES: dict[str, ClickMode] = {
    "+ positive point": "positive",
    "- negative point": "negative",
    "box (2 clicks: corners)": "box",
    "pick an automatic mask": "pick",
}


class UserError(ValueError):
    """A problem the person can fix (bad file, nothing selected, empty text...).

    Its message is shown in the UI as it is."""


@dataclass(frozen=True)
class Prompt:
    """One click the person made.

    kind: "point" (x1, y1 = the point, label 1 positive / 0 negative), "corner" (the first
    corner of a box being drawn, at x1, y1) or "box" (x1, y1, x2, y2 XYXY, x2/y2 exclusive).
    """

    kind: Literal["point", "corner", "box"]
    x1: float
    y1: float
    x2: float = 0.0
    y2: float = 0.0
    label: int = 1


@dataclass
class Session:
    """What one browser session has: its image, prompts, masks, gallery additions."""

    image: np.ndarray | None = None           # (H, W, 3) uint8 RGB
    image_name: str = ""                      # a label: example file name or "upload"
    embedding: Any = None                     # core.segment.ImageEmbedding of `image`
    prompts: list[Prompt] = field(default_factory=list)
    candidates: Any = None                    # core.segment.MaskPrediction for `prompts`
    chosen: int = 0                           # index into candidates.masks
    auto: Any = None                          # core.segment AutoMasks of `image`
    auto_pick: int | None = None              # index into auto.masks, when picked
    selection: Literal["none", "prompt", "auto", "refer"] = "none"
    refer_mask: np.ndarray | None = None      # (H, W) bool chosen by the Refer tab
    # The person's own gallery additions: records + one (N, D) float32 block per view.
    user_records: list[Any] = field(default_factory=list)
    user_embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    user_images: dict[str, np.ndarray] = field(default_factory=dict)  # source -> image
    hits: list[Any] = field(default_factory=list)   # last search results (core Hit)
    files_dir: str = ""                       # this session's folder for downloads

    # ---- prompts -------------------------------------------------------------------
    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """Point prompts as ((N, 2) float32 XY, (N,) int64 labels 1/0)."""
        pts = [(p.x1, p.y1) for p in self.prompts if p.kind == "point"]
        labels = [p.label for p in self.prompts if p.kind == "point"]
        return (np.asarray(pts, dtype=np.float32).reshape(-1, 2),
                np.asarray(labels, dtype=np.int64))

    def box(self) -> np.ndarray | None:
        """The last completed box, (4,) float32 XYXY, or None."""
        for p in reversed(self.prompts):
            if p.kind == "box":
                return np.asarray([p.x1, p.y1, p.x2, p.y2], dtype=np.float32)
        return None

    def pending_corner(self) -> tuple[float, float] | None:
        """The first corner of a box still waiting for its second click, or None."""
        for p in self.prompts:
            if p.kind == "corner":
                return (p.x1, p.y1)
        return None

    def has_prompts(self) -> bool:
        return any(p.kind in ("point", "box") for p in self.prompts)

    def clear_prompts(self) -> None:
        self.prompts = []
        self.candidates = None
        self.chosen = 0
        if self.selection == "prompt":
            self.selection = "none"

    # ---- selection -----------------------------------------------------------------
    def selected_mask(self) -> np.ndarray | None:
        """The object the person has selected, (H, W) bool, or None."""
        if self.selection == "prompt" and self.candidates is not None:
            if 0 <= self.chosen < len(self.candidates.masks):
                return self.candidates.masks[self.chosen]
        if self.selection == "auto" and self.auto is not None and self.auto_pick is not None:
            return self.auto.masks[self.auto_pick]
        if self.selection == "refer" and self.refer_mask is not None:
            return self.refer_mask
        return None

    def require_image(self) -> np.ndarray:
        if self.image is None:
            raise UserError("No image yet: upload one or pick an example first.")
        return self.image

    def require_selection(self) -> np.ndarray:
        self.require_image()
        mask = self.selected_mask()
        if mask is None:
            raise UserError("No object selected: click on the image (or use 'Everything' "
                            "and pick a mask) first.")
        if not mask.any():
            raise UserError("The selected mask is empty: add a point or choose another candidate.")
        return mask

    def downloads_dir(self) -> str:
        """This session's own folder for downloadable files (created on first use)."""
        if not self.files_dir:
            self.files_dir = tempfile.mkdtemp(prefix="samclip_session_")
        return self.files_dir

    def reset_image(self, image: np.ndarray, name: str, embedding: Any) -> None:
        """Start over on a new image: drops prompts, masks and the refer result."""
        self.image = image
        self.image_name = name
        self.embedding = embedding
        self.prompts = []
        self.candidates = None
        self.chosen = 0
        self.auto = None
        self.auto_pick = None
        self.selection = "none"
        self.refer_mask = None
