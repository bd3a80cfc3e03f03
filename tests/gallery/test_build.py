"""core.gallery.build: galleries from COCO annotations and from a folder; the pasted-object property."""
import json
import shutil

import numpy as np
import pytest

from core.gallery.build import build_gallery_from_coco, build_gallery_from_images, coco_objects, select_coco_images
from core.sam.automask import AutoMaskSettings
from core.io.coco import index_coco
from core.gallery.gallery import Gallery, ObjectRecord
from core.io.masks import coco_ann_to_mask, rle_to_mask
from core.views import VIEW_NAMES, expand_box, mask_to_box, render_view


def test_coco_gallery_with_sam_box_prompts(coco_dir, tiny_segmenter, embedder):
    gallery = build_gallery_from_coco(coco_dir / "instances.json", coco_dir / "images", tiny_segmenter,
                                      embedder, view="crop", limit=2)
    data = json.loads((coco_dir / "instances.json").read_text())
    chosen = select_coco_images(index_coco(data), limit=2)
    expected = sum(1 for a in data["annotations"] if a["image_id"] in {im["id"] for im in chosen}
                   and not a.get("iscrowd"))
    assert 0 < len(gallery) <= expected
    rec = gallery.records[0]
    assert rec.category and rec.view == "crop" and rec.image_hw
    assert rle_to_mask(rec.mask_rle).shape == tuple(rec.image_hw)
    assert gallery.model_info["masks"] == "sam" and gallery.model_info["untrained"] is True


def test_oracle_masks_are_the_ground_truth(coco_json, coco_image):
    image, info, anns = coco_image
    objects = coco_objects(index_coco(coco_json), info, oracle_masks=True)
    assert len(objects) == len(anns)
    ann = next(a for a in anns if str(a["id"]) == objects[0].object_id)
    assert (objects[0].mask == coco_ann_to_mask(ann, info["height"], info["width"])).all()
    dogs = coco_objects(index_coco(coco_json), info, oracle_masks=True, categories={"no-such"})
    assert dogs == []


def test_folder_gallery_skips_bad_files(tmp_path, coco_dir, tiny_segmenter, embedder):
    for path in sorted((coco_dir / "images").glob("*.jpg"))[:2]:
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    warnings = []
    gallery = build_gallery_from_images(tmp_path, tiny_segmenter, embedder, view="mask_crop", max_objects=3,
                                        warn=warnings.append,
                                        automask=AutoMaskSettings(points_per_side=4, pred_iou_thresh=0.0,
                                                                  stability_score_thresh=0.0))
    assert any("broken.png" in w for w in warnings)
    assert 0 < len(gallery) <= 6 and {r.view for r in gallery.records} == {"mask_crop"}
    with pytest.raises(FileNotFoundError):
        build_gallery_from_images(tmp_path / "empty", tiny_segmenter, embedder)


def _paste(background: np.ndarray, patch: np.ndarray, patch_mask: np.ndarray, at: tuple[int, int]):
    """Copy patch into background at (x, y); return the new image and the object's full-size mask."""
    out, mask = background.copy(), np.zeros(background.shape[:2], bool)
    x, y = at
    h, w = patch.shape[:2]
    out[y:y + h, x:x + w] = patch
    mask[y:y + h, x:x + w] = patch_mask
    return out, mask


@pytest.mark.slow
def test_pasted_object_finds_itself_under_every_view(coco_dir, coco_json, embedder):
    """An object cut from one photo and pasted into two others is its own nearest neighbour."""
    from core.io.images import load_image

    by_file = {im["file_name"]: im for im in coco_json["images"]}
    files = sorted(f for f, im in by_file.items() if (im["height"], im["width"]) == (480, 640))[:6]
    source_im = by_file[files[0]]
    image = load_image(coco_dir / "images" / files[0])
    ann = max((a for a in coco_json["annotations"] if a["image_id"] == source_im["id"] and not a["iscrowd"]),
              key=lambda a: a["area"])
    mask = coco_ann_to_mask(ann, 480, 640)
    region = expand_box(mask_to_box(mask), 0.25, (480, 640)).astype(int)
    x0, y0, x1, y1 = region
    patch, patch_mask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    at = (min(40, 640 - patch.shape[1]), min(30, 480 - patch.shape[0]))
    query_image, query_mask = _paste(load_image(coco_dir / "images" / files[1]), patch, patch_mask, at)
    target_image, target_mask = _paste(load_image(coco_dir / "images" / files[2]), patch, patch_mask, at)
    for view in VIEW_NAMES:
        crops, records = [render_view(view, target_image, target_mask)], [ObjectRecord("target", (0, 0, 1, 1), view)]
        for name in files[3:]:
            other = load_image(coco_dir / "images" / name)
            for a in [a for a in coco_json["annotations"] if a["image_id"] == by_file[name]["id"]][:4]:
                m = coco_ann_to_mask(a, 480, 640)
                if m.any():
                    crops.append(render_view(view, other, m))
                    records.append(ObjectRecord(name, (0, 0, 1, 1), view, object_id=str(a["id"])))
        vectors = embedder.embed_images(crops)
        query = embedder.embed_images([render_view(view, query_image, query_mask)])
        for metric in ("cosine", "l2"):
            gallery = Gallery(embedder.dim, view, metric, embedder.model_info)
            gallery.add(vectors, records)
            top = gallery.search(query, k=3)[0]
            assert top[0].record.source == "target", f"view {view}, {metric}: {[h.record.source for h in top]}"
            assert len(gallery) > 5
