"""What the format writers share: category ids, painter's order for pixel maps, copying the
image files next to the labels, the provenance note, and PNG encoding with a palette."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from core.io.labels import ExportMeta, LabelledImage


def voc_palette() -> np.ndarray:
    """(256, 3) uint8: the Pascal VOC colour map (class i's colour from the bits of i)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        value, rgb = index, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << (7 - bit)
            value >>= 3
        palette[index] = rgb
    return palette


def palette_png(index_map: np.ndarray) -> bytes:
    """(H, W) uint8 class indices as a palette ("P" mode) PNG with the VOC colours; reading it
    back with PIL gives the indices."""
    pil = Image.fromarray(np.asarray(index_map, dtype=np.uint8), mode="P")
    pil.putpalette(voc_palette().ravel().tolist())
    out = io.BytesIO()
    pil.save(out, format="PNG")
    return out.getvalue()


def read_index_png(path: Path) -> np.ndarray:
    """(H, W) int64 indices of a palette or grayscale PNG (the palette is ignored)."""
    with Image.open(path) as pil:
        if pil.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(f"{path} is not an index PNG (mode {pil.mode})")
        return np.asarray(pil).astype(np.int64)


def painted(image: LabelledImage, values: list[int], dtype=np.int32) -> np.ndarray:
    """(H, W) map with each object's value painted in list order (a later object is on top,
    as in the viewer); 0 where no object is."""
    canvas = np.zeros((image.height, image.width), dtype=dtype)
    for obj, value in zip(image.objects, values):
        canvas[obj.mask] = value
    return canvas


def category_ids(categories: list[str], start: int = 1) -> dict[str, int]:
    """{name: id} numbering the ordered names from `start`."""
    return {name: start + i for i, name in enumerate(categories)}


def copy_image(image_root: Path | None, file_name: str, target: Path) -> bool:
    """Copy image_root/file_name to target (parents made); False when there is no source."""
    if image_root is None:
        return False
    source = Path(image_root) / file_name
    if not source.is_file():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.resolve() != target.resolve():
        shutil.copyfile(source, target)
    return True


def meta_dict(meta: ExportMeta | None) -> dict:
    """The provenance keys every export carries ("description", "models", "untrained")."""
    return (meta or ExportMeta()).as_dict()


def suffix_of(file_name: str, default: str = ".jpg") -> str:
    """The image's extension ('.jpg' when it has none)."""
    suffix = Path(file_name).suffix
    return suffix if suffix else default
