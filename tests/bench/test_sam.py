"""core.bench.sam on the small untrained SAM (the real models take minutes)."""
import pytest

from core.bench import sam as bench_sam
from core.bench.sam import SamSetup

TINY = SamSetup("vit_tiny", "cpu", True)


def test_bench_sam_reports_fast_vs_stock_for_a_small_model(coco_dir):
    enc = bench_sam.bench_encoder(TINY, repeats=1, quick=True)
    assert enc["encoder_stock_fp32_s"] > 0 and enc["encoder_fast_s"] > 0
    assert enc["encoder_ratio"] == pytest.approx(enc["encoder_fast_s"] / enc["encoder_stock_fp32_s"])
    click = bench_sam.bench_click(TINY, repeats=3, quick=True)
    assert click["click_fast_ms"] > 0 and click["click_stock_ms"] > 0 and click["set_image_cached_ms"] < 50
    eq = bench_sam.bench_equivalence(TINY, quick=True, prompts=4)
    assert eq["equivalence_masks"] == 12
    assert eq["encoder_cosine_min"] >= 0.999 and eq["mask_iou_mean"] >= 0.99
    assert eq["mask_iou_fp32_min"] >= 0.999 and 0 <= eq["mask_iou_below_0_99"] <= 12
    assert enc["encoder_fast_fp32_s"] > 0 and enc["encoder_window_attention_fp32_s"] > 0
    assert eq["mask_iou_window_fp32_min"] >= 0.9
    assert eq["reference_logit_std"] > 0


@pytest.mark.slow
def test_bench_encoder_runs_on_vit_t_without_the_windowed_variant():
    """TinyViT has no windowed ViT blocks: that ablation is skipped, the rest is measured."""
    enc = bench_sam.bench_encoder(SamSetup("vit_t", "cpu", True), repeats=1, quick=True)
    assert enc["encoder_fast_s"] > 0 and enc["encoder_stock_fp32_s"] > 0
    assert enc["encoder_window_attention_fp32_s"] is None
