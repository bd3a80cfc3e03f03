"""Referring segmentation evaluation: oIoU / mIoU per row, overall and with a direction word.

Run it as `python -m core evaluate refer (--refs 'refs(umd).p' --instances instances.json --images DIR |
--jsonl FILE | --synthetic-coco DIR) [--split val] [--rows paper] --out DIR ...` (flags in
core/cli/evaluate.py; data formats in core/evaluate/refer_data.py).

Rows. ``--rows paper`` (the default) runs the three rows the orientation-aware paper reports on
RefCOCOg val, by name, with the paper's numbers beside ours:

- ``global-local``: Global-Local CLIP on another mask source (the paper: FreeSOLO). Here the
  masks of ``--candidate-masks FILE`` (source ``file``) when given, else the annotated
  instances of the image (source ``gt``: an upper bound of any mask source, not the paper's row).
- ``global-local+sam``: Global-Local CLIP on SAM's automatic masks, no direction rule.
- ``global-local+sam+orientation``: the same, then the direction rule picks among the top 3.

``--rows ablation`` runs the grid candidates (``gt``, ``file``, ``sam``) x method
(``global_local``, ``score_mix``) x scoring (``oracle``: gt only, the candidates of the
target's category all scored equal so only the direction rule decides; ``local``, ``global``,
``mixed``) x orientation off / on. Each row runs the app's own grounding pipeline
(:func:`core.refer.image_candidates` once per image and candidate source,
:func:`core.refer.choose_for_expression` per sentence and row).

Metrics, per row: oIoU = sum_i |P_i & G_i| / sum_i |P_i | G_i| (overall IoU, dominated by large
objects) and mIoU = mean_i |P_i & G_i| / |P_i | G_i|, over all samples and over the samples
whose sentence has a direction word (``core.refer.parse(...).direction`` is not None). A sample
without candidates counts as an empty prediction. Output: a :class:`ReferReport` record,
written as report.json (:meth:`ReferReport.to_json`) and report.md (:func:`markdown_table`).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.io.coco import annotation_mask
from core.evaluate.refer_data import ReferDataset, ReferSample
from core.io.images import load_image
from core.io.masks import intersection_and_union
from core.refer import (
    METHODS,
    Candidates,
    GroundingSettings,
    NoCandidatesError,
    choose_for_expression,
    image_candidates,
    parse,
    text_features,
)

CANDIDATE_SOURCES = ("gt", "file", "sam")
ROW_SCORINGS = ("oracle", "local", "global", "mixed")


# ----------------------------------------------------------------------------- rows and the paper


@dataclass(frozen=True)
class PaperNumbers:
    """A published result: ``method`` on ``dataset`` / ``split``, oIoU and mIoU in percent (None: not given)."""

    method: str
    dataset: str
    split: str
    oIoU: float | None
    mIoU: float | None
    source: str = ""


#: The source of the three rows of :data:`PAPER_ROWS`.
ORIENTATION_PAPER = "orientation-aware zero-shot referring segmentation (Table: RefCOCOg val)"

#: Named rows of the orientation-aware paper: name -> (candidate source, orientation, published).
#: The first row's source is the mask file when one is given (see :func:`paper_rows`).
PAPER_ROWS = {
    "global-local": ("gt", False, PaperNumbers("Global-Local CLIP (FreeSOLO masks)", "RefCOCOg", "val (UMD)",
                                               24.83, 24.58, ORIENTATION_PAPER)),
    "global-local+sam": ("sam", False, PaperNumbers("Global-Local CLIP with SAM masks", "RefCOCOg", "val (UMD)",
                                                    26.27, 31.84, ORIENTATION_PAPER)),
    "global-local+sam+orientation": ("sam", True, PaperNumbers("... + orientation rule (top 3)", "RefCOCOg",
                                                               "val (UMD)", 28.73, 40.38, ORIENTATION_PAPER)),
}

#: Other published numbers, for orientation only.
PUBLISHED = (
    PaperNumbers("Global-Local CLIP (its own paper, FreeSOLO masks)", "RefCOCOg", "val (UMD)", 31.08, 33.70,
                 "Yu, Seo, Son, CVPR 2023"),
)


@dataclass(frozen=True)
class Row:
    """One evaluated row: candidate source x method x scoring x orientation.

    candidates: "gt" (the annotated objects), "file" (masks of another source, given per
    image) or "sam" (SAM's automatic masks); scoring: "oracle" (gt only) or a
    :data:`core.refer.SCORINGS` name; method: a :data:`core.refer.METHODS` name; label: the
    paper's name of the row ("" for ablation rows); paper: its published numbers, if any.
    """

    candidates: str
    scoring: str
    orientation: bool
    method: str = "global_local"
    label: str = ""
    paper: PaperNumbers | None = None

    def __post_init__(self) -> None:
        if self.candidates not in CANDIDATE_SOURCES:
            raise ValueError(f"candidates must be one of {CANDIDATE_SOURCES}, got {self.candidates!r}")
        if self.scoring not in ROW_SCORINGS:
            raise ValueError(f"scoring must be one of {ROW_SCORINGS}, got {self.scoring!r}")
        if self.scoring == "oracle" and self.candidates != "gt":
            raise ValueError("the oracle scorer needs ground-truth candidates (candidates='gt')")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

    @property
    def name(self) -> str:
        """The paper's name, or candidates/method-scoring/orientation ("gt/oracle/orientation" for oracles)."""
        if self.label:
            return self.label
        orientation = "orientation" if self.orientation else "no-orientation"
        scorer = "oracle" if self.scoring == "oracle" else f"{self.method}-{self.scoring}"
        return f"{self.candidates}/{scorer}/{orientation}"

    @property
    def uses_clip(self) -> bool:
        return self.scoring != "oracle"


def paper_rows(mask_source: str = "gt", names=tuple(PAPER_ROWS)) -> list[Row]:
    """The orientation-aware paper's rows by name (Global-Local CLIP, mixed features).

    mask_source: the candidates of the ``global-local`` row: "file" (the masks of another
    source, as the paper's FreeSOLO) or "gt" (annotated instances, when no mask file is given).
    """
    rows = []
    for name in names:
        if name not in PAPER_ROWS:
            raise ValueError(f"unknown row {name!r}; the paper's rows are {list(PAPER_ROWS)}")
        source, orientation, published = PAPER_ROWS[name]
        if name == "global-local":
            if mask_source not in ("gt", "file"):
                raise ValueError(f"the global-local row's mask source must be 'gt' or 'file', got {mask_source!r}")
            source = mask_source
        rows.append(Row(source, "mixed", orientation, "global_local", label=name, paper=published))
    return rows


def ablation_rows(candidates=("gt", "sam"), scorings=ROW_SCORINGS, methods=("global_local",)) -> list[Row]:
    """Every valid row for these sources, methods and scorings, orientation off then on
    (oracle rows once, not per method)."""
    rows = []
    for source in candidates:
        for scoring in scorings:
            if scoring == "oracle":
                if source == "gt":
                    rows.extend(Row(source, scoring, o) for o in (False, True))
                continue
            for method in methods:
                rows.extend(Row(source, scoring, o, method) for o in (False, True))
    if not rows:
        raise ValueError("no valid evaluation row (the oracle scorer needs candidates 'gt')")
    return rows


def visual_weight_for(dataset_name: str) -> float | None:
    """Global-Local's v for a RefCOCO-family dataset name: 0.85 for RefCOCOg, 0.95 for RefCOCO /
    RefCOCO+ (the authors' values); None for other data."""
    name = dataset_name.lower()
    if "refcocog" in name:
        return 0.85
    if "refcoco" in name:
        return 0.95
    return None


# ----------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metrics:
    """oIoU, mIoU and Pr@0.5 in percent over ``n`` samples (NaN when n = 0)."""

    oIoU: float
    mIoU: float
    pr_at_50: float
    n: int

    def to_dict(self) -> dict:
        return {"oIoU": self.oIoU, "mIoU": self.mIoU, "pr@0.5": self.pr_at_50, "n": self.n}


def iou_metrics(intersections, unions) -> Metrics:
    """:class:`Metrics` of per-sample pixel counts.

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
        return Metrics(float("nan"), float("nan"), float("nan"), 0)
    per = np.where(u > 0, i / np.where(u > 0, u, 1), 1.0)
    total_u = u.sum()
    return Metrics(oIoU=float(100 * i.sum() / total_u) if total_u > 0 else 100.0,
                   mIoU=float(100 * per.mean()), pr_at_50=float(100 * (per >= 0.5).mean()), n=n)


# ----------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class RowResult:
    """One row's metrics: all samples, those with / without a direction word; target_chosen:
    percent of samples whose chosen candidate is the target (gt rows; None otherwise)."""

    row: Row
    all: Metrics
    with_direction: Metrics
    without_direction: Metrics
    target_chosen: float | None = None

    @property
    def name(self) -> str:
        return self.row.name

    def to_dict(self) -> dict:
        return {"row": self.row.name, "candidates": self.row.candidates, "method": self.row.method,
                "scoring": self.row.scoring, "orientation": self.row.orientation,
                "paper": asdict(self.row.paper) if self.row.paper else None,
                "all": self.all.to_dict(), "with_direction": self.with_direction.to_dict(),
                "without_direction": self.without_direction.to_dict(), "target_chosen": self.target_chosen}


@dataclass(frozen=True)
class PerSample:
    """Per-sample counts: ref ids, direction flags, and (rows, samples) intersections / unions."""

    ref_id: tuple
    has_direction: tuple
    intersection: tuple
    union: tuple

    def to_dict(self) -> dict:
        return {"ref_id": list(self.ref_id), "has_direction": list(self.has_direction),
                "intersection": [list(r) for r in self.intersection], "union": [list(r) for r in self.union]}


@dataclass(frozen=True)
class ReferReport:
    """What `evaluate refer` measured, on which data, with which models and settings.

    results: one :class:`RowResult` per row; published: other published numbers (the paper's
    numbers of its rows travel with the rows); candidates_per_image: mean candidates per image
    per source; sam_failures: samples whose image had no SAM candidate (empty prediction).
    """

    dataset: str
    split: str
    source: str
    n_samples: int
    n_with_direction: int
    n_images: int
    models: str | None
    untrained: bool | None
    settings: dict
    candidates_per_image: dict
    sam_failures: int
    seconds: float
    results: tuple
    published: tuple = PUBLISHED
    per_sample: PerSample | None = None

    def result(self, name: str) -> RowResult:
        """The result of the row called ``name`` (KeyError if there is none)."""
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"no row {name!r}; rows: {[r.name for r in self.results]}")

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("dataset", "split", "source", "n_samples", "n_with_direction",
                                             "n_images", "models", "untrained", "settings",
                                             "candidates_per_image", "sam_failures", "seconds")}
        out["results"] = [r.to_dict() for r in self.results]
        out["published"] = [asdict(p) for p in self.published]
        out["per_sample"] = self.per_sample.to_dict() if self.per_sample else None
        return out

    def to_json(self, indent: int | None = 1) -> str:
        """The report as JSON (NaN for metrics over no samples)."""
        return json.dumps(self.to_dict(), indent=indent)


# ----------------------------------------------------------------------------- evaluation


def _group_by_image(samples) -> dict:
    groups: dict = {}
    for index, sample in enumerate(samples):
        groups.setdefault(sample.image, []).append(index)
    return groups


def _annotated_masks(objects, height: int, width: int, categories=None):
    """(masks (M, H, W) bool, categories list, kept indices) of the non-empty objects."""
    masks, cats, kept = [], [], []
    for i, ann in enumerate(objects or []):
        m = annotation_mask(ann, height, width)
        if m.any():
            masks.append(m)
            cats.append((categories or [None] * len(objects))[i])
            kept.append(i)
    return (np.stack(masks) if masks else np.zeros((0, height, width), bool)), cats, kept


def _check_inputs(dataset: ReferDataset, rows, segmenter, embedder, mask_file) -> None:
    """ValueError when the rows ask for something the dataset or the models cannot give."""
    if not rows:
        raise ValueError("no rows to evaluate")
    if len(dataset) == 0:
        raise ValueError(f"dataset {dataset.name} has no samples")
    if any(r.candidates == "gt" for r in rows) and any(s.candidates is None for s in dataset.samples):
        raise ValueError(f"{dataset.name} has no ground-truth candidates for some samples: use SAM or a mask file")
    if any(r.scoring == "oracle" for r in rows) and any(s.category is None or s.candidate_categories is None
                                                       for s in dataset.samples):
        raise ValueError(f"{dataset.name} lacks categories for the oracle scorer: drop 'oracle' from the scorings")
    if any(r.uses_clip for r in rows) and embedder is None:
        raise ValueError("CLIP scoring rows need an embedder")
    if any(r.candidates == "sam" for r in rows) and segmenter is None:
        raise ValueError("'sam' rows need a segmenter")
    if any(r.candidates == "file" for r in rows) and mask_file is None:
        raise ValueError("'file' rows need candidate masks of another source (--candidate-masks)")


def _empty_candidates(height: int, width: int) -> Candidates:
    empty = np.zeros((0, 0), np.float32)
    return Candidates(np.zeros((0, height, width), bool), np.zeros((0, 4), np.float32), empty, empty, (height, width))


def _image_candidates(sample: ReferSample, image: np.ndarray, rows, settings: GroundingSettings,
                      segmenter, embedder, mask_file) -> dict:
    """Stage 1 per (candidate source, method) the rows use: {(source, method): (Candidates, cats, kept)}.

    method is None for oracle rows (masks only). 'gt': the sample's annotated objects; 'file':
    the mask file's masks of this image (none when it has no entry); 'sam': SAM's automatic
    masks, computed once per image and shared by the methods (none when SAM finds nothing).
    """
    height, width = image.shape[:2]
    out: dict = {}
    masks_of: dict = {}
    for source in CANDIDATE_SOURCES:
        for method in (None, *METHODS):
            used = [r for r in rows if r.candidates == source and (r.method if r.uses_clip else None) == method]
            if not used:
                continue
            cats = kept = None
            if source not in masks_of:
                if source == "gt":
                    masks_of[source] = _annotated_masks(sample.candidates, height, width, sample.candidate_categories)
                elif source == "file":
                    masks_of[source] = _annotated_masks(mask_file.get(Path(sample.image).name, []), height, width)
                else:
                    try:
                        cands = image_candidates(segmenter, None, image, settings)
                        masks_of[source] = (cands.masks, None, None)
                    except NoCandidatesError:
                        masks_of[source] = (np.zeros((0, height, width), bool), None, None)
            masks, cats, kept = masks_of[source]
            if len(masks) == 0:
                out[(source, method)] = (_empty_candidates(height, width), cats, kept)
                continue
            clip = embedder if method is not None else None
            method_settings = settings.with_(method=method) if method is not None else settings
            need_local = any(r.scoring in ("local", "mixed") for r in used)
            need_global = any(r.scoring in ("global", "mixed") for r in used)
            cands = image_candidates(None, clip, image, method_settings, masks=masks,
                                     need_local=need_local, need_global=need_global)
            out[(source, method)] = (cands, cats, kept)
    return out


def evaluate(dataset: ReferDataset, rows, settings: GroundingSettings | None = None, *,
             segmenter=None, embedder=None, mask_file: dict | None = None, progress: bool = False,
             models: str | None = None, untrained: bool | None = None) -> ReferReport:
    """Ground every sample under every row and report oIoU / mIoU (see the module docstring).

    rows: list of :class:`Row`; settings: the grounding settings shared by all rows (method,
    scoring and orientation are set per row; SAM's automatic-mask settings, filters and
    Global-Local's v, r and masking block come from here); segmenter: needed for 'sam' rows;
    embedder: needed for CLIP rows; mask_file: {image file name: [COCO RLE dicts]} for 'file'
    rows (core.evaluate.refer_data.read_candidate_masks). Per image, stage 1 runs once per
    candidate source and method and is shared by all its sentences and rows; stage 2 is the
    app's :func:`core.refer.choose_for_expression`. Returns a :class:`ReferReport`.
    """
    settings = settings or GroundingSettings()
    rows = list(rows)
    _check_inputs(dataset, rows, segmenter, embedder, mask_file)
    row_settings = [settings.with_(orientation=r.orientation, method=r.method if r.uses_clip else settings.method,
                                   scoring=r.scoring if r.uses_clip else settings.scoring) for r in rows]
    n = len(dataset)
    inter = np.zeros((len(rows), n), dtype=np.int64)
    union = np.zeros((len(rows), n), dtype=np.int64)
    chosen_target = np.full((len(rows), n), -1, dtype=np.int64)  # gt rows: 1 when the target was chosen
    has_direction = np.zeros(n, dtype=bool)
    n_candidates: dict = {s: [] for s in CANDIDATE_SOURCES}
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
        sources = _image_candidates(dataset.samples[indices[0]], image, rows, settings, segmenter, embedder,
                                    mask_file)
        for source in CANDIDATE_SOURCES:
            counts = [len(c) for (s, _), (c, _, _) in sources.items() if s == source]
            if counts:
                n_candidates[source].append(counts[0])
        expressions = [parse(dataset.samples[idx].sentence) for idx in indices]
        texts = (text_features(embedder, expressions) if any(r.uses_clip for r in rows)
                 else [None] * len(indices))
        for idx, expression, text in zip(indices, expressions, texts):
            sample = dataset.samples[idx]
            has_direction[idx] = expression.direction is not None
            gt_mask = annotation_mask(sample.target, height, width)
            for r, (row, rs) in enumerate(zip(rows, row_settings)):
                cands, cats, kept = sources[(row.candidates, row.method if row.uses_clip else None)]
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
        known = chosen_target[r] >= 0
        results.append(RowResult(
            row=row, all=iou_metrics(inter[r], union[r]),
            with_direction=iou_metrics(inter[r, has_direction], union[r, has_direction]),
            without_direction=iou_metrics(inter[r, ~has_direction], union[r, ~has_direction]),
            target_chosen=(float(100 * chosen_target[r, known].mean())
                           if row.candidates == "gt" and known.any() else None)))
    settings_dict = {k: v for k, v in asdict(settings).items() if k not in ("scoring", "orientation", "method")}
    return ReferReport(
        dataset=dataset.name, split=dataset.split, source=dataset.source, n_samples=n,
        n_with_direction=int(has_direction.sum()), n_images=len(groups), models=models, untrained=untrained,
        settings=settings_dict,
        candidates_per_image={s: (float(np.mean(v)) if v else None) for s, v in n_candidates.items()},
        sam_failures=sam_failures, seconds=round(seconds, 2), results=tuple(results),
        per_sample=PerSample(ref_id=tuple(s.ref_id for s in dataset.samples),
                             has_direction=tuple(bool(v) for v in has_direction),
                             intersection=tuple(tuple(int(v) for v in row) for row in inter),
                             union=tuple(tuple(int(v) for v in row) for row in union)))


# ----------------------------------------------------------------------------- the Markdown report


def _fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.2f}"


def markdown_table(report: ReferReport) -> str:
    """The results as a Markdown table, headed by the dataset, split and models they are on,
    with the paper's numbers beside its rows."""
    lines = [
        f"Referring segmentation on {report.dataset}, split {report.split}: {report.n_samples} sentences "
        f"({report.n_with_direction} with a direction word) in {report.n_images} images.",
        f"Models: {report.models or 'none (oracle rows only)'}.",
        "",
        "| row | candidates | method | scoring | orientation | oIoU | mIoU | Pr@0.5 | oIoU (dir.) | mIoU (dir.) "
        "| target chosen % | paper oIoU / mIoU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in report.results:
        row, a, d = res.row, res.all, res.with_direction
        paper = f"{_fmt(row.paper.oIoU)} / {_fmt(row.paper.mIoU)}" if row.paper else ""
        method = "-" if row.scoring == "oracle" else row.method
        lines.append(f"| {row.name} | {row.candidates} | {method} | {row.scoring} | "
                     f"{'on' if row.orientation else 'off'} | {_fmt(a.oIoU)} | {_fmt(a.mIoU)} | {_fmt(a.pr_at_50)} | "
                     f"{_fmt(d.oIoU)} | {_fmt(d.mIoU)} | {_fmt(res.target_chosen)} | {paper} |")
    papers = [res.row.paper for res in report.results if res.row.paper]
    if papers:
        lines += ["", f"Paper numbers: {papers[0].source}, {papers[0].dataset} {papers[0].split}"
                      + ("" if report.dataset.lower().startswith("refcocog") else "; other data than this run")
                      + "."]
    lines += ["", "Other published numbers (for orientation only):"]
    for p in report.published:
        lines.append(f"- {p.method} ({p.source}): {p.dataset} {p.split}: oIoU {_fmt(p.oIoU)}, mIoU {_fmt(p.mIoU)}")
    if report.untrained:
        lines += ["", "UNTRAINED weights: CLIP/SAM rows measure the pipeline, not the method (chance level by design)."]
    return "\n".join(lines)


def write_report(report: ReferReport, out) -> list[Path]:
    """report.json and report.md in ``out`` (created)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(report.to_json())
    md_path.write_text(markdown_table(report) + "\n")
    return [json_path, md_path]
