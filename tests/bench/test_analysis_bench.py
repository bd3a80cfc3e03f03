"""The analysis comparison tool: exclusive stage times, agreement figures, report (no models)."""
import time

import numpy as np

from core.bench import analysis
from core.bench.analysis_worker import StageTimer


def test_stage_times_are_exclusive_of_nested_stages():
    timer = StageTimer()
    inner = timer.wrap(lambda: time.sleep(0.05), "inner")
    outer = timer.wrap(lambda: (inner(), time.sleep(0.02)), "outer")
    outer()
    assert 0.045 <= timer.totals["inner"] < 0.2
    assert 0.015 <= timer.totals["outer"] < 0.045


def _side(masks, local):
    return {"masks": masks, "local": local, "global_": local * 2}


def test_agreement_counts_areas_and_cosines():
    masks = np.zeros((2, 10, 10), bool)
    masks[0, :5], masks[1, :, :2] = True, True
    other = masks.copy()
    other[0, 5, 0] = True                                    # 51 vs 50 pixels: 2 %
    feats = np.eye(2, 4, dtype=np.float32)
    bent = feats + np.array([[0, 0.1, 0, 0], [0, 0, 0, 0]], np.float32)
    agree = analysis.agreement(_side(other, bent), _side(masks, feats))
    assert agree["candidates"] == agree["baseline_candidates"] == 2
    assert abs(agree["max_area_diff"] - 0.02) < 1e-9 and not agree["masks_identical"]
    assert 0.99 < agree["min_local_cosine"] < 0.999
    fewer = analysis.agreement(_side(masks[:1], feats[:1]), _side(masks, feats))
    assert "max_area_diff" not in fewer and fewer["candidates"] == 1


def test_report_has_both_sides_ratio_and_peaks():
    runs = [{"total_s": 2.0, "stages_s": {"SAM decoder batches": 1.5, "other": 0.5}}]
    base = [{"total_s": 4.0, "stages_s": {"SAM decoder batches": 3.0, "other": 1.0}}]
    text = analysis.format_report(runs, base, {"candidates": 1}, 900.0, 1000.0, "1.0")
    assert "ratio 0.50" in text and "baseline 1000 MB, this 900 MB" in text
    assert "SAM decoder batches" in text and "AVX" in text
