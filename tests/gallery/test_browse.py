"""core.gallery.browse: opening by path or environment, pages, sharded search, hit source + outline,
hit thumbnails."""
import numpy as np
import pytest
from PIL import Image

from core.gallery.browse import GALLERY_ENV, SHARDS_FILE, hit_source, hit_thumbnail, open_gallery, outline, search_page
from core.embed import l2_normalise
from core.gallery.gallery import Gallery, ObjectRecord
from core.io.masks import mask_to_rle
from core.gallery.thumbs import OUTLINE_COLOR, THUMB_SIDE, render_thumbnail, thumb_path, thumbnail_bytes, write_thumbnails


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


def test_hit_thumbnail_by_path_gallery_and_shards(tmp_path):
    yy, xx = np.mgrid[:300, :400]
    image = np.stack([xx * 255 // 400, yy * 255 // 300, np.full_like(xx, 160)], -1).astype(np.uint8)
    mask = np.zeros((300, 400), bool)
    mask[50:250, 100:350] = True
    shown = render_thumbnail(image, mask)
    assert max(shown.shape[:2]) == THUMB_SIDE and (shown == OUTLINE_COLOR).all(-1).any()
    assert shown[:3, :3].max() <= 80                                            # the margin is dimmed
    rec = ObjectRecord("gone.jpg", (100, 50, 350, 250), "crop", mask_to_rle(mask), image_hw=(300, 400),
                       image_key="ab" * 16)
    auto = ObjectRecord("gone.jpg", (0, 0, 4, 4), "crop", mask_to_rle(mask[::-1]), image_key="ab" * 16)
    g = Gallery(8, "crop")
    g.add(l2_normalise(np.ones((2, 8))), [rec, auto])
    g.save(tmp_path / "s" / "a")
    _gallery(3, 1).save(tmp_path / "s" / "b")
    assert hit_thumbnail(tmp_path / "s" / "a", rec) is None                     # none written
    assert write_thumbnails(tmp_path / "s" / "a", [(rec, thumbnail_bytes(image, mask)),
                                                   (auto, thumbnail_bytes(image, mask[::-1]))]) == 2
    assert thumb_path(tmp_path, auto).name.startswith("m-")       # no object_id: named by its mask
    (tmp_path / "s" / SHARDS_FILE).write_text("b\na\n")
    for where in (tmp_path / "s" / "a", open_gallery(tmp_path / "s" / "a"), tmp_path / "s",
                  open_gallery(tmp_path / "s")):
        thumb = hit_thumbnail(where, rec)
        assert thumb is not None and thumb.shape == shown.shape and thumb.dtype == np.uint8
        assert np.abs(thumb.astype(int) - shown).mean() < 8                      # JPEG of the rendering
    thumb_path(tmp_path / "s" / "a", rec).write_bytes(b"damaged")
    assert hit_thumbnail(tmp_path / "s" / "a", rec) is None
    assert hit_thumbnail(Gallery(8, "crop"), rec) is None                       # in memory: no directory
