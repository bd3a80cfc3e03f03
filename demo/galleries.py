"""The galleries a session searches: the shared example gallery plus the person's own
additions ("my gallery", per session, bounded), and how hits are drawn as tiles."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.gallery.build import FoundObject, records_for
from core.gallery.examples import combine, gallery_from_arrays
from core.io.masks import rle_to_mask
from core.views import mask_to_box, render_view
from demo import rendering
from demo import settings as serving
from demo.outputs import TILE_SIDE, Progress, no_progress
from demo.state import Session, UserError
from demo.workspace import Workspace


class SessionGalleries:
    """Example gallery + the session's own objects, searched together."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.ctx = ws.ctx

    def galleries(self, progress: Progress = no_progress) -> dict:
        return self.ctx.galleries(progress)

    def my_gallery(self, session: Session, view: str, metric: str = "cosine"):
        """The session's own additions in `view` as a Gallery, or None when there are none."""
        emb = session.user_embeddings.get(view)
        records = [r for r in session.user_records if r.view == view]
        if emb is None or not len(records):
            return None
        return gallery_from_arrays(emb, records, view, metric, self.ctx.engine.embedder.model_info)

    def searchable(self, session: Session, view: str, metric: str, include_mine: bool,
                   progress: Progress = no_progress):
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
        return record_tile(self.record_image(session, rec.source), rec, TILE_SIDE)

    @staticmethod
    def hit_caption(hit, metric: str) -> str:
        rec = hit.record
        label = rec.category or Path(rec.source).name.replace("session:", "mine:")
        score = f"cos {hit.score:.3f}" if metric == "cosine" else f"d² {hit.score:.3f}"
        return f"#{hit.rank + 1} {score} · {label} · {rec.view}"

    def add_objects(self, session: Session, masks: list[np.ndarray],
                     progress: Progress) -> tuple:
        """Embed `masks` of the session's image in every gallery view and add them to "my
        gallery" (the image is stored once per distinct image, within the session's limits).
        Returns (session, my-gallery line, status)."""
        image = session.require_image()
        views = [v for v in self.ctx.settings.gallery_views]
        source = f"session:{session.image_key[:16]}:{session.image_name}"
        objects = [FoundObject(m, mask_to_box(m)) for m in masks if m.any()]
        if not objects:
            raise UserError("There are no objects to add.")
        self.check_room(session, source, len(objects))
        new_records, new_vectors = [], {}
        for i, view in enumerate(views):
            progress(i / len(views), f"embedding {len(objects)} object(s) as '{view}'")
            new_vectors[view] = self.ws.engine.embedder.embed_images(
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

    @staticmethod
    def check_room(session: Session, source: str, new_objects: int) -> None:
        """UserError when adding `new_objects` objects (of image `source`) would pass the
        per-session limits of "my gallery" (images kept, objects per view)."""
        images = len(session.user_images) + (source not in session.user_images)
        if images > serving.MY_GALLERY_IMAGES:
            raise UserError(f"Your gallery holds objects of {serving.MY_GALLERY_IMAGES} images, its limit; "
                            "reload the page to start a new one.")
        views = max(1, len({r.view for r in session.user_records}))
        if len(session.user_records) // views + new_objects > serving.MY_GALLERY_OBJECTS:
            raise UserError(f"Your gallery would pass its limit of {serving.MY_GALLERY_OBJECTS} objects; "
                            "reload the page to start a new one.")

    def add_selected(self, session: Session, progress: Progress = no_progress) -> tuple:
        """Add the selected object to this session's gallery: (session, info, status)."""
        return self.add_objects(session, [session.require_selection()], progress)

    def add_all(self, session: Session, progress: Progress = no_progress) -> tuple:
        """Add every automatic mask of the current image to this session's gallery."""
        if session.auto is None:
            progress(0.0, "automatic masks")
            session.auto = self.ws.automatic_masks(session)
        if not len(session.auto.masks):
            raise UserError("SAM found no objects in this image.")
        return self.add_objects(session, list(session.auto.masks), progress)

    def my_gallery_info(self, session: Session) -> str:
        views = self.ctx.settings.gallery_views
        count = sum(1 for r in session.user_records if r.view == views[0]) if views else 0
        images = len(session.user_images)
        if not count:
            return "Your gallery is empty: add the selected object or all objects of your image."
        return f"Your gallery: {count} object(s) from {images} image(s) (only you see them)."


def record_tile(image: np.ndarray, rec, side: int) -> np.ndarray:
    """A gallery record's object in `image` (its source, (H, W, 3) uint8) rendered in the
    record's view (its box cut out when it has no mask), at most `side` pixels."""
    mask = rle_to_mask(rec.mask_rle) if rec.mask_rle else None
    if mask is None:
        x1, y1, x2, y2 = (int(v) for v in rec.box)
        tile = image[y1:y2, x1:x2]
    else:
        tile = render_view(rec.view, image, mask)
    return rendering.thumbnail(np.ascontiguousarray(tile), side)
