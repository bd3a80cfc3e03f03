"""Plain records of labelled objects and images: what the object list of an image holds, what
the dataset formats (core/io/formats) write and read back.

Masks are (H, W) bool at the image's original size; categories are names (the ordered
category list given to a writer fixes their ids in each format).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ORIGINS = ("user", "proposal")


@dataclass
class LabelledObject:
    """One object: mask (H, W) bool; category: its class name; score: the class probability
    when a model proposed it (None for a person's object); origin: "user" or "proposal";
    reviewed: False for a proposal nobody has accepted yet; hidden: hidden in the viewer (still
    exported); margin: the top-1 minus top-2 class probability when a model chose among
    classes (None otherwise; the review queue reads it)."""

    mask: np.ndarray
    category: str
    score: float | None = None
    origin: str = "user"
    reviewed: bool = True
    hidden: bool = False
    margin: float | None = None

    def __post_init__(self) -> None:
        self.mask = np.asarray(self.mask, dtype=bool)
        if self.mask.ndim != 2:
            raise ValueError(f"an object's mask must be (H, W), not {self.mask.shape}")
        if not str(self.category).strip():
            raise ValueError("an object needs a class name")
        if self.origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, not {self.origin!r}")


@dataclass
class LabelledImage:
    """One image of a set: file_name (relative path, '/' separated), height, width and its objects."""

    file_name: str
    height: int
    width: int
    objects: list[LabelledObject] = field(default_factory=list)

    def __post_init__(self) -> None:
        for obj in self.objects:
            if obj.mask.shape != (self.height, self.width):
                raise ValueError(f"{self.file_name}: a mask of {obj.mask.shape} on a "
                                 f"{self.height}x{self.width} image")


@dataclass(frozen=True)
class ExportMeta:
    """What an export says about how it was made: description, models (e.g. an Engine's
    describe()), untrained: True when the models had random weights (the files say so)."""

    description: str = "objects selected with SAM + CLIP"
    models: str = ""
    untrained: bool = False

    def as_dict(self) -> dict:
        return {"description": self.description, "models": self.models, "untrained": bool(self.untrained)}


def category_list(images: list[LabelledImage], categories: list[str] | None = None) -> list[str]:
    """The ordered category names: `categories` first (as given), then any other name the
    objects use, in first-seen order. ValueError on a duplicate or empty name."""
    names = [str(c) for c in (categories or [])]
    if len(set(names)) != len(names):
        raise ValueError("the category list has duplicate names")
    if any(not n.strip() for n in names):
        raise ValueError("the category list has an empty name")
    seen = set(names)
    for image in images:
        for obj in image.objects:
            if obj.category not in seen:
                seen.add(obj.category)
                names.append(obj.category)
    return names


def select(images: list[LabelledImage], reviewed_only: bool = False) -> list[LabelledImage]:
    """The images with the objects to export: all of them, or only the reviewed ones (a
    person's objects are reviewed; proposals once accepted). Empty masks are dropped."""
    return [LabelledImage(im.file_name, im.height, im.width,
                          [o for o in im.objects if o.mask.any() and (o.reviewed or not reviewed_only)])
            for im in images]


def flat_stem(file_name: str) -> str:
    """A flat file stem for a relative image path ('a/b/c.jpg' -> 'a__b__c'), for layouts
    with one folder (VOC, LabelMe)."""
    parts = file_name.replace("\\", "/").split("/")
    stem = parts[-1].rsplit(".", 1)[0] if "." in parts[-1] else parts[-1]
    return "__".join([*parts[:-1], stem])


def unique_stems(images: list[LabelledImage]) -> list[str]:
    """flat_stem of every image; ValueError naming two images that would share one file."""
    stems, owner = [], {}
    for im in images:
        stem = flat_stem(im.file_name)
        if stem in owner:
            raise ValueError(f"{owner[stem]} and {im.file_name} would share the label file {stem}")
        owner[stem] = im.file_name
        stems.append(stem)
    return stems
