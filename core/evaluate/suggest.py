"""Evaluate class suggestions by replaying labelling on COCO with ground-truth masks.

    python -m core evaluate suggest --coco instances.json [--images DIR] [--rows oracle,clip]

The non-crowd objects (area >= --min-area) of the first --limit images are labelled one after
another in a fixed order (image id, then annotation id). For each object the suggester
proposes classes from the COCO file's category list; the object is then named with its true
class, so the person's index grows as in a session. Each suggestion is scored top-1 / top-3
against the number of examples of the object's true class named before it (bins 0, 1, 2, 3-4,
5-9, 10-19, 20+), for three sources: k-NN alone ("knn"), CLIP's text alone ("text") and the
merge rule of core.annotate.suggest ("merged").

Rows (features):
- ``oracle``: a one-hot feature of the true class and one-hot text features: every source that
  can know the class gives 1.0 (k-NN cannot name a class with 0 examples: there it hits only
  through the tie order of the class list); checks the replay, the index and the merge.
- ``clip``: CLIP features of the object's view (--view, default mask_crop) and CLIP's text
  features of the class prompts. With --untrained the numbers are chance-like by design.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from core.annotate.suggest import DEFAULT_VIEW, SOURCES, Suggester, class_text_features, unit
from core.io.coco import CocoData, read_coco
from core.io.images import load_image
from core.io.masks import coco_ann_to_mask
from core.views import render_view

ROWS = ("oracle", "clip")
BINS = ((0, 0), (1, 1), (2, 2), (3, 4), (5, 9), (10, 19), (20, None))


@dataclass(frozen=True)
class SuggestEvalSettings:
    """rows: of ROWS; limit: first N images (None: all); min_area: smallest object in pixels;
    view: the object view CLIP embeds; k / n0 / temperature: the Suggester's settings."""

    rows: tuple[str, ...] = ROWS
    limit: int | None = None
    min_area: int = 64
    view: str = DEFAULT_VIEW
    k: int = 10
    n0: float = 2.0
    temperature: float = 100.0


@dataclass
class Tally:
    """Hits per (source, bin): top-1 and top-3 counts and the number of objects."""

    top1: dict = field(default_factory=dict)
    top3: dict = field(default_factory=dict)
    n: dict = field(default_factory=dict)

    def add(self, source: str, bin_name: str, ranked: list[str], truth: str) -> None:
        key = (source, bin_name)
        self.n[key] = self.n.get(key, 0) + 1
        self.top1[key] = self.top1.get(key, 0) + int(ranked[:1] == [truth])
        self.top3[key] = self.top3.get(key, 0) + int(truth in ranked[:3])


def bin_of(seen: int) -> str:
    """The bin name ("0", "1", "3-4", "20+") of a count of examples seen."""
    for lo, hi in BINS:
        if seen >= lo and (hi is None or seen <= hi):
            return str(lo) if hi == lo else (f"{lo}+" if hi is None else f"{lo}-{hi}")
    raise ValueError(seen)


def replay_objects(data: CocoData, limit: int | None, min_area: int) -> Iterator[tuple[dict, list[dict]]]:
    """(image entry, its kept annotations sorted by id) in image-id order."""
    for image_id in sorted(data.images)[:limit]:
        anns = sorted((a for a in data.annotations(image_id)
                       if not a.get("iscrowd") and float(a.get("area", 0)) >= min_area), key=lambda a: a["id"])
        if anns:
            yield data.images[image_id], anns


def oracle_features(classes: list[str]) -> tuple[Callable, np.ndarray]:
    """(features_of(image entry, anns) -> (N, V) one-hot rows of the true classes, (V, V) text)."""
    index = {c: i for i, c in enumerate(classes)}
    eye = np.eye(len(classes), dtype=np.float32)

    def features_of(data: CocoData, entry: dict, anns: list[dict]) -> np.ndarray:
        return eye[[index[data.category_of(a)] for a in anns]]

    return features_of, eye


def clip_features(embedder, classes: list[str], images_dir: Path, view: str) -> tuple[Callable, np.ndarray]:
    """(features_of -> (N, D) unit CLIP features of the objects' views, (V, D) text features)."""

    def features_of(data: CocoData, entry: dict, anns: list[dict]) -> np.ndarray:
        image = load_image(images_dir / entry["file_name"])
        h, w = image.shape[:2]
        views = [render_view(view, image, coco_ann_to_mask(a, h, w)) for a in anns]
        return unit(embedder.embed_images(views))

    return features_of, class_text_features(embedder, classes)


def replay(data: CocoData, classes: list[str], features_of: Callable, text: np.ndarray,
           settings: SuggestEvalSettings) -> Tally:
    """Label every object in order: score the three sources' suggestions, then name it."""
    suggester = Suggester(text.shape[1], k=settings.k, n0=settings.n0, temperature=settings.temperature)
    tally = Tally()
    for entry, anns in replay_objects(data, settings.limit, settings.min_area):
        for ann, feature in zip(anns, features_of(data, entry, anns)):
            truth = data.category_of(ann)
            seen = suggester.index.counts().get(truth, 0)
            for source in SOURCES:
                ranked = [s.category for s in suggester.suggest(feature, classes, text, 3, source)]
                tally.add(source, bin_of(seen), ranked, truth)
            suggester.name((entry["id"], ann["id"]), feature, truth)
    return tally


def table(row: str, tally: Tally) -> list[dict]:
    """One dict per (source, bin) with objects, top1, top3 (fractions), plus an 'all' bin."""
    out = []
    bins = [bin_of(lo) for lo, _ in BINS]
    for source in SOURCES:
        for b in [*bins, "all"]:
            keys = [(source, x) for x in bins] if b == "all" else [(source, b)]
            n = sum(tally.n.get(k, 0) for k in keys)
            if n:
                out.append({"row": row, "source": source, "examples_seen": b, "objects": n,
                            "top1": round(sum(tally.top1.get(k, 0) for k in keys) / n, 4),
                            "top3": round(sum(tally.top3.get(k, 0) for k in keys) / n, 4)})
    return out


def evaluate_suggestions(coco: str | Path, images_dir: str | Path | None, embedder,
                         settings: SuggestEvalSettings | None = None) -> dict:
    """The report: settings, classes, chance levels and the table rows (see the module doc).
    embedder: a core.embed.Embedder, needed for the "clip" row only."""
    settings = settings or SuggestEvalSettings()
    unknown = set(settings.rows) - set(ROWS)
    if unknown or not settings.rows:
        raise ValueError(f"unknown row(s) {', '.join(sorted(unknown)) or '(none)'}; choose among {', '.join(ROWS)}")
    data = read_coco(coco)
    classes = list(dict.fromkeys(data.categories[i] for i in sorted(data.categories)))
    images_dir = Path(images_dir) if images_dir else Path(coco).parent / "images"
    rows = []
    for row in settings.rows:
        if row == "oracle":
            features_of, text = oracle_features(classes)
        else:
            if embedder is None:
                raise ValueError("the clip row needs CLIP (an embedder)")
            features_of, text = clip_features(embedder, classes, images_dir, settings.view)
        rows += table(row, replay(data, classes, features_of, text, settings))
    return {"classes": len(classes), "chance_top1": round(1 / len(classes), 4),
            "chance_top3": round(min(1.0, 3 / len(classes)), 4), "settings": settings.__dict__ | {"rows": list(settings.rows)},
            "rows": rows}


def format_table(report: dict) -> str:
    """A Markdown table of the report's rows."""
    lines = ["| row | source | examples seen | objects | top-1 | top-3 |", "|---|---|---|---:|---:|---:|"]
    lines += [f"| {r['row']} | {r['source']} | {r['examples_seen']} | {r['objects']} | {r['top1']:.3f} | {r['top3']:.3f} |"
              for r in report["rows"]]
    return "\n".join(lines)
