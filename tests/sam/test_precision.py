"""core.sam.precision: "auto" measures on a CPU with native bf16, remembers, and skips timing without it."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from core import config, models
from core.sam import automask, precision
from core.sam.precision import PrecisionChoice


class FakeClock:
    """A `precision.Clock` whose load average and CPU share are set by the test: each timed
    stretch takes 1 s of wall time and `share * cpus` s of this process's CPU time."""

    def __init__(self, load=0.1, share=0.95, cpus=2):
        self.load_now, self.share, self.n = load, share, cpus
        self.t = self.c = 0.0

    def clock(self) -> precision.Clock:
        def wall():
            self.t += 0.5
            return self.t

        def cpu():
            self.c += 0.5 * self.share * self.n
            return self.c

        return precision.Clock(wall=wall, cpu=cpu, load=lambda: self.load_now, cpus=lambda: self.n)


@pytest.fixture
def idle(monkeypatch):
    """The machine as the precision rules see it: idle unless a test says otherwise (no real load)."""
    fake = FakeClock()
    monkeypatch.setattr(precision, "DEFAULT_CLOCK", fake.clock())
    return fake


@pytest.fixture
def cache(tmp_path, monkeypatch, idle):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(precision, "_SEEN", {})
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
    assert choice == PrecisionChoice("fp32", "measured", {"fp32": 0.63, "bf16": 0.84}) and calls == ["fp32", "bf16", "bf16", "fp32"]
    assert "measured: fp32 0.630 s, bf16 0.840 s" in choice.describe()
    again = precision.choose_cpu_precision("k1", capable=True, time_fn=slow_bf16)
    assert again == PrecisionChoice("fp32", "cached", {"fp32": 0.63, "bf16": 0.84}) and calls == ["fp32", "bf16", "bf16", "fp32"]   # nothing timed again
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
    from core.sam import cpu, probes

    sam = models.load_sam("vit_tiny", untrained=True, device="cpu", precision="bf16")
    assert precision.precision_of(sam) == PrecisionChoice("bf16", "explicit")
    assert precision.precision_of(models.load_sam("vit_tiny", untrained=True, fast=False, device="cpu")) is None
    monkeypatch.setattr(cpu, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(probes, "encoder_seconds", lambda sam, enc, name: {"fp32": 0.5, "bf16": 0.7}[name])
    monkeypatch.setattr(probes, "DecoderProbe", _FakeProbe)
    stock = models.load_sam("vit_tiny", untrained=True, fast=False, device="cpu")
    choice = models.sam_precision_choice(stock, "vit_tiny", "cpu", "auto")
    assert choice.dtype == "fp32" and choice.source == "measured"
    assert choice.decoder == {"click": "fp32", "batch": "bf16"}
    assert models.sam_precision_choice(stock, "vit_tiny", "cpu", "auto").source == "cached"
    assert models.sam_precision_choice(stock, "vit_tiny", "cpu", "FP16") == PrecisionChoice("fp16", "explicit")


class _FakeProbe:
    """probes.DecoderProbe with the AMX timings (see AMX_DECODER) and agreeing outputs."""

    def __init__(self, sam, workloads, **kw):
        from core.sam.automask import AutoMaskSettings

        assert workloads == {"click": 1, "batch": AutoMaskSettings().points_per_batch}

    def seconds(self, workload, name):
        return AMX_DECODER[workload, name]

    def agrees(self, workload, name):
        return True


def test_load_sam_auto_gives_batches_their_own_decoder(cache, monkeypatch):
    """An "auto" choice of bf16 for batches only: clicks decode in fp32, batches in a bf16 copy."""
    import torch

    from core.sam import cpu, probes

    monkeypatch.setattr(models, "_LOADED", {})
    monkeypatch.setattr(cpu, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(probes, "encoder_seconds", lambda sam, enc, name: {"fp32": 0.5, "bf16": 0.7}[name])
    monkeypatch.setattr(probes, "DecoderProbe", _FakeProbe)
    sam = models.load_sam("vit_tiny", untrained=True, device="cpu", precision="auto")
    assert precision.precision_of(sam).decoder == {"click": "fp32", "batch": "bf16"}
    assert next(sam.mask_decoder.parameters()).dtype == torch.float32
    assert next(automask.batch_decoder(sam).parameters()).dtype == torch.bfloat16
    explicit = models.load_sam("vit_tiny", untrained=True, device="cpu", precision="bf16")
    assert automask.batch_decoder(explicit) is explicit.mask_decoder   # explicit: decoder fp32 as before
    assert next(explicit.mask_decoder.parameters()).dtype == torch.float32


def test_real_probe_times_both_encoder_families():
    """The timing function runs on a small probe and leaves the model as it was."""
    from core.sam import fast_sam, probes

    sam = models.load_sam("vit_tiny", untrained=True, fast=False, device="cpu")
    assert probes.encoder_seconds(sam, "vit", "fp32", side=128, repeats=1) > 0
    assert len(sam.image_encoder.blocks) == 2 and sam.image_encoder.pos_embed.shape[1] == 64
    assert not fast_sam.is_accelerated(sam)


def test_probe_copies_a_model_a_segmenter_already_hooked():
    """A shared model carries the segmenter's click-priority hooks (which hold locks): the
    probe still copies it."""
    from core.sam import probes
    from core.sam.segmenter import Segmenter

    sam = models.load_sam("vit_tiny", untrained=True, fast=False, device="cpu")
    Segmenter(sam)
    assert probes.encoder_seconds(sam, "vit", "fp32", side=128, repeats=1) > 0


# ----------------------------------------------------------------------------- the mask decoder
#: Decoder seconds per call as measured on a 2-core AMX Xeon (vit_t): bf16 pays off for batches only.
AMX_DECODER = {("click", "fp32"): 0.0141, ("click", "bf16"): 0.0200,
               ("batch", "fp32"): 0.0350, ("batch", "bf16"): 0.0220}


def _decoder_timer(seconds: dict, calls: list):
    def time_fn(workload, name):
        calls.append((workload, name))
        return seconds[workload, name]
    return time_fn


def _agreeing(answer: bool, asked: list):
    def agrees(workload, name):
        asked.append((workload, name))
        return answer
    return agrees


def test_decoder_bf16_for_batches_only_when_faster_there(cache):
    calls, asked = [], []
    choice = precision.choose_cpu_precision(
        "k", capable=True, time_fn=lambda name: {"fp32": 0.63, "bf16": 0.5}[name],
        decoder_time_fn=_decoder_timer(AMX_DECODER, calls), decoder_agrees=_agreeing(True, asked))
    assert choice.dtype == "bf16" and choice.decoder == {"click": "fp32", "batch": "bf16"}
    assert choice.decoder_dtype("click") == "fp32" and choice.decoder_dtype("batch") == "bf16"
    assert choice.decoder_seconds == {"click": {"fp32": 0.0141, "bf16": 0.02}, "batch": {"fp32": 0.035, "bf16": 0.022}}
    assert asked == [("batch", "bf16")]   # fp32 is the reference; a slower bf16 is not checked
    assert choice.describe() == ("bf16 (measured: fp32 0.630 s, bf16 0.500 s); decoder: clicks fp32 (14.1 vs 20.0 ms), "
                                 "automatic masks bf16 (35.0 vs 22.0 ms)")


def test_decoder_keeps_fp32_when_bf16_disagrees(cache):
    asked = []
    fast_bf16 = {key: (0.01 if key[1] == "bf16" else 0.02) for key in AMX_DECODER}
    choice = precision.choose_cpu_precision("k", capable=True, time_fn=lambda name: 1.0,
                                            decoder_time_fn=_decoder_timer(fast_bf16, []),
                                            decoder_agrees=_agreeing(False, asked))
    assert choice.decoder == {"click": "fp32", "batch": "fp32"}
    assert sorted(asked) == [("batch", "bf16"), ("click", "bf16")]
    assert "clicks fp32 (20.0 vs 10.0 ms; bf16 disagreed)" in choice.describe()


def test_decoder_without_native_bf16_is_fp32_untimed(cache):
    def never(*args):
        raise AssertionError("timed although the CPU has no native bf16")

    choice = precision.choose_cpu_precision("k", capable=False, time_fn=never, decoder_time_fn=never,
                                            decoder_agrees=never)
    assert choice == PrecisionChoice("fp32", "flags") and choice.decoder_dtype("batch") == "fp32"
    assert choice.describe() == "fp32 (flags)" and not cache.exists()


def test_decoder_cache_round_trip_and_old_entries(cache):
    full = PrecisionChoice("bf16", "measured", {"fp32": 2.0, "bf16": 1.0}, {"click": "fp32", "batch": "bf16"},
                           {"click": {"fp32": 0.01, "bf16": 0.02}, "batch": {"fp32": 0.03, "bf16": 0.02}})
    precision.write_cached("new", full)
    assert precision.read_cached("new") == PrecisionChoice("bf16", "cached", full.seconds, full.decoder,
                                                           full.decoder_seconds)
    # an entry written before the decoder was chosen (and before the load was recorded): still
    # read; with no record of the load it is measured again, the decoder with it, once
    data = json.loads(cache.read_text())
    data["old"] = {"dtype": "fp32", "source": "measured", "seconds": {"fp32": 0.6, "bf16": 0.8}}
    cache.write_text(json.dumps(data))
    assert precision.read_cached("old") == PrecisionChoice("fp32", "cached", {"fp32": 0.6, "bf16": 0.8})

    def never(*args):
        raise AssertionError("timed again")

    calls = []
    choice = precision.choose_cpu_precision("old", capable=True, time_fn=_timer({"fp32": 0.6, "bf16": 0.8}, []),
                                            decoder_time_fn=_decoder_timer(AMX_DECODER, calls),
                                            decoder_agrees=_agreeing(True, []))
    assert choice.dtype == "fp32" and choice.source == "measured" and len(calls) == 8   # 2 workloads x 2 precisions x 2 rounds
    assert "no record of the machine's load" in choice.remeasured
    assert choice.decoder == {"click": "fp32", "batch": "bf16"}
    again = precision.choose_cpu_precision("old", capable=True, time_fn=never, decoder_time_fn=never,
                                           decoder_agrees=never)
    assert again == replace(choice, source="cached") and json.loads(cache.read_text())["old"]["decoder"] == {"click": "fp32", "batch": "bf16"}


def test_a_burst_of_other_work_during_one_pass_does_not_decide():
    """Each candidate is timed in A B B A order and keeps its best pass: bf16 slowed 3x by
    another process during its first pass still wins when it is faster."""
    passes = {"fp32": [0.10, 0.10], "bf16": [0.15, 0.05]}    # bf16's first pass ran beside other work
    order = []

    def time_fn(name):
        order.append(name)
        return passes[name].pop(0)

    choice = precision.fastest(("fp32", "bf16"), time_fn)
    assert order == ["fp32", "bf16", "bf16", "fp32"]
    assert choice.dtype == "bf16" and choice.seconds == {"fp32": 0.10, "bf16": 0.05}
    assert precision.fastest(("fp32", "bf16"), lambda n: {"fp32": 1.0, "bf16": 1.0}[n]).dtype == "fp32"  # tie: first


# ----------------------------------------------------------------------------- load and staleness
def test_each_measurement_records_the_load(cache, idle):
    choice = precision.choose_cpu_precision("k", capable=True, time_fn=_timer({"fp32": 1.0, "bf16": 0.5}, []))
    assert choice.conditions == precision.Conditions(load=0.1, cpus=2, cpu_share=0.95) and not choice.stale()
    assert json.loads(cache.read_text())["k"]["conditions"] == {"load": 0.1, "cpus": 2, "cpu_share": 0.95}
    assert precision.read_cached("k").conditions == choice.conditions
    assert "stale" not in choice.describe()


@pytest.mark.parametrize("load, share, why", [(3.0, 0.95, "under load 3.0 on 2 CPUs"),
                                               (0.1, 0.3, "this process got 30%")])
def test_a_choice_measured_under_load_is_measured_again(cache, idle, load, share, why):
    """Busy at measurement time (load average, or other work taking the CPUs): the choice says it
    is stale, and the next start measures again instead of keeping it for good."""
    calls = []
    idle.load_now, idle.share = load, share
    busy = precision.choose_cpu_precision("k", capable=True, time_fn=_timer({"fp32": 2.0, "bf16": 1.0}, calls))
    assert why in busy.stale() and "will be measured again" in busy.describe()
    idle.load_now, idle.share = 0.1, 0.95
    again = precision.choose_cpu_precision("k", capable=True, time_fn=_timer({"fp32": 0.5, "bf16": 1.0}, calls))
    assert again.source == "measured" and again.dtype == "fp32" and len(calls) == 8
    assert why in again.remeasured and "measured again" in again.describe() and not again.stale()
    kept = precision.choose_cpu_precision("k", capable=True, time_fn=_timer({"fp32": 0.5, "bf16": 1.0}, calls))
    assert kept.source == "cached" and len(calls) == 8     # measured idle: kept


def test_an_older_cache_entry_without_load_is_measured_again(cache):
    cache.write_text(json.dumps({"k": {"dtype": "bf16", "source": "measured", "seconds": {"fp32": 2.0, "bf16": 1.0}}}))
    choice = precision.choose_cpu_precision("k", capable=True, time_fn=_timer({"fp32": 0.5, "bf16": 1.0}, []))
    assert choice.source == "measured" and "no record of the machine's load" in choice.remeasured


def _cached_click_choice(cache, click_fp32=0.112):
    """A cached choice whose decoder probe said 112 ms per click (measured while the machine was busy)."""
    probe = {("click", "fp32"): click_fp32, ("click", "bf16"): 0.2, ("batch", "fp32"): 1.0, ("batch", "bf16"): 2.0}
    precision.choose_cpu_precision("k", capable=True, time_fn=_timer({"fp32": 0.5, "bf16": 1.0}, []),
                                   decoder_time_fn=lambda w, n: probe[w, n], decoder_agrees=lambda w, n: True)
    return precision.choose_cpu_precision("k", capable=True, time_fn=_timer({"fp32": 0.5, "bf16": 1.0}, []))


def test_click_times_seen_in_use_that_disagree_mark_the_choice_stale(cache):
    """Clicks take 24 ms in use, the cached probe said 112 ms: after a few clicks the entry is
    marked stale, and the next start measures again and says why."""
    choice = _cached_click_choice(cache)
    assert choice.source == "cached" and choice.key == "k"
    reasons = [precision.observe_click(choice, 0.024) for _ in range(precision.MIN_OBSERVATIONS)]
    assert reasons[:-1] == [""] * (precision.MIN_OBSERVATIONS - 1)
    assert "24 ms in use" in reasons[-1] and "112 ms" in reasons[-1]
    assert precision.observe_click(choice, 0.024) == ""                      # marked once
    assert "112 ms" in json.loads(cache.read_text())["k"]["stale"]
    again = precision.choose_cpu_precision("k", capable=True, time_fn=_timer({"fp32": 0.5, "bf16": 1.0}, []),
                                           decoder_time_fn=lambda w, n: 0.024, decoder_agrees=lambda w, n: True)
    assert again.source == "measured" and "24 ms in use" in again.remeasured
    assert "stale" not in json.loads(cache.read_text())["k"]


def test_click_times_that_agree_keep_the_choice(cache):
    choice = _cached_click_choice(cache, click_fp32=0.030)
    assert all(precision.observe_click(choice, 0.024) == "" for _ in range(3 * precision.MIN_OBSERVATIONS))
    assert "stale" not in json.loads(cache.read_text())["k"]
    assert precision.observe_click(PrecisionChoice("fp32", "explicit"), 5.0) == ""   # nothing cached: nothing to check
