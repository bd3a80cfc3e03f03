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
