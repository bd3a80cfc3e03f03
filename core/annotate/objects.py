"""An image's object list: the objects a person keeps, each a compact mask with a class name.

Masks are stored as COCO compressed RLE (pycocotools bytes), so an object costs a few hundred
bytes instead of H*W; area, box and union (merge) are computed on the RLE without decoding.
Objects are immutable records (`StoredObject`): every edit replaces records, so a snapshot of
the list (`ObjectList.snapshot()`) is a cheap tuple that shares the mask bytes with the list,
which is what core.annotate.history keeps for undo / redo.

    objects = ObjectList(height=480, width=640, file_name="a.jpg")
    i = objects.add(mask, "dog")          # mask (480, 640) bool -> id
    objects.rename(i, "puppy"); objects.set_hidden([i], True)
    j = objects.merge([i, k])             # one object, the first one's class
    image = objects.to_labelled()         # core.io.labels.LabelledImage (masks decoded)
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, replace
from typing import Iterable

import numpy as np
from pycocotools import mask as mask_utils

from core.io.labels import ORIGINS, LabelledImage, LabelledObject

RECORD_BYTES = 200  # what a StoredObject costs beside its RLE bytes (Python object overhead, counted)


@dataclass(frozen=True)
class StoredObject:
    """One kept object. id: stable within its list; category: class name (never empty);
    rle: COCO compressed RLE {"size": [H, W], "counts": bytes}; area: pixels; box: XYXY ints
    (exclusive right / bottom); colour: (r, g, b) uint8 ints, fixed by id; hidden: not drawn
    (still exported); score / origin / reviewed / margin as in core.io.labels.LabelledObject."""

    id: int
    category: str
    rle: dict
    area: int
    box: tuple[int, int, int, int]
    colour: tuple[int, int, int]
    hidden: bool = False
    score: float | None = None
    origin: str = "user"
    reviewed: bool = True
    margin: float | None = None

    @property
    def nbytes(self) -> int:
        """Bytes this record holds (the RLE counts plus a fixed overhead)."""
        return len(self.rle["counts"]) + RECORD_BYTES

    def mask(self) -> np.ndarray:
        """The decoded mask, (H, W) bool."""
        return mask_utils.decode(self.rle).astype(bool)


def colour_of(object_id: int) -> tuple[int, int, int]:
    """A distinct, stable (r, g, b) colour for an object id (golden-ratio hue steps)."""
    hue = (object_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def clean_category(category) -> str:
    """The class name stripped; ValueError with a clear message when it is empty."""
    name = "" if category is None else str(category).strip()
    if not name:
        raise ValueError("a class name cannot be empty: type one or pick a class")
    return name


def encode(mask: np.ndarray) -> dict:
    """COCO compressed RLE (bytes counts) of an (H, W) mask."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be (H, W), not {mask.shape}")
    return mask_utils.encode(np.asfortranarray(mask.astype(bool, copy=False).astype(np.uint8)))


def _box(rle: dict) -> tuple[int, int, int, int]:
    """XYXY int box (exclusive right / bottom) of an RLE; (0, 0, 0, 0) when empty."""
    x, y, w, h = (int(round(v)) for v in mask_utils.toBbox(rle))
    return (x, y, x + w, y + h)


class ObjectList:
    """The objects of one image of height x width pixels, in the order they were kept (later
    objects are painted over earlier ones in pixel-map exports)."""

    def __init__(self, height: int, width: int, file_name: str = "image"):
        if int(height) <= 0 or int(width) <= 0:
            raise ValueError(f"an image needs a positive size, not {height}x{width}")
        self.height, self.width, self.file_name = int(height), int(width), str(file_name)
        self._objects: dict[int, StoredObject] = {}
        self._next_id = 1

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self):
        return iter(list(self._objects.values()))

    def __contains__(self, object_id) -> bool:
        return object_id in self._objects

    def ids(self) -> list[int]:
        """Ids in kept order."""
        return list(self._objects)

    def get(self, object_id: int) -> StoredObject:
        """The record of an id; KeyError with a clear message when it is not in the list."""
        try:
            return self._objects[int(object_id)]
        except (KeyError, TypeError, ValueError):
            raise KeyError(f"no object {object_id!r} in this image") from None

    def mask(self, object_id: int) -> np.ndarray:
        """The decoded (H, W) bool mask of one object."""
        return self.get(object_id).mask()

    def area(self, object_id: int) -> int:
        """Pixels of one object."""
        return self.get(object_id).area

    def categories(self) -> list[str]:
        """Class names in first-use order."""
        return list(dict.fromkeys(o.category for o in self._objects.values()))

    @property
    def nbytes(self) -> int:
        """Bytes the list holds (RLE counts + per-object overhead), for the session budget."""
        return sum(o.nbytes for o in self._objects.values())

    # -- edits -----------------------------------------------------------------------------
    def add(self, mask: np.ndarray, category: str, *, score: float | None = None, origin: str = "user",
            reviewed: bool = True, margin: float | None = None, hidden: bool = False) -> int:
        """Keep `mask` ((H, W) bool at this image's size, not empty) as a new object of
        `category`; returns its id. ValueError on a wrong size, an empty mask or class name."""
        name = clean_category(category)
        mask = np.asarray(mask)
        if mask.shape != (self.height, self.width):
            raise ValueError(f"a {mask.shape} mask does not fit this {self.height}x{self.width} image")
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, not {origin!r}")
        return self._insert(encode(mask), name, hidden=hidden, score=score, origin=origin,
                            reviewed=reviewed, margin=margin)

    def _insert(self, rle: dict, category: str, **fields) -> int:
        area = int(mask_utils.area(rle))
        if area == 0:
            raise ValueError("the mask is empty: select or paint something first")
        object_id = self._next_id
        self._next_id += 1
        self._objects[object_id] = StoredObject(object_id, category, rle, area, _box(rle),
                                                colour_of(object_id), **fields)
        return object_id

    def delete(self, object_ids: int | Iterable[int]) -> None:
        """Remove one or several objects (KeyError if any is missing; then nothing changes)."""
        ids = self._existing(object_ids)
        for i in ids:
            del self._objects[i]

    def rename(self, object_id: int, category: str) -> None:
        """Give one object a new class name (empty names are refused)."""
        self.relabel([object_id], category)

    def relabel(self, object_ids: Iterable[int], category: str) -> None:
        """Give several objects the same class name at once (empty names are refused)."""
        name = clean_category(category)
        for i in self._existing(object_ids):
            self._objects[i] = replace(self._objects[i], category=name, reviewed=True)

    def set_hidden(self, object_ids: int | Iterable[int], hidden: bool = True) -> None:
        """Hide (or show) objects in the viewer; hidden objects are still exported."""
        for i in self._existing(object_ids):
            self._objects[i] = replace(self._objects[i], hidden=bool(hidden))

    def replace_mask(self, object_id: int, mask: np.ndarray) -> None:
        """Swap one object's mask (e.g. after brushing it); same id, class and colour."""
        old = self.get(object_id)
        mask = np.asarray(mask)
        if mask.shape != (self.height, self.width):
            raise ValueError(f"a {mask.shape} mask does not fit this {self.height}x{self.width} image")
        rle = encode(mask)
        area = int(mask_utils.area(rle))
        if area == 0:
            raise ValueError("the edited mask is empty: delete the object instead")
        self._objects[old.id] = replace(old, rle=rle, area=area, box=_box(rle))

    def merge(self, object_ids: Iterable[int], category: str | None = None) -> int:
        """Union of two or more objects as one new object (the first id's class unless
        `category` is given) placed where the first one was; the others are removed. Returns
        the merged object's id (the first one's id is kept)."""
        ids = self._existing(object_ids)
        if len(ids) < 2:
            raise ValueError("pick at least two objects to merge")
        first = self._objects[ids[0]]
        name = clean_category(category) if category is not None else first.category
        rle = mask_utils.merge([self._objects[i].rle for i in ids], intersect=False)
        merged = replace(first, category=name, rle=rle, area=int(mask_utils.area(rle)), box=_box(rle),
                         hidden=False)
        for i in ids[1:]:
            del self._objects[i]
        self._objects[first.id] = merged
        return first.id

    def _existing(self, object_ids) -> list[int]:
        ids = [object_ids] if isinstance(object_ids, (int, np.integer)) else list(object_ids)
        ids = list(dict.fromkeys(int(i) for i in ids))
        missing = [i for i in ids if i not in self._objects]
        if missing:
            raise KeyError(f"no object {', '.join(map(str, missing))} in this image")
        return ids

    # -- snapshots (history) ---------------------------------------------------------------
    def snapshot(self) -> tuple:
        """An immutable copy of the list ((records...), next id); shares mask bytes."""
        return (tuple(self._objects.values()), self._next_id)

    def restore(self, snapshot: tuple) -> None:
        """Put the list back as it was when `snapshot` was taken."""
        records, next_id = snapshot
        self._objects = {o.id: o for o in records}
        self._next_id = int(next_id)

    # -- records ---------------------------------------------------------------------------
    def to_labelled(self) -> LabelledImage:
        """The list as a core.io.labels.LabelledImage (masks decoded, kept order)."""
        objects = [LabelledObject(o.mask(), o.category, score=o.score, origin=o.origin, reviewed=o.reviewed,
                                  hidden=o.hidden, margin=o.margin) for o in self._objects.values()]
        return LabelledImage(self.file_name, self.height, self.width, objects)

    @classmethod
    def from_labelled(cls, image: LabelledImage) -> "ObjectList":
        """A list holding `image`'s non-empty objects, in order (ids 1..n)."""
        objects = cls(image.height, image.width, image.file_name)
        for o in image.objects:
            if o.mask.any():
                objects.add(o.mask, o.category, score=o.score, origin=o.origin, reviewed=o.reviewed,
                            margin=o.margin, hidden=o.hidden)
        return objects

    def summary(self) -> list[dict]:
        """One row per object for a UI table: id, category, area, colour '#rrggbb', hidden, box."""
        return [{"id": o.id, "category": o.category, "area": o.area, "colour": "#%02x%02x%02x" % o.colour,
                 "hidden": o.hidden, "box": list(o.box)} for o in self._objects.values()]
