"""core.gallery: search by both metrics, exclusion, atomic save/load, mismatch refusal."""
import json
import os

import numpy as np
import pytest

from core.embed import l2_normalise
from core.gallery import Gallery, GalleryMismatch, ObjectRecord

MODEL = {"clip": "ViT-B-32", "pretrained": "openai", "untrained": False}


def _records(n, view="crop"):
    return [ObjectRecord(f"img{i}.jpg", (i, i, i + 10, i + 10), view, category=["cat", "dog"][i % 2],
                         object_id=str(i)) for i in range(n)]


def _vectors(n, d=16, seed=0):
    return l2_normalise(np.random.default_rng(seed).normal(size=(n, d)))


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_search_finds_exact_match_first(metric):
    vecs = _vectors(50)
    gallery = Gallery(16, "crop", metric, MODEL)
    assert gallery.add(vecs, _records(50)) == list(range(50))
    hits = gallery.search(vecs[[7, 20]], k=5)
    assert [h[0].id for h in hits] == [7, 20]
    assert hits[0][0].record.object_id == "7" and hits[0][0].rank == 0
    best = hits[0][0].score
    assert best == pytest.approx(1.0 if metric == "cosine" else 0.0, abs=1e-5)


def test_cosine_and_l2_rank_identically_on_unit_vectors():
    vecs, queries = _vectors(200), _vectors(10, seed=1)
    ip, l2 = Gallery(16, "crop", "cosine"), Gallery(16, "crop", "l2")
    ip.add(vecs, _records(200)), l2.add(vecs, _records(200))
    for a, b in zip(ip.search(queries, 10), l2.search(queries, 10)):
        assert [h.id for h in a] == [h.id for h in b]
        for hi, hl in zip(a, b):
            assert hl.score == pytest.approx(2 - 2 * hi.score, abs=1e-4)  # d^2 = 2 - 2 cos


def test_exclude_and_small_gallery():
    vecs = _vectors(3)
    gallery = Gallery(16, "crop")
    gallery.add(vecs, _records(3))
    hits = gallery.search(vecs[0], k=5, exclude=[[0]])[0]
    assert [h.id for h in hits if h.id == 0] == [] and len(hits) == 2
    assert Gallery(16, "crop").search(vecs[0], k=3) == [[]]
    with pytest.raises(ValueError):
        gallery.search(np.zeros((1, 8), np.float32))
    with pytest.raises(ValueError):
        gallery.add(vecs, _records(2))


def test_save_load_round_trip(tmp_path):
    vecs = _vectors(20)
    gallery = Gallery(16, "mask", "l2", MODEL)
    gallery.add(vecs, _records(20, "mask"))
    gallery.save(tmp_path / "g")
    loaded = Gallery.load(tmp_path / "g", expect_model=MODEL, expect_view="mask")
    assert len(loaded) == 20 and loaded.metric == "l2" and loaded.records[3] == gallery.records[3]
    assert np.allclose(loaded.embeddings, vecs)
    assert [h.id for h in loaded.search(vecs[4], 3)[0]] == [h.id for h in gallery.search(vecs[4], 3)[0]]
    gallery.add(_vectors(5, seed=3), _records(5, "mask"))
    gallery.save(tmp_path / "g")  # overwrite: old version files are removed
    assert len(Gallery.load(tmp_path / "g")) == 25
    assert len(list((tmp_path / "g").glob("v-*/index.faiss"))) == 1  # the old version is removed


def test_interrupted_save_keeps_previous_gallery(tmp_path, monkeypatch):
    gallery = Gallery(16, "crop", "cosine", MODEL)
    gallery.add(_vectors(10), _records(10))
    gallery.save(tmp_path / "g")
    gallery.add(_vectors(5, seed=2), _records(5))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        gallery.save(tmp_path / "g")
    monkeypatch.undo()
    assert len(Gallery.load(tmp_path / "g")) == 10


def test_mismatch_is_refused(tmp_path):
    gallery = Gallery(16, "crop", "cosine", MODEL)
    gallery.add(_vectors(2), _records(2))
    gallery.save(tmp_path / "g")
    with pytest.raises(GalleryMismatch, match="crop"):
        Gallery.load(tmp_path / "g", expect_view="mask")
    with pytest.raises(GalleryMismatch, match="another model"):
        Gallery.load(tmp_path / "g", expect_model={**MODEL, "clip": "RN50"})
    with pytest.raises(GalleryMismatch, match="metric"):
        Gallery.load(tmp_path / "g", expect_metric="l2")
    with pytest.raises(FileNotFoundError):
        Gallery.load(tmp_path / "nothing")
    version = json.loads((tmp_path / "g" / "CURRENT").read_text())["version"]
    manifest = json.loads((tmp_path / "g" / version / "manifest.json").read_text())
    assert manifest["count"] == 2 and manifest["model"] == MODEL
