"""Object-retrieval evaluation (the protocol of the object-retrieval paper) on COCO-format data.

Run it as `python -m core evaluate retrieval --coco ANN.json [--images DIR] --out DIR ...`
(the flags live in core/cli/evaluate.py).

Protocol:
  1. choose images and objects (`SelectionSettings`; the default is the paper's recipe: up to
     30 images covering person / dog / cat / car / bicycle, non-crowd objects of those
     categories, every category kept with at least 2 objects);
  2. segment each object with SAM prompted by its annotation box (best-scoring mask), or take
     the ground-truth mask (`--oracle-masks`) to separate segmentation error from embedding error;
  3. render every requested view (`core.views`) and embed it with CLIP (L2-normalised);
  4. for each view x metric, put all objects in a `core.gallery.gallery.Gallery` and query with every
     object against all the others (never itself); a hit is an object of the same category;
  5. report Precision@K, Recall@K and mAP (`core.metrics`, formulas there) averaged over the
     queries that have at least one other object of their category, overall and per category.

Recall@K follows the paper: relevant objects retrieved in the top K divided by all relevant
objects for that query (all other objects of its category in the selection).

Outputs in --out: report.json, report.md (tables shaped like the paper's Tables 1 and 2 plus
per-category rows), bars.png (metrics per view) and pr_curves.png.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core.io.coco import CocoData, read_coco
from core.engine import Engine, EngineSettings
from core.evaluate import PAPER_SAM
from core.evaluate import metrics as M
from core.gallery.gallery import Gallery, ObjectRecord
from core.io.images import load_image
from core.io.masks import box_to_mask, coco_ann_to_mask, coco_box_to_xyxy, mask_iou
from core.views import get_view, render_view

PAPER_CATEGORIES = ("person", "dog", "cat", "car", "bicycle")
PAPER_IMAGES = 30
PAPER_MIN_PER_CATEGORY = 2
#: Our reading of the recipe: at most 2 objects per image gives 48 objects in 30 images on
#: COCO128, close to the paper's 47 in 30.
PAPER_MAX_PER_IMAGE = 2
#: Published numbers (SAM ViT-B + CLIP ViT-B/32, 30 COCO val2017 images, 47 objects, K = 5).
PAPER_RESULTS = {
    "crop": {"precision_at_k": 0.425, "recall_at_k": 0.761, "mAP": 0.526},
    "mask": {"precision_at_k": 0.300, "recall_at_k": 0.565, "mAP": 0.293},
}


# ----------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class SelectionSettings:
    """Which images and objects to evaluate.

    categories: category names to keep (None = every category in the file);
    limit_images: at most this many images (None = all candidates);
    min_per_category: categories with fewer selected objects are dropped (they could never be hit);
    max_per_image: at most this many objects per image (None = all), the image's pick category
        first, then by area; min_area: skip annotations smaller than this (pixels);
    seed: shuffles the candidate images.
    """

    categories: tuple[str, ...] | None = PAPER_CATEGORIES
    limit_images: int | None = PAPER_IMAGES
    min_per_category: int = PAPER_MIN_PER_CATEGORY
    max_per_image: int | None = PAPER_MAX_PER_IMAGE
    min_area: float = 0.0
    seed: int = 0


@dataclass
class EvalObject:
    """One annotated object: its image file, COCO ids, category name and XYXY float box."""

    file_name: str
    image_id: int
    ann_id: int
    category: str
    box: tuple[float, float, float, float]
    area: float
    ann: dict = field(repr=False, default_factory=dict)


def select_objects(coco: CocoData, settings: SelectionSettings = SelectionSettings()) -> list[EvalObject]:
    """Objects to evaluate, chosen by `settings` (seeded, deterministic).

    Images are picked round-robin over the categories, rarest category first, each turn taking
    a random unused image that holds the category, so rare categories are not swamped by common
    ones; this stops at `limit_images`. From each picked image, its non-crowd objects of the kept
    categories (area >= min_area) are taken, at most `max_per_image`. Finally categories with
    fewer than `min_per_category` objects are dropped. Returns objects sorted by (image, ann id).
    """
    names = coco.categories
    if settings.categories is not None:
        unknown = sorted(set(settings.categories) - set(names.values()))
        if unknown:
            raise ValueError(f"unknown categories {unknown}; the file has: {', '.join(sorted(names.values()))}")
        wanted = set(settings.categories)
    else:
        wanted = set(names.values())
    images = coco.images
    by_image: dict[int, list[dict]] = {}
    for image_id, anns in coco.by_image.items():
        kept = [a for a in anns if coco.category_of(a) in wanted and not a.get("iscrowd", 0)
                and float(a.get("area", 0)) >= settings.min_area]
        if kept:
            by_image[image_id] = kept

    rng = np.random.default_rng(settings.seed)
    holders: dict[str, list[int]] = {}
    for image_id in sorted(by_image):
        for cat in sorted({names[int(a["category_id"])] for a in by_image[image_id]}):
            holders.setdefault(cat, []).append(image_id)
    for cat in holders:
        holders[cat] = [holders[cat][i] for i in rng.permutation(len(holders[cat]))]
    order = sorted(holders, key=lambda c: (len(holders[c]), c))
    limit = settings.limit_images if settings.limit_images is not None else len(by_image)
    picked: dict[int, str] = {}
    while len(picked) < limit and any(holders.values()):
        for cat in order:
            queue = holders[cat]
            while queue and queue[0] in picked:
                queue.pop(0)
            if queue and len(picked) < limit:
                picked[queue.pop(0)] = cat

    objects: list[EvalObject] = []
    for image_id, cat in picked.items():
        anns = sorted(by_image[image_id],
                      key=lambda a: (names[int(a["category_id"])] != cat, -float(a.get("area", 0)), a["id"]))
        if settings.max_per_image is not None:
            anns = anns[: settings.max_per_image]
        for ann in anns:
            box = tuple(float(v) for v in coco_box_to_xyxy(ann["bbox"]))
            objects.append(EvalObject(images[image_id]["file_name"], image_id, int(ann["id"]),
                                      names[int(ann["category_id"])], box,
                                      float(ann.get("area", (box[2] - box[0]) * (box[3] - box[1]))), ann))
    counts: dict[str, int] = {}
    for obj in objects:
        counts[obj.category] = counts.get(obj.category, 0) + 1
    objects = [o for o in objects if counts[o.category] >= settings.min_per_category]
    return sorted(objects, key=lambda o: (o.image_id, o.ann_id))


# ----------------------------------------------------------------------------- embedding


@dataclass
class EmbeddedObjects:
    """Per-view CLIP embeddings of the selected objects.

    embeddings: view -> (N, D) float32 unit rows, in `objects` order; mask_iou: (N,) float64
    IoU of the mask used vs the ground truth (1 with oracle masks); empty_masks: how many SAM
    masks were empty and replaced by the annotation box.
    """

    objects: list[EvalObject]
    embeddings: dict[str, np.ndarray]
    mask_iou: np.ndarray
    empty_masks: int
    seconds: dict[str, float]


def sam_box_mask(segmenter, emb, box) -> np.ndarray:
    """The best-scoring SAM mask for an XYXY box prompt: (H, W) bool."""
    pred = segmenter.predict(emb, box=np.asarray(box, dtype=np.float32), multimask=False)
    return pred.masks[0]


def embed_objects(objects: list[EvalObject], images_dir: str | Path, views, embedder, *,
                  segmenter=None, batch_size: int = 32, progress: bool = True) -> EmbeddedObjects:
    """Segment (SAM with box prompts, or ground truth when `segmenter` is None), render and embed.

    Works image by image; rendered views are embedded in batches of `batch_size` so memory
    stays bounded. An empty SAM mask is replaced by the annotation box (counted).
    """
    from tqdm import tqdm

    images_dir = Path(images_dir)
    groups: dict[str, list[int]] = {}
    for i, obj in enumerate(objects):
        groups.setdefault(obj.file_name, []).append(i)
    pending: dict[str, list[np.ndarray]] = {v: [] for v in views}
    done: dict[str, list[np.ndarray]] = {v: [] for v in views}
    ious = np.ones(len(objects))
    empty = 0
    seconds = {"segment": 0.0, "embed": 0.0}

    def flush(view: str, force: bool = False) -> None:
        if pending[view] and (force or len(pending[view]) >= batch_size):
            t0 = time.perf_counter()
            done[view].append(embedder.embed_images(pending[view], batch_size=batch_size))
            seconds["embed"] += time.perf_counter() - t0
            pending[view] = []

    bar = tqdm(groups.items(), desc="objects by image", unit="img", disable=not progress, file=sys.stderr)
    for file_name, idx in bar:
        path = images_dir / file_name
        if not path.is_file():
            raise FileNotFoundError(f"image {path} (from the annotation file) does not exist; check --images")
        image = load_image(path)
        h, w = image.shape[:2]
        t0 = time.perf_counter()
        emb = segmenter.set_image(image) if segmenter is not None else None
        for i in idx:
            obj = objects[i]
            truth = coco_ann_to_mask(obj.ann, h, w)
            if segmenter is None:
                mask = truth
            else:
                mask = sam_box_mask(segmenter, emb, obj.box)
                ious[i] = mask_iou(mask, truth)
                if not mask.any():
                    empty += 1
                    mask = box_to_mask(obj.box, (h, w))
            if not mask.any():  # a degenerate ground-truth polygon: fall back to the box
                mask = box_to_mask(obj.box, (h, w))
            for view in views:
                pending[view].append(render_view(view, image, mask))
        seconds["segment"] += time.perf_counter() - t0
        for view in views:
            flush(view)
    for view in views:
        flush(view, force=True)
    embeddings = {v: np.concatenate(done[v]) for v in views}
    return EmbeddedObjects(objects, embeddings, ious, empty, seconds)


# ----------------------------------------------------------------------------- ranking


def leave_one_out_relevance(embeddings: np.ndarray, labels, metric: str, view: str = "",
                            model_info: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rank all other objects for every object through a `core.gallery.gallery.Gallery`.

    embeddings: (N, D) float32 unit rows; labels: (N,) category names.
    Returns (relevant (N, N-1) bool, best first; n_relevant (N,) int = other objects with the
    query's label). The query object itself is excluded from its own ranking.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if n < 2:
        raise ValueError(f"need at least 2 objects to evaluate retrieval, got {n}")
    gallery = Gallery(embeddings.shape[1], view or "object", metric, model_info)
    gallery.add(embeddings, [ObjectRecord(source=str(i), box=(0.0, 0.0, 0.0, 0.0), view=view or "object",
                                          category=str(lab)) for i, lab in enumerate(labels)])
    hits = gallery.search(embeddings, k=n - 1, exclude=[[i] for i in range(n)])
    ids = np.array([[h.id for h in row] for row in hits], dtype=np.int64)
    if ids.shape != (n, n - 1) or (ids == np.arange(n)[:, None]).any():
        raise RuntimeError("gallery search did not return every other object exactly once")
    relevant = labels[ids] == labels[:, None]
    n_relevant = np.array([(labels == lab).sum() - 1 for lab in labels])
    return relevant, n_relevant


@dataclass
class ViewMetricResult:
    """Scores of one view x metric: overall, per category, and the mean interpolated PR curve."""

    view: str
    metric: str
    overall: M.RetrievalScores
    per_category: dict[str, M.RetrievalScores]
    pr_recall: np.ndarray
    pr_precision: np.ndarray

    def to_json(self) -> dict:
        return {"view": self.view, "metric": self.metric, **self.overall.summary(),
                "per_category": {c: s.summary() for c, s in self.per_category.items()},
                "pr_curve": {"recall": self.pr_recall.round(4).tolist(),
                             "precision": np.round(self.pr_precision, 4).tolist()}}


def score_view_metric(embeddings: np.ndarray, labels, view: str, metric: str, k: int,
                      model_info: dict | None = None) -> ViewMetricResult:
    """Leave-one-out retrieval scores of one view x metric (see `core.metrics` for formulas)."""
    labels = np.asarray(labels)
    relevant, n_rel = leave_one_out_relevance(embeddings, labels, metric, view, model_info)
    overall = M.retrieval_scores(relevant, k, n_rel)
    per_cat = {c: M.retrieval_scores(relevant[labels == c], k, n_rel[labels == c])
               for c in sorted(set(labels.tolist()))}
    rec, prec = M.interpolated_pr_curve(relevant, n_rel, levels=21)
    return ViewMetricResult(view, metric, overall, per_cat, rec, prec)


def chance_scores(labels, k: int) -> dict:
    """Expected P@K and R@K of a random ranking of the other N-1 objects (per-query mean)."""
    labels = np.asarray(labels)
    n_rel = np.array([(labels == lab).sum() - 1 for lab in labels])
    ok = n_rel > 0
    others = len(labels) - 1
    return {"precision_at_k": M.chance_precision_at_k(n_rel[ok], np.full(ok.sum(), others)),
            "recall_at_k": min(k, others) / others if others else float("nan")}


def perfect_scores(labels, k: int) -> dict:
    """Best reachable scores (all relevant objects ranked first): P@K = min(K, R)/K, R@K = min(K, R)/R.

    Also the mean number R of relevant objects per query: Recall@K can only reach 1 when R <= K,
    so R@K is comparable between selections only when their R are alike.
    """
    labels = np.asarray(labels)
    n_rel = np.array([(labels == lab).sum() - 1 for lab in labels], dtype=np.float64)
    n_rel = n_rel[n_rel > 0]
    if not len(n_rel):
        return {"precision_at_k": float("nan"), "recall_at_k": float("nan"), "mAP": float("nan"),
                "mean_relevant_per_query": 0.0}
    top = np.minimum(k, n_rel)
    return {"precision_at_k": float((top / k).mean()), "recall_at_k": float((top / n_rel).mean()), "mAP": 1.0,
            "mean_relevant_per_query": float(n_rel.mean())}


# ----------------------------------------------------------------------------- the report


@dataclass
class ModelsUsed:
    """Which models produced a report: SAM name (None with oracle masks), fast path, CLIP label."""

    sam: str | None
    sam_fast_path: bool | None
    clip: str
    untrained: bool


@dataclass
class RetrievalReport:
    """Everything one run of the protocol measured (report.json is its `to_json()`).

    coco / images: the inputs; views, metrics, k, oracle_masks, selection: the settings;
    objects: the evaluated objects; mean_mask_iou: SAM vs ground truth (None with oracle
    masks); empty_masks: SAM masks replaced by the box; chance / perfect: reference scores
    (see :func:`chance_scores`, :func:`perfect_scores`); results: one per view x metric.
    """

    coco: str
    images: str
    views: list[str]
    metrics: list[str]
    k: int
    oracle_masks: bool
    selection: SelectionSettings
    models: ModelsUsed
    objects: list[EvalObject]
    mean_mask_iou: float | None
    empty_masks: int
    chance: dict
    perfect: dict
    results: list[ViewMetricResult]
    seconds: dict[str, float]

    @property
    def n_images(self) -> int:
        return len({o.image_id for o in self.objects})

    @property
    def per_category(self) -> dict[str, int]:
        """Objects per category, most first (ties by name)."""
        counts: dict[str, int] = {}
        for obj in self.objects:
            counts[obj.category] = counts.get(obj.category, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def result(self, view: str, metric: str) -> ViewMetricResult:
        return next(r for r in self.results if r.view == view and r.metric == metric)

    def to_json(self) -> dict:
        return {
            "settings": {"coco": self.coco, "images": self.images, "views": list(self.views),
                         "metrics": list(self.metrics), "k": self.k, "oracle_masks": self.oracle_masks,
                         "selection": asdict(self.selection)},
            "models": asdict(self.models),
            "selection": {"n_images": self.n_images, "n_objects": len(self.objects),
                          "per_category": self.per_category,
                          "objects": [{"file_name": o.file_name, "ann_id": o.ann_id, "category": o.category,
                                       "box": [round(v, 2) for v in o.box]} for o in self.objects]},
            "segmentation": {"mean_iou": self.mean_mask_iou, "empty_masks": self.empty_masks},
            "chance": self.chance, "perfect": self.perfect, "paper": PAPER_RESULTS,
            "results": [r.to_json() for r in self.results],
            "seconds": self.seconds,
        }


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def markdown_report(report: RetrievalReport) -> str:
    """The report as markdown: Table 1 (views), Table 2 (view x metric), per-category rows."""
    k = report.k
    label = "UNTRAINED weights: numbers are at chance level by design" if report.models.untrained else ""
    masks = "ground-truth (oracle) masks" if report.oracle_masks else f"SAM {report.models.sam} masks from box prompts"
    lines = [f"# Object retrieval ({masks})", ""]
    if label:
        lines += [f"**{label}.**", ""]
    lines += [f"{len(report.objects)} objects in {report.n_images} images; categories: "
              + ", ".join(f"{c} ({n})" for c, n in report.per_category.items())
              + f". CLIP {report.models.clip}. K = {k}.", ""]
    if not report.oracle_masks:
        lines += [f"SAM mask vs ground truth: mean IoU {_fmt(report.mean_mask_iou)}; empty masks replaced by the "
                  f"box: {report.empty_masks}.", ""]
    first = report.metrics[0]
    lines += [f"## Table 1: views ({first})", "", f"| View | P@{k} | R@{k} | mAP | paper P@5 / R@5 / mAP |",
              "|---|---|---|---|---|"]
    for row in report.results:
        if row.metric != first:
            continue
        paper = PAPER_RESULTS.get(row.view)
        ref = " / ".join(f"{paper[m]:.3f}" for m in ("precision_at_k", "recall_at_k", "mAP")) if paper else ""
        s = row.overall
        lines.append(f"| {row.view} | {_fmt(s.precision_at_k)} | {_fmt(s.recall_at_k)} | {_fmt(s.mean_ap)} | {ref} |")
    ch, best = report.chance, report.perfect
    lines.append(f"| (random ranking) | {_fmt(ch['precision_at_k'])} | {_fmt(ch['recall_at_k'])} | | |")
    lines.append(f"| (perfect ranking) | {_fmt(best['precision_at_k'])} | {_fmt(best['recall_at_k'])} | 1.000 | |")
    lines += ["", f"Each query has on average {best['mean_relevant_per_query']:.1f} other objects of its category, so "
              f"R@{k} cannot exceed {_fmt(best['recall_at_k'])} here. The paper's R@5 above its P@5 implies about "
              f"{0.425 * 5 / 0.761:.1f} relevant objects per query in its selection: compare R@K only across "
              "selections with similar counts."]
    lines += ["", "## Table 2: views x metrics", "", f"| View | Metric | P@{k} | R@{k} | mAP | queries |",
              "|---|---|---|---|---|---|"]
    for row in report.results:
        s = row.overall
        lines.append(f"| {row.view} | {row.metric} | {_fmt(s.precision_at_k)} | {_fmt(s.recall_at_k)} | "
                     f"{_fmt(s.mean_ap)} | {s.defined_queries} |")
    lines += ["", f"## Per category ({first})", "", f"| Category | View | P@{k} | R@{k} | mAP | queries |",
              "|---|---|---|---|---|---|"]
    for cat in report.per_category:
        for row in report.results:
            if row.metric != first:
                continue
            s = row.per_category[cat]
            lines.append(f"| {cat} | {row.view} | {_fmt(s.precision_at_k)} | {_fmt(s.recall_at_k)} | "
                         f"{_fmt(s.mean_ap)} | {s.defined_queries} |")
    lines += ["", f"Precision@K = relevant in top K / K; Recall@K = relevant in top K / all other objects "
              "of the query's category; AP = (1/R) sum_i P@i * rel_i; means over queries (see "
              "core/evaluate/metrics.py).", ""]
    return "\n".join(lines)


def write_plots(report: RetrievalReport, out: Path) -> list[str]:
    """bars.png (P@K, R@K, mAP per view, one panel per metric) and pr_curves.png; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, views, metrics = report.k, report.views, report.metrics
    rows = {(r.view, r.metric): r for r in report.results}
    tag = " [untrained]" if report.models.untrained else ""
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(5, 1.4 * len(views)) * len(metrics), 4), squeeze=False)
    x = np.arange(len(views))
    for ax, metric in zip(axes[0], metrics):
        for j, (key, name) in enumerate((("precision_at_k", f"P@{k}"), ("recall_at_k", f"R@{k}"), ("mean_ap", "mAP"))):
            vals = [getattr(rows[(v, metric)].overall, key) for v in views]
            ax.bar(x + (j - 1) * 0.27, vals, width=0.27, label=name)
        ax.set_xticks(x, views, rotation=20)
        ax.set_ylim(0, 1)
        ax.set_title(f"{metric}{tag}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "bars.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 5))
    styles = ["-", "--", ":", "-."]
    for (view, metric), row in rows.items():
        ax.plot(row.pr_recall, row.pr_precision, styles[metrics.index(metric) % 4],
                color=f"C{views.index(view) % 10}", label=f"{view} / {metric}")
    ax.set_xlabel("recall")
    ax.set_ylabel("interpolated precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Precision-recall, mean over queries{tag}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pr_curves.png", dpi=100)
    plt.close(fig)
    return ["bars.png", "pr_curves.png"]


# ----------------------------------------------------------------------------- the protocol


def run_evaluation(coco_path, images_dir, views, metrics, k: int, selection: SelectionSettings, *,
                   oracle_masks: bool, engine=None, batch_size: int = 32,
                   progress: bool = True) -> RetrievalReport:
    """The whole protocol; returns its :class:`RetrievalReport` (report.json is its to_json()).

    engine: a `core.engine.Engine` (default: SAM `PAPER_SAM` (vit_b) + the configured CLIP); its
    segmenter is used unless `oracle_masks`, its embedder always.
    """
    for view in views:
        get_view(view)
    for metric in metrics:
        if metric not in ("cosine", "l2"):
            raise ValueError(f"unknown metric {metric!r}; choose cosine and/or l2")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    started = time.perf_counter()
    coco = read_coco(coco_path)
    objects = select_objects(coco, selection)
    if len(objects) < 2:
        raise ValueError("the selection holds fewer than 2 objects: widen --categories / --limit-images "
                         "or lower --min-per-category / --min-area")
    _log(f"selected {len(objects)} objects in {len({o.image_id for o in objects})} images")

    engine = engine or Engine(EngineSettings(sam=PAPER_SAM))
    embedder = engine.embedder
    segmenter = None if oracle_masks else engine.segmenter
    embedded = embed_objects(objects, images_dir, views, embedder, segmenter=segmenter,
                             batch_size=batch_size, progress=progress)
    labels = [o.category for o in objects]
    results = [score_view_metric(embedded.embeddings[view], labels, view, metric, k, embedder.model_info)
               for view in views for metric in metrics]
    return RetrievalReport(
        coco=str(coco_path), images=str(images_dir), views=list(views), metrics=list(metrics), k=k,
        oracle_masks=oracle_masks, selection=selection,
        models=ModelsUsed(sam=None if oracle_masks else engine.settings.sam,
                          sam_fast_path=None if oracle_masks else engine.settings.fast,
                          clip=embedder.bundle.label, untrained=engine.untrained),
        objects=objects, mean_mask_iou=None if oracle_masks else float(embedded.mask_iou.mean()),
        empty_masks=embedded.empty_masks, chance=chance_scores(labels, k), perfect=perfect_scores(labels, k),
        results=results,
        seconds={**{key: round(v, 2) for key, v in embedded.seconds.items()},
                 "total": round(time.perf_counter() - started, 2)})


def write_outputs(report: RetrievalReport, out: str | Path, plots: bool = True) -> list[Path]:
    """report.json, report.md and (optionally) the plots in `out`; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=1, allow_nan=True))
    (out / "report.md").write_text(markdown_report(report))
    written = [out / "report.json", out / "report.md"]
    if plots:
        written += [out / name for name in write_plots(report, out)]
    return written


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
