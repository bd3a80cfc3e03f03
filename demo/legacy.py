"""The old whole-picture canvas, kept only so `demo.bench_browser` can compare it with the
browser canvas in the same run: every click re-renders the whole image with its overlay on
the server and sends it back as a new picture. Built by `demo.layout.build_demo` when
$SAMCLIP_CANVAS=picture. Not part of the normal app.
"""
from __future__ import annotations

from typing import Callable

import gradio as gr

from demo.callbacks import Callbacks
from demo.context import TITLE, AppContext
from demo.errors import guard
from demo.state import Session

MODES = ["+ positive point", "box (2 clicks: corners)", "pick an automatic mask"]


def build_picture_demo(ctx: AppContext, gpu: Callable | None = None) -> gr.Blocks:
    cb = Callbacks(ctx)
    examples = cb.example_paths()
    with gr.Blocks(title=TITLE + " (whole-picture canvas)") as demo:
        session = gr.State(Session())
        corner = gr.State(None)
        gr.Markdown(f"# {TITLE}\nThe old whole-picture canvas (for benchmarks).")
        banner = gr.Markdown(ctx.banner(), elem_id="banner")
        status = gr.Markdown("", elem_id="status")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.Image(type="filepath", sources=["upload"], label="Upload an image",
                                  height=160, elem_id="upload")
                example_gallery = gr.Gallery(value=[(str(p), p.stem) for p in examples],
                                             label="...or pick an example", columns=4, height=130,
                                             allow_preview=False, elem_id="examples")
                mode = gr.Radio(MODES, value=MODES[0], label="Click mode", elem_id="mode")
                everything_btn = gr.Button("Everything", size="sm", elem_id="everything")
            with gr.Column(scale=2):
                canvas = gr.Image(label="Image: click to segment", interactive=False, format="png",
                                  elem_id="canvas")
                info = gr.Markdown("", elem_id="info")
        outputs = [session, corner, canvas, info, status]

        def picture(sess: Session, corner_xy, message: str):
            return sess, corner_xy, cb.render_picture(sess), cb.selection_info(sess), message

        def load(sess: Session, path, name: str):
            out = cb.load_all(sess, path, name)
            return picture(sess, None, out.status)

        def on_example(sess: Session, evt: gr.SelectData):
            path, name = cb.example(evt.index)
            return load(sess, path, name)

        def on_upload(sess: Session, path):
            from pathlib import Path

            return load(sess, path, Path(str(path)).name)

        def on_click(sess: Session, corner_xy, mode_label: str, evt: gr.SelectData):
            sess.require_image()
            scale = cb.display_scale(sess)
            x, y = float(evt.index[0]) / scale, float(evt.index[1]) / scale
            if mode_label == MODES[2]:
                return picture(sess, None, cb.pick(sess, {"key": sess.image_key, "x": x, "y": y}).status)
            points = [[p.x1, p.y1, p.label] for p in sess.prompts if p.kind == "point"]
            box = sess.box()
            if mode_label == MODES[1]:
                if corner_xy is None:
                    return picture(sess, (x, y), "Box: first corner; click the opposite corner.")
                box = [corner_xy[0], corner_xy[1], x, y]
            else:
                points.append([x, y, 1])
            out = cb.commit_prompts(sess, {"key": sess.image_key, "points": points,
                                           "box": None if box is None else [float(v) for v in box]})
            return picture(sess, None, out.status)

        def on_everything(sess: Session):
            out = cb.everything(sess)
            sess.clear_prompts()             # the old canvas showed the automatic masks instead
            return sess, None, cb.render_picture(sess), out.info, out.status, MODES[2]

        def heavy(fn):
            return guard(gpu(fn) if gpu else fn, status)

        example_gallery.select(heavy(on_example), [session], outputs)
        upload.upload(heavy(on_upload), [session, upload], outputs)
        canvas.select(heavy(on_click), [session, corner, mode], outputs)
        everything_btn.click(heavy(on_everything), [session], outputs + [mode])
        timer = gr.Timer(1.0, active=True)
        timer.tick(lambda: ctx.banner(), None, banner)
        demo.load(lambda: ctx.banner(), None, banner)
    return demo
