"""core.evaluate.refer and refer_data: metrics, readers, synthetic COCO sentences, evaluation rows and the CLI."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from core.io.masks import mask_to_rle
from core.refer import parse
from core.io.coco import annotation_mask
from core.evaluate.refer import (
    PAPER_ROWS,
    ReferReport,
    Row,
    ablation_rows,
    evaluate,
    iou_metrics,
    markdown_table,
    paper_rows,
    visual_weight_for,
    write_report,
)
from core.evaluate.refer_data import (
    ReferDataset,
    ReferSample,
    load_plain_pickle,
    read_candidate_masks,
    read_jsonl,
    read_refcoco,
    synthetic_from_coco,
    write_jsonl,
)

# ------------------------------------------------------------------------------- metrics


def test_iou_metrics_match_hand_computed_values():
    m = iou_metrics([1, 0, 3], [2, 4, 3])
    assert m.oIoU == pytest.approx(100 * 4 / 9)
    assert m.mIoU == pytest.approx(100 * (0.5 + 0.0 + 1.0) / 3)
    assert m.pr_at_50 == pytest.approx(100 * 2 / 3)
    assert m.n == 3 and m.to_dict()["pr@0.5"] == m.pr_at_50
    # oIoU weighs big objects: one large hit and one small miss
    m = iou_metrics([900, 0], [1000, 100])
    assert m.oIoU == pytest.approx(100 * 900 / 1100) and m.mIoU == pytest.approx(45.0)
    empty = iou_metrics([], [])
    assert empty.n == 0 and np.isnan(empty.oIoU) and np.isnan(empty.mIoU)


@pytest.mark.parametrize("i,u", [([2], [1]), ([-1], [1]), ([1, 2], [3]), ([[1]], [[1]])])
def test_iou_metrics_reject_inconsistent_counts(i, u):
    with pytest.raises(ValueError):
        iou_metrics(i, u)


def test_rows_and_their_validation():
    rows = ablation_rows()
    names = [r.name for r in rows]
    assert len(rows) == 14 and len(set(names)) == 14
    assert "sam/oracle/orientation" not in names and "gt/oracle/orientation" in names
    assert "sam/global_local-mixed/orientation" in names
    both = ablation_rows(["gt"], ["oracle", "mixed"], ["global_local", "score_mix"])
    assert [r.name for r in both] == ["gt/oracle/no-orientation", "gt/oracle/orientation",
                                      "gt/global_local-mixed/no-orientation", "gt/global_local-mixed/orientation",
                                      "gt/score_mix-mixed/no-orientation", "gt/score_mix-mixed/orientation"]
    with pytest.raises(ValueError, match="oracle"):
        Row("sam", "oracle", True)
    with pytest.raises(ValueError):
        Row("gt", "best", True)
    with pytest.raises(ValueError, match="method"):
        Row("gt", "mixed", True, "clipseg")
    with pytest.raises(ValueError, match="no valid"):
        ablation_rows(["sam"], ["oracle"])


def test_the_papers_rows_by_name():
    rows = paper_rows()
    assert [r.name for r in rows] == ["global-local", "global-local+sam", "global-local+sam+orientation"]
    assert [(r.candidates, r.orientation, r.method, r.scoring) for r in rows] == [
        ("gt", False, "global_local", "mixed"), ("sam", False, "global_local", "mixed"),
        ("sam", True, "global_local", "mixed")]
    assert [(r.paper.oIoU, r.paper.mIoU) for r in rows] == [(24.83, 24.58), (26.27, 31.84), (28.73, 40.38)]
    assert all(r.paper.dataset == "RefCOCOg" for r in rows)
    assert paper_rows("file")[0].candidates == "file"
    assert [r.name for r in paper_rows(names=["global-local+sam"])] == ["global-local+sam"]
    with pytest.raises(ValueError, match="unknown row"):
        paper_rows(names=["global-local+clipseg"])
    assert set(PAPER_ROWS) == {r.name for r in rows}
    assert visual_weight_for("refcocog (umd)") == 0.85 and visual_weight_for("refcoco+ (unc)") == 0.95
    assert visual_weight_for("refcoco (unc)") == 0.95 and visual_weight_for("coco128-synthetic") is None


def test_annotation_mask_from_box_and_polygon():
    m = annotation_mask({"bbox": [1.5, 2, 3, 2]}, 10, 10)
    assert m.sum() == 4 * 2 and m[2:4, 1:5].all()           # x 1.5..4.5 -> columns 1..4
    poly = {"segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]], "bbox": [0, 0, 4, 4]}
    assert annotation_mask(poly, 10, 10)[:4, :4].all()
    with pytest.raises(ValueError, match="segmentation"):
        annotation_mask({}, 10, 10)


# ------------------------------------------------------------------------------- a tiny hand-made dataset

def _scene(tmp_path):
    """A 40x100 image with three 10x10 'dog' squares and one 'cat'; JSON-lines with GT candidates."""
    image = np.zeros((40, 100, 3), np.uint8)
    boxes = {"dog_a": [10, 10, 10, 10], "dog_b": [40, 10, 10, 10], "dog_c": [70, 10, 10, 10],
             "cat": [5, 25, 10, 10]}
    masks = {}
    for name, (x, y, w, h) in boxes.items():
        m = np.zeros((40, 100), bool)
        m[y:y + h, x:x + w] = True
        masks[name] = m
        image[m] = 200
    Image.fromarray(image).save(tmp_path / "scene.png")
    order = ["dog_b", "dog_a", "cat", "dog_c"]  # annotation order: not left to right
    cands = [{"mask": mask_to_rle(masks[k])} for k in order]
    cats = ["dog", "dog", "cat", "dog"]
    lines = [
        {"image": "scene.png", "sentence": "the dog on the left", "mask": mask_to_rle(masks["dog_a"]),
         "category": "dog", "candidates": cands, "candidate_categories": cats, "target_index": 1},
        {"image": "scene.png", "sentence": "the rightmost dog", "box": [70, 10, 10, 10],
         "category": "dog", "candidates": cands, "candidate_categories": cats, "target_index": 3},
        {"image": "scene.png", "sentence": "the cat", "mask": mask_to_rle(masks["cat"]),
         "category": "cat", "candidates": cands, "candidate_categories": cats, "target_index": 2},
    ]
    path = tmp_path / "refs.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path, masks


def test_oracle_rows_match_hand_computed_ious(tmp_path):
    path, masks = _scene(tmp_path)
    data = read_jsonl(path)
    assert len(data) == 3 and data.name == "refs" and data.split == "all"
    report = evaluate(data, ablation_rows(["gt"], ["oracle"]))
    assert isinstance(report, ReferReport)
    off, on = report.results
    assert on.all.oIoU == 100.0 and on.all.mIoU == 100.0 and on.target_chosen == 100.0
    # without orientation the oracle takes the first dog candidate (dog_b) for both dog sentences:
    # each IoU = 0 (disjoint squares of 100 px, union 200); the cat sentence is right.
    assert off.all.oIoU == pytest.approx(100 * 100 / (200 + 200 + 100))
    assert off.all.mIoU == pytest.approx(100 / 3)
    assert off.with_direction.mIoU == 0.0 and off.with_direction.n == 2
    assert off.without_direction.mIoU == 100.0
    assert report.n_with_direction == 2 and report.n_images == 1
    assert report.per_sample.intersection[0] == (0, 0, 100)
    assert report.result("gt/oracle/orientation") is on
    written = write_report(report, tmp_path / "out")
    saved = json.loads(written[0].read_text())
    assert saved["dataset"] == "refs" and saved["results"][1]["all"]["mIoU"] == 100.0
    assert saved == json.loads(report.to_json())
    table = markdown_table(report)
    assert "split all" in table and "RefCOCOg val (UMD)" in table


def test_clip_rows_run_on_the_hand_made_dataset(tmp_path, embedder):
    path, masks = _scene(tmp_path)
    rows = ablation_rows(["gt"], ["local", "global", "mixed"], ["global_local", "score_mix"])
    report = evaluate(read_jsonl(path), rows, embedder=embedder)
    assert len(report.results) == 12
    for res in report.results:
        assert 0.0 <= res.all.mIoU <= 100.0 and res.all.n == 3
    # the evaluation's rows are the app's ground() with the same settings
    from core.refer import GroundingSettings, ground

    image = np.asarray(Image.open(tmp_path / "scene.png"))
    cands = np.stack([masks[k] for k in ["dog_b", "dog_a", "cat", "dog_c"]])
    for method in ("global_local", "score_mix"):
        g = ground(None, embedder, image, "the cat", candidate_masks=cands,
                   settings=GroundingSettings(method=method, orientation=False))
        res = report.result(f"gt/{method}-mixed/no-orientation")
        i, u = report.per_sample.intersection[rows.index(res.row)][2], report.per_sample.union[rows.index(res.row)][2]
        assert (i, u) == (int((g.mask & masks["cat"]).sum()), int((g.mask | masks["cat"]).sum()))
    # the evaluation batches the texts of an image; same vectors as one sentence at a time
    from core.refer import text_features

    expressions = [parse("the dog on the left"), parse("a cat")]
    for e, feats in zip(expressions, text_features(embedder, expressions)):
        [one] = text_features(embedder, [e])
        for name in ("sentence", "noun_phrase", "noun_prompt"):
            np.testing.assert_allclose(getattr(feats, name), getattr(one, name), atol=1e-4)


def test_paper_rows_with_a_mask_file(tmp_path, embedder):
    path, masks = _scene(tmp_path)
    # another mask source: two of the four objects, keyed by the image's file name
    lines = [{"image": "some/where/scene.png", "masks": [mask_to_rle(masks["dog_a"]), mask_to_rle(masks["cat"])]}]
    (tmp_path / "masks.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    mask_file = read_candidate_masks(tmp_path / "masks.jsonl")
    assert list(mask_file) == ["scene.png"] and len(mask_file["scene.png"]) == 2
    rows = paper_rows("file", names=["global-local"])
    report = evaluate(read_jsonl(path), rows, embedder=embedder, mask_file=mask_file)
    (res,) = report.results
    assert res.name == "global-local" and res.row.candidates == "file" and res.target_chosen is None
    assert report.candidates_per_image["file"] == 2.0
    assert "| global-local | file | global_local | mixed | off |" in markdown_table(report)
    assert "24.83 / 24.58" in markdown_table(report)
    with pytest.raises(ValueError, match="candidate-masks"):
        evaluate(read_jsonl(path), rows, embedder=embedder)
    (tmp_path / "bad.jsonl").write_text('{"image": "x.png"}\n')
    with pytest.raises(ValueError, match="'masks'"):
        read_candidate_masks(tmp_path / "bad.jsonl")


def test_evaluate_refuses_what_it_cannot_do(tmp_path):
    path, _ = _scene(tmp_path)
    data = read_jsonl(path)
    with pytest.raises(ValueError, match="embedder"):
        evaluate(data, ablation_rows(["gt"], ["mixed"]))
    with pytest.raises(ValueError, match="segmenter"):
        evaluate(data, [Row("sam", "local", True)], embedder=object())
    no_cands = ReferDataset("x", "val", [ReferSample(image=str(tmp_path / "scene.png"), sentence="dog",
                                                     target={"bbox": [0, 0, 5, 5]})])
    with pytest.raises(ValueError, match="ground-truth candidates"):
        evaluate(no_cands, ablation_rows(["gt"], ["oracle"]))


@pytest.mark.parametrize("line,match", [
    ("not json", "not JSON"),
    ('{"image": "a.png"}', "'image' and 'sentence'"),
    ('{"image": "a.png", "sentence": "dog"}', "needs 'mask'"),
    ('{"image": "a.png", "sentence": "dog", "box": [0, 0, 0, 5]}', "w, h > 0"),
    ('{"image": "a.png", "sentence": "dog", "mask": {"counts": "x"}}', "'size' and 'counts'"),
    ('{"image": "a.png", "sentence": "dog", "box": [0, 0, 5, 5], "candidates": [{"box": [0, 0, 5, 5]}], '
     '"target_index": 3}', "outside"),
])
def test_read_jsonl_reports_the_bad_line(tmp_path, line, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=match):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "missing.jsonl")


def test_read_refcoco_layout(tmp_path):
    folder = tmp_path / "refcocog"
    folder.mkdir()
    instances = {
        "images": [{"id": 7, "file_name": "COCO_train2014_000000000007.jpg", "height": 40, "width": 100}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 17, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 18, "bbox": [10, 10, 10, 10], "area": 100, "iscrowd": 0,
             "segmentation": [[10, 10, 20, 10, 20, 20, 10, 20]]},
            {"id": 2, "image_id": 7, "category_id": 17, "bbox": [40, 10, 10, 10], "area": 100, "iscrowd": 0,
             "segmentation": [[40, 10, 50, 10, 50, 20, 40, 20]]},
            {"id": 3, "image_id": 7, "category_id": 17, "bbox": [0, 0, 100, 40], "area": 4000, "iscrowd": 1,
             "segmentation": {"size": [40, 100], "counts": [0, 4000]}},
        ],
    }
    refs = [
        {"ref_id": 0, "ann_id": 2, "image_id": 7, "category_id": 17, "split": "val",
         "file_name": "COCO_train2014_000000000007_2.jpg",
         "sentences": [{"raw": "The cat on the right.", "sent": "the cat on the right", "sent_id": 0},
                       {"raw": "a grey cat", "sent": "a grey cat", "sent_id": 1}]},
        {"ref_id": 1, "ann_id": 1, "image_id": 7, "category_id": 18, "split": "train",
         "sentences": [{"sent": "left dog", "sent_id": 2}]},
    ]
    (folder / "instances.json").write_text(json.dumps(instances))
    with (folder / "refs(umd).p").open("wb") as f:
        pickle.dump(refs, f, protocol=2)
    data = read_refcoco(folder / "refs(umd).p", folder / "instances.json", tmp_path / "train2014", split="val")
    assert data.name == "refcocog (umd)" and data.split == "val" and len(data) == 2
    s = data.samples[0]
    assert s.sentence == "The cat on the right." and s.category == "cat"
    assert s.image.endswith("train2014/COCO_train2014_000000000007.jpg")
    assert len(s.candidates) == 2 and s.candidate_categories == ["dog", "cat"] and s.target_index == 1
    assert annotation_mask(s.target, 40, 100).sum() == 100
    assert len(read_refcoco(folder / "refs(umd).p", folder / "instances.json", tmp_path, split=None)) == 3
    with pytest.raises(ValueError, match="testA"):
        read_refcoco(folder / "refs(umd).p", folder / "instances.json", tmp_path, split="testA")


class _Exploit:
    """Unpickling this would call os.system: a crafted refs file."""

    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_refs_pickles_are_read_without_running_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = [{"ref_id": 0, "sentences": [{"sent": "a dog"}], "tags": {1, 2}, "box": (1.5, 2), "n": None}]
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        (tmp_path / "ok.p").write_bytes(pickle.dumps(plain, protocol=protocol))
        assert load_plain_pickle(tmp_path / "ok.p") == plain
    crafted = tmp_path / "refs(umd).p"
    crafted.write_bytes(pickle.dumps([{"ref_id": 0, "sentences": _Exploit()}], protocol=2))
    (tmp_path / "instances.json").write_text('{"images": [], "annotations": [], "categories": []}')
    with pytest.raises(ValueError, match="os.system|posix.system"):
        read_refcoco(crafted, tmp_path / "instances.json", tmp_path)
    assert not (tmp_path / "pwned").exists()
    from collections import OrderedDict

    (tmp_path / "class.p").write_bytes(pickle.dumps([OrderedDict(a=1)]))
    with pytest.raises(ValueError, match="collections.OrderedDict"):
        load_plain_pickle(tmp_path / "class.p")
    (tmp_path / "junk.p").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="not a readable pickle"):
        load_plain_pickle(tmp_path / "junk.p")
    (tmp_path / "dict.p").write_bytes(pickle.dumps({"refs": []}))
    with pytest.raises(ValueError, match="not a RefCOCO refs file"):
        read_refcoco(tmp_path / "dict.p", tmp_path / "instances.json", tmp_path)


# ------------------------------------------------------------------------------- synthetic data on COCO128

EXPECTED_DIRECTION = {"left": "left", "right": "right", "top": "top", "bottom": "bottom",
                      "second-left": "left", "second-right": "right", "center": "center", "none": None}


@pytest.fixture(scope="module")
def synthetic(coco_dir):
    return synthetic_from_coco(coco_dir, limit_images=40)


def test_synthetic_sentences_parse_to_their_rule(synthetic):
    assert len(synthetic) >= 20 and synthetic.name == "coco128-synthetic"
    kinds = set()
    for s in synthetic.samples:
        kind = s.ref_id.split("-", 2)[2]  # "{image_id}-{ann_id}-{rule}"
        kinds.add(kind)
        e = parse(s.sentence)
        assert e.direction == EXPECTED_DIRECTION[kind], (s.sentence, e)
        assert e.noun == s.category.split()[-1] or s.category in s.sentence
        assert e.ordinal == (2 if kind.startswith("second") else 1)
        assert s.candidates[s.target_index] is s.target
        same = [c for c in s.candidate_categories if c == s.category]
        assert (len(same) == 1) == (kind == "none") and len(same) <= 3
    assert {"left", "right", "none"} <= kinds


def test_oracle_direction_rule_is_exact_on_synthetic_data(synthetic):
    report = evaluate(synthetic, ablation_rows(["gt"], ["oracle"]))
    off, on = report.results
    assert on.all.mIoU == 100.0 and on.all.oIoU == 100.0 and on.target_chosen == 100.0
    assert off.with_direction.mIoU < 100.0
    assert report.n_with_direction > 0 and report.n_with_direction < report.n_samples


def test_synthetic_round_trips_through_jsonl(synthetic, tmp_path):
    small = ReferDataset(synthetic.name, synthetic.split, synthetic.samples[:4])
    path = write_jsonl(small, tmp_path / "syn.jsonl")
    back = read_jsonl(path)
    assert [s.sentence for s in back.samples] == [s.sentence for s in small.samples]
    for a, b in zip(small.samples, back.samples):
        with Image.open(a.image) as im:
            h, w = im.height, im.width
        np.testing.assert_array_equal(annotation_mask(a.target, h, w), annotation_mask(b.target, h, w))
        assert b.target_index == a.target_index and len(b.candidates) == len(a.candidates)


# ------------------------------------------------------------------------------- command line

def test_evaluate_refer_command_oracle_only(coco_dir, tmp_path, capsys):
    from core.cli.main import main

    out = tmp_path / "run"
    rc = main(["evaluate", "refer", "--synthetic-coco", str(coco_dir), "--limit-images", "10",
               "--candidates", "gt", "--scorings", "oracle", "--out", str(out), "--quiet",
               "--write-jsonl", str(tmp_path / "syn.jsonl")])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dataset"] == "coco128-synthetic" and summary["models"] is None
    assert summary["results"][1]["row"] == "gt/oracle/orientation" and summary["results"][1]["mIoU"] == 100.0
    assert summary["results"][1]["paper"] is None
    assert (out / "report.json").is_file() and (out / "report.md").is_file()
    assert len(read_jsonl(tmp_path / "syn.jsonl")) == summary["n_samples"]


def test_evaluate_refer_command_rejects_missing_data(capsys):
    from core.cli.main import main

    assert main(["evaluate", "refer", "--out", "/tmp/never"]) == 2
    assert "exactly one of --refs" in capsys.readouterr().err


def test_evaluate_refer_command_paper_rows_on_gt_candidates(coco_dir, tmp_path, capsys, embedder):
    """`--rows global-local` (the paper's first row) on the annotated masks, untrained CLIP."""
    from core.cli.main import main

    out = tmp_path / "run"
    rc = main(["evaluate", "refer", "--synthetic-coco", str(coco_dir), "--limit-images", "3", "--limit", "4",
               "--rows", "global-local", "--untrained", "--device", "cpu", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out)
    assert [r["row"] for r in summary["results"]] == ["global-local"]
    assert summary["results"][0]["paper"] == [24.83, 24.58]
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["visual_weight"] == 0.85 and report["settings"]["masking_block"] == 9
    assert "| global-local | gt | global_local | mixed | off |" in (out / "report.md").read_text()
    assert main(["evaluate", "refer", "--synthetic-coco", str(coco_dir), "--rows", "global-local+x",
                 "--untrained", "--out", str(out)]) == 2
    assert "unknown row" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_refer_command_untrained_end_to_end(coco_dir, tmp_path, capsys, embedder, tiny_segmenter):
    """Every row with untrained CLIP and the tiny untrained SAM on a few COCO128 sentences."""
    from core.cli.main import main

    out = tmp_path / "run"
    common = ["evaluate", "refer", "--synthetic-coco", str(coco_dir), "--limit-images", "4", "--limit", "5",
              "--untrained", "--sam", "vit_tiny", "--device", "cpu", "--points-per-side", "2",
              "--pred-iou-thresh", "0", "--stability-thresh", "0", "--quiet"]
    rc = main(common + ["--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out)
    assert [r["row"] for r in summary["results"]] == list(PAPER_ROWS) and "UNTRAINED" in summary["models"]
    report = json.loads((out / "report.json").read_text())
    assert report["untrained"] is True and report["n_samples"] == 5
    assert report["candidates_per_image"]["sam"] >= 0
    assert "| global-local+sam+orientation | sam | global_local | mixed | on |" in (out / "report.md").read_text()
    assert "28.73 / 40.38" in (out / "report.md").read_text()
    assert "UNTRAINED" in captured.err
    rc = main(common + ["--rows", "ablation", "--methods", "global_local,score_mix", "--out", str(tmp_path / "grid")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert len(json.loads(captured.out)["results"]) == 2 + 2 * 3 * 2 * 2   # oracle + sources x scorings x methods
