"""Shared fixtures: the real COCO128 data beside the repo, and small untrained models."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COCO128 = REPO.parent / "shared" / "data" / "coco128"


@pytest.fixture(scope="session")
def coco_dir() -> Path:
    """Folder of ../shared/data/coco128 (images/ + instances.json); skips when absent."""
    if not (COCO128 / "instances.json").is_file():
        pytest.skip(f"real data not found at {COCO128} (../shared/data/coco128 beside the repo)")
    return COCO128


@pytest.fixture(scope="session")
def coco_json(coco_dir) -> dict:
    """The parsed instances.json of COCO128."""
    return json.loads((coco_dir / "instances.json").read_text())
