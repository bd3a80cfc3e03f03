"""core.io.archive: each bad-archive case refused or skipped with a reason, nothing written
outside the target folder."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.io.archive import ArchiveError, ArchiveLimits, extract_images, safe_name


def _png(value: int = 0) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((8, 10, 3), value, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _zip(entries: list[tuple[str, bytes]], compression=zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z:
        for name, data in entries:
            z.writestr(zipfile.ZipInfo(name) if name.endswith("/") else name, data)
    return out.getvalue()


def _reasons(result) -> dict[str, str]:
    return dict(result.skipped)


def test_images_in_nested_folders_are_kept_and_non_images_skipped(tmp_path):
    data = _zip([("a.png", _png(1)), ("set/b/c.png", _png(2)), ("notes.txt", b"hello"), ("set/", b""),
                 ("__MACOSX/._a.png", b"junk"), ("fake.jpg", b"not really a jpeg")])
    result = extract_images(data, tmp_path / "t")
    assert sorted(result.extracted) == ["a.png", "set/b/c.png"]
    assert (tmp_path / "t/set/b/c.png").is_file()
    reasons = _reasons(result)
    assert reasons["notes.txt"].startswith("not an image") and reasons["set/"] == "a folder"
    assert reasons["__MACOSX/._a.png"] == "hidden or system file"
    assert reasons["fake.jpg"] == "not a readable image"


def test_zero_byte_file_is_skipped(tmp_path):
    result = extract_images(_zip([("empty.png", b""), ("ok.png", _png())]), tmp_path)
    assert result.extracted == ["ok.png"] and _reasons(result)["empty.png"] == "empty file (0 bytes)"


def test_duplicates_skipped_or_renamed(tmp_path):
    with pytest.warns(UserWarning, match="Duplicate name"):
        data = _zip([("x.png", _png(1)), ("x.png", _png(1)), ("x.png", _png(2)), ("X.PNG", _png(3))])
    result = extract_images(data, tmp_path)
    assert _reasons(result)["x.png"] == "a duplicate of x.png"
    assert sorted(result.extracted) == ["X-3.PNG", "x-2.png", "x.png"]   # names compared case-insensitively
    assert dict(result.renamed) == {"x.png": "x-2.png", "X.PNG": "X-3.PNG"}
    assert np.asarray(Image.open(tmp_path / "x-2.png"))[0, 0, 0] == 2


@pytest.mark.parametrize("name", ["../x.png", "../../etc/x.png", "/abs/x.png", "C:/x.png", "a/../../x.png",
                                  "..\\x.png"])
def test_path_traversal_is_never_written(tmp_path, name):
    target = tmp_path / "inside" / "target"
    result = extract_images(_zip([(name, _png()), ("fine.png", _png(5))]), target)
    assert result.extracted == ["fine.png"]
    assert _reasons(result)[name].startswith("unsafe path")
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["inside/target/fine.png"]


def test_safe_name():
    assert safe_name("a/./b\\c.png") == "a/b/c.png"
    assert safe_name("a/../b.png") is None and safe_name("") is None and safe_name("x\x00.png") is None


def test_zip_bomb_by_ratio_is_refused(tmp_path):
    bomb = _zip([("bomb.png", b"\0" * (20 << 20))], zipfile.ZIP_DEFLATED)   # 20 MB of zeros, ~20 KB packed
    with pytest.raises(ArchiveError, match="zip bomb"):
        extract_images(bomb, tmp_path / "t")
    assert not any((tmp_path / "t").iterdir())


def test_zip_bomb_with_lying_headers_is_not_extracted(tmp_path):
    data = bytearray(_zip([("bomb.png", b"\0" * (4 << 20))], zipfile.ZIP_DEFLATED))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.infolist()[0]
    small = (1000).to_bytes(4, "little")
    # declare 1000 bytes in the local and central headers: the ratio check cannot see the truth
    for offset in (info.header_offset + 22, data.rfind(b"PK\x01\x02") + 24):
        data[offset:offset + 4] = small
    result = extract_images(bytes(data), tmp_path / "t", ArchiveLimits(max_ratio=50))
    assert result.extracted == [] and _reasons(result)["bomb.png"].startswith("damaged entry")   # reading stops
    assert not any((tmp_path / "t").iterdir())                          # at the declared size: the CRC fails


def test_too_many_entries_and_too_many_bytes_are_refused(tmp_path):
    many = _zip([(f"{i}.png", b"x") for i in range(30)])
    with pytest.raises(ArchiveError, match="30 entries; the limit is 20"):
        extract_images(many, tmp_path, ArchiveLimits(max_entries=20))
    with pytest.raises(ArchiveError, match="unpacks to"):
        extract_images(_zip([("a.png", _png())]), tmp_path, ArchiveLimits(max_total_bytes=10))


def test_image_count_limit_and_not_a_zip(tmp_path):
    result = extract_images(_zip([(f"{i}.png", _png(i)) for i in range(4)]), tmp_path / "t",
                            ArchiveLimits(max_images=2))
    assert len(result.extracted) == 2 and _reasons(result)["3.png"] == "over the limit of 2 images"
    with pytest.raises(ArchiveError, match="not a zip"):
        extract_images(b"plain bytes", tmp_path / "u")
