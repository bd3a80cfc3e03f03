"""Undo / redo for every edit of a session's image, as a stack of immutable snapshots.

A snapshot (`EditState`) is the object list (ObjectList.snapshot(), which shares mask bytes
between steps) plus the selection being made (`Selection`: points, box, candidate, SAM mask as
RLE, strokes). After each edit the caller records the new state with the edit's name; undo /
redo move along the stack and return the state to show. A new edit after undo drops the redo
branch, as in every editor. The stack is bounded by a step count and by bytes (the oldest
steps go first; the current state always stays).

    history = History(EditState.initial(objects))
    objects.add(mask, "dog"); history.record("keep", EditState.of(objects, Selection()))
    state = history.undo()      # -> the EditState before "keep"; objects.restore(state.objects)
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Generic, TypeVar

import numpy as np
from pycocotools import mask as mask_utils

from core.annotate.objects import ObjectList, encode
from core.annotate.strokes import Stroke, edited_mask

ACTIONS = ("points", "box", "candidate", "stroke", "clear", "keep", "delete", "rename", "relabel",
           "merge", "hide", "load")
MAX_STEPS = 200
MAX_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Selection:
    """The selection being made. points: ((x, y), ...) image pixels; labels: (1 | 0, ...) one
    per point (1 adds, 0 removes); box: XYXY floats or None; candidate: index of the picked SAM
    candidate or None; sam_rle: COCO compressed RLE of SAM's mask (None before any prompt);
    strokes: brush / eraser strokes drawn on top, in order."""

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None
    candidate: int | None = None
    sam_rle: dict | None = None
    strokes: tuple[Stroke, ...] = ()

    @classmethod
    def from_mask(cls, sam_mask: np.ndarray | None, **fields) -> "Selection":
        """A selection holding SAM's (H, W) bool mask (encoded compactly)."""
        return cls(sam_rle=None if sam_mask is None else encode(sam_mask), **fields)

    def with_stroke(self, stroke: Stroke) -> "Selection":
        """The same selection with one more stroke."""
        return replace(self, strokes=(*self.strokes, stroke))

    def without_strokes(self) -> "Selection":
        """The same selection with its strokes dropped (SAM's mask alone)."""
        return replace(self, strokes=())

    def mask(self, shape: tuple[int, int]) -> np.ndarray | None:
        """The edited (H, W) bool mask: SAM's mask with the strokes re-applied; None if neither."""
        base = None if self.sam_rle is None else mask_utils.decode(self.sam_rle).astype(bool)
        return edited_mask(base, self.strokes, shape)

    @property
    def nbytes(self) -> int:
        """Approximate bytes held."""
        rle = len(self.sam_rle["counts"]) if self.sam_rle else 0
        return 100 + 24 * len(self.points) + rle + sum(s.nbytes for s in self.strokes)


@dataclass(frozen=True)
class EditState:
    """One undo step: objects (ObjectList.snapshot()) and the selection."""

    objects: tuple
    selection: Selection = field(default_factory=Selection)

    @classmethod
    def of(cls, objects: ObjectList, selection: Selection | None = None) -> "EditState":
        """The state of a list and a selection now."""
        return cls(objects.snapshot(), selection or Selection())

    def restore_into(self, objects: ObjectList) -> Selection:
        """Put the list back as in this state; returns the selection to show."""
        objects.restore(self.objects)
        return self.selection


def state_bytes(state: EditState, previous: EditState | None = None) -> int:
    """Bytes a state adds beside `previous`: mask records it shares (same object) are free."""
    shared = {id(o) for o in previous.objects[0]} if previous is not None else set()
    own = sum(o.nbytes for o in state.objects[0] if id(o) not in shared)
    selection = 0 if previous is not None and state.selection is previous.selection else state.selection.nbytes
    return 64 + own + selection


S = TypeVar("S")


class History(Generic[S]):
    """A bounded undo / redo stack of snapshots. size_of(state, previous_or_None) -> bytes the
    state adds beside the one before it (default: state_bytes for EditState)."""

    def __init__(self, initial: S, *, max_steps: int = MAX_STEPS, max_bytes: int = MAX_BYTES,
                 size_of: Callable[[S, S | None], int] = state_bytes):
        if max_steps < 1:
            raise ValueError("a history keeps at least one step")
        self.max_steps, self.max_bytes, self._size_of = int(max_steps), int(max_bytes), size_of
        self._states: list[S] = [initial]
        self._actions: list[str] = ["start"]
        self._sizes: list[int] = [size_of(initial, None)]
        self._at = 0

    @property
    def current(self) -> S:
        """The state shown now."""
        return self._states[self._at]

    @property
    def can_undo(self) -> bool:
        return self._at > 0

    @property
    def can_redo(self) -> bool:
        return self._at < len(self._states) - 1

    @property
    def undo_action(self) -> str | None:
        """The name of the edit undo would take back (for a button's tooltip)."""
        return self._actions[self._at] if self.can_undo else None

    @property
    def redo_action(self) -> str | None:
        """The name of the edit redo would apply again."""
        return self._actions[self._at + 1] if self.can_redo else None

    @property
    def nbytes(self) -> int:
        """Bytes the stack holds (shared mask bytes counted once), for the session budget."""
        return sum(self._sizes)

    def __len__(self) -> int:
        return len(self._states)

    def record(self, action: str, state: S) -> None:
        """After an edit: push its resulting state (dropping any redo branch), then trim."""
        if action not in ACTIONS:
            raise ValueError(f"unknown edit {action!r}; one of {', '.join(ACTIONS)}")
        del self._states[self._at + 1:], self._actions[self._at + 1:], self._sizes[self._at + 1:]
        self._sizes.append(self._size_of(state, self._states[-1]))
        self._states.append(state)
        self._actions.append(action)
        self._at = len(self._states) - 1
        self._trim()

    def undo(self) -> S | None:
        """Step back; returns the state to show, or None when there is nothing to undo."""
        if not self.can_undo:
            return None
        self._at -= 1
        return self.current

    def redo(self) -> S | None:
        """Step forward again; returns the state to show, or None when there is nothing to redo."""
        if not self.can_redo:
            return None
        self._at += 1
        return self.current

    def reset(self, state: S) -> None:
        """Forget every step (a new image): `state` is the only one."""
        self._states, self._actions, self._sizes, self._at = [state], ["start"], [self._size_of(state, None)], 0

    def _trim(self) -> None:
        """Drop the oldest steps beyond max_steps or max_bytes (never the current one)."""
        while self._at > 0 and (len(self._states) > self.max_steps or self.nbytes > self.max_bytes):
            del self._states[0], self._actions[0], self._sizes[0]
            self._at -= 1
            self._actions[0] = "start"
            self._sizes[0] = self._size_of(self._states[0], None)
