"""Per-session state: everything one browser tab has done, held in a `gr.State`.

Nothing here is shared between sessions: models live in the one Engine the app creates
at start-up; each tab gets its own `Session` (a deep copy of a fresh one). Records hold
numpy arrays and core records only.

Coordinates: points (x, y) and boxes XYXY in pixels of the session's *working image*
(`Session.image`, the upload downscaled when it was very large); masks (H, W) bool of the
working image. `Session.original_size` is the size of the file as uploaded: exports are
scaled back to it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from core.find.run import LabelResult
from core.gallery.gallery import Hit, ObjectRecord
from core.sam.automask import AutoMasks
from core.sam.segmenter import MaskPrediction

SelectionSource = Literal["prompt", "auto", "refer"]


class UserError(ValueError):
    """A problem the person can fix (bad file, nothing selected, empty text...).

    Its message is shown in the UI as it is."""


class Stale(Exception):
    """A request about an image that is no longer the session's current one: dropped."""


@dataclass(frozen=True)
class Prompt:
    """One prompt the person made, in working-image pixels.

    kind: "point" (x1, y1 = the point, label 1 positive / 0 negative) or "box"
    (x1, y1, x2, y2 XYXY, x2/y2 exclusive).
    """

    kind: Literal["point", "box"]
    x1: float
    y1: float
    x2: float = 0.0
    y2: float = 0.0
    label: int = 1


@dataclass(frozen=True)
class Selection:
    """The one object the person has selected, wherever it came from.

    source: "prompt" (candidate `index` of the prompts' prediction), "auto" (automatic
    mask `index` of 'Everything') or "refer" (chosen by a referring expression);
    mask: (H, W) bool of the working image; score: SAM's predicted IoU (or the grounding
    score); of: how many candidates / automatic masks there were to choose from.
    """

    source: SelectionSource
    mask: np.ndarray
    index: int = 0
    score: float = float("nan")
    of: int = 1

    def describe(self) -> str:
        if self.source == "prompt" and self.score != self.score:   # NaN: no SAM score
            return "drawn with the brush"
        if self.source == "prompt":
            return f"candidate #{self.index + 1} of {self.of}, score {self.score:.3f}"
        if self.source == "auto":
            return f"automatic mask #{self.index + 1} of {self.of}, score {self.score:.3f}"
        return f"chosen by the referring expression (score {self.score:.3f})"


@dataclass
class Session:
    """What one browser session has: its image, prompts, masks, selection, gallery additions."""

    image: np.ndarray | None = None           # (H, W, 3) uint8 RGB working image
    image_key: str = ""                       # content hash of `image` (core.sam.segmenter.image_key)
    image_name: str = ""                      # the file name as uploaded / the example's name
    original_size: tuple[int, int] = (0, 0)   # (H, W) of the file; > image size when downscaled
    source: str = ""                          # the file the image came from (for full-size exports)
    load_ticket: int = 0                      # increases with every image load that starts
    embedding: str | None = None              # key of `image`'s SAM embedding in the shared
                                              # cache (None: not encoded yet); never the tensor
    sam_model: str = ""                       # this session's SAM ("" : the app's default)
    open_tab: str = ""                        # the tab under the canvas the person has open (its id)
    prompts: list[Prompt] = field(default_factory=list)
    prompt_version: int = 0                   # the canvas's counter of the prompts last committed
    candidates: MaskPrediction | None = None  # SAM's answer for `prompts`
    auto: AutoMasks | None = None             # the automatic masks of `image` ('Everything')
    selection: Selection | None = None        # the selected object
    # The person's own gallery additions: records + one (N, D) float32 block per view.
    user_records: list[ObjectRecord] = field(default_factory=list)
    user_embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    user_images: dict[str, np.ndarray] = field(default_factory=dict)  # source -> image
    hits: list[Hit] = field(default_factory=list)   # results shown now (one page
                                                    # of the large gallery, never more)
    hits_from: str = "examples"                     # "examples" | "large": where `hits` came from
    last_query: tuple[str, str] | None = None       # (source, text) of the last search
    # Paging the large gallery (--gallery): the query vector and the first rank shown, only.
    page_query: np.ndarray | None = None            # (D,) float32 unit vector of the last query
    page_what: str = ""                             # what it was ("text 'a cat'")
    page_offset: int = 0                            # rank of the first hit of the page shown
    files_dir: str = ""                       # this session's folder for downloads (made by
                                              # SessionFiles.files_dir, deleted when it ends)
    labels: LabelResult | None = None         # the last 'Label everything' (one, replaced)
    edited: Selection | None = None           # the selection brush/eraser strokes made (its
    edit_base: np.ndarray | None = None       # unedited mask, (H, W) bool: strokes re-apply to it)
    # The Dataset panel's set (demo.dataset_set.ImageSet: on disk in files_dir, bounded),
    # the image shown, the review queue shown [(file name, object index)], the picked row.
    dataset: object | None = None
    dataset_index: int = 0
    dataset_queue: list = field(default_factory=list)
    dataset_pick: tuple | None = None
    exported: tuple | None = None             # (what was exported, demo.outputs.Exports, ...): the
                                              # downloads are written once per selection

    # ---- prompts -------------------------------------------------------------------
    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """Point prompts as ((N, 2) float32 XY, (N,) int64 labels 1/0)."""
        pts = [(p.x1, p.y1) for p in self.prompts if p.kind == "point"]
        labels = [p.label for p in self.prompts if p.kind == "point"]
        return (np.asarray(pts, dtype=np.float32).reshape(-1, 2),
                np.asarray(labels, dtype=np.int64))

    def box(self) -> np.ndarray | None:
        """The last box, (4,) float32 XYXY, or None."""
        for p in reversed(self.prompts):
            if p.kind == "box":
                return np.asarray([p.x1, p.y1, p.x2, p.y2], dtype=np.float32)
        return None

    def has_prompts(self) -> bool:
        return bool(self.prompts)

    def clear_prompts(self) -> None:
        self.prompts = []
        self.candidates = None
        if self.selection is not None and self.selection.source == "prompt":
            self.selection = None

    # ---- selection -----------------------------------------------------------------
    def selected_mask(self) -> np.ndarray | None:
        """The object the person has selected, (H, W) bool, or None."""
        return None if self.selection is None else self.selection.mask

    def encoded(self) -> bool:
        """True when SAM's embedding of the CURRENT image is in the shared cache (an embedding
        of an image the person has since moved away from never counts)."""
        return self.embedding is not None and self.embedding == self.image_key

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

    def reset_image(self, image: np.ndarray, key: str, name: str,
                    original_size: tuple[int, int], source: str = "") -> None:
        """Start over on a new image: drops prompts, masks, the selection and the embedding."""
        self.image = image
        self.image_key = key
        self.image_name = name
        self.original_size = tuple(original_size)
        self.source = source
        self.embedding = None
        self.prompts = []
        self.candidates = None
        self.auto = None
        self.selection = None
        self.edited = self.edit_base = None
        self.labels = None
