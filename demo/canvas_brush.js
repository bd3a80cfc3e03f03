// Brush and eraser on the selected mask (appended to canvas.js by demo/canvas.py, so it
// shares its scope: st, stats, view, g, invalidate, refresh, say, updateControls...).
// Only function declarations and listeners here: canvas.js runs first and calls these.
//
// A stroke is drawn in the browser as the pointer moves (no request per move); at
// pointer-up it joins st.strokes, {mode: 'paint' | 'erase', radius, points: [[x, y]...]} in
// working-image pixels, which every commit sends with the prompts: the server re-applies
// the list, in order, on the SAM mask (core/annotate/strokes.py), with about the same rule
// as here: a pixel (col, row), centre at x = col, y = row as OpenCV draws, is covered when it
// lies within `radius` of the polyline. The server answers each commit with the edited mask
// it made (source 'edited', with the prompts' version): the canvas then shows those pixels,
// so canvas, server and downloads agree. Undo and redo snapshot the list with the prompts.
function brushTool() { return st.tool === 'brush' || st.tool === 'erase'; }
function brushRadius() { return st.brushR || 8; }          // display pixels
function brushSetRadius(r) {
  st.brushR = Math.max(1, Math.min(80, Math.round(r)));
  const s = element.querySelector('.sc-brush-size');
  if (s) s.value = String(st.brushR);
  const l = element.querySelector('.sc-brush-label');
  if (l) l.textContent = String(st.brushR);
  invalidate(false);
}
// paint (1) or erase (0) one stroke (working pixels) onto `m`, a display-size Uint8Array
function brushRaster(m, s) {
  const k = st.dw / st.w, r = s.radius * k, r2 = r * r, w = st.dw, h = st.dh, v = s.mode === 'paint' ? 1 : 0;
  const pts = s.points.map(p => [p[0] * k, p[1] * k]);
  const n = pts.length > 1 ? pts.length - 1 : 1;
  for (let i = 0; i < n; i++) {
    const a = pts[i], b = pts[Math.min(i + 1, pts.length - 1)];
    const x0 = Math.max(0, Math.floor(Math.min(a[0], b[0]) - r)), x1 = Math.min(w, Math.ceil(Math.max(a[0], b[0]) + r) + 1);
    const y0 = Math.max(0, Math.floor(Math.min(a[1], b[1]) - r)), y1 = Math.min(h, Math.ceil(Math.max(a[1], b[1]) + r) + 1);
    const dx = b[0] - a[0], dy = b[1] - a[1], len2 = dx * dx + dy * dy;
    for (let y = y0; y < y1; y++) {
      const py = y;
      for (let x = x0; x < x1; x++) {
        const px = x;
        let t = len2 ? ((px - a[0]) * dx + (py - a[1]) * dy) / len2 : 0;
        t = t < 0 ? 0 : (t > 1 ? 1 : t);
        const ex = px - (a[0] + t * dx), ey = py - (a[1] + t * dy);
        if (ex * ex + ey * ey <= r2) m[y * w + x] = v;
      }
    }
  }
}
// the selection as shown: `base` (a candidate, a mask chosen elsewhere, or none) with the
// strokes, and the one being drawn, applied; cached for the committed ones
function brushEdited(base) {
  const strokes = st.strokes || [];
  if (!strokes.length && !st.live) return base;
  const echo = st.serverEdit;
  if (!st.live && echo && echo.version === st.version && echo.key === st.key) return echo.mask;
  const c = st.editCache;
  let done;
  if (c && c.base === base && c.strokes === strokes && c.dw === st.dw) done = c.mask;
  else {
    done = base ? new Uint8Array(base) : new Uint8Array(st.dw * st.dh);
    for (const s of strokes) brushRaster(done, s);
    st.editCache = { base, strokes, mask: done, dw: st.dw };
  }
  if (!st.live) return done;
  const out = new Uint8Array(done);
  brushRaster(out, st.live);
  return out;
}
// a canvas message with the server's edited mask: kept (shown while the prompts' version is
// the one it answers); true when handled
function brushEcho(m) {
  if (m.selection.source !== 'edited') return false;
  if (m.selection.version === st.version) {
    st.serverEdit = { mask: decode(m.selection), version: m.selection.version, key: st.key };
    invalidate(true);
  }
  return true;
}
function brushPoint(p) { return [Math.round(p.x * 100) / 100, Math.round(p.y * 100) / 100]; }
function brushDown(p) {
  st.hoverMask = null;
  st.live = { mode: st.tool === 'erase' ? 'erase' : 'paint', radius: Math.round(brushRadius() * st.w / st.dw * 100) / 100,
              points: [brushPoint(p)] };
  stats.brushT0 = performance.now(); invalidate(true);
}
function brushMove(p) {
  st.brushAt = p;
  if (!st.live) { invalidate(false); return; }
  const last = st.live.points[st.live.points.length - 1], q = brushPoint(p);
  // a new vertex only when the pointer moved a quarter of the radius (keeps strokes small)
  if (Math.hypot(q[0] - last[0], q[1] - last[1]) < Math.max(0.5, st.live.radius / 4)) return;
  if (st.live.points.length >= 4000) return;
  st.live.points.push(q);
  if (stats.brushT0 === undefined || stats.brushT0 === null) stats.brushT0 = performance.now();
  invalidate(true);
}
function brushUp(p) {
  const s = st.live; st.live = null;
  if (!s) return;
  if (p && inside(p)) brushMove(p);
  st.history.push(snapshot());
  if (st.history.length > 100) st.history.shift();
  st.future = [];
  st.strokes = (st.strokes || []).concat([s]);
  stats.strokes = (stats.strokes || 0) + 1;
  refresh();                                         // the commit carries the strokes
}
// called by draw() after the picture and masks: the brush outline, and the
// stroke-to-pixels time of the frame that shows the latest pointer move
function brushDrawn() {
  if (brushTool() && st.brushAt) {
    const k = view.width / st.dw;
    g.beginPath(); g.arc(st.brushAt.dx * k, st.brushAt.dy * k, brushRadius() * k, 0, 2 * Math.PI);
    g.lineWidth = 1.5; g.strokeStyle = st.tool === 'erase' ? '#eb2828' : '#ffffff'; g.stroke();
  }
  if (stats.brushT0 !== undefined && stats.brushT0 !== null) {
    (stats.brushMs = stats.brushMs || []).push(performance.now() - stats.brushT0);
    if (stats.brushMs.length > 2000) stats.brushMs.shift();
    stats.brushT0 = null;
  }
}
// before a prompt change: strokes are kept and re-applied on the new mask; say so once
function brushOnPrompt() {
  if ((st.strokes || []).length && !st.saidReapply) {
    st.saidReapply = true;
    say(`Your ${st.strokes.length} brush/eraser stroke(s) are re-applied on top of the new mask (Undo or Clear removes them).`, 6000);
  }
}
// keys: B brush, E eraser, [ and ] size, Esc back to prompting; true when handled
function brushKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey || !st.key) return false;
  const k = e.key;
  if (k === 'b' || k === 'B' || k === 'e' || k === 'E') { brushSelect(k.toLowerCase() === 'b' ? 'brush' : 'erase'); return true; }
  if (k === '[' || k === ']') { brushSetRadius(brushRadius() * (k === '[' ? 1 / 1.25 : 1.25) + (k === '[' ? -0.5 : 0.5)); return true; }
  if (k === 'Escape' && brushTool()) { brushSelect('pos'); return true; }
  return false;
}
// a picked automatic mask stays selected when the brush or eraser is taken up: it becomes
// the mask the strokes edit (the server keeps it: the canvas commits it as 'external')
function brushKeepPick(tool) {
  if (st.tool === 'pick' && (tool === 'brush' || tool === 'erase') && st.autoPick >= 0) {
    st.extSel = st.auto[st.autoPick]; st.points = []; st.box = null; st.cands = []; st.scores = [];
  }
}
function brushSelect(tool) {
  brushKeepPick(tool);
  if (st.tool === 'pick' && tool !== 'pick') leavePick(tool);
  st.tool = tool; st.corner = null; st.hoverMask = null; st.autoHover = -1; st.live = null;
  view.style.cursor = brushTool() ? 'none' : '';
  invalidate(true); updateControls();
}
{
  const s = element.querySelector('.sc-brush-size');
  if (s) s.addEventListener('input', () => brushSetRadius(Number(s.value)));
  for (const b of element.querySelectorAll('.sc-tool')) {
    b.addEventListener('click', () => brushKeepPick(b.dataset.tool), { capture: true });   // before canvas.js's
    b.addEventListener('click', () => brushSelect(b.dataset.tool));
  }
  view.addEventListener('pointercancel', () => { st.live = null; invalidate(true); });
  view.addEventListener('pointerleave', () => { st.brushAt = null; if (brushTool()) invalidate(false); });
}
// for tests and tools: the strokes, and whether the canvas shows the server's edited mask
api.brush = () => ({ strokes: (st.strokes || []).length, echoed: !!(st.serverEdit && st.serverEdit.version === st.version),
                     radius: brushRadius(), ms: (stats.brushMs || []).slice() });
