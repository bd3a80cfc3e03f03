"""The canvas that lives in the browser: a `gr.HTML` with its own JavaScript (`canvas.js`).

The picture is sent once (a URL the browser loads); afterwards Python sends only JSON
"canvas messages" (`demo.callbacks.Callbacks.canvas_message`) as the component's value, with
masks as run lengths at display size. The page calls `preview` (a server function, the
fast path for clicks, drags and hover) directly and reports what the person did with
`trigger(...)` events, which `demo.shell` wires to session callbacks:

- ``prompts`` {key, points: [[x, y, label]...], box, chosen, version, shown}: the prompts
  changed (`shown`: what the canvas shows selected, "prompt" | "external" | "none");
- ``pick`` {key, x, y} | {key, clear: true}: a click in 'Everything' mode, or the pick undone;
- ``everything`` {key}: compute all automatic masks;
- ``upload`` {path, name}: a file was uploaded (dropped or chosen) into Gradio's upload folder.

Needs no front-end build step: `gr.HTML(html_template, css_template, js_on_load,
server_functions)` only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import gradio as gr

HERE = Path(__file__).resolve().parent
#: canvas.js, then the brush and eraser (canvas_brush.js: functions canvas.js calls).
JS = (HERE / "canvas.js").read_text() + "\n" + (HERE / "canvas_brush.js").read_text()
#: The events the canvas triggers (each must appear quoted in the JavaScript).
EVENTS = ("prompts", "pick", "everything", "upload")

TEMPLATE = """
<div class="sc-root" tabindex="0" role="application" aria-label="Image canvas: click to segment; with the keyboard, arrows move a cross-hair, Space adds a point, Shift+Space a negative point, C a box corner, Enter picks an object after Everything">
  <div class="sc-toolbar">
    <span class="sc-tools" role="group" aria-label="click / tap tool">
      <button class="sc-tool sc-on" data-tool="pos" title="Click or tap: a positive point (object)">+ point</button>
      <button class="sc-tool" data-tool="neg" title="Click or tap: a negative point (background); with a mouse also right-click or Shift+click">− point</button>
      <button class="sc-tool" data-tool="box" title="Two taps: opposite corners of a box (with a mouse, just drag)">▭ box</button>
      <button class="sc-tool" data-tool="pick" title="Pick one of the automatic masks (after 'Everything')">▦ pick</button>
      <button class="sc-tool" data-tool="brush" title="Brush (B): paint onto the selected mask (none selected: a new mask)">✎ brush</button>
      <button class="sc-tool" data-tool="erase" title="Eraser (E): erase from the selected mask">⌫ eraser</button>
    </span>
    <label class="sc-brush" title="Brush / eraser size ([ smaller, ] larger)">size <input type="range" class="sc-brush-size" min="1" max="80" value="8"> <span class="sc-brush-label">8</span></label>
    <button class="sc-undo" title="Undo the last change (Ctrl+Z / Cmd+Z)">↶ Undo</button>
    <button class="sc-redo" title="Redo what was undone (Ctrl+Shift+Z / Ctrl+Y)">↷ Redo</button>
    <button class="sc-clear" title="Clear all prompts (Esc)">✕ Clear</button>
    <button class="sc-everything" title="All objects SAM finds">▦ Everything</button>
    <label class="sc-switch" title="Show the mask under the pointer while it rests on the picture"><input type="checkbox" class="sc-hover" checked> hover preview</label>
    <label class="sc-upload" title="Upload an image (or drop one on the canvas)">⇪ Upload<input type="file" class="sc-file" accept="image/*"></label>
  </div>
  <div class="sc-stage">
    <canvas class="sc-view" width="640" height="360"></canvas>
    <div class="sc-empty"><span>Drop an image here, press <b>Upload</b> or pick an example</span></div>
    <div class="sc-busy" style="display:none"><div class="sc-bar"><div class="sc-fill"></div></div><span class="sc-busy-text"></span></div>
    <div class="sc-notice" role="status" aria-live="polite" style="display:none"></div>
  </div>
  <div class="sc-footer"><span class="sc-cands"></span><span class="sc-readout"></span></div>
  <div class="sc-hint">click: + point · right-click / Shift+click: − point · drag: box · click a point: remove it · Ctrl+Z: undo · Ctrl+Shift+Z / Ctrl+Y: redo · Esc: clear · B: brush · E: eraser · [ ]: brush size · Esc (brush): back to prompts · keyboard (canvas focused): arrows move the cross-hair, Space / Shift+Space: + / − point, C: box corners, Enter: pick</div>
  <div class="sc-live" aria-live="polite"></div>
</div>
"""

CSS = """
.sc-root { outline: none; display: flex; flex-direction: column; gap: 6px; }
.sc-toolbar { display: flex; flex-wrap: wrap; gap: 4px; align-items: center; }
.sc-toolbar button, .sc-upload, .sc-chip {
  font-size: 13px; padding: 3px 9px; border-radius: 6px; cursor: pointer;
  border: 1px solid var(--border-color-primary, #ccc); background: var(--background-fill-secondary, #f4f4f5);
  color: var(--body-text-color, #222); }
.sc-toolbar button:disabled { opacity: .45; cursor: not-allowed; }
.sc-tools { display: inline-flex; gap: 0; }
.sc-tools button { border-radius: 0; margin-left: -1px; }
.sc-tools button:first-child { border-radius: 6px 0 0 6px; }
.sc-tools button:last-child { border-radius: 0 6px 6px 0; }
.sc-on { background: #0b5cad !important; color: #fff !important; border-color: #0b5cad !important; }
.sc-brush { font-size: 13px; display: inline-flex; align-items: center; gap: 3px; }
.sc-brush input { width: 80px; }
.sc-switch { font-size: 13px; display: inline-flex; align-items: center; gap: 3px; }
.sc-upload { position: relative; overflow: hidden; }
.sc-upload input { position: absolute; inset: 0; opacity: 0; cursor: pointer; }
.sc-stage { position: relative; min-height: 120px; display: flex; justify-content: center;
  background: var(--background-fill-secondary, #f4f4f5); border-radius: 8px; touch-action: none; }
.sc-stage.sc-drop { outline: 3px dashed #1e90ff; }
.sc-view { display: block; max-width: 100%; cursor: crosshair; }
.sc-readonly .sc-toolbar, .sc-readonly .sc-hint, .sc-readonly .sc-readout { display: none; }
.sc-readonly .sc-view { cursor: default; }
.sc-empty { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center;
  color: var(--body-text-color-subdued, #666); font-size: 15px; pointer-events: none; text-align: center; padding: 1em; }
.sc-busy { position: absolute; left: 0; right: 0; bottom: 0; display: flex; flex-direction: column;
  gap: 3px; padding: 6px 10px; background: rgba(0, 0, 0, .55); color: #fff; font-size: 13px; pointer-events: none; }
.sc-busy .sc-busy-text { color: #fff !important; text-shadow: 0 1px 2px #000; }
.sc-bar { height: 6px; background: rgba(255, 255, 255, .25); border-radius: 3px; overflow: hidden; }
.sc-fill { height: 100%; width: 0; background: #1e90ff; transition: width .1s linear; }
.sc-fill.sc-indeterminate { width: 100% !important; animation: sc-pulse 1.2s ease-in-out infinite; }
@keyframes sc-pulse { 0% { opacity: .3; } 50% { opacity: 1; } 100% { opacity: .3; } }
.sc-notice { position: absolute; top: 8px; left: 8px; right: 8px; padding: 6px 10px; border-radius: 6px;
  background: #fff3cd; color: #5c4400; border: 1px solid #e8a33d; font-size: 13px;
  pointer-events: none; /* a message, not a lid: clicks reach the picture under it */ }
.sc-footer { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; min-height: 1.6em; font-size: 13px; }
.sc-cands { display: inline-flex; gap: 4px; flex-wrap: wrap; }
.sc-readout { color: #4a4a4a; }
.sc-hint { font-size: 12px; color: #4a4a4a; }
.sc-root:focus-visible { outline: 3px solid #0b5cad; outline-offset: 2px; }
.sc-live { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
"""


def mask_canvas(preview: Callable | None = None, *, readonly: bool = False, name: str = "canvas",
                elem_id: str = "canvas", **kwargs) -> gr.HTML:
    """A browser canvas. `preview` is the server function for fast masks (it must be named
    `preview`; it gets the list of the JavaScript call's arguments); read-only canvases
    (e.g. a search hit's source) need none. `name`: the page's `window.samcanvas[name]`
    (state and timings, for tests and `demo.tools.bench_browser`)."""
    return gr.HTML(value="", html_template=TEMPLATE, css_template=CSS, js_on_load=JS,
                   server_functions=[preview] if preview is not None else None,
                   readonly=readonly, canvas_name=name, elem_id=elem_id,
                   padding=False, container=False, **kwargs)
