"""core.io.panoptic: the id <-> RGB encoding and the documents."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.find.labels import Segment
from core.find.vocab import Category
from core.io.panoptic import ids_to_rgb, legend, panoptic_document, png_bytes, rgb_to_ids, semantic_png


def test_segment_ids_round_trip_through_rgb():
    ids = np.array([[0, 1, 255], [256, 65535, 256 ** 2 + 3]])
    rgb = ids_to_rgb(ids)
    assert rgb[0, 2].tolist() == [255, 0, 0] and rgb[1, 0].tolist() == [0, 1, 0] and rgb[1, 2].tolist() == [3, 0, 1]
    back = rgb_to_ids(np.asarray(Image.open(io.BytesIO(png_bytes(rgb)))))
    assert back.tolist() == ids.tolist()
    with pytest.raises(ValueError):
        ids_to_rgb(np.array([[-1]]))


def test_semantic_png_widens_to_16_bit_when_needed():
    small = np.asarray(Image.open(io.BytesIO(semantic_png(np.array([[0, 200]])))))
    assert small.dtype == np.uint8 and small.tolist() == [[0, 200]]
    wide = np.asarray(Image.open(io.BytesIO(semantic_png(np.array([[0, 300]])))))
    assert wide.tolist() == [[0, 300]]


def test_panoptic_document_follows_coco():
    vocab = (Category(18, "dog", True), Category(100, "sofa", False))
    doc = panoptic_document("a.jpg", (10, 20), "a.png", [Segment(1, 18, 30, (0.0, 0.0, 5.0, 6.0), True, 0.9)], vocab)
    seg = doc["annotations"][0]["segments_info"][0]
    assert seg == {"id": 1, "category_id": 18, "area": 30, "bbox": [0.0, 0.0, 5.0, 6.0], "iscrowd": 0, "score": 0.9}
    assert doc["categories"][1] == {"id": 100, "name": "sofa", "isthing": 0, "supercategory": "stuff"}
    assert legend(vocab, np.array([[0, 100]])) == [{"id": 100, "name": "sofa", "isthing": False}]
