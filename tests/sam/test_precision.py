"""core.sam.precision: "auto" measures on a CPU with native bf16, remembers, and skips timing without it."""
from __future__ import annotations

import json

import pytest

from core import config, models
from core.sam import precision
from core.sam.precision import PrecisionChoice


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    return tmp_path / "sam_precision.json"


def _timer(seconds: dict, calls: list):
    def time_fn(name):
        calls.append(name)
        return seconds[name]
    return time_fn


def test_the_faster_wins_and_is_remembered(cache):
    calls = []
    slow_bf16 = _timer({"fp32": 0.63, "bf16": 0.84}, calls)   # a Xeon with AVX512-BF16, no AMX
    choice = precision.choose_cpu_precision("k1", capable=True, time_fn=slow_bf16)
    assert choice == PrecisionChoice("fp32", "measured", {"fp32": 0.63, "bf16": 0.84}) and calls == ["fp32", "bf16"]
    assert "measured: fp32 0.630 s, bf16 0.840 s" in choice.describe()
    again = precision.choose_cpu_precision("k1", capable=True, time_fn=slow_bf16)
    assert again == PrecisionChoice("fp32", "cached", {"fp32": 0.63, "bf16": 0.84}) and calls == ["fp32", "bf16"]
    fast_bf16 = precision.choose_cpu_precision("k2", capable=True, time_fn=_timer({"fp32": 1.3, "bf16": 0.9}, calls))
    assert fast_bf16.dtype == "bf16" and fast_bf16.source == "measured"
    assert set(json.loads(cache.read_text())) == {"k1", "k2"}
    tie = precision.fastest(("fp32", "bf16"), lambda name: 1.0)
    assert tie.dtype == "fp32"


def test_no_bf16_flag_means_fp32_without_timing(cache):
    def never(name):
        raise AssertionError("timed although the CPU has no native bf16")

    assert precision.choose_cpu_precision("k", capable=False, time_fn=never) == PrecisionChoice("fp32", "flags")
    assert not cache.exists()


def test_cache_file_round_trip_and_damage(cache):
    key = precision.cache_key("vit_b", cpu="Xeon", flags={"avx512_bf16", "avx2"}, torch_version="2.14.1", threads=2)
    assert key.startswith("Xeon|flags=") and key.endswith("|torch=2.14.1|threads=2|vit_b")
    assert key != precision.cache_key("vit_t", cpu="Xeon", flags={"avx512_bf16", "avx2"},
                                      torch_version="2.14.1", threads=2)
    assert precision.read_cached(key) is None
    precision.write_cached(key, PrecisionChoice("bf16", "measured", {"fp32": 2.0, "bf16": 1.0}))
    assert precision.read_cached(key) == PrecisionChoice("bf16", "cached", {"fp32": 2.0, "bf16": 1.0})
    cache.write_text("not json")
    assert precision.read_cached(key) is None


def test_load_sam_records_its_choice(cache, monkeypatch):
    """Explicit names are taken as given; "auto" on a CPU goes through the measured rule."""
    from core.sam import fast_sam

    sam = models.load_sam("vit_tiny", untrained=True, device="cpu", precision="bf16")
    assert precision.precision_of(sam) == PrecisionChoice("bf16", "explicit")
    assert precision.precision_of(models.load_sam("vit_tiny", untrained=True, fast=False, device="cpu")) is None
    monkeypatch.setattr(fast_sam, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(fast_sam, "encoder_seconds", lambda sam, enc, name: {"fp32": 0.5, "bf16": 0.7}[name])
    stock = models.load_sam("vit_tiny", untrained=True, fast=False, device="cpu")
    choice = models.sam_precision_choice(stock, "vit_tiny", "cpu", "auto")
    assert choice.dtype == "fp32" and choice.source == "measured"
    assert models.sam_precision_choice(stock, "vit_tiny", "cpu", "auto").source == "cached"
    assert models.sam_precision_choice(stock, "vit_tiny", "cpu", "FP16") == PrecisionChoice("fp16", "explicit")


def test_real_probe_times_both_encoder_families():
    """The timing function runs on a small probe and leaves the model as it was."""
    from core.sam import fast_sam

    sam = models.load_sam("vit_tiny", untrained=True, fast=False, device="cpu")
    assert fast_sam.encoder_seconds(sam, "vit", "fp32", side=128, repeats=1) > 0
    assert len(sam.image_encoder.blocks) == 2 and sam.image_encoder.pos_embed.shape[1] == 64
    assert not fast_sam.is_accelerated(sam)


def test_probe_copies_a_model_a_segmenter_already_hooked():
    """A shared model carries the segmenter's click-priority hooks (which hold locks): the
    probe still copies it."""
    from core.sam import fast_sam
    from core.sam.segmenter import Segmenter

    sam = models.load_sam("vit_tiny", untrained=True, fast=False, device="cpu")
    Segmenter(sam)
    assert fast_sam.encoder_seconds(sam, "vit", "fp32", side=128, repeats=1) > 0
