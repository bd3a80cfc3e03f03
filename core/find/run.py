"""Find and label on an image with an `Engine`: the entry points the command line and the app
share, over the engine's shared per-image analysis (no second SAM pass for an image already
analysed), and the files they write.

    from core.engine import Engine
    from core.find.run import find_in_image, label_image
    found = find_in_image(Engine(), image, "dogs")         # found.count, found.masks (K, H, W)
    result = label_image(Engine(), image, "coco-panoptic")  # semantic / instances / panoptic
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.find.instances import FindSettings, Instances, example_feature, find_all, find_like
from core.find.labels import (LabelledInstances, LabelSettings, Labelling, Panoptic, instances_of, label_candidates,
                              panoptic, semantic_map)
from core.find.vocab import Vocabulary, parse_vocabulary
from core.io.coco import coco_document
from core.io.masks import mask_to_rle
from core.io.panoptic import category_entries, ids_to_rgb, legend, panoptic_document, png_bytes, semantic_png
from core.refer.ground import Candidates, GroundingSettings
from core.refer.parse import parse
from core.sam.automask import AutoMaskSettings


def candidates_of(engine, image: np.ndarray, automask: AutoMaskSettings | None = None,
                  sam: str | None = None) -> tuple[Candidates, GroundingSettings]:
    """The image's candidates with CLIP features (the same ones Refer uses) and the settings
    they were made with."""
    settings = GroundingSettings(automask=automask or AutoMaskSettings())
    return engine.grounding_candidates(image, settings, sam), settings


def find_in_image(engine, image: np.ndarray, phrase: str, *, like_mask: np.ndarray | None = None,
                  automask: AutoMaskSettings | None = None, settings: FindSettings | None = None,
                  vocabulary: Vocabulary | None = None, sam: str | None = None) -> Instances:
    """Every instance of `phrase` in `image` (H, W, 3) uint8; with `like_mask` (H, W) bool,
    every object like that example instead (the phrase may then be empty; a direction
    word in it still orders the answer)."""
    expression = parse(phrase) if phrase and phrase.strip() else None
    if like_mask is None and expression is None:
        raise ValueError("type what to find, e.g. 'dogs'")
    if like_mask is None and not expression.noun:
        raise ValueError(f"no noun found in {phrase[:60]!r}: say what to find, e.g. 'dogs'")
    candidates, gsettings = candidates_of(engine, image, automask, sam)     # checked first: this is the cost
    if like_mask is not None:
        feature = example_feature(engine.embedder, image, like_mask, gsettings)
        return find_like(candidates, feature, settings, expression.direction if expression else None)
    return find_all(candidates, engine.embedder, expression, settings, vocabulary)


@dataclass
class LabelResult:
    """Labelling of one image and its three outputs: semantic (H, W) int32 category ids,
    instances (things), panoptic (id map + segments)."""

    labelling: Labelling
    semantic: np.ndarray
    instances: LabelledInstances
    panoptic: Panoptic


def label_image(engine, image: np.ndarray, vocabulary: str | Vocabulary | None = None, *,
                automask: AutoMaskSettings | None = None, settings: LabelSettings | None = None,
                sam: str | None = None) -> LabelResult:
    """Label every candidate of `image` with `vocabulary` ("coco-panoptic" by default, a comma
    list, a file, a sentence's nouns, or a Vocabulary) and build the three outputs."""
    vocab = vocabulary if isinstance(vocabulary, tuple) else parse_vocabulary(vocabulary)
    candidates, _ = candidates_of(engine, image, automask, sam)
    return label_result(label_candidates(candidates, engine.embedder, vocab, settings), settings)


def label_result(labelling: Labelling, settings: LabelSettings | None = None) -> LabelResult:
    """The three outputs of a labelling."""
    return LabelResult(labelling, semantic_map(labelling), instances_of(labelling), panoptic(labelling, settings))


# ----------------------------------------------------------------------------- outputs
def instances_json(found: Instances) -> dict:
    """{"phrase", "count", "instances": [{"box", "score", "label", "rle"}]} of a find."""
    return {"phrase": found.phrase, "count": found.count, "summary": found.summary(),
            "instances": [{"box": [round(float(v), 2) for v in box], "score": round(float(score), 6),
                           "label": found.label, "rle": mask_to_rle(mask)}
                          for box, score, mask in zip(found.boxes, found.scores, found.masks)]}


def instances_document(result: LabelResult, file_name: str) -> dict:
    """COCO instances of the labelled things (RLE masks, scores, category names), at the size
    of `result`'s maps (see `result_at_size` for the original photo's size)."""
    inst = result.instances
    extras = [{"score": round(float(s), 6), "category_name": n} for s, n in zip(inst.scores, inst.names)]
    return coco_document(file_name, result.semantic.shape[:2], list(inst.masks), extras,
                         note="instances labelled with CLIP (zero-shot) on SAM's automatic masks",
                         categories=category_entries(result.labelling.vocabulary),
                         category_ids=[int(c) for c in inst.category_ids])


def _nearest(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An (h, w) bool or int32 map resampled to `size` (H, W), nearest neighbour (PIL's
    sampling, the same as the app's mask downloads)."""
    from PIL import Image

    if values.dtype == bool:
        pil = Image.fromarray(values.astype(np.uint8) * 255, mode="L")
        return np.asarray(pil.resize((size[1], size[0]), Image.Resampling.NEAREST)) >= 128
    pil = Image.fromarray(np.ascontiguousarray(values, dtype=np.int32), mode="I")
    return np.asarray(pil.resize((size[1], size[0]), Image.Resampling.NEAREST), dtype=np.int32)


def _measured(segment, id_map: np.ndarray):
    """`segment` with its area and COCO bbox [x, y, w, h] measured again on `id_map`."""
    ys, xs = np.nonzero(id_map == segment.id)
    if not len(xs):
        return replace(segment, area=0, bbox=(0.0, 0.0, 0.0, 0.0))
    bbox = (float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min()))
    return replace(segment, area=int(len(xs)), bbox=bbox)


def result_at_size(result: LabelResult, size: tuple[int, int]) -> LabelResult:
    """The same labelling with its three outputs at `size` (H, W), e.g. the original photo's
    when the app worked on a downscaled copy: the semantic and panoptic maps and the
    instance masks resampled nearest-neighbour, areas and boxes measured again. The
    candidates (`labelling`) stay at the working size."""
    size = (int(size[0]), int(size[1]))
    if tuple(result.semantic.shape[:2]) == size:
        return result
    id_map = _nearest(result.panoptic.id_map, size)
    inst = result.instances
    masks = np.stack([_nearest(m, size) for m in inst.masks]) if len(inst.masks) else \
        np.zeros((0, *size), bool)
    sy, sx = size[0] / result.semantic.shape[0], size[1] / result.semantic.shape[1]
    boxes = np.asarray(inst.boxes, np.float32).reshape(-1, 4) * np.asarray([sx, sy, sx, sy], np.float32)
    return LabelResult(result.labelling, _nearest(result.semantic, size),
                       replace(inst, masks=masks, boxes=boxes),
                       Panoptic(id_map, [_measured(s, id_map) for s in result.panoptic.segments]))


def write_label_outputs(out_dir: str | Path, result: LabelResult, file_name: str,
                        untrained: bool = False, size: tuple[int, int] | None = None) -> dict[str, Path]:
    """Write panoptic.png + panoptic.json (COCO panoptic), semantic.png + semantic.json (legend)
    and instances.json (COCO) into `out_dir`; returns their paths by kind. `size` (H, W): write
    them at that size (the original photo's), else at the labelling's own."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if size is not None:
        result = result_at_size(result, size)
    vocab, size = result.labelling.vocabulary, result.semantic.shape[:2]
    pan = panoptic_document(file_name, size, "panoptic.png", result.panoptic.segments, vocab)
    sem = {"image": file_name, "unlabelled": 0, "legend": legend(vocab, result.semantic)}
    inst = instances_document(result, file_name)
    for doc in (pan, sem, inst):
        doc["untrained"] = bool(untrained)
    files = {"panoptic_png": out / "panoptic.png", "panoptic_json": out / "panoptic.json",
             "semantic_png": out / "semantic.png", "semantic_json": out / "semantic.json",
             "instances_json": out / "instances.json"}
    files["panoptic_png"].write_bytes(png_bytes(ids_to_rgb(result.panoptic.id_map)))
    files["semantic_png"].write_bytes(semantic_png(result.semantic))
    for key, doc in (("panoptic_json", pan), ("semantic_json", sem), ("instances_json", inst)):
        files[key].write_text(json.dumps(doc))
    return files
