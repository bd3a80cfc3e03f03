"""Referring segmentation evaluation: oIoU / mIoU per ablation row, overall and with a direction word.

Run it as `python -m core evaluate refer (--refs 'refs(umd).p' --instances instances.json --images DIR |
--jsonl FILE | --synthetic-coco DIR) [--split val] --out DIR ...` (flags in core/cli/evaluate.py;
data formats in core/evaluate/refer_data.py).

Rows (the source paper's ablation): candidates ``gt`` (the annotated objects of the image) or
``sam`` (SAM automatic masks) x scoring ``oracle`` (gt only: the candidates of the target's
category, all scored equal, so only the direction rule decides), ``local``, ``global``,
``mixed`` x orientation off / on. Each row runs the app's own grounding pipeline
(:func:`core.refer.image_candidates` once per image, :func:`core.refer.choose_for_expression`
per sentence and row).

Metrics, per row: oIoU = sum_i |P_i & G_i| / sum_i |P_i | G_i| (overall IoU, dominated by large
objects) and mIoU = mean_i |P_i & G_i| / |P_i | G_i|, over all samples and over the samples
whose sentence has a direction word (``core.refer.parse(...).direction`` is not None).
Outputs: report.json and report.md.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.coco import annotation_mask
from core.evaluate.refer_data import ReferDataset, ReferSample
from core.images import load_image
from core.masks import intersection_and_union
from core.refer import (
    Candidates,
    GroundingSettings,
    NoCandidatesError,
    choose_for_expression,
    image_candidates,
    parse,
    text_features,
)

CANDIDATE_SOURCES = ("gt", "sam")
ROW_SCORINGS = ("oracle", "local", "global", "mixed")

#: Published numbers, with the dataset and split each is on.
PUBLISHED = [
    {"method": "Global-Local CLIP (source paper's baseline)", "dataset": "RefCOCO", "split": "val (UNC)",
     "oIoU": 24.83, "mIoU": None},
    {"method": "Global-Local CLIP", "dataset": "RefCOCOg", "split": "val (UMD)", "oIoU": 31.08, "mIoU": 33.70},
]


# ----------------------------------------------------------------------------- metrics


def iou_metrics(intersections, unions) -> dict:
    """oIoU, mIoU and Pr@0.5 (percent) of per-sample pixel counts.

    intersections, unions: (N,) |P & G| and |P | G|. oIoU = 100 * sum(I) / sum(U);
    mIoU = 100 * mean(I / U); pr@0.5 = 100 * fraction of samples with I / U >= 0.5
    (a sample with U = 0 has IoU 1). NaN when N = 0.
    """
    i = np.asarray(intersections, dtype=np.float64)
    u = np.asarray(unions, dtype=np.float64)
    if i.shape != u.shape or i.ndim != 1:
        raise ValueError(f"intersections and unions must be equal-length 1-D arrays, got {i.shape} and {u.shape}")
    if np.any(i > u) or np.any(i < 0):
        raise ValueError("each intersection must be between 0 and its union")
    n = len(i)
    if n == 0:
        return {"oIoU": float("nan"), "mIoU": float("nan"), "pr@0.5": float("nan"), "n": 0}
    per = np.where(u > 0, i / np.where(u > 0, u, 1), 1.0)
    total_u = u.sum()
    return {"oIoU": float(100 * i.sum() / total_u) if total_u > 0 else 100.0,
            "mIoU": float(100 * per.mean()), "pr@0.5": float(100 * (per >= 0.5).mean()), "n": n}


# ----------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Row:
    """One ablation row: candidate source x scoring x orientation."""

    candidates: str
    scoring: str
    orientation: bool

    def __post_init__(self) -> None:
        if self.candidates not in CANDIDATE_SOURCES:
            raise ValueError(f"candidates must be one of {CANDIDATE_SOURCES}, got {self.candidates!r}")
        if self.scoring not in ROW_SCORINGS:
            raise ValueError(f"scoring must be one of {ROW_SCORINGS}, got {self.scoring!r}")
        if self.scoring == "oracle" and self.candidates != "gt":
            raise ValueError("the oracle scorer needs ground-truth candidates (candidates='gt')")

    @property
    def name(self) -> str:
        return f"{self.candidates}/{self.scoring}/{'orientation' if self.orientation else 'no-orientation'}"


def ablation_rows(candidates=CANDIDATE_SOURCES, scorings=ROW_SCORINGS) -> list[Row]:
    """Every valid row for these sources and scorings, orientation off then on."""
    rows = []
    for source in candidates:
        for scoring in scorings:
            if scoring == "oracle" and source != "gt":
                continue
            rows.extend(Row(source, scoring, orientation) for orientation in (False, True))
    if not rows:
        raise ValueError("no valid evaluation row (the oracle scorer needs candidates 'gt')")
    return rows


def _group_by_image(samples) -> dict:
    groups: dict = {}
    for index, sample in enumerate(samples):
        groups.setdefault(sample.image, []).append(index)
    return groups


def _gt_candidates(sample: ReferSample, height: int, width: int):
    """(masks (M, H, W) bool, categories list, kept indices) of the non-empty ground-truth candidates."""
    masks, cats, kept = [], [], []
    for i, ann in enumerate(sample.candidates or []):
        m = annotation_mask(ann, height, width)
        if m.any():
            masks.append(m)
            cats.append((sample.candidate_categories or [None] * len(sample.candidates))[i])
            kept.append(i)
    shape = (0, height, width)
    return (np.stack(masks) if masks else np.zeros(shape, bool)), cats, kept


def _check_inputs(dataset: ReferDataset, rows, segmenter, embedder) -> None:
    """ValueError when the rows ask for something the dataset or the models cannot give."""
    if not rows:
        raise ValueError("no rows to evaluate")
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.name} has no samples")
    if any(r.candidates == "gt" for r in rows) and any(s.candidates is None for s in dataset.samples):
        raise ValueError(f"{dataset.name} has no ground-truth candidates for some samples: use --candidates sam")
    if any(r.scoring == "oracle" for r in rows) and any(s.category is None or s.candidate_categories is None
                                                       for s in dataset.samples):
        raise ValueError(f"{dataset.name} lacks categories for the oracle scorer: drop 'oracle' from the scorings")
    if any(r.scoring != "oracle" for r in rows) and embedder is None:
        raise ValueError("CLIP scoring rows need an embedder")
    if any(r.candidates == "sam" for r in rows) and segmenter is None:
        raise ValueError("'sam' rows need a segmenter")


def _image_sources(sample: ReferSample, image: np.ndarray, rows, settings: GroundingSettings,
                   segmenter, embedder) -> dict:
    """Stage 1 per candidate source the rows use: {source: (Candidates, categories, kept)}.

    'gt': the sample's annotated objects; 'sam': SAM's automatic masks (none when SAM finds
    nothing). CLIP features only when a CLIP row uses the source.
    """
    height, width = image.shape[:2]
    need_local = any(r.scoring in ("local", "mixed") for r in rows)
    need_global = any(r.scoring in ("global", "mixed") for r in rows)
    sources: dict = {}
    for source in CANDIDATE_SOURCES:
        if not any(r.candidates == source for r in rows):
            continue
        clip = embedder if any(r.candidates == source and r.scoring != "oracle" for r in rows) else None
        cats = kept = None
        if source == "gt":
            masks, cats, kept = _gt_candidates(sample, height, width)
        else:
            masks = None
        try:
            if masks is not None and len(masks) == 0:
                raise NoCandidatesError("no ground-truth candidates")
            cands = image_candidates(segmenter, clip, image, settings, masks=masks,
                                     need_local=need_local, need_global=need_global)
        except NoCandidatesError:
            empty = np.zeros((0, 0), np.float32)
            cands = Candidates(np.zeros((0, height, width), bool), np.zeros((0, 4), np.float32), empty, empty,
                               (height, width))
        sources[source] = (cands, cats, kept)
    return sources


def evaluate(dataset: ReferDataset, rows, settings: GroundingSettings | None = None, *,
             segmenter=None, embedder=None, progress: bool = False, models: str | None = None,
             untrained: bool | None = None) -> dict:
    """Ground every sample under every row and report oIoU / mIoU (see the module docstring).

    rows: list of :class:`Row`; settings: the grounding settings shared by all rows (scoring
    and orientation are set per row); segmenter: needed for 'sam' rows; embedder: needed for
    local / global / mixed rows. Per image, stage 1 (candidates and their CLIP features) runs
    once and is shared by all its sentences and rows; stage 2 is the app's
    :func:`core.refer.choose_for_expression`. A sample without candidates counts as an empty
    prediction (IoU 0). Returns the report dict (JSON-friendly).
    """
    settings = settings or GroundingSettings()
    rows = list(rows)
    _check_inputs(dataset, rows, segmenter, embedder)
    clip_rows = [r for r in rows if r.scoring != "oracle"]
    row_settings = [settings.with_(orientation=r.orientation,
                                   scoring=r.scoring if r.scoring != "oracle" else settings.scoring) for r in rows]

    n = len(dataset)
    inter = np.zeros((len(rows), n), dtype=np.int64)
    union = np.zeros((len(rows), n), dtype=np.int64)
    chosen_target = np.full((len(rows), n), -1, dtype=np.int64)  # gt rows: 1 when the target was chosen
    has_direction = np.zeros(n, dtype=bool)
    n_candidates = {"gt": [], "sam": []}
    sam_failures = 0
    groups = _group_by_image(dataset.samples)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=f"refer {dataset.name}", unit="sentence", file=sys.stderr)
    started = time.perf_counter()
    for path, indices in groups.items():
        image = load_image(Path(path))
        height, width = image.shape[:2]
        sources = _image_sources(dataset.samples[indices[0]], image, rows, settings, segmenter, embedder)
        for source, (cands, _, _) in sources.items():
            n_candidates[source].append(len(cands))
        expressions = [parse(dataset.samples[idx].sentence) for idx in indices]
        texts = text_features(embedder, expressions) if clip_rows else [None] * len(indices)
        for idx, expression, text in zip(indices, expressions, texts):
            sample = dataset.samples[idx]
            has_direction[idx] = expression.direction is not None
            gt_mask = annotation_mask(sample.target, height, width)
            for r, (row, rs) in enumerate(zip(rows, row_settings)):
                cands, cats, kept = sources[row.candidates]
                if row.scoring == "oracle":
                    pick = np.array([i for i, c in enumerate(cats) if c == sample.category], dtype=np.int64)
                    cands = cands.subset(pick)
                if len(cands) == 0:
                    if row.candidates == "sam":
                        sam_failures += 1
                    prediction = np.zeros((height, width), bool)
                else:
                    if row.scoring == "oracle":
                        g = choose_for_expression(expression, cands, rs, scores=np.ones(len(cands), np.float32),
                                                  source_index=pick)
                    else:
                        g = choose_for_expression(expression, cands, rs, text=text)
                    prediction = g.mask
                    if row.candidates == "gt" and sample.target_index is not None:
                        chosen = kept[int(g.source_index[g.chosen])]
                        chosen_target[r, idx] = int(chosen == sample.target_index)
                inter[r, idx], union[r, idx] = intersection_and_union(prediction, gt_mask)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - started
    results = []
    for r, row in enumerate(rows):
        entry = {"row": row.name, "candidates": row.candidates, "scoring": row.scoring,
                 "orientation": row.orientation,
                 "all": iou_metrics(inter[r], union[r]),
                 "with_direction": iou_metrics(inter[r, has_direction], union[r, has_direction]),
                 "without_direction": iou_metrics(inter[r, ~has_direction], union[r, ~has_direction])}
        if row.candidates == "gt":
            known = chosen_target[r] >= 0
            entry["target_chosen"] = float(100 * chosen_target[r, known].mean()) if known.any() else None
        results.append(entry)
    return {
        "dataset": dataset.name, "split": dataset.split, "source": dataset.source,
        "n_samples": n, "n_with_direction": int(has_direction.sum()), "n_images": len(groups),
        "models": models, "untrained": untrained,
        "settings": {k: v for k, v in asdict(settings).items() if k not in ("scoring", "orientation")},
        "candidates_per_image": {s: (float(np.mean(v)) if v else None) for s, v in n_candidates.items()},
        "sam_failures": sam_failures, "seconds": round(seconds, 2),
        "results": results, "published": PUBLISHED,
        "per_sample": {"ref_id": [s.ref_id for s in dataset.samples], "has_direction": has_direction.tolist(),
                       "intersection": inter.tolist(), "union": union.tolist()},
    }


# ----------------------------------------------------------------------------- report


def _fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.2f}"


def markdown_table(report: dict) -> str:
    """The results as a Markdown table, headed by the dataset, split and models they are on."""
    lines = [
        f"Referring segmentation on {report['dataset']}, split {report['split']}: {report['n_samples']} sentences "
        f"({report['n_with_direction']} with a direction word) in {report['n_images']} images.",
        f"Models: {report['models'] or 'none (oracle rows only)'}.",
        "",
        "| candidates | scoring | orientation | oIoU | mIoU | Pr@0.5 | oIoU (dir.) | mIoU (dir.) | target chosen % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        a, d = row["all"], row["with_direction"]
        lines.append(f"| {row['candidates']} | {row['scoring']} | {'on' if row['orientation'] else 'off'} | "
                     f"{_fmt(a['oIoU'])} | {_fmt(a['mIoU'])} | {_fmt(a['pr@0.5'])} | {_fmt(d['oIoU'])} | "
                     f"{_fmt(d['mIoU'])} | {_fmt(row.get('target_chosen'))} |")
    lines += ["", "Published (other data; for orientation only):"]
    for p in report["published"]:
        lines.append(f"- {p['method']}: {p['dataset']} {p['split']}: oIoU {_fmt(p['oIoU'])}"
                     + (f", mIoU {_fmt(p['mIoU'])}" if p["mIoU"] is not None else ""))
    if report.get("untrained"):
        lines += ["", "UNTRAINED weights: CLIP/SAM rows measure the pipeline, not the method."]
    return "\n".join(lines)


def write_report(report: dict, out) -> list[Path]:
    """report.json and report.md in ``out`` (created)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(report, indent=1))
    md_path.write_text(markdown_table(report) + "\n")
    return [json_path, md_path]
