"""core.gallery.gallery: search by both metrics, exclusion, atomic save/load, mismatch refusal."""
import json
import os

import numpy as np
import pytest

from core.embed import l2_normalise
from core.gallery.gallery import Gallery, GalleryMismatch, ObjectRecord

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


# ----------------------------------------------------------------------------- format 2: damage, leftovers, faults

from core.gallery.gallery import GalleryCorrupt, cleanup_gallery, gallery_version  # noqa: E402


def _saved(tmp_path, n=12):
    gallery = Gallery(16, "crop", "cosine", MODEL)
    gallery.add(_vectors(n), _records(n))
    gallery.save(tmp_path / "g")
    return tmp_path / "g", tmp_path / "g" / gallery_version(tmp_path / "g")


def test_records_are_columnar_and_round_trip_every_field(tmp_path):
    from core.io.masks import mask_to_rle

    mask = np.zeros((6, 8), bool)
    mask[1:4, 2:5] = True
    recs = [ObjectRecord("a.jpg", (1.5, 2, 3, 4), "crop", mask_to_rle(mask), "dog", (6, 8), "7",
                         {"sam_score": 0.5}, "k1"), ObjectRecord("b.jpg", (0, 0, 1, 1), "crop")]
    g = Gallery(16, "crop")
    g.add(_vectors(2), recs)
    g.save(tmp_path / "g")
    loaded = Gallery.load(tmp_path / "g")
    assert list(loaded.records) == recs
    version = tmp_path / "g" / gallery_version(tmp_path / "g")
    assert (version / "records" / "box.npy").is_file() and not list(version.glob("*.jsonl"))


@pytest.mark.parametrize("damage, message", [
    ("unknown_column", "unknown column"),
    ("index_other_dim", "width"),
    ("nan_vector", "NaN"),
    ("truncated_embeddings", "bytes but the manifest says"),
    ("bad_manifest", "not valid JSON"),
    ("bad_pointer", "damaged"),
    ("missing_index", "missing"),
    ("garbage_index", "damaged"),
])
def test_every_damaged_file_gets_a_clear_error(tmp_path, damage, message):
    import faiss

    root, version = _saved(tmp_path)
    manifest_path = version / "manifest.json"
    manifest = json.loads(manifest_path.read_text())

    def resize(name):  # keep the manifest's sizes true, so the deeper check is reached
        manifest["files"][name] = (version / name).stat().st_size
        manifest_path.write_text(json.dumps(manifest))

    if damage == "unknown_column":
        np.save(version / "records" / "colour.npy", np.zeros(12))
        manifest["files"]["records/colour.npy"] = (version / "records" / "colour.npy").stat().st_size
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "index_other_dim":
        other = faiss.IndexFlatIP(8)
        other.add(np.zeros((12, 8), np.float32))
        faiss.write_index(other, str(version / "index.faiss"))
        resize("index.faiss")
    elif damage == "nan_vector":
        emb = np.load(version / "embeddings.npy")
        emb[5, 3] = np.nan
        np.save(version / "embeddings.npy", emb)
    elif damage == "truncated_embeddings":
        data = (version / "embeddings.npy").read_bytes()
        (version / "embeddings.npy").write_bytes(data[:-40])
    elif damage == "bad_manifest":
        manifest_path.write_text("{not json")
    elif damage == "bad_pointer":
        (root / "CURRENT").write_text("garbage")
    elif damage == "missing_index":
        (version / "index.faiss").unlink()
    elif damage == "garbage_index":
        (version / "index.faiss").write_bytes(b"x" * manifest["files"]["index.faiss"])
    with pytest.raises(GalleryCorrupt, match=message):
        Gallery.load(root)


def test_unknown_record_key_in_a_format1_gallery_is_named(tmp_path):
    import faiss

    d = tmp_path / "old"
    d.mkdir()
    faiss.write_index(faiss.IndexFlatIP(16), str(d / "index-a.faiss"))
    (d / "records-a.jsonl").write_text("")
    np.save(d / "embeddings-a.npy", np.zeros((0, 16), np.float32))
    (d / "manifest.json").write_text(json.dumps({"format": 1, "dim": 16, "view": "crop", "metric": "cosine",
                                                  "files": {"index": "index-a.faiss", "records": "records-a.jsonl",
                                                            "embeddings": "embeddings-a.npy"}}))
    assert len(Gallery.load(d)) == 0  # format 1 still loads
    with pytest.raises(ValueError, match="unknown field"):
        ObjectRecord.from_json({"source": "a", "box": [0, 0, 1, 1], "view": "crop", "colour": "red"})


def test_leftovers_of_killed_writers_are_removed(tmp_path):
    root, version = _saved(tmp_path)
    (root / "v-0000-dead.partial").mkdir()
    (root / "v-0000-dead.partial" / "embeddings.npy").write_bytes(b"half")
    (root / ".CURRENT.abc.tmp").write_text("{}")
    (root / "v-0001-old").mkdir()
    removed = cleanup_gallery(root)
    assert sorted(removed) == [".CURRENT.abc.tmp", "v-0000-dead.partial", "v-0001-old"]
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["CURRENT", version.name]
    assert len(Gallery.load(root)) == 12


WRITER = """
import sys, numpy as np
sys.path.insert(0, {repo!r})
from core.gallery.gallery import Gallery, ObjectRecord
rng = np.random.default_rng(int(sys.argv[1]))
for step in range(10**6):
    n = int(rng.integers(1, 400))
    x = rng.normal(size=(n, 16)).astype(np.float32)
    g = Gallery(16, "crop")
    g.add(x / np.linalg.norm(x, axis=1, keepdims=True), [ObjectRecord(f"{{i}}.jpg", (0, 0, 1, 1), "crop") for i in range(n)])
    g.save({path!r})
"""

READER = """
import sys, time
sys.path.insert(0, {repo!r})
from core.gallery.gallery import Gallery
ok = bad = 0
end = time.time() + float(sys.argv[1])
while time.time() < end:
    try:
        g = Gallery.load({path!r})
        assert len(g.records) == g.index.ntotal == len(g.embeddings)
        ok += 1
    except Exception as exc:
        bad += 1
        print(type(exc).__name__, exc, file=sys.stderr)
print(ok, bad)
"""


def test_readers_always_succeed_while_saves_are_killed_at_random_points(tmp_path):
    """Fault test: a writer saving in a loop is SIGKILLed at random moments and restarted,
    while two reader processes load the gallery continuously: every load succeeds."""
    import random
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[2])
    path = str(tmp_path / "g")
    _saved(tmp_path)
    readers = [subprocess.Popen([sys.executable, "-c", READER.format(repo=repo, path=path), "8"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    rng = random.Random(0)
    kills = 0
    deadline = time.time() + 7
    while time.time() < deadline:
        writer = subprocess.Popen([sys.executable, "-c", WRITER.format(repo=repo, path=path), str(kills)])
        time.sleep(rng.uniform(0.3, 1.2))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        kills += 1
    results = [r.communicate(timeout=60) for r in readers]
    for out, err in results:
        ok, bad = (int(v) for v in out.split())
        assert bad == 0 and ok > 10, err[-2000:]
    assert kills >= 4
    cleanup_gallery(path)
    assert not list(Path(path).glob("*.partial"))
    assert len(Gallery.load(path)) > 0
