"""core.bench.label_folder runs end to end on two tiny images (a smoke test: no timing asserted)."""
import json

import numpy as np
import pytest
from PIL import Image

from core.bench.label_folder import main


@pytest.mark.slow
def test_prints_images_per_minute(tmp_path, capsys):
    for i in range(3):
        image = np.full((32, 40, 3), 40 * i, np.uint8)
        image[8:20, 10:30] = 200
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    assert main(["--images", str(tmp_path), "--count", "2", "--sam", "vit_tiny", "--points-per-side", "4",
                 "--vocab", "cat, cup", "--find", ""]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["local"]["images"] == 2 and report["local"]["images_per_minute"] > 0
