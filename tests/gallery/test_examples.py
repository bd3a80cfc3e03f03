"""core.gallery.examples without models: combining galleries and the cache key."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from core.sam.automask import AutoMaskSettings
from core.gallery.examples import combine, gallery_from_arrays, gallery_set_key, load_gallery_set
from core.gallery.gallery import ObjectRecord

REPO = Path(__file__).resolve().parents[2]


def unit_rows(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def records(n: int, source: str, view: str = "crop") -> list[ObjectRecord]:
    return [ObjectRecord(source=source, box=(0, 0, 1, 1), view=view) for _ in range(n)]


def test_combine_keeps_order_and_switches_metric():
    a = gallery_from_arrays(unit_rows(3, seed=1), records(3, "a.jpg"), "crop")
    b = gallery_from_arrays(unit_rows(2, seed=2), records(2, "b.jpg"), "crop")
    both = combine([a, b], "l2")
    assert len(both) == 5 and both.metric == "l2"
    assert [r.source for r in both.records] == ["a.jpg"] * 3 + ["b.jpg"] * 2
    query = b.embeddings[1]
    hit = both.search(query, 1)[0][0]
    assert hit.id == 4 and hit.score == pytest.approx(0.0, abs=1e-5)     # itself, distance 0
    cos = combine([a, b], "cosine").search(query, 5)[0]
    l2 = both.search(query, 5)[0]
    assert [h.id for h in cos] == [h.id for h in l2]
    with pytest.raises(ValueError, match="cannot combine"):
        combine([a, gallery_from_arrays(unit_rows(1), records(1, "c.jpg", "mask"), "mask")])
    with pytest.raises(ValueError, match="nothing"):
        combine([])


def test_cache_key_follows_images_models_and_settings(tmp_path):
    folder = tmp_path / "ex"
    folder.mkdir()
    shutil.copy(REPO / "examples" / "coffee.jpg", folder)
    info = {"clip": "ViT-B-32", "untrained": True, "sam": "vit_tiny"}
    key = gallery_set_key(folder, info, ["crop"], 20)
    assert key == gallery_set_key(folder, info, ["crop"], 20)
    assert key != gallery_set_key(folder, {**info, "sam": "vit_b"}, ["crop"], 20)
    assert key != gallery_set_key(folder, info, ["crop", "mask"], 20)
    assert key != gallery_set_key(folder, info, ["crop"], 10)
    assert key != gallery_set_key(folder, info, ["crop"], 20, AutoMaskSettings(points_per_side=4))
    shutil.copy(REPO / "examples" / "rocket.jpg", folder)
    assert key != gallery_set_key(folder, info, ["crop"], 20)
    assert load_gallery_set(tmp_path / "nothing", ["crop"]) is None


def test_a_damaged_cache_rebuilds_itself(tmp_path, monkeypatch):
    import types

    import core.gallery.examples as eg
    from core.gallery.examples import SharedGallerySet

    folder = tmp_path / "ex"
    folder.mkdir()
    shutil.copy(REPO / "examples" / "coffee.jpg", folder)
    builds = []

    def fake_build(folder, segmenter, embedder, views, **kwargs):
        builds.append(1)
        return {v: gallery_from_arrays(unit_rows(4, seed=len(builds)), records(4, "coffee.jpg", v), v,
                                       model_info=embedder.model_info) for v in views}

    monkeypatch.setattr(eg, "build_gallery_set", fake_build)
    embedder = types.SimpleNamespace(model_info={"clip": "fake", "untrained": True})
    get = lambda s: s.get(lambda: None, lambda: embedder, "vit_tiny")  # noqa: E731
    assert len(get(SharedGallerySet(folder, tmp_path / "cache", ["crop", "mask"]))["crop"]) == 4
    assert len(builds) == 1
    loaded = SharedGallerySet(folder, tmp_path / "cache", ["crop", "mask"])
    get(loaded)
    assert loaded.loaded_from_cache and len(builds) == 1
    cached = next((tmp_path / "cache").glob("examples-*"))
    for damage in ("index", "pointer"):
        if damage == "index":
            version = next((cached / "crop").glob("v-*"))
            (version / "index.faiss").write_bytes(b"garbage")
        else:
            (cached / "mask" / "CURRENT").write_text("{broken")
        fresh = SharedGallerySet(folder, tmp_path / "cache", ["crop", "mask"])
        assert len(get(fresh)["mask"]) == 4 and not fresh.loaded_from_cache
        again = SharedGallerySet(folder, tmp_path / "cache", ["crop", "mask"])
        get(again)
        assert again.loaded_from_cache  # the rebuilt cache is whole again
    assert len(builds) == 3
