"""Building object galleries from a folder of images or from a COCO annotation file.

From a folder: SAM's automatic masks are the objects. From COCO: each annotation box is
a SAM box prompt (as in the retrieval paper), or with `oracle_masks=True` the
ground-truth mask itself. Progress is reported through `progress(done, total, note)`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.sam.automask import AutoMaskSettings
from core.io.coco import CocoData, read_coco
from core.gallery.gallery import Gallery, ObjectRecord
from core.io.images import ImageError, load_image
from core.io.masks import coco_ann_to_mask, coco_box_to_xyxy, mask_to_rle
from core.views import mask_to_box, render_view

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
Progress = Callable[[int, int, str], None]


@dataclass
class FoundObject:
    """An object in one image: (H, W) bool mask, XYXY box, optional label/id and SAM score."""

    mask: np.ndarray
    box: np.ndarray
    category: str | None = None
    object_id: str | None = None
    score: float | None = None


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def objects_from_automasks(segmenter, image: np.ndarray, *, max_objects: int = 20,
                           automask: AutoMaskSettings | None = None) -> list[FoundObject]:
    """SAM's automatic masks of `image`, best score first, at most `max_objects`."""
    emb = segmenter.set_image(image)
    auto = segmenter.everything(emb, automask)
    order = np.argsort(-np.asarray(auto.scores), kind="stable")[:max_objects]
    return [FoundObject(auto.masks[i], np.asarray(auto.boxes[i], np.float32), score=float(auto.scores[i]))
            for i in order if auto.masks[i].any()]


def objects_from_boxes(segmenter, image: np.ndarray, boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """SAM's best single mask for each XYXY box prompt: list of (H, W) bool."""
    emb = segmenter.set_image(image)
    return [segmenter.predict(emb, box=box, multimask=False).masks[0] for box in boxes]


def coco_objects(coco: CocoData, image_info: dict, *, segmenter=None, image=None,
                 oracle_masks: bool = False, categories: set[str] | None = None) -> list[FoundObject]:
    """Objects of one COCO image: SAM masks from the annotation boxes, or ground truth.

    Crowd annotations and those outside `categories` (names) are left out.
    """
    anns = [a for a in coco.annotations(image_info["id"])
            if not a.get("iscrowd") and (categories is None or coco.category_of(a) in categories)]
    height, width = image_info["height"], image_info["width"]
    boxes = [coco_box_to_xyxy(a["bbox"]) for a in anns]
    if oracle_masks:
        masks = [coco_ann_to_mask(a, height, width) for a in anns]
    elif anns:
        masks = objects_from_boxes(segmenter, image, boxes)
    else:
        masks = []
    found = []
    for ann, box, mask in zip(anns, boxes, masks):
        if mask.any():
            found.append(FoundObject(mask, mask_to_box(mask), coco.category_of(ann), str(ann["id"])))
    return found


def records_for(objects: Sequence[FoundObject], source: str, image_hw, view: str) -> list[ObjectRecord]:
    """Gallery records (with RLE masks) for objects found in one image of (height, width) `image_hw`."""
    return [ObjectRecord(source=source, box=tuple(float(v) for v in o.box), view=view,
                         mask_rle=mask_to_rle(o.mask), category=o.category,
                         image_hw=tuple(int(v) for v in image_hw), object_id=o.object_id,
                         extra={} if o.score is None else {"sam_score": o.score})
            for o in objects]


def add_objects(gallery: Gallery, embedder, image: np.ndarray, source: str,
                objects: Sequence[FoundObject]) -> list[int]:
    """Render each object in the gallery's view, embed, add; returns the new ids."""
    if not objects:
        return []
    crops = [render_view(gallery.view, image, o.mask) for o in objects]
    return gallery.add(embedder.embed_images(crops), records_for(objects, source, image.shape[:2], gallery.view))


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def build_galleries_from_images(folder, segmenter, embedder, views: Sequence[str], *,
                                metric: str = "cosine", max_objects: int = 20,
                                progress: Progress | None = None,
                                warn: Callable[[str], None] = _stderr_warning,
                                automask: AutoMaskSettings | None = None) -> dict[str, Gallery]:
    """One gallery per view of the automatic-mask objects of every image in `folder`.

    Each image is segmented once and its objects are embedded in every view. Unreadable
    images are skipped with a warning; `automask` sets SAM's automatic masks. `progress`
    hears (i, n, "segmenting NAME") before image i and (i + 1, n, "NAME: K objects") after it.
    """
    if not views:
        raise ValueError("give at least one view")
    paths = list_images(folder)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    galleries = {view: Gallery(embedder.dim, view, metric, embedder.model_info) for view in views}
    for done, path in enumerate(paths):
        if progress:
            progress(done, len(paths), f"segmenting {path.name}")
        try:
            image = load_image(path)
        except ImageError as exc:
            warn(f"skipped {path.name}: {exc}")
            continue
        objects = objects_from_automasks(segmenter, image, max_objects=max_objects, automask=automask)
        for gallery in galleries.values():
            add_objects(gallery, embedder, image, str(path), objects)
        if progress:
            progress(done + 1, len(paths), f"{path.name}: {len(objects)} objects")
    return galleries


def build_gallery_from_images(folder, segmenter, embedder, *, view: str = "crop", metric: str = "cosine",
                              max_objects: int = 20, progress: Progress | None = None,
                              warn: Callable[[str], None] = _stderr_warning,
                              automask: AutoMaskSettings | None = None) -> Gallery:
    """A gallery of the automatic-mask objects of every image in `folder`, in one `view`."""
    return build_galleries_from_images(folder, segmenter, embedder, [view], metric=metric,
                                       max_objects=max_objects, progress=progress, warn=warn,
                                       automask=automask)[view]


def select_coco_images(coco: CocoData, *, limit: int | None = None,
                       categories: Sequence[str] | None = None) -> list[dict]:
    """COCO image entries with at least one (non-crowd) annotation in `categories`."""
    if categories:
        unknown = set(categories) - set(coco.categories.values())
        if unknown:
            raise ValueError(f"unknown categories {sorted(unknown)}")
    wanted = set(categories) if categories else None
    with_objects = {image_id for image_id, anns in coco.by_image.items()
                    if any(not a.get("iscrowd") and (wanted is None or coco.category_of(a) in wanted) for a in anns)}
    images = [coco.images[i] for i in sorted(coco.images) if i in with_objects]
    return images[:limit] if limit else images


def build_gallery_from_coco(ann_path, images_dir, segmenter, embedder, *, view: str = "crop",
                            metric: str = "cosine", limit: int | None = None,
                            categories: Sequence[str] | None = None, oracle_masks: bool = False,
                            progress: Progress | None = None,
                            warn: Callable[[str], None] = _stderr_warning) -> Gallery:
    """A gallery of the annotated objects of a COCO file (SAM box prompts or ground truth)."""
    coco = read_coco(ann_path)
    images = select_coco_images(coco, limit=limit, categories=categories)
    gallery = Gallery(embedder.dim, view, metric, {**embedder.model_info,
                                                   "masks": "ground truth" if oracle_masks else "sam"})
    wanted = set(categories) if categories else None
    for done, info in enumerate(images):
        path = Path(images_dir) / info["file_name"]
        try:
            image = load_image(path)
        except ImageError as exc:
            warn(f"skipped {path.name}: {exc}")
            continue
        objects = coco_objects(coco, info, segmenter=segmenter, image=image,
                               oracle_masks=oracle_masks, categories=wanted)
        add_objects(gallery, embedder, image, str(path), objects)
        if progress:
            progress(done + 1, len(images), f"{path.name}: {len(objects)} objects")
    return gallery
