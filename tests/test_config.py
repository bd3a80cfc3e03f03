"""core/config.py: the deployment settings read from the environment."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _setting(name: str, **env: str) -> str:
    """repr(core.config.<name>) in a fresh interpreter with `env` added to the environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAMCLIP_")}
    out = subprocess.run([sys.executable, "-c", f"from core import config; print(repr(config.{name}))"],
                         cwd=REPO, env={**clean, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize("value,expected", [("no", "False"), ("off", "False"), ("0", "False"), ("", "False"),
                                            ("FALSE", "False"), ("1", "True"), ("yes", "True"), ("On", "True")])
def test_offline_flag_reads_yes_and_no(value, expected):
    """SAMCLIP_OFFLINE=no means online (it used to turn offline mode on: only 0/false were 'no')."""
    assert _setting("OFFLINE", SAMCLIP_OFFLINE=value) == expected


def test_offline_is_off_by_default():
    assert _setting("OFFLINE") == "False"


def test_one_image_limit_for_the_library_and_the_app(tmp_path, monkeypatch):
    """core.config.MAX_IMAGE_PIXELS / MAX_IMAGE_BYTES are the limits of the library (load_image)
    and of the app's uploads (maskdata.open_upload) alike; there is no second set in demo."""
    import numpy as np
    from PIL import Image

    from core import config
    from core.io.images import ImageError, load_image
    from demo import maskdata
    from demo import settings as serving
    from demo.state import UserError

    assert not [n for n in dir(serving) + dir(maskdata) if n.startswith("MAX_UPLOAD")]
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(path)
    monkeypatch.setattr(config, "MAX_IMAGE_PIXELS", 100 * 200 - 1)
    with pytest.raises(ImageError, match="MP"):
        load_image(path)
    with pytest.raises(UserError, match="megapixels"):
        maskdata.open_upload(path, "a.png")
    monkeypatch.setattr(config, "MAX_IMAGE_PIXELS", 100 * 200)
    assert load_image(path).shape == maskdata.open_upload(path, "a.png").image.shape == (100, 200, 3)
    monkeypatch.setattr(config, "MAX_IMAGE_BYTES", path.stat().st_size - 1)
    with pytest.raises(ImageError, match="MB"):
        load_image(path)
    with pytest.raises(UserError, match="MB"):
        maskdata.open_upload(path, "a.png")


@pytest.mark.parametrize("old,new", [("SAMCLIP_MAX_UPLOAD_PIXELS", "SAMCLIP_MAX_IMAGE_PIXELS"),
                                     ("SAMCLIP_MAX_UPLOAD_BYTES", "SAMCLIP_MAX_IMAGE_BYTES")])
def test_a_former_limit_name_stops_with_the_new_one(old, new):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAMCLIP_")}
    out = subprocess.run([sys.executable, "-c", "import core.config"], cwd=REPO, env={**clean, old: "5"},
                         capture_output=True, text=True)
    assert out.returncode != 0 and f"{old} was renamed {new}" in out.stderr
