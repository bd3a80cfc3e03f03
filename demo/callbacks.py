"""UI callbacks: unpack widget values, call the core engine, format the results.

Each public method of `Callbacks` takes the session's `Session` plus widget values and
returns plain values for the output widgets (numpy images, lists of (image, caption) for
galleries, Markdown strings, file paths). They raise `UserError` (or a core ValueError)
for anything the person can fix; `demo.layout` turns every exception into a readable
message. No gradio import here, so the callbacks are testable without a browser.

Coordinates: click positions arrive in pixels of the displayed canvas, which shows the
image scaled by `canvas_scale` (<= 1); they are mapped back to image pixels here.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from core.automask import AutoMaskSettings
from core import refer
from core.build import FoundObject, list_images, records_for
from core.example_gallery import combine, gallery_from_arrays
from core.images import load_image
from core.masks import mask_to_png, mask_to_rle, rle_to_mask
from core.views import VIEWS, mask_to_box, render_view
from demo import rendering
from demo.context import AppContext
from demo.state import CLICK_MODES, Prompt, Session, UserError

Progress = Callable[[float, str], None]
#: Widget values of the Segment area, in this order: session, canvas, candidates gallery,
#: selection info, mask PNG path, mask RLE JSON path, status.
SEGMENT_OUTPUTS = ("session", "canvas", "candidates", "info", "png", "rle", "status")
#: Tiles of result galleries are at most this big.
TILE_SIDE = 192


def _no_progress(fraction: float, note: str) -> None:
    pass


def canvas_scale(image: np.ndarray, max_side: int) -> float:
    """Factor (<= 1) the canvas shows `image` at so its longer side fits `max_side`."""
    return min(1.0, max_side / max(image.shape[:2]))


def _ms(start: float) -> str:
    return f"{(time.perf_counter() - start) * 1000:.0f} ms"


class Callbacks:
    """The app's callbacks, bound to the shared `AppContext` (models, example gallery)."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    # ================================================================ helpers
    @property
    def engine(self):
        return self.ctx.require_models()

    def automask_settings(self) -> AutoMaskSettings:
        return self.ctx.automask_settings()

    def _embedding(self, session: Session):
        image = session.require_image()
        if session.embedding is None:
            session.embedding = self.engine.segmenter.set_image(image)
        return session.embedding

    def render_canvas(self, session: Session) -> np.ndarray | None:
        """The image with the automatic masks, the selected mask and the prompts drawn,
        scaled by `canvas_scale`. None when there is no image."""
        if session.image is None:
            return None
        image = session.image
        if session.auto is not None and len(session.auto.masks) and session.selection != "prompt":
            highlight = session.auto_pick if session.selection == "auto" else None
            picture = rendering.overlay_masks(image, session.auto.masks, highlight=highlight)
        else:
            picture = image
        mask = session.selected_mask()
        if mask is not None and session.selection != "auto":
            picture = rendering.overlay_mask(picture, mask)
        points, labels = session.points()
        picture = rendering.draw_prompts(picture, points.tolist(), labels.tolist(), session.box(),
                                         session.pending_corner())
        scale = canvas_scale(image, self.ctx.settings.display_max_side)
        if scale < 1.0:
            picture = rendering.thumbnail(picture, self.ctx.settings.display_max_side)
        return picture

    def candidate_tiles(self, session: Session) -> list[tuple[np.ndarray, str]]:
        """(thumbnail, caption) for each candidate mask of the current prompts."""
        if session.candidates is None or session.image is None:
            return []
        tiles = []
        for i, (mask, score) in enumerate(zip(session.candidates.masks, session.candidates.scores)):
            picked = " (selected)" if i == session.chosen and session.selection == "prompt" else ""
            tile = rendering.thumbnail(rendering.overlay_mask(session.image, mask), TILE_SIDE)
            tiles.append((tile, f"#{i + 1} score {float(score):.3f}{picked}"))
        return tiles

    def selection_info(self, session: Session) -> str:
        """Markdown describing the selected object (box, area, score, prompts)."""
        if session.image is None:
            return "No image yet: upload one or pick an example."
        mask = session.selected_mask()
        points, labels = session.points()
        prompts = (f"{int((labels == 1).sum())} positive, {int((labels == 0).sum())} negative point(s)"
                   + (", 1 box" if session.box() is not None else ""))
        if session.pending_corner() is not None:
            prompts += ", box waiting for its second corner"
        head = f"**{session.image_name}** ({session.image.shape[1]}x{session.image.shape[0]}) · prompts: {prompts}"
        if mask is None or not mask.any():
            return head + "\n\nNo object selected."
        x1, y1, x2, y2 = (int(v) for v in mask_to_box(mask))
        area = int(mask.sum())
        detail = f"selected object: box ({x1}, {y1}, {x2}, {y2}), {area} px ({area / mask.size:.1%} of the image)"
        if session.selection == "prompt":
            detail += (f", candidate #{session.chosen + 1} of {len(session.candidates.masks)}, "
                       f"score {float(session.candidates.scores[session.chosen]):.3f}")
        elif session.selection == "auto":
            detail += (f", automatic mask #{session.auto_pick + 1} of {len(session.auto.masks)}, "
                       f"score {float(session.auto.scores[session.auto_pick]):.3f}")
        elif session.selection == "refer":
            detail += ", chosen by the referring expression"
        return head + "\n\n" + detail

    def write_downloads(self, session: Session) -> tuple[str | None, str | None]:
        """Write the selected mask as PNG and as COCO RLE JSON into the session's folder;
        returns their paths, or (None, None) when nothing is selected."""
        mask = session.selected_mask()
        if session.image is None or mask is None or not mask.any():
            return None, None
        folder = Path(session.downloads_dir())
        stem = Path(session.image_name).stem or "image"
        png = folder / f"{stem}_mask.png"
        png.write_bytes(mask_to_png(mask))
        x1, y1, x2, y2 = (float(v) for v in mask_to_box(mask))
        ann = {"image": session.image_name, "segmentation": mask_to_rle(mask),
               "bbox": [x1, y1, x2 - x1, y2 - y1], "area": int(mask.sum()),
               "note": "COCO compressed RLE; bbox is COCO [x, y, width, height] in pixels"}
        rle = folder / f"{stem}_mask.rle.json"
        rle.write_text(json.dumps(ann))
        return str(png), str(rle)

    def segment_outputs(self, session: Session, status: str) -> tuple:
        """Values for SEGMENT_OUTPUTS."""
        png, rle = self.write_downloads(session)
        return (session, self.render_canvas(session), self.candidate_tiles(session),
                self.selection_info(session), png, rle, status)

    def _predict(self, session: Session) -> str:
        """Run SAM on the session's prompts; returns a status line."""
        if not session.has_prompts():
            session.candidates, session.chosen = None, 0
            if session.selection == "prompt":
                session.selection = "none"
            return "No prompts left."
        emb = self._embedding(session)
        points, labels = session.points()
        start = time.perf_counter()
        pred = self.engine.segmenter.predict(emb, points if len(points) else None,
                                             labels if len(labels) else None, session.box())
        session.candidates, session.chosen, session.selection = pred, 0, "prompt"
        best = float(pred.scores[0])
        return f"Mask updated in {_ms(start)}: {len(pred.masks)} candidate(s), best score {best:.3f}."

    # ================================================================ Segment
    def load_image(self, session: Session, src, name: str,
                   progress: Progress = _no_progress) -> tuple:
        """Start over on a new image (path, bytes or array): embed it once with SAM."""
        if src is None:
            raise UserError("No image given: upload a file or pick an example.")
        image = load_image(src)
        progress(0.1, "computing SAM's image embedding (once per image)")
        start = time.perf_counter()
        emb = self.engine.segmenter.set_image(image)
        session.reset_image(image, name, emb)
        return self.segment_outputs(
            session, f"Loaded {name} ({image.shape[1]}x{image.shape[0]}); SAM embedding ready in "
                     f"{_ms(start)}. Click on an object.")

    def example_paths(self) -> list[Path]:
        return list_images(self.ctx.settings.examples_dir)

    def load_example(self, session: Session, index: int, progress: Progress = _no_progress) -> tuple:
        paths = self.example_paths()
        if not isinstance(index, int) or not 0 <= index < len(paths):
            raise UserError(f"No example number {index!r}.")
        return self.load_image(session, paths[index], paths[index].name, progress)

    def load_upload(self, session: Session, path, progress: Progress = _no_progress) -> tuple:
        if not path:
            raise UserError("The upload is empty.")
        return self.load_image(session, path, "upload" + Path(str(path)).suffix.lower(), progress)

    def click(self, session: Session, mode_label: str, xy) -> tuple:
        """A click at canvas pixel `xy` = [x, y] in the mode the radio shows."""
        image = session.require_image()
        if xy is None or len(xy) != 2:
            raise UserError("Click inside the image.")
        mode = CLICK_MODES.get(mode_label)
        if mode is None:
            raise UserError(f"Unknown click mode {mode_label!r}; choose one of {', '.join(CLICK_MODES)}.")
        scale = canvas_scale(image, self.ctx.settings.display_max_side)
        x = min(max(float(xy[0]) / scale, 0.0), image.shape[1] - 1.0)
        y = min(max(float(xy[1]) / scale, 0.0), image.shape[0] - 1.0)
        if mode == "pick":
            return self.segment_outputs(session, self._pick_auto(session, x, y))
        if mode == "box":
            corner = session.pending_corner()
            if corner is None:
                session.prompts = session.prompts + [Prompt("corner", x, y)]
                return self.segment_outputs(session, f"Box: first corner at ({x:.0f}, {y:.0f}); "
                                                     "click the opposite corner.")
            x1, x2 = sorted((corner[0], x))
            y1, y2 = sorted((corner[1], y))
            if x2 - x1 < 2 or y2 - y1 < 2:
                raise UserError("That box is too small: click the opposite corner of the object.")
            kept = [p for p in session.prompts if p.kind != "corner"]
            session.prompts = kept + [Prompt("box", x1, y1, x2 + 1, y2 + 1)]
        else:
            label = 1 if mode == "positive" else 0
            session.prompts = session.prompts + [Prompt("point", x, y, label=label)]
        try:
            status = self._predict(session)
        except Exception:
            session.prompts = session.prompts[:-1]   # keep the session as it was
            raise
        return self.segment_outputs(session, status)

    def _pick_auto(self, session: Session, x: float, y: float) -> str:
        if session.auto is None or not len(session.auto.masks):
            raise UserError("No automatic masks yet: press 'Everything' first.")
        covering = np.flatnonzero(session.auto.masks[:, int(y), int(x)])
        if covering.size == 0:
            raise UserError("No automatic mask covers that point; click on a coloured region.")
        areas = session.auto.masks[covering].reshape(len(covering), -1).sum(axis=1)
        session.auto_pick = int(covering[np.argmin(areas)])
        session.selection = "auto"
        return f"Picked automatic mask #{session.auto_pick + 1} (the smallest one under the click)."

    def undo(self, session: Session) -> tuple:
        session.require_image()
        if not session.prompts:
            raise UserError("Nothing to undo.")
        session.prompts = session.prompts[:-1]
        status = self._predict(session) if session.has_prompts() else "Undone; no prompts left."
        if not session.has_prompts():
            session.candidates, session.chosen = None, 0
            if session.selection == "prompt":
                session.selection = "none"
        return self.segment_outputs(session, status)

    def clear(self, session: Session) -> tuple:
        session.require_image()
        session.clear_prompts()
        session.auto, session.auto_pick, session.refer_mask = None, None, None
        session.selection = "none"
        return self.segment_outputs(session, "Cleared all points, boxes and masks.")

    def choose_candidate(self, session: Session, index: int) -> tuple:
        if session.candidates is None:
            raise UserError("There are no candidate masks yet: click on the image first.")
        if not isinstance(index, int) or not 0 <= index < len(session.candidates.masks):
            raise UserError(f"No candidate number {index!r}.")
        session.chosen, session.selection = index, "prompt"
        return self.segment_outputs(session, f"Selected candidate #{index + 1} "
                                             f"(score {float(session.candidates.scores[index]):.3f}).")

    def everything(self, session: Session, progress: Progress = _no_progress) -> tuple:
        """SAM's automatic masks of the whole image as a coloured overlay."""
        emb = self._embedding(session)
        progress(0.1, "automatic masks")
        start = time.perf_counter()
        auto = self.engine.segmenter.everything(emb, self.automask_settings())
        session.auto, session.auto_pick = auto, None
        if session.selection == "auto":
            session.selection = "none"
        if not len(auto.masks):
            return self.segment_outputs(session, f"No automatic masks found ({_ms(start)}).")
        session.clear_prompts()
        return self.segment_outputs(session, f"{len(auto.masks)} automatic masks in {_ms(start)}: "
                                             "click one to select it.")

    # ================================================================ Compare views
    def galleries(self, progress: Progress = _no_progress) -> dict:
        return self.ctx.galleries(progress)

    def my_gallery(self, session: Session, view: str, metric: str = "cosine"):
        """The session's own additions in `view` as a Gallery, or None when there are none."""
        emb = session.user_embeddings.get(view)
        records = [r for r in session.user_records if r.view == view]
        if emb is None or not len(records):
            return None
        return gallery_from_arrays(emb, records, view, metric, self.ctx.engine.embedder.model_info)

    def searchable(self, session: Session, view: str, metric: str, include_mine: bool,
                   progress: Progress = _no_progress):
        """The example gallery of `view` (plus the session's additions) searched by `metric`."""
        galleries = self.galleries(progress)
        if view not in galleries:
            raise UserError(f"The gallery has no '{view}' view; choose one of {', '.join(galleries)}.")
        parts = [galleries[view]]
        mine = self.my_gallery(session, view) if include_mine else None
        if mine is not None:
            parts.append(mine)
        return combine(parts, metric)

    def record_image(self, session: Session, source: str) -> np.ndarray:
        if source in session.user_images:
            return session.user_images[source]
        return self.ctx.source_image(source)

    def hit_tile(self, session: Session, hit) -> np.ndarray:
        """The object of a search hit, rendered in its view, as a small tile."""
        rec = hit.record
        image = self.record_image(session, rec.source)
        mask = rle_to_mask(rec.mask_rle) if rec.mask_rle else None
        if mask is None:
            x1, y1, x2, y2 = (int(v) for v in rec.box)
            tile = image[y1:y2, x1:x2]
        else:
            tile = render_view(rec.view, image, mask)
        return rendering.thumbnail(np.ascontiguousarray(tile), TILE_SIDE)

    @staticmethod
    def hit_caption(hit, metric: str) -> str:
        rec = hit.record
        label = rec.category or Path(rec.source).name.replace("session:", "mine:")
        score = f"cos {hit.score:.3f}" if metric == "cosine" else f"d² {hit.score:.3f}"
        return f"#{hit.rank + 1} {score} · {label} · {rec.view}"

    def compare(self, session: Session, progress: Progress = _no_progress) -> tuple:
        """Every view of the selected object and, where the gallery has that view, its
        nearest objects. Returns (session, [view image per VIEW], [neighbour tiles per VIEW], status)."""
        image, mask = session.require_image(), session.require_selection()
        rendered = {name: render_view(name, image, mask) for name in VIEWS}
        progress(0.05, "example gallery")
        galleries = self.galleries(progress)
        searchable_views = [v for v in VIEWS if v in galleries]
        progress(0.6, "embedding the views")
        vectors = self.engine.embedder.embed_images([rendered[v] for v in searchable_views])
        neighbours = {}
        k = self.ctx.settings.neighbours
        for view, vec in zip(searchable_views, vectors):
            gallery = self.searchable(session, view, "cosine", True)
            hits = gallery.search(vec[None], k)[0]
            neighbours[view] = [(self.hit_tile(session, h), self.hit_caption(h, "cosine")) for h in hits]
        views = [rendering.thumbnail(rendered[v], 320) for v in VIEWS]
        tiles = [neighbours.get(v, []) for v in VIEWS]
        missing = [v for v in VIEWS if v not in galleries]
        note = f" (no gallery for {', '.join(missing)})" if missing else ""
        return (session, views, tiles,
                f"Compared {len(VIEWS)} views; nearest objects for {len(searchable_views)} of them{note}.")

    # ================================================================ Search
    def search(self, session: Session, query_source: str, text: str, view: str, metric: str,
               k: int, include_mine: bool, progress: Progress = _no_progress) -> tuple:
        """Query the gallery with the selected object or a text. Returns
        (session, result tiles, status)."""
        if metric not in ("cosine", "l2"):
            raise UserError(f"Unknown metric {metric!r}: choose cosine or l2.")
        k = int(k)
        if not 1 <= k <= 100:
            raise UserError("The number of results must be between 1 and 100.")
        if query_source == "text":
            if not text or not text.strip():
                raise UserError("Type a text to search for (e.g. 'a cat').")
            query = self.engine.embedder.embed_texts([text.strip()])
            what = f"text '{text.strip()}'"
        else:
            image, mask = session.require_image(), session.require_selection()
            query = self.engine.embedder.embed_images([render_view(view, image, mask)])
            what = f"the selected object ({view} view)"
        gallery = self.searchable(session, view, metric, include_mine, progress)
        start = time.perf_counter()
        hits = gallery.search(query, k)[0]
        took = _ms(start)
        session.hits = hits
        tiles = [(self.hit_tile(session, h), self.hit_caption(h, metric)) for h in hits]
        order = "higher is closer" if metric == "cosine" else "lower is closer"
        return (session, tiles,
                f"{len(hits)} results for {what} among {len(gallery)} objects "
                f"(view {view}, {metric}: {order}; search {took}). Select a tile to see its source.")

    def show_hit(self, session: Session, index: int) -> tuple:
        """(source image with the object outlined, Markdown) for result `index`."""
        if not isinstance(index, int) or not 0 <= index < len(session.hits):
            raise UserError("Run a search and select one of its results.")
        hit = session.hits[index]
        rec = hit.record
        image = self.record_image(session, rec.source)
        if rec.mask_rle:
            picture = rendering.outline_mask(image, rle_to_mask(rec.mask_rle))
        else:
            picture = rendering.draw_prompts(image, box=rec.box)
        x1, y1, x2, y2 = (int(v) for v in rec.box)
        md = (f"**#{hit.rank + 1}** score {hit.score:.4f} · source `{Path(rec.source).name}` · "
              f"box ({x1}, {y1}, {x2}, {y2}) · view {rec.view}"
              + (f" · category **{rec.category}**" if rec.category else ""))
        return picture, md

    def _add_objects(self, session: Session, masks: list[np.ndarray],
                     progress: Progress) -> tuple:
        image = session.require_image()
        views = [v for v in self.ctx.settings.gallery_views]
        source = f"session:{len(session.user_images)}:{session.image_name}"
        objects = [FoundObject(m, mask_to_box(m)) for m in masks if m.any()]
        if not objects:
            raise UserError("There are no objects to add.")
        new_records, new_vectors = [], {}
        for i, view in enumerate(views):
            progress(i / len(views), f"embedding {len(objects)} object(s) as '{view}'")
            new_vectors[view] = self.engine.embedder.embed_images(
                [render_view(view, image, o.mask) for o in objects])
            new_records += records_for(objects, source, image.shape[:2], view)
        # mutate only once everything has worked
        session.user_images = {**session.user_images, source: image}
        session.user_records = session.user_records + new_records
        session.user_embeddings = {
            v: np.concatenate([session.user_embeddings[v], new_vectors[v]])
            if v in session.user_embeddings else new_vectors[v] for v in views}
        return session, self.my_gallery_info(session), (
            f"Added {len(objects)} object(s) of {session.image_name} to your gallery "
            f"({len(views)} views).")

    def add_selected(self, session: Session, progress: Progress = _no_progress) -> tuple:
        """Add the selected object to this session's gallery: (session, info, status)."""
        return self._add_objects(session, [session.require_selection()], progress)

    def add_all(self, session: Session, progress: Progress = _no_progress) -> tuple:
        """Add every automatic mask of the current image to this session's gallery."""
        if session.auto is None:
            emb = self._embedding(session)
            progress(0.0, "automatic masks")
            session.auto = self.engine.segmenter.everything(emb, self.automask_settings())
        if not len(session.auto.masks):
            raise UserError("SAM found no objects in this image.")
        return self._add_objects(session, list(session.auto.masks), progress)

    def my_gallery_info(self, session: Session) -> str:
        views = self.ctx.settings.gallery_views
        count = sum(1 for r in session.user_records if r.view == views[0]) if views else 0
        images = len(session.user_images)
        if not count:
            return "Your gallery is empty: add the selected object or all objects of your image."
        return f"Your gallery: {count} object(s) from {images} image(s) (only you see them)."

    # ================================================================ Refer
    def parse_expression(self, text: str) -> str:
        """What the app understood of a referring expression, as Markdown (fast: spaCy only)."""
        if not text or not text.strip():
            raise UserError("Type a referring expression, e.g. 'the cat on the left'.")
        return self.expression_markdown(refer.parse(text))

    def refer(self, session: Session, text: str, progress: Progress = _no_progress) -> tuple:
        """Ground a referring expression in the session's image; the chosen object becomes
        the selection. Returns (session, candidate tiles, result image, status)."""
        image = session.require_image()
        if not text or not text.strip():
            raise UserError("Type a referring expression, e.g. 'the cat on the left'.")
        settings = refer.GroundingSettings(automask=self.automask_settings())
        # reuse the automatic masks the person already computed ('Everything')
        given = session.auto.masks if session.auto is not None and len(session.auto.masks) else None
        progress(0.1, "scoring candidate objects against the text")
        start = time.perf_counter()
        grounding = refer.ground(self.engine.segmenter, self.engine.embedder, image, text,
                                 settings=settings, candidate_masks=given)
        took = _ms(start)
        tiles = []
        for i in range(min(8, len(grounding))):
            caption = (f"#{i + 1} score {float(grounding.scores[i]):.3f} "
                       f"(local {float(grounding.local_scores[i]):.2f}, "
                       f"global {float(grounding.global_scores[i]):.2f})")
            if i == grounding.chosen:
                caption += " CHOSEN"
            tiles.append((rendering.thumbnail(rendering.overlay_mask(image, grounding.masks[i]),
                                              TILE_SIDE), caption))
        session.refer_mask = np.asarray(grounding.mask, dtype=bool)
        session.selection = "refer"
        picture = rendering.outline_mask(image, session.refer_mask)
        how = (f"the direction '{grounding.expression.direction}' chose candidate "
               f"#{grounding.chosen + 1} among the top {settings.top_k}"
               if grounding.direction_applied else "the best score chose")
        return (session, tiles, picture,
                f"Grounded '{text.strip()}' in {took} among {len(grounding)} candidates: {how}. "
                "It is highlighted and is now the selected object (Compare and Search use it).")

    @staticmethod
    def expression_markdown(expression) -> str:
        parts = [f"**noun:** {expression.noun or '(none found)'}",
                 f"**direction:** {expression.direction or '(none)'}"]
        if getattr(expression, "ordinal", 1) and expression.ordinal != 1:
            parts.append(f"**ordinal:** {expression.ordinal}")
        if getattr(expression, "corrections", ()):
            parts.append("**typos fixed:** " + ", ".join(f"{a} → {b}" for a, b in expression.corrections))
        return " · ".join(parts)
