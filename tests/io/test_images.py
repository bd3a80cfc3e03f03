"""core.io.images: every common kind of image becomes (H, W, 3) uint8 RGB, or a clear ImageError."""
import io

import numpy as np
import pytest
from PIL import Image

from core import config
from core.io.images import ImageError, array_to_rgb, load_image


def _png_bytes(pil: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    pil.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_real_jpeg_from_path(coco_dir):
    path = sorted((coco_dir / "images").glob("*.jpg"))[0]
    image = load_image(path)
    with Image.open(path) as pil:
        assert image.shape == (pil.height, pil.width, 3)
    assert image.dtype == np.uint8


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "RGB"])
def test_modes_become_rgb(mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    image = load_image(_png_bytes(rgb.convert(mode), "TIFF" if mode == "CMYK" else "PNG"))
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8


def test_rgba_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red-ish, bottom half transparent
    image = load_image(_png_bytes(Image.fromarray(rgba, "RGBA")))
    assert (image[0, 0] == [200, 0, 0]).all()
    assert (image[3, 3] == [255, 255, 255]).all()


def test_16bit_grayscale_is_scaled():
    arr = np.array([[0, 65535], [32768, 257]], dtype=np.uint16)
    image = load_image(_png_bytes(Image.fromarray(arr)))
    assert image.shape == (2, 2, 3)
    assert image[0, 0, 0] == 0 and image[0, 1, 0] == 255 and image[1, 1, 0] == 1


def test_exif_rotation_is_applied():
    pil = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    image = load_image(_png_bytes(pil, "JPEG", exif=exif))
    assert image.shape == (40, 20, 3)


def test_corrupt_and_non_image_bytes():
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"this is not an image")
    good = _png_bytes(Image.new("RGB", (64, 64), "blue"), "JPEG")
    with pytest.raises(ImageError):
        load_image(good[: len(good) // 3])


def test_huge_image_refused_before_decoding(monkeypatch):
    data = _png_bytes(Image.new("L", (3000, 2000)))
    with pytest.raises(ImageError, match="6 MP"):
        load_image(data, max_pixels=5_000_000)
    monkeypatch.setattr(config, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(ImageError, match="limit"):
        load_image(data)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such image"):
        load_image(tmp_path / "nope.jpg")


def test_arrays():
    assert array_to_rgb(np.zeros((5, 6), np.float32)).shape == (5, 6, 3)
    assert array_to_rgb(np.full((5, 6, 1), 1.0)).max() == 255
    assert (array_to_rgb(np.zeros((2, 2, 4), np.uint8)) == 255).all()  # transparent -> white
    with pytest.raises(ImageError):
        array_to_rgb(np.zeros((5, 6, 2)))
    with pytest.raises(ImageError):
        array_to_rgb(np.zeros((0, 6, 3), np.uint8))
