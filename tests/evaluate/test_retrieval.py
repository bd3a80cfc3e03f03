"""core.evaluate.retrieval: selection, leave-one-out ranking, reporting, and the whole command on COCO128."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.io.coco import index_coco
from core.evaluate import retrieval as ev


def _coco(spec):
    """A tiny COCO dict; spec: {image_id: [(category, area), ...]}."""
    cats = sorted({c for anns in spec.values() for c, _ in anns})
    cat_id = {c: i + 1 for i, c in enumerate(cats)}
    images, anns = [], []
    for image_id, objs in spec.items():
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": 100, "width": 100})
        for cat, area in objs:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat_id[cat],
                         "bbox": [1, 2, 10, 20], "area": area, "iscrowd": 0})
    anns.append({"id": 999, "image_id": 1, "category_id": cat_id["dog"], "bbox": [0, 0, 5, 5],
                 "area": 25, "iscrowd": 1})
    return {"images": images, "annotations": anns, "categories": [{"id": i, "name": c} for c, i in cat_id.items()]}


COCO = index_coco(_coco({
    1: [("dog", 500), ("person", 900), ("person", 100)],
    2: [("dog", 400)],
    3: [("person", 300), ("person", 200), ("person", 50)],
    4: [("cat", 700)],
    5: [("person", 80)],
}))


def test_select_objects_filters_caps_and_drops_singletons():
    objs = ev.select_objects(COCO, ev.SelectionSettings(categories=("dog", "person", "cat"), limit_images=None,
                                                        max_per_image=2, min_per_category=2))
    cats = [o.category for o in objs]
    assert "cat" not in cats  # only one cat: could never be hit, dropped
    assert 999 not in [o.ann_id for o in objs]  # crowd annotations are skipped
    per_image = {}
    for o in objs:
        per_image.setdefault(o.image_id, []).append(o)
    assert max(len(v) for v in per_image.values()) <= 2
    assert sorted(o.area for o in per_image[3]) == [200, 300]  # largest kept
    assert cats.count("dog") == 2
    x0, y0, x1, y1 = objs[0].box
    assert (x0, y0, x1, y1) == (1.0, 2.0, 11.0, 22.0)  # COCO xywh -> XYXY


def test_select_objects_round_robin_covers_rare_categories_and_is_seeded():
    settings = ev.SelectionSettings(categories=("dog", "person"), limit_images=2, max_per_image=1,
                                    min_per_category=1, seed=3)
    objs = ev.select_objects(COCO, settings)
    assert {o.category for o in objs} == {"dog", "person"}  # dog first (rarer), then person
    assert ev.select_objects(COCO, settings) == objs
    assert ev.select_objects(COCO, ev.SelectionSettings(categories=None, limit_images=None, max_per_image=None,
                                                        min_area=150, min_per_category=1))
    with pytest.raises(ValueError, match="unknown categories"):
        ev.select_objects(COCO, ev.SelectionSettings(categories=("unicorn",)))


def test_paper_recipe_on_coco128(coco_json):
    objs = ev.select_objects(index_coco(coco_json), ev.SelectionSettings())
    assert len({o.image_id for o in objs}) == ev.PAPER_IMAGES
    counts = {c: sum(o.category == c for o in objs) for c in ev.PAPER_CATEGORIES}
    assert all(n >= 2 for n in counts.values()), counts  # all five categories, >= 2 objects each
    assert 40 <= len(objs) <= 60  # the paper had 47 objects in 30 images


def test_leave_one_out_never_returns_the_query_and_metrics_agree():
    rng = np.random.default_rng(0)
    labels = np.array(["a"] * 4 + ["b"] * 3 + ["c"])
    centers = {"a": np.eye(16)[0], "b": np.eye(16)[1], "c": np.eye(16)[2]}
    emb = np.stack([centers[lab] + 0.05 * rng.standard_normal(16) for lab in labels]).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rel_cos, n_rel = ev.leave_one_out_relevance(emb, labels, "cosine")
    rel_l2, _ = ev.leave_one_out_relevance(emb, labels, "l2")
    assert rel_cos.shape == (8, 7)
    np.testing.assert_array_equal(n_rel, [3, 3, 3, 3, 2, 2, 2, 0])
    np.testing.assert_array_equal(rel_cos, rel_l2)  # unit vectors: d^2 = 2 - 2 cos
    res = ev.score_view_metric(emb, labels, "mask", "cosine", k=3)
    # well separated clusters: every relevant object ranks first
    assert res.overall.precision_at_k == pytest.approx((4 * 3 / 3 + 3 * 2 / 3) / 7)
    assert res.overall.recall_at_k == pytest.approx(1.0)
    assert res.overall.mean_ap == pytest.approx(1.0)
    assert res.overall.defined_queries == 7  # the lone "c" is a distractor, not a query
    assert res.per_category["c"].defined_queries == 0
    assert res.pr_precision[-1] == pytest.approx(1.0)


def test_leave_one_out_shuffled_labels_score_below_perfect():
    rng = np.random.default_rng(1)
    labels = np.array(["a", "b"] * 10)
    emb = rng.standard_normal((20, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    res = ev.score_view_metric(emb, labels, "crop", "l2", k=5)
    assert 0 < res.overall.mean_ap < 0.9
    best = ev.perfect_scores(labels, 5)
    # 9 relevant per query: P@5 = 5/5, R@5 = 5/9
    assert best["precision_at_k"] == pytest.approx(1.0) and best["recall_at_k"] == pytest.approx(5 / 9)
    assert best["mean_relevant_per_query"] == pytest.approx(9.0)
    assert ev.perfect_scores(["a", "a", "a", "b"], 5)["recall_at_k"] == pytest.approx(1.0)
    chance = ev.chance_scores(labels, 5)
    assert chance["precision_at_k"] == pytest.approx(9 / 19)
    assert chance["recall_at_k"] == pytest.approx(5 / 19)
    with pytest.raises(ValueError, match="at least 2"):
        ev.leave_one_out_relevance(emb[:1], labels[:1], "cosine")


def _check_outputs(out, views, metrics, untrained=True):
    report = json.loads((out / "report.json").read_text())
    assert report["models"]["untrained"] is untrained
    assert [(r["view"], r["metric"]) for r in report["results"]] == [(v, m) for v in views for m in metrics]
    for row in report["results"]:
        for key in ("precision_at_k", "recall_at_k", "mAP"):
            assert 0.0 <= row[key] <= 1.0
        assert set(row["per_category"]) == set(report["selection"]["per_category"])
    md = (out / "report.md").read_text()
    assert "Table 1" in md and "Table 2" in md and "(perfect ranking)" in md and "Per category" in md and "UNTRAINED" in md
    for name in ("bars.png", "pr_curves.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    return report


@pytest.mark.slow
def test_evaluate_command_on_coco128_untrained(coco_dir, tmp_path, capsys):
    from core.cli.main import main

    base = ["evaluate", "retrieval", "--coco", str(coco_dir / "instances.json"), "--untrained",
            "--sam", "vit_tiny", "--limit-images", "5", "--quiet", "--device", "cpu"]
    out = tmp_path / "sam"
    assert main(base + ["--views", "mask,crop", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["models"]["sam"] == "vit_tiny" and summary["n_objects"] >= 4
    report = _check_outputs(out, ["mask", "crop"], ["cosine", "l2"])
    assert 0.0 <= report["segmentation"]["mean_iou"] <= 1.0
    assert report["settings"]["selection"]["limit_images"] == 5

    oracle = tmp_path / "oracle"
    assert main(base + ["--views", "crop,dim", "--metrics", "cosine", "--k", "3", "--oracle-masks",
                        "--out", str(oracle)]) == 0
    report = _check_outputs(oracle, ["crop", "dim"], ["cosine"])
    assert report["models"]["sam"] is None and report["segmentation"]["mean_iou"] is None
    assert report["results"][0]["k"] == 3


def test_evaluate_command_bad_input(coco_dir, tmp_path, capsys):
    from core.cli.main import main

    base = ["evaluate", "retrieval", "--coco", str(coco_dir / "instances.json"), "--untrained",
            "--sam", "vit_tiny", "--out", str(tmp_path)]
    assert main(base + ["--views", "sketch"]) == 2
    assert "unknown view" in capsys.readouterr().err
    assert main(base + ["--categories", "unicorn"]) == 2
    assert "unknown categories" in capsys.readouterr().err
    assert main(base + ["--metrics", "manhattan"]) == 2
    assert main(["evaluate", "retrieval", "--coco", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
