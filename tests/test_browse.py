"""core.browse: opening by path or environment, pages, sharded search, hit source + outline."""
import numpy as np
import pytest
from PIL import Image

from core.browse import GALLERY_ENV, SHARDS_FILE, hit_source, open_gallery, outline, search_page
from core.embed import l2_normalise
from core.gallery import Gallery, ObjectRecord
from core.masks import mask_to_rle


def _gallery(n, seed, source="x.jpg"):
    g = Gallery(8, "crop")
    g.add(l2_normalise(np.random.default_rng(seed).normal(size=(n, 8))),
          [ObjectRecord(source, (0, 0, 2, 2), "crop", object_id=f"{seed}-{i}") for i in range(n)])
    return g


def test_pages_env_and_shards(tmp_path, monkeypatch):
    a, b = _gallery(30, 1), _gallery(20, 2)
    a.save(tmp_path / "s" / "a")
    b.save(tmp_path / "s" / "b")
    monkeypatch.setenv(GALLERY_ENV, str(tmp_path / "s" / "a"))
    g = open_gallery()
    q = a.embeddings[3]
    pages = [search_page(g, q, offset=o, limit=7) for o in (0, 7, 14, 21, 28)]
    assert [h.rank for p in pages for h in p.hits] == list(range(30)) and pages[0].hits[0].id == 3
    assert pages[0].has_more and not pages[-1].has_more and pages[0].total == 30
    (tmp_path / "s" / SHARDS_FILE).write_text("a\nb\n")
    both = open_gallery(tmp_path / "s")
    merged = Gallery(8, "crop")
    merged.add(np.concatenate([a.embeddings, b.embeddings]), list(a.records) + list(b.records))
    want = [h.record.object_id for h in merged.search(b.embeddings[5], 10)[0]]
    assert [h.record.object_id for h in search_page(both, b.embeddings[5], limit=10).hits] == want
    monkeypatch.delenv(GALLERY_ENV)
    with pytest.raises(FileNotFoundError, match=GALLERY_ENV):
        open_gallery()


def test_hit_source_and_outline(tmp_path):
    image = np.full((20, 30, 3), 100, np.uint8)
    Image.fromarray(image).save(tmp_path / "p.png")
    mask = np.zeros((20, 30), bool)
    mask[5:10, 5:15] = True
    rec = ObjectRecord(str(tmp_path / "p.png"), (5, 5, 15, 10), "crop", mask_to_rle(mask), image_hw=(20, 30))
    img, m = hit_source(rec)
    assert (m == mask).all() and img.shape == (20, 30, 3)
    drawn = outline(img, m, width=1)
    changed = (drawn != img).any(-1)
    assert changed.any() and not (changed & mask).any()  # the outline surrounds, never covers, the object
    boxed = outline(img, None, box=rec.box, width=1)
    assert (boxed[5, 5:15] != 100).all()
    rec.image_hw = (40, 30)
    with pytest.raises(ValueError, match="changed"):
        hit_source(rec)
