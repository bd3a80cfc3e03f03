// The browser-side canvas (run by gr.HTML's js_on_load: element, trigger, props, server,
// upload and watch are given). The picture is loaded once from a URL; masks arrive as
// row-major run lengths at display size and are drawn here, with the prompts.
//
// Python -> here: props.value, a JSON "canvas message" (demo.callbacks.canvas_message).
// Here -> Python: server.preview(...) (fast masks for prompts and hover, no session),
// trigger('prompts' | 'pick' | 'everything' | 'upload', {key, ...}) (session events).
// Every request carries the image's key; answers for another image are dropped.
const interactive = !props.readonly;
const root = element.querySelector('.sc-root');
const view = element.querySelector('canvas.sc-view');
const g = view.getContext('2d');
const busy = element.querySelector('.sc-busy');
const busyText = element.querySelector('.sc-busy-text');
const fill = element.querySelector('.sc-fill');
const empty = element.querySelector('.sc-empty');
const notice = element.querySelector('.sc-notice');
const live = element.querySelector('.sc-live');
const chips = element.querySelector('.sc-cands');
const readout = element.querySelector('.sc-readout');
const $ = (sel) => element.querySelector(sel);
if (!interactive) root.classList.add('sc-readonly');

const SEL = [30, 144, 255], HOVER = [255, 170, 0], POS = '#00c846', NEG = '#eb2828', BOXC = '#ffc800';
const st = {
  key: '', phase: 'none', img: null, w: 0, h: 0, dw: 0, dh: 0, name: '', estimate: 0, t0: 0,
  tool: 'pos', points: [], box: null, corner: null, history: [], future: [], version: 0,
  cands: [], scores: [], chosen: 0, extSel: null, hoverMask: null, hoverOn: true,
  auto: [], autoLabel: null, autoLayer: null, autoHover: -1, autoPick: -1, pendingRefresh: false,
  drag: null, pointer: null, overPanel: false, cursor: null, seq: 0,
};
const stats = { clicks: [], boxes: [], hovers: 0, hoverTimes: [], everything: [], everythingFirst: [], firstMask: [],
                lastAction: null, renders: 0, rtt: [], serverMs: [] };
const api = { state: () => ({
  key: st.key, phase: st.phase, tool: st.tool, name: st.name, points: st.points.map(p => p.slice()),
  box: st.box && st.box.slice(), corner: st.corner, chosen: st.chosen, ncands: st.cands.length,
  selArea: selectedMask() ? count(selectedMask()) : 0, hoverArea: st.hoverMask ? count(st.hoverMask) : 0,
  strokes: (st.strokes || []).length, autoCount: st.auto.length, autoPick: st.autoPick, autoHover: st.autoHover, display: [st.dh, st.dw],
  size: [st.h, st.w], cursor: st.cursor && st.cursor.slice(), busy: busy.style.display !== 'none' ? st.busyKind : '', redo: st.future.length }),
  stats, toDisplay: (x, y) => [x * st.dw / st.w, y * st.dh / st.h],
  autoMask: (i) => st.auto[i], selected: () => selectedMask(), clientPoint };
window.samcanvas = window.samcanvas || {};
window.samcanvas[props.canvas_name || 'canvas'] = api;

// ------------------------------------------------------------------ masks
function decode(data) {
  const out = new Uint8Array(st.dw * st.dh);
  if (data.bits !== undefined) {                  // packed bits, most significant first
    const bin = atob(data.bits), n = out.length;
    for (let i = 0; i < bin.length; i++) {
      const byte = bin.charCodeAt(i), base = i * 8;
      if (!byte) continue;
      for (let b = 0; b < 8 && base + b < n; b++) out[base + b] = (byte >> (7 - b)) & 1;
    }
    return out;
  }
  const runs = data.runs;
  let pos = 0;
  for (let i = 0; i < runs.length; i++) {
    const n = runs[i];
    if (i & 1) out.fill(1, pos, pos + n);
    pos += n;
  }
  return out;
}
function count(m) { let c = 0; for (let i = 0; i < m.length; i++) c += m[i]; return c; }
function selectedMask() {
  if (st.tool === 'pick') return st.autoPick >= 0 ? st.auto[st.autoPick] : null;
  return brushEdited(st.cands.length ? st.cands[Math.min(st.chosen, st.cands.length - 1)] : st.extSel);  // + strokes (canvas_brush.js)
}
function paint(data, m, rgb, alpha, edge, edgeRgb) {
  const w = st.dw, h = st.dh, a = alpha / 255;
  for (let y = 0, i = 0; y < h; y++) {
    for (let x = 0; x < w; x++, i++) {
      if (!m[i]) continue;
      const o = i * 4;
      const isEdge = edge && (x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
        !m[i - 1] || !m[i + 1] || !m[i - w] || !m[i + w]);
      if (isEdge) {
        data[o] = edgeRgb[0]; data[o + 1] = edgeRgb[1]; data[o + 2] = edgeRgb[2]; data[o + 3] = 255;
      } else {
        const keep = data[o + 3] / 255 * (1 - a);
        const na = a + keep;
        data[o] = (rgb[0] * a + data[o] * keep) / na; data[o + 1] = (rgb[1] * a + data[o + 1] * keep) / na;
        data[o + 2] = (rgb[2] * a + data[o + 2] * keep) / na; data[o + 3] = na * 255;
      }
    }
  }
}
function palette(i) {
  const hue = (i * 0.618033988749895) % 1, s = 0.78, v = 0.92;
  const k = (n) => (n + hue * 6) % 6;
  const f = (n) => v - v * s * Math.max(0, Math.min(k(n), 4 - k(n), 1));
  return [Math.round(f(5) * 255), Math.round(f(3) * 255), Math.round(f(1) * 255)];
}
function buildAuto() {
  // one label per pixel: the smallest mask that contains it (drawn on top), -1 for none
  const n = st.dw * st.dh, label = new Int16Array(n).fill(-1);
  const areas = st.auto.map(count);
  const order = areas.map((a, i) => i).sort((a, b) => areas[b] - areas[a]);
  for (const i of order) { const m = st.auto[i]; for (let p = 0; p < n; p++) if (m[p]) label[p] = i; }
  st.autoLabel = label; st.autoAreas = areas;
  const layer = new ImageData(st.dw, st.dh), d = layer.data, w = st.dw;
  const colors = st.auto.map((_, i) => palette(i));
  for (let p = 0; p < n; p++) {
    const l = label[p]; if (l < 0) continue;
    const c = colors[l], o = p * 4;
    const edge = (p % w === 0 || label[p - 1] !== l || label[p + 1] !== l || label[p - w] !== l || label[p + w] !== l);
    d[o] = c[0]; d[o + 1] = c[1]; d[o + 2] = c[2]; d[o + 3] = edge ? 255 : 120;
  }
  st.autoLayer = layer;
}
function nearestAuto(dx, dy, radius) {
  // the smallest mask containing the pixel, else the closest one within `radius` pixels
  if (!st.autoLabel) return -1;
  const x = Math.floor(dx), y = Math.floor(dy);
  if (x >= 0 && y >= 0 && x < st.dw && y < st.dh && st.autoLabel[y * st.dw + x] >= 0)
    return st.autoLabel[y * st.dw + x];
  let best = -1, bestD = radius * radius + 1e-9;
  for (let yy = Math.max(0, y - radius); yy <= Math.min(st.dh - 1, y + radius); yy++)
    for (let xx = Math.max(0, x - radius); xx <= Math.min(st.dw - 1, x + radius); xx++) {
      const l = st.autoLabel[yy * st.dw + xx]; if (l < 0) continue;
      const d = (xx + 0.5 - dx) ** 2 + (yy + 0.5 - dy) ** 2;
      if (d < bestD) { bestD = d; best = l; }
    }
  return best;
}

// ------------------------------------------------------------------ drawing
let layer = null, layerCtx = null, layerDirty = true, frame = 0;
function invalidate(masksToo) { if (masksToo) layerDirty = true; if (!frame) frame = requestAnimationFrame(draw); }
function draw() {
  frame = 0;
  if (!st.img) { return; }
  if (layerDirty) {
    if (!layer || layer.width !== st.dw || layer.height !== st.dh) {
      layer = document.createElement('canvas'); layer.width = st.dw; layer.height = st.dh;
      layerCtx = layer.getContext('2d');
    }
    let data;
    if (st.tool === 'pick' && st.autoLayer) {
      data = new ImageData(new Uint8ClampedArray(st.autoLayer.data), st.dw, st.dh);
      if (st.autoHover >= 0 && st.autoHover !== st.autoPick) paint(data.data, st.auto[st.autoHover], [255, 255, 255], 110, true, [255, 255, 255]);
      if (st.autoPick >= 0) paint(data.data, st.auto[st.autoPick], SEL, 150, true, [255, 255, 255]);
    } else {
      data = new ImageData(st.dw, st.dh);
      const sel = selectedMask();
      if (sel) paint(data.data, sel, SEL, 115, true, SEL);
      if (st.hoverMask) paint(data.data, st.hoverMask, HOVER, 90, true, HOVER);
    }
    layerCtx.putImageData(data, 0, 0);
    layerDirty = false;
  }
  g.clearRect(0, 0, st.dw, st.dh);
  g.drawImage(st.img, 0, 0, st.dw, st.dh);
  g.drawImage(layer, 0, 0);
  stats.renders++;
  view.dataset.renders = String(stats.renders);
  brushDrawn();                                   // brush outline, stroke timing (canvas_brush.js)
  const r = Math.max(5, Math.round(Math.max(st.dw, st.dh) / 110)), lw = Math.max(2, r / 3);
  const sx = st.dw / st.w, sy = st.dh / st.h;
  if (st.cursor && document.activeElement === root) drawCursor(st.cursor[0] * sx, st.cursor[1] * sy, r);
  if (st.tool === 'pick') return;                 // 'Everything' shows masks, not prompts
  g.lineWidth = lw;
  const box = st.drag && st.drag.active ? st.drag.box : st.box;
  if (box) { g.strokeStyle = BOXC; g.strokeRect(box[0] * sx, box[1] * sy, (box[2] - box[0]) * sx, (box[3] - box[1]) * sy); }
  if (st.corner) {
    const [cx, cy] = [st.corner[0] * sx, st.corner[1] * sy];
    g.strokeStyle = BOXC; g.beginPath(); g.moveTo(cx - 2 * r, cy); g.lineTo(cx + 2 * r, cy);
    g.moveTo(cx, cy - 2 * r); g.lineTo(cx, cy + 2 * r); g.stroke();
  }
  for (const [x, y, label] of st.points) {
    g.beginPath(); g.arc(x * sx, y * sy, r, 0, 2 * Math.PI); g.fillStyle = label ? POS : NEG; g.fill();
    g.strokeStyle = '#fff'; g.lineWidth = Math.max(1, lw / 2); g.stroke();
    g.beginPath(); g.moveTo(x * sx - r * 0.55, y * sy); g.lineTo(x * sx + r * 0.55, y * sy);
    if (label) { g.moveTo(x * sx, y * sy - r * 0.55); g.lineTo(x * sx, y * sy + r * 0.55); }
    g.lineWidth = lw; g.stroke();
  }
}
function drawCursor(cx, cy, r) {   // the keyboard's cross-hair: dark and light, visible on any picture
  for (const [colour, width] of [['#000', 4], ['#fff', 2]]) {
    g.strokeStyle = colour; g.lineWidth = width; g.beginPath();
    g.moveTo(cx - 3 * r, cy); g.lineTo(cx - r, cy); g.moveTo(cx + r, cy); g.lineTo(cx + 3 * r, cy);
    g.moveTo(cx, cy - 3 * r); g.lineTo(cx, cy - r); g.moveTo(cx, cy + r); g.lineTo(cx, cy + 3 * r); g.stroke();
  }
}
// kind: 'upload', 'encoding' or 'everything' (which only its answer or a new image ends)
function showBusy(text, estimateMs, kind) {
  busy.style.display = 'flex'; busyText.textContent = text; st.busyKind = kind || 'work';
  st.busyStart = performance.now(); st.busyEstimate = estimateMs || 0; st.busyLabel = text;
  fill.style.width = estimateMs ? '2%' : '100%';
  fill.classList.toggle('sc-indeterminate', !estimateMs);
  if (!st.busyTimer) st.busyTimer = setInterval(tickBusy, 100);
}
function tickBusy() {
  if (busy.style.display === 'none') { clearInterval(st.busyTimer); st.busyTimer = 0; return; }
  const t = (performance.now() - st.busyStart) / 1000;
  if (st.busyEstimate) {
    const e = st.busyEstimate / 1000;
    // linear up to 90 % at the estimate, then creeping towards 99 %
    const f = t < e ? 0.9 * t / e : 0.99 - 0.09 * Math.exp(-(t - e) / e);
    fill.style.width = (100 * f).toFixed(1) + '%';
    busyText.textContent = `${st.busyLabel} ${t.toFixed(1)} s of about ${e.toFixed(1)} s`;
  } else {
    busyText.textContent = `${st.busyLabel} ${t.toFixed(1)} s`;
  }
}
function hideBusy() { busy.style.display = 'none'; st.busyKind = ''; }
function say(text, ms) {
  notice.textContent = text; notice.style.display = text ? 'block' : 'none';
  clearTimeout(st.noticeTimer);
  if (text && ms) st.noticeTimer = setTimeout(() => { notice.style.display = 'none'; }, ms);
}
function updateControls() {
  const has = !!st.key, ready = has && st.phase === 'ready';
  for (const b of element.querySelectorAll('.sc-tool')) {
    b.classList.toggle('sc-on', b.dataset.tool === st.tool);
    b.disabled = !has || (b.dataset.tool === 'pick' && !st.auto.length);
  }
  $('.sc-undo').disabled = !(st.tool === 'pick' ? st.autoPick >= 0 : st.history.length);
  $('.sc-redo').disabled = st.tool === 'pick' || !st.future.length;
  $('.sc-clear').disabled = !(st.points.length || st.box || st.corner || st.extSel || st.autoPick >= 0 || (st.strokes || []).length);
  $('.sc-everything').disabled = !ready;
  $('.sc-everything').title = ready ? 'All objects SAM finds, in colour (then click one)' :
    (has ? 'Wait until the image is encoded' : 'Upload an image or pick an example first');
  empty.style.display = has ? 'none' : 'flex';
  chips.innerHTML = '';
  if (st.tool !== 'pick' && st.cands.length > 1) {
    st.cands.forEach((_, i) => {
      const b = document.createElement('button');
      b.className = 'sc-chip' + (i === st.chosen ? ' sc-on' : '');
      b.textContent = `#${i + 1} · ${st.scores[i].toFixed(3)}`;
      b.title = 'Use this candidate mask';
      b.addEventListener('click', () => {
        st.chosen = i; invalidate(true); updateControls(); commit();
        root.focus({ preventScroll: true });   // the chip is rebuilt: keep the keys on the canvas
      });
      chips.appendChild(b);
    });
  }
  readout.textContent = st.key && interactive ? describe() : '';
}
function describe() {
  if (st.tool === 'pick') return `${st.auto.length} objects · ` + (st.autoPick >= 0 ? `picked #${st.autoPick + 1}` : 'click one to select it');
  const pos = st.points.filter(p => p[2]).length, neg = st.points.length - pos;
  return `${pos} + / ${neg} − point(s)` + (st.box ? ' · box' : '') + (st.corner ? ' · tap the opposite corner' : '') +
    ((st.strokes || []).length ? ` · ${st.strokes.length} stroke(s)` : '') + (brushTool() ? ` · ${st.tool} ${brushRadius()} px ([ ] size, Esc: prompts)` : '');
}

// ------------------------------------------------------------------ messages from Python
function apply(m) {
  if (stats.pendingFirst && !stats.pendingFirst.key && m.key) stats.pendingFirst.key = m.key;
  if (m.notice) { hideBusy(); st.autoPartial = false; say(m.notice, 8000); }
  if (!m.key) { updateControls(); return; }
  const fresh = m.key !== st.key || (m.model && st.model && m.model !== st.model);  // another SAM: start over
  if (fresh) newImage(m);
  if (m.model) st.model = m.model;
  if (m.phase === 'encoding' && st.phase !== 'ready') {
    st.phase = 'encoding';
    showBusy('encoding with SAM' + (m.model ? ' ' + m.model : '') + '...', m.estimate_ms, 'encoding');
  } else if (m.phase === 'ready') {
    endStaleBusy(fresh);
    if (st.phase !== 'ready') {
      st.phase = 'ready';
      if (m.encode_ms) stats.encodeMs = m.encode_ms;
      if (st.pendingRefresh) { st.pendingRefresh = false; refresh(); }
    }
  }
  if (m.auto && m.partial !== undefined) {         // Everything, still running: the masks so far
    st.auto = m.auto.map(a => decode(a)); st.autoPick = -1; st.autoHover = -1; buildAuto();
    st.tool = 'pick'; st.autoPartial = true;
    if (st.busyKind === 'everything') st.busyLabel = `finding all objects: ${st.auto.length} so far, ${Math.round(100 * m.partial)} % of the grid...`;
    if (stats.lastAction && stats.lastAction.kind === 'everything' && !stats.lastAction.first) {
      const t0 = stats.lastAction.t0; stats.lastAction.first = true;
      requestAnimationFrame(() => stats.everythingFirst.push(performance.now() - t0));
    }
  } else if (m.auto) {
    st.auto = m.auto.map(a => decode(a)); st.autoPick = -1; st.autoHover = -1; buildAuto();
    st.tool = 'pick'; st.autoPartial = false; hideBusy();
    if (stats.lastAction && stats.lastAction.kind === 'everything') {
      const t0 = stats.lastAction.t0;
      invalidate(true);
      requestAnimationFrame(() => stats.everything.push(performance.now() - t0));
      stats.lastAction = null;
    }
  }
  if (m.selection && !brushEcho(m)) {               // canvas_brush.js: an edited mask
    const mask = decode(m.selection);
    if (m.selection.source === 'prompt') {          // the slow path's answer for our prompts
      st.cands = [mask]; st.scores = [m.selection.score || 0]; st.chosen = 0;
    } else {                                        // chosen elsewhere (refer, a search hit)
      st.points = []; st.box = null; st.corner = null; st.cands = []; st.scores = [];
      st.extSel = mask; if (st.tool === 'pick') st.tool = 'pos';
    }
  }
  invalidate(true); updateControls();
}
// a message for the current (or a newer) image that is ready ends an upload's or an
// encoding's progress line (e.g. the same file uploaded again, an example picked meanwhile)
function endStaleBusy(fresh) { if (fresh || st.busyKind !== 'everything') hideBusy(); }
function newImage(m) {
  Object.assign(st, { key: m.key, phase: m.phase, name: m.name, w: m.size[1], h: m.size[0],
    dh: m.display[0], dw: m.display[1], tool: 'pos', points: [], box: null, corner: null, history: [], future: [],
    cands: [], scores: [], chosen: 0, extSel: null, hoverMask: null, auto: [], autoLabel: null,
    strokes: [], live: null, saidReapply: false, autoLayer: null, autoHover: -1, autoPick: -1, autoPartial: false, pendingRefresh: false, drag: null, cursor: null });
  st.version++; say('');
  view.width = st.dw; view.height = st.dh; fit();
  view.dataset.key = m.key; view.dataset.loaded = '0';
  // on a phone the examples sit below the canvas: bring the new picture back into view
  const top = root.getBoundingClientRect().top;
  if (window.innerWidth < 700 && (top < 0 || top > window.innerHeight * 0.5)) root.scrollIntoView({ block: 'start' });
  if (Math.min(st.w, st.h) < 16) say(`This image is only ${st.w}x${st.h} pixels: too small to see here, and SAM finds little in so few pixels.`, 8000);
  const img = new Image();
  img.onload = () => { if (st.key === m.key) { st.img = img; view.dataset.loaded = '1'; invalidate(true); } };
  img.onerror = () => say('The picture could not be loaded; please pick it again.');
  img.src = m.src;
  if (!st.img) st.img = null;
  st.img = null; g.clearRect(0, 0, view.width, view.height);
}
// the picture fills the stage's width, keeping its shape, and leaves room under it for the
// status and info lines (visible without scrolling); a read-only canvas: 72 % of the window
function maxHeight() {
  const H = window.innerHeight;
  if (!interactive) return Math.max(160, H * 0.72);
  const top = stageEl.getBoundingClientRect().top + window.scrollY;
  return Math.max(160, 0.4 * H, Math.min(0.62 * H, H - top - 190));
}
function fit() {
  if (!st.dw) return;
  const avail = stageEl.clientWidth || st.dw, maxH = maxHeight();
  const k = Math.min(avail / st.dw, maxH / st.dh, 2.5);
  view.style.width = Math.floor(st.dw * k) + 'px'; view.style.height = Math.floor(st.dh * k) + 'px';
}
const stageEl = element.querySelector('.sc-stage');
if (window.ResizeObserver) new ResizeObserver(fit).observe(stageEl);
window.addEventListener('resize', fit);
watch('value', () => {
  let m = null;
  try { m = JSON.parse(props.value); } catch (e) { return; }
  if (m && m.seq !== st.seq) { st.seq = m.seq; apply(m); }
});

// ------------------------------------------------------------------ prompts
function snapshot() { return { points: st.points.map(p => p.slice()), box: st.box && st.box.slice(), chosen: st.chosen, strokes: st.strokes }; }
function change(fn) {
  brushOnPrompt();
  st.history.push(snapshot());
  if (st.history.length > 100) st.history.shift();
  st.future = [];
  fn();
  st.extSel = null;
  refresh();
}
function payload(extra) {
  return Object.assign({ key: st.key, model: st.model || '', points: st.points.map(p => p.slice()), box: st.box, strokes: st.strokes || [] }, extra || {});
}
async function refresh() {
  const version = ++st.version, key = st.key;
  st.hoverMask = null; st.hoverSeq = (st.hoverSeq || 0) + 1;
  if (!st.points.length && !st.box) {
    st.cands = []; st.scores = []; st.chosen = 0; invalidate(true); updateControls(); commit(); return;
  }
  invalidate(false); updateControls();
  if (st.phase !== 'ready') { st.pendingRefresh = true; say('Your prompts are kept; the mask follows when encoding ends.', 4000); return; }
  let r;
  const tq = performance.now();
  try { r = await server.preview(payload()); stats.rtt.push(performance.now() - tq); if (r && r.ms) stats.serverMs.push(r.ms); } catch (e) { say('The server did not answer: ' + e, 6000); return; }
  if (key !== st.key || version !== st.version) return;          // a newer change or image
  if (!r || !r.ok) {
    if (r && r.reason === 'not encoded') { commit({ echo: true }); return; }
    say(r && r.reason ? r.reason : 'no answer', 6000); return;
  }
  st.cands = r.masks.map(m => decode(m)); st.scores = r.masks.map(m => m.score);
  st.chosen = Math.min(st.chosen, st.cands.length - 1); if (st.chosen < 0) st.chosen = 0;
  invalidate(true); updateControls();
  const act = stats.lastAction;
  if (act && act.version === version) {
    requestAnimationFrame(() => { (act.kind === 'box' ? stats.boxes : stats.clicks).push(performance.now() - act.t0); });
    stats.lastAction = null;
  }
  if (stats.pendingFirst && stats.pendingFirst.key === key) {
    const t0 = stats.pendingFirst.t0; stats.pendingFirst = null;
    requestAnimationFrame(() => stats.firstMask.push(performance.now() - t0));
  }
  commit();
}
function commit(extra) {
  if (!st.key) return;
  trigger('prompts', payload(Object.assign({ chosen: st.chosen, version: st.version, shown: shown() }, extra || {})));
}
// what the canvas shows as the selection: the server keeps the same one
function shown() { return st.cands.length ? 'prompt' : (st.extSel ? 'external' : 'none'); }
function restore(s) { st.points = s.points; st.box = s.box; st.chosen = s.chosen; st.strokes = s.strokes || []; st.corner = null; refresh(); }
function undo() {
  if (st.tool === 'pick') { unpick(); return; }
  const prev = st.history.pop(); if (!prev) return;
  st.future.push(snapshot()); restore(prev);
}
function redo() {
  if (st.tool === 'pick') return;
  const next = st.future.pop(); if (!next) return;
  st.history.push(snapshot()); restore(next);
}
// the picked automatic mask is dropped: the server's selection follows
function unpick() {
  if (st.autoPick < 0) return;
  st.autoPick = -1; invalidate(true); updateControls();
  trigger('pick', { key: st.key, clear: true });
}
// leaving 'Everything' mode: the canvas shows the prompts' mask again (or nothing), so the
// server selects it too (a picked automatic mask is no longer shown)
function leavePick(tool) {
  const picked = st.autoPick >= 0;
  st.tool = tool; st.autoPick = -1; st.autoHover = -1;
  if (picked) commit();
}
function clearAll() {
  if (st.tool === 'pick') { leavePick('pos'); invalidate(true); updateControls(); return; }
  if (!st.points.length && !st.box && !st.corner && !st.extSel && !(st.strokes || []).length) return;
  change(() => { st.points = []; st.box = null; st.corner = null; st.chosen = 0; st.strokes = []; });
}

// ------------------------------------------------------------------ hover preview
function queueHover(pt) { st.hoverWanted = pt; if (!st.hoverBusy) pumpHover(); }
async function pumpHover() {
  const pt = st.hoverWanted; st.hoverWanted = null;
  if (!pt || !st.hoverOn || st.tool === 'pick' || st.phase !== 'ready' || st.drag) return;
  st.hoverBusy = true;
  const version = st.version, key = st.key, seq = st.hoverSeq = (st.hoverSeq || 0) + 1, t0 = performance.now();
  try {
    const r = await server.preview(payload({ points: st.points.concat([[pt[0], pt[1], 1]]), best_only: true }));
    if (r && r.ok && key === st.key && version === st.version && seq === st.hoverSeq && st.pointer
        && st.hoverOn && st.tool !== 'pick' && !st.drag && r.masks.length) {
      st.hoverMask = decode(r.masks[0]); invalidate(true);
      stats.hovers++; stats.hoverTimes.push(performance.now() - t0);
    }
  } catch (e) { /* a hover that fails is simply not shown */ }
  st.hoverBusy = false;
  if (st.hoverWanted) pumpHover();
}

// ------------------------------------------------------------------ pointer and keys
function clientPoint(e) {
  const rect = view.getBoundingClientRect();
  const dx = (e.clientX - rect.left) * st.dw / rect.width, dy = (e.clientY - rect.top) * st.dh / rect.height;
  return { dx, dy, x: dx * st.w / st.dw, y: dy * st.h / st.dh, scale: st.dw / rect.width };
}
function inside(p) { return p.dx >= 0 && p.dy >= 0 && p.dx < st.dw && p.dy < st.dh; }
view.addEventListener('contextmenu', (e) => e.preventDefault());
view.addEventListener('pointerdown', (e) => {
  if (!interactive || !st.key || !st.img) return;
  root.focus({ preventScroll: true });
  const p = clientPoint(e); if (!inside(p)) return;
  e.preventDefault();
  try { view.setPointerCapture(e.pointerId); } catch (err) { /* synthetic events */ }
  if (brushTool()) { brushDown(p); return; }       // canvas_brush.js
  st.drag = { x0: p.x, y0: p.y, dx0: e.clientX, dy0: e.clientY, button: e.button, shift: e.shiftKey,
              alt: e.altKey, active: false, box: null, t0: performance.now(), touch: e.pointerType === 'touch' };
});
view.addEventListener('pointermove', (e) => {
  if (!interactive || !st.key || !st.img) return;
  const p = clientPoint(e);
  st.pointer = inside(p) ? p : null;
  if (brushTool()) { brushMove(p); return; }       // canvas_brush.js
  const d = st.drag;
  if (d) {
    if (!d.active && Math.hypot(e.clientX - d.dx0, e.clientY - d.dy0) > 6 && st.tool !== 'pick') {
      d.active = true; st.hoverMask = null; invalidate(true);
    }
    if (d.active) {
      d.box = [Math.min(d.x0, p.x), Math.min(d.y0, p.y), Math.max(d.x0, p.x), Math.max(d.y0, p.y)]
        .map((v, i) => Math.max(0, Math.min(v, i % 2 ? st.h : st.w)));
      invalidate(false);
    }
    return;
  }
  if (!st.pointer) { if (st.hoverMask || st.autoHover >= 0) { st.hoverMask = null; st.autoHover = -1; invalidate(true); } return; }
  if (st.tool === 'pick') {
    const i = nearestAuto(p.dx, p.dy, 0);
    if (i !== st.autoHover) { st.autoHover = i; invalidate(true); }
    return;
  }
  if (st.hoverOn && st.phase === 'ready' && !st.corner) queueHover([p.x, p.y]);
});
view.addEventListener('pointerleave', () => {
  st.pointer = null; st.hoverWanted = null;
  if (st.hoverMask || st.autoHover >= 0) { st.hoverMask = null; st.autoHover = -1; invalidate(true); }
});
view.addEventListener('pointerup', (e) => {
  if (st.live) { brushUp(clientPoint(e)); return; }   // canvas_brush.js
  const d = st.drag; st.drag = null;
  if (!d || !interactive || !st.key) return;
  const p = clientPoint(e), t0 = d.t0;
  if (d.active && d.box) {
    const b = d.box;
    if (b[2] - b[0] < 2 || b[3] - b[1] < 2) { invalidate(false); return; }
    stats.lastAction = { kind: 'box', t0, version: st.version + 1 };
    change(() => { st.box = b; st.corner = null; st.chosen = 0; });
    return;
  }
  if (st.tool === 'pick') {
    if (st.autoPartial) { say('Still finding objects: click one when all are drawn.', 3000); return; }
    const i = nearestAuto(p.dx, p.dy, 8 * Math.max(1, st.dw / 1024));
    if (i < 0) { say('No object there: click on a coloured region.', 3000); return; }   // the pick stays
    st.autoPick = i; st.extSel = null; invalidate(true); updateControls();
    trigger('pick', { key: st.key, x: p.x, y: p.y, index: i });
    return;
  }
  // a click (or tap) on an existing point removes it
  const rect = view.getBoundingClientRect(), perPx = st.w / rect.width;
  const hit = st.points.findIndex(q => Math.hypot(q[0] - p.x, q[1] - p.y) <= 10 * perPx);
  if (hit >= 0) { stats.lastAction = { kind: 'click', t0, version: st.version + 1 }; change(() => { st.points.splice(hit, 1); st.chosen = 0; }); return; }
  if (st.tool === 'box' && d.button === 0 && !d.shift && !d.alt) {
    if (!st.corner) { st.corner = [p.x, p.y]; invalidate(false); updateControls(); return; }
    const c = st.corner;
    const b = [Math.min(c[0], p.x), Math.min(c[1], p.y), Math.max(c[0], p.x), Math.max(c[1], p.y)];
    if (b[2] - b[0] < 2 || b[3] - b[1] < 2) { say('That box is too small: tap the opposite corner.', 3000); return; }
    stats.lastAction = { kind: 'box', t0, version: st.version + 1 };
    change(() => { st.box = b; st.corner = null; st.chosen = 0; });
    return;
  }
  const negative = d.button === 2 || d.shift || d.alt || st.tool === 'neg';
  stats.lastAction = { kind: 'click', t0, version: st.version + 1 };
  change(() => { st.points.push([p.x, p.y, negative ? 0 : 1]); st.chosen = 0; });
});
view.addEventListener('pointercancel', () => { st.drag = null; invalidate(false); });
// Ctrl+Z (Cmd+Z): undo; Ctrl+Shift+Z or Ctrl+Y: redo. True when the key was one of them.
function historyKey(e) {
  if (!(e.ctrlKey || e.metaKey)) return false;
  const k = e.key.toLowerCase();
  if (k === 'z') { (e.shiftKey ? redo : undo)(); return true; }
  if (k === 'y') { redo(); return true; }
  return false;
}
// ------------------------------------------------------------------ keyboard segmenting
// With the focus on the canvas itself (Tab to it; a focus ring shows it): the arrow keys move
// a cross-hair (Shift: 5x farther), Space adds a positive point there and Shift+Space a
// negative one, B sets a box corner (again: the opposite corner), Enter picks the
// 'Everything' mask under the cross-hair, Tab moves on. A live region reads the selection.
function cursorStep(big) { return Math.max(1, Math.round(Math.max(st.w, st.h) / 50)) * (big ? 5 : 1); }
function announce(text) { live.textContent = text; }
function cursorText() {
  const [x, y] = st.cursor;
  const pct = st.w * st.h ? (100 * (selectedMask() ? count(selectedMask()) : 0) / (st.dw * st.dh)) : 0;
  return `cross-hair at x ${Math.round(x)}, y ${Math.round(y)} of ${st.w} by ${st.h}. ` +
    `${st.points.filter(q => q[2]).length} positive and ${st.points.filter(q => !q[2]).length} negative points` +
    (st.box ? ', a box' : '') + (st.corner ? ', a box corner set' : '') +
    (pct > 0 ? `; the selected object covers ${pct.toFixed(1)} percent of the image.` : '; nothing selected.');
}
function keyboardKey(e) {
  if (e.target !== root || !st.key || !st.img || e.ctrlKey || e.metaKey || e.altKey) return false;
  if (!st.cursor) st.cursor = [st.w / 2, st.h / 2];
  const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  const [x, y] = st.cursor;
  if (moves[e.key]) {
    const d = cursorStep(e.shiftKey), [mx, my] = moves[e.key];
    st.cursor = [Math.min(st.w - 1, Math.max(0, x + mx * d)), Math.min(st.h - 1, Math.max(0, y + my * d))];
    invalidate(false); announce(cursorText()); return true;
  }
  const prompting = st.tool === 'pos' || st.tool === 'neg' || st.tool === 'box';
  if (e.key === ' ' && prompting) {
    stats.lastAction = { kind: 'click', t0: performance.now(), version: st.version + 1 };
    change(() => { st.points.push([x, y, e.shiftKey ? 0 : 1]); st.chosen = 0; });
    announce(`${e.shiftKey ? 'negative' : 'positive'} point added. ` + cursorText()); return true;
  }
  if (e.key.toLowerCase() === 'c' && prompting) {
    if (!st.corner) { st.corner = [x, y]; invalidate(false); updateControls(); announce('box corner set: move to the opposite corner and press C.'); return true; }
    const b = [Math.min(st.corner[0], x), Math.min(st.corner[1], y), Math.max(st.corner[0], x), Math.max(st.corner[1], y)];
    if (b[2] - b[0] < 2 || b[3] - b[1] < 2) { announce('the box is too small: move farther from the first corner.'); return true; }
    change(() => { st.box = b; st.corner = null; st.chosen = 0; });
    announce('box set. ' + cursorText()); return true;
  }
  if ((e.key === 'Enter' || e.key === ' ') && st.tool === 'pick') {
    const i = nearestAuto(x * st.dw / st.w, y * st.dh / st.h, 8 * Math.max(1, st.dw / 1024));
    if (i < 0) { announce('no object under the cross-hair.'); return true; }
    st.autoPick = i; st.extSel = null; invalidate(true); updateControls();
    trigger('pick', { key: st.key, x, y, index: i });
    announce(`object ${i + 1} of ${st.auto.length} picked.`); return true;
  }
  return false;
}
root.addEventListener('focus', () => { if (st.img && !st.cursor) { st.cursor = [st.w / 2, st.h / 2]; } invalidate(false); });
root.addEventListener('blur', () => invalidate(false));

root.addEventListener('keydown', (e) => {
  if (!interactive) return;
  if (keyboardKey(e) || historyKey(e) || brushKey(e)) { e.preventDefault(); }
  else if (e.key === 'Escape') { e.preventDefault(); if (st.corner) { st.corner = null; invalidate(false); updateControls(); } else clearAll(); }
});
document.addEventListener('keydown', (e) => {
  // shortcuts also work while the pointer is over the picture and nothing else has the focus
  if (!interactive || e.defaultPrevented || root.contains(document.activeElement)) return;
  const t = document.activeElement;
  if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable)) return;
  // the pointer over the canvas panel (picture, toolbar, chips) or the focus inside it
  if (!st.pointer && !st.overPanel && !element.contains(t)) return;
  if (historyKey(e) || brushKey(e)) { e.preventDefault(); }
  else if (e.key === 'Escape') { clearAll(); }
});

element.addEventListener('pointerenter', () => { st.overPanel = true; });
element.addEventListener('pointerleave', () => { st.overPanel = false; });

// ------------------------------------------------------------------ toolbar, upload
for (const b of element.querySelectorAll('.sc-tool')) {
  b.addEventListener('click', () => {
    if (st.tool === 'pick' && b.dataset.tool !== 'pick') leavePick(b.dataset.tool);
    st.tool = b.dataset.tool; st.corner = null; st.hoverMask = null; st.autoHover = -1;
    invalidate(true); updateControls();
  });
}
$('.sc-undo').addEventListener('click', undo);
$('.sc-redo').addEventListener('click', redo);
$('.sc-clear').addEventListener('click', clearAll);
$('.sc-hover').addEventListener('change', (e) => { st.hoverOn = e.target.checked; st.hoverMask = null; invalidate(true); });
$('.sc-everything').addEventListener('click', () => {
  if (!st.key || st.phase !== 'ready') return;
  stats.lastAction = { kind: 'everything', t0: performance.now() };
  showBusy('finding all objects...', 0, 'everything');
  trigger('everything', { key: st.key });
});
async function sendFile(file) {
  if (!file) return;
  showBusy('uploading ' + file.name + '...', 0, 'upload');
  try {
    const r = await upload(file);
    stats.pendingFirst = { t0: stats.uploadStart || performance.now() };
    trigger('upload', { path: r.path, name: file.name });
  } catch (e) {
    hideBusy();
    const big = String(e).match(/413|too large|exceed/i);
    say('The upload failed: ' + (big ? 'the file is larger than this server accepts.' : e), 8000);
  }
}
$('.sc-file').addEventListener('change', (e) => { stats.uploadStart = performance.now(); sendFile(e.target.files[0]); e.target.value = ''; });
const stage = element.querySelector('.sc-stage');
stage.addEventListener('dragover', (e) => { if (interactive) { e.preventDefault(); stage.classList.add('sc-drop'); } });
stage.addEventListener('dragleave', () => stage.classList.remove('sc-drop'));
stage.addEventListener('drop', (e) => {
  if (!interactive) return;
  e.preventDefault(); stage.classList.remove('sc-drop');
  stats.uploadStart = performance.now();
  sendFile(e.dataTransfer.files && e.dataTransfer.files[0]);
});
updateControls();
if (props.value) { try { const m = JSON.parse(props.value); if (m) { st.seq = m.seq; apply(m); } } catch (e) { /* empty */ } }
