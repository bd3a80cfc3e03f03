"""Shared fixtures: the real COCO128 data beside the repo, and small untrained models."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COCO128 = REPO.parent / "shared" / "data" / "coco128"


@pytest.fixture(scope="session")
def coco_dir() -> Path:
    """Folder of ../shared/data/coco128 (images/ + instances.json); skips when absent."""
    if not (COCO128 / "instances.json").is_file():
        pytest.skip(f"real data not found at {COCO128} (../shared/data/coco128 beside the repo)")
    return COCO128


@pytest.fixture(scope="session")
def coco_json(coco_dir) -> dict:
    """The parsed instances.json of COCO128."""
    return json.loads((coco_dir / "instances.json").read_text())


@pytest.fixture(scope="session")
def tiny_segmenter():
    """A Segmenter over the small untrained SAM ("vit_tiny", fast path on)."""
    from core.models import load_sam
    from core.sam.segmenter import Segmenter

    return Segmenter(load_sam("vit_tiny", untrained=True, device="cpu"))


@pytest.fixture(scope="session")
def embedder():
    """An Embedder over untrained open_clip ViT-B-32 (same architecture as the default)."""
    from core.embed import Embedder
    from core.models import load_clip

    return Embedder(load_clip("ViT-B-32", untrained=True, device="cpu"))


@pytest.fixture(scope="session")
def coco_image(coco_dir, coco_json):
    """(image (H, W, 3) uint8, image_info, its non-crowd annotations) of a COCO128 image with many objects."""
    from core.io.images import load_image

    anns_by_image: dict = {}
    for ann in coco_json["annotations"]:
        if not ann.get("iscrowd"):
            anns_by_image.setdefault(ann["image_id"], []).append(ann)
    info = next(im for im in sorted(coco_json["images"], key=lambda im: im["id"])
                if len(anns_by_image.get(im["id"], [])) >= 3)
    return load_image(coco_dir / "images" / info["file_name"]), info, anns_by_image[info["id"]]
