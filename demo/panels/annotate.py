"""Objects: the image's object list (issue 29). "Keep" adds the current selection (the
canvas's, strokes included) with the active class; objects can be hidden, deleted, renamed,
merged and relabelled several at once; every list edit can be undone and redone; the class
list is typed, loaded from a text file or COCO-panoptic's 133 names; the list is exported
in the dataset formats (core.io.formats) and a file of one of them loads it back.

The list and its history are per session and per image (a new image starts a new list), in
core.annotate (ObjectList: compact RLE masks; History: bounded by steps and bytes)."""
from __future__ import annotations

import html
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from PIL import Image

from core.annotate.history import EditState, History
from core.annotate.objects import ObjectList
from core.find.vocab import coco_panoptic
from core.io.formats import export_set, read_set
from demo.state import Session, UserError
from demo.wiring import QUIET, PanelHost

#: Most objects one image's list may hold (the session's memory stays bounded).
MAX_OBJECTS = 2000
#: Most classes in the class list, and the longest name.
MAX_CLASSES = 500
EXPORTS = (("COCO instances (JSON)", "coco"), ("COCO panoptic (ZIP)", "panoptic"),
           ("Semantic PNG + palette (ZIP)", "semantic"), ("YOLO-seg (ZIP)", "yolo"), ("LabelMe (ZIP)", "labelme"))


@dataclass
class ImageObjects:
    """One image's objects and their undo/redo history (for the image `key`)."""

    key: str
    objects: ObjectList
    history: History = field(default=None)

    def __post_init__(self):
        if self.history is None:
            self.history = History(EditState.of(self.objects))

    @property
    def nbytes(self) -> int:
        return self.objects.nbytes + self.history.nbytes


def parse_ids(text) -> list[int]:
    """Object ids from "1, 3 5" (any separators); UserError when there are none."""
    ids = [int(t) for t in re.findall(r"\d+", str(text or ""))]
    if not ids:
        raise UserError("Type the ids of the objects (e.g. 1, 3) first.")
    return list(dict.fromkeys(ids))


def parse_classes(text: str) -> list[str]:
    """Class names, one per line or comma separated, blanks and repeats dropped."""
    names = [n.strip() for n in re.split(r"[\n,]", str(text or "")) if n.strip()]
    names = list(dict.fromkeys(names))
    if len(names) > MAX_CLASSES or any(len(n) > 80 for n in names):
        raise UserError(f"A class list holds at most {MAX_CLASSES} names of at most 80 characters.")
    return names


def coco_classes() -> list[str]:
    """COCO-panoptic's 133 class names."""
    return [c.name for c in coco_panoptic()]


class AnnotateCallbacks:
    """The Objects panel's work: each takes the session and plain values and returns the
    session plus plain values (the list's rows, a status line)."""

    def __init__(self, ws):
        self.ws = ws

    # ---- the list ------------------------------------------------------------------
    def current(self, session: Session) -> ImageObjects:
        """The session image's objects (a new, empty list for a new image)."""
        image = session.require_image()
        held = session.annotations
        if held is None or held.key != session.image_key:
            h, w = image.shape[:2]
            held = session.annotations = ImageObjects(session.image_key, ObjectList(h, w, session.image_name or "image"))
        return held

    def _edit(self, session: Session, action: str, fn) -> ImageObjects:
        held = self.current(session)
        try:
            fn(held.objects)
        except ValueError as exc:
            raise UserError(str(exc)[:1].upper() + str(exc)[1:]) from None
        held.history.record(action, EditState.of(held.objects))
        return held

    def keep(self, session: Session, category: str) -> str:
        """Add the selection (as the canvas shows it) as an object of `category`."""
        mask = session.require_selection()
        held = self.current(session)
        if len(held.objects) >= MAX_OBJECTS:
            raise UserError(f"This image already has {MAX_OBJECTS} objects, the most one list holds.")
        if not str(category or "").strip():
            raise UserError("Type or pick a class name first (an empty class name is refused).")
        new = []
        self._edit(session, "keep", lambda objs: new.append(objs.add(mask, category)))
        return f"Kept object {new[0]} as '{category.strip()}' ({int(mask.sum())} px)."

    def delete(self, session: Session, ids) -> str:
        ids = parse_ids(ids)
        self._edit(session, "delete", lambda objs: objs.delete(self._known(objs, ids)))
        return f"Deleted object(s) {', '.join(map(str, ids))}."

    def rename(self, session: Session, ids, category: str) -> str:
        """One id: rename; several: relabel them all."""
        ids = parse_ids(ids)
        if len(ids) == 1:
            self._edit(session, "rename", lambda objs: objs.rename(self._known(objs, ids)[0], category))
        else:
            self._edit(session, "relabel", lambda objs: objs.relabel(self._known(objs, ids), category))
        return f"Object(s) {', '.join(map(str, ids))} are now '{str(category).strip()}'."

    def merge(self, session: Session, ids) -> str:
        ids = parse_ids(ids)
        got = []
        self._edit(session, "merge", lambda objs: got.append(objs.merge(self._known(objs, ids))))
        return f"Merged {', '.join(map(str, ids))} into object {got[0]}."

    def hide(self, session: Session, ids, hidden: bool = True) -> str:
        ids = parse_ids(ids)
        self._edit(session, "hide", lambda objs: objs.set_hidden(self._known(objs, ids), hidden))
        return f"{'Hid' if hidden else 'Showed'} object(s) {', '.join(map(str, ids))}."

    @staticmethod
    def _known(objs: ObjectList, ids: list[int]) -> list[int]:
        missing = [i for i in ids if i not in objs]
        if missing:
            raise UserError(f"No object {', '.join(map(str, missing))} in this image's list.")
        return ids

    def undo(self, session: Session) -> str:
        held = self.current(session)
        action = held.history.undo_action
        state = held.history.undo()
        if state is None:
            return "Nothing to undo in the object list."
        state.restore_into(held.objects)
        return f"Undid: {action}."

    def redo(self, session: Session) -> str:
        held = self.current(session)
        action = held.history.redo_action
        state = held.history.redo()
        if state is None:
            return "Nothing to redo in the object list."
        state.restore_into(held.objects)
        return f"Redid: {action}."

    def rows(self, session: Session) -> list[list]:
        """The list as table rows: id, colour, class, area (px), hidden."""
        if session.image is None or session.annotations is None or session.annotations.key != session.image_key:
            return []
        return [[r["id"], r["colour"], r["category"], r["area"], "hidden" if r["hidden"] else ""]
                for r in session.annotations.objects.summary()]

    def table_html(self, session: Session) -> str:
        """The list with a colour swatch per object (ids for the id box)."""
        rows = self.rows(session)
        if not rows:
            return "<p class='obj-empty'>No objects yet: select one on the canvas and press Keep.</p>"
        body = "".join(
            f"<tr><td>{i}</td><td><span class='obj-swatch' style='background:{c}'></span></td>"
            f"<td>{_esc(n)}</td><td>{a}</td><td>{h}</td></tr>"
            for i, c, n, a, h in rows)
        return ("<table class='obj-table'><thead><tr><th>id</th><th></th><th>class</th><th>area px</th>"
                f"<th></th></tr></thead><tbody>{body}</tbody></table>")

    # ---- files ---------------------------------------------------------------------
    def export(self, session: Session, fmt: str) -> str:
        """The list written in `fmt` (core.io.formats) into the session's folder; the file to
        download (a JSON for COCO, else a ZIP of the format's folder)."""
        held = self.current(session)
        if not len(held.objects):
            raise UserError("The object list is empty: keep an object first.")
        if fmt not in dict((v, k) for k, v in EXPORTS):
            raise UserError(f"Unknown export format {fmt!r}.")
        folder = self.ws.files.files_dir(session)
        stem = Path(session.image_name).stem or "image"
        out = Path(tempfile.mkdtemp(dir=folder, prefix="objects_"))
        image = held.objects.to_labelled()
        pictures = Path(tempfile.mkdtemp(dir=folder, prefix="picture_"))   # for YOLO, LabelMe
        Image.fromarray(session.image).save(pictures / Path(image.file_name).name)
        image.file_name = Path(image.file_name).name
        try:
            written = export_set(out, [image], held.objects.categories(), fmt, image_root=pictures)
        finally:
            shutil.rmtree(pictures, ignore_errors=True)
        files = written.get(fmt) or []
        if fmt == "coco" and len(files) == 1:
            target = folder / f"{stem}_objects_coco.json"
            shutil.move(str(files[0]), target)
            shutil.rmtree(out, ignore_errors=True)
            return str(target)
        archive = shutil.make_archive(str(folder / f"{stem}_objects_{fmt}"), "zip", out)
        shutil.rmtree(out, ignore_errors=True)
        return archive

    def load(self, session: Session, path) -> str:
        """Restore the list from a COCO / panoptic JSON, a LabelMe JSON or a ZIP written by
        `export` (the entry for this image's name, or the only image in the file)."""
        held = self.current(session)
        path = Path(str(path or ""))
        if not path.is_file():
            raise UserError("Choose a file to load.")
        with tempfile.TemporaryDirectory() as tmp:
            target = path
            if path.suffix.lower() == ".zip":
                shutil.unpack_archive(str(path), tmp, "zip")
                found = [p for p in (Path(tmp), *Path(tmp).rglob("*")) if p.is_dir() and
                         ((p / "data.yaml").is_file() or any(p.glob("*.json")))]
                if not found:
                    raise UserError("That ZIP holds no COCO, panoptic, YOLO or LabelMe files.")
                jsons = [j for j in found[0].glob("*.json")]
                target = jsons[0] if jsons and not (found[0] / "data.yaml").is_file() and len(jsons) == 1 else found[0]
            try:
                images, _ = read_set(target)
            except (ValueError, KeyError, OSError) as exc:
                raise UserError(f"That file could not be read as an object list: {exc}") from None
        h, w = session.image.shape[:2]
        stem = Path(session.image_name).stem
        match = [im for im in images if Path(im.file_name).stem == stem] or (images if len(images) == 1 else [])
        if not match:
            raise UserError(f"That file has no objects for {session.image_name}.")
        image = match[0]
        if (image.height, image.width) != (h, w):
            raise UserError(f"That file's image is {image.width}x{image.height}; this one is {w}x{h}.")
        loaded = ObjectList.from_labelled(image)
        held.objects.restore(loaded.snapshot())
        held.history.record("load", EditState.of(held.objects))
        return f"Loaded {len(held.objects)} object(s) from {path.name}."


def _esc(text) -> str:
    return html.escape(str(text))


CSS = """
.obj-table { border-collapse: collapse; font-size: 13px; width: 100%; }
.obj-table td, .obj-table th { padding: 2px 6px; border-bottom: 1px solid var(--border-color-primary, #ddd); text-align: left; }
.obj-swatch { display: inline-block; width: 14px; height: 14px; border-radius: 3px; vertical-align: middle; }
"""
HELP = ("**Keys**: on the canvas `B` brush · `E` eraser · `[` `]` brush size · `Esc` back to prompts · "
        "`Ctrl+Z` undo · `Ctrl+Shift+Z` / `Ctrl+Y` redo. Object ids: type them (e.g. `1, 3`) for delete, "
        "rename (several: relabel), merge, hide.")


def build(sh: PanelHost) -> None:
    """The Objects tab: class list, Keep, the list, its edits, undo/redo, export and load."""
    cb = sh.cb.annotate
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            classes = gr.Textbox(label="Classes (one per line)", lines=4, elem_id="obj-classes",
                                 placeholder="dog\ncat\n...")
            with gr.Row():
                coco_btn = gr.Button("COCO-panoptic 133", size="sm", elem_id="obj-coco")
                class_file = gr.UploadButton("Load .txt", file_types=[".txt"], size="sm", elem_id="obj-class-file")
            active = gr.Dropdown([], value=None, label="Active class (new objects)", allow_custom_value=True,
                                 elem_id="obj-active")
            keep = gr.Button("Keep selection", variant="primary", elem_id="obj-keep")
        with gr.Column(scale=2, min_width=300):
            table = gr.HTML(cb.table_html(Session()), elem_id="obj-table")
            with gr.Row():
                ids = gr.Textbox(label="Object ids", placeholder="1, 3", scale=1, elem_id="obj-ids")
                new_name = gr.Textbox(label="New class", scale=1, elem_id="obj-name")
            with gr.Row():
                buttons = {name: gr.Button(label, size="sm", elem_id=f"obj-{name}") for name, label in (
                    ("rename", "Rename / relabel"), ("merge", "Merge"), ("hide", "Hide"), ("show", "Show"),
                    ("delete", "Delete"), ("undo", "↶ Undo"), ("redo", "↷ Redo"))}
            with gr.Row():
                fmt = gr.Dropdown(list(EXPORTS), value="coco", label="Export format", scale=1, elem_id="obj-format")
                export_btn = gr.Button("Export", size="sm", scale=0, elem_id="obj-export")
                download = gr.File(label="Export", scale=1, elem_id="obj-download", interactive=False)
                load_file = gr.UploadButton("Load a file", file_types=[".json", ".zip"], size="sm",
                                            elem_id="obj-load")
            gr.Markdown(HELP, elem_id="obj-help")
    gr.HTML(f"<style>{CSS}</style>", visible=True, padding=False)
    light = sh.q["light"]

    def view(sess: Session, status: str):
        return sess, cb.table_html(sess), status

    outs = [sh.session, table, sh.status]
    keep.click(sh.guard(lambda s, c: view(s, cb.keep(s, c))), [sh.session, active], outs, **QUIET, **light)
    buttons["delete"].click(sh.guard(lambda s, i: view(s, cb.delete(s, i))), [sh.session, ids], outs, **QUIET, **light)
    buttons["rename"].click(sh.guard(lambda s, i, n: view(s, cb.rename(s, i, n))), [sh.session, ids, new_name], outs,
                            **QUIET, **light)
    buttons["merge"].click(sh.guard(lambda s, i: view(s, cb.merge(s, i))), [sh.session, ids], outs, **QUIET, **light)
    buttons["hide"].click(sh.guard(lambda s, i: view(s, cb.hide(s, i, True))), [sh.session, ids], outs, **QUIET, **light)
    buttons["show"].click(sh.guard(lambda s, i: view(s, cb.hide(s, i, False))), [sh.session, ids], outs, **QUIET, **light)
    buttons["undo"].click(sh.guard(lambda s: view(s, cb.undo(s))), [sh.session], outs, **QUIET, **light)
    buttons["redo"].click(sh.guard(lambda s: view(s, cb.redo(s))), [sh.session], outs, **QUIET, **light)

    def on_classes(text: str, current):
        names = parse_classes(text)
        value = current if current in names else (names[0] if names else None)
        return gr.Dropdown(choices=names, value=value), gr.skip()

    def on_class_file(file):
        text = Path(file).read_text(errors="replace")[:100_000]
        return "\n".join(parse_classes(text)), gr.skip()

    classes.change(sh.guard(on_classes), [classes, active], [active, sh.status], **QUIET, **light)
    coco_btn.click(lambda: "\n".join(coco_classes()), None, [classes], **QUIET, **light)
    class_file.upload(sh.guard(on_class_file), [class_file], [classes, sh.status], **QUIET, **light)
    export_btn.click(sh.guard(lambda s, f: (s, cb.export(s, f), "Exported the object list.")), [sh.session, fmt],
                     [sh.session, download, sh.status], **QUIET, **light)
    load_file.upload(sh.guard(lambda s, f: view(s, cb.load(s, f))), [sh.session, load_file], outs, **QUIET, **light)
