// The path sketch of the Loci studio: a canvas over the top-down map of what memory has seen.
//
// Draw a stroke (mouse, pen or one finger) and it becomes waypoints in metres, in the order and
// direction drawn (simplified with Ramer-Douglas-Peucker). A tap adds one point; a stroke that
// starts at the end of the path extends it; drag a waypoint to move it, double-click (or select
// + Delete) to remove it; undo/redo, clear; wheel/pinch to zoom, Pan mode or two fingers to pan.
// While drawing, the path the server will make (spline through the waypoints, resampled to the
// frame count, heading ticks) is previewed here, coloured by an estimate of how much of each
// view memory already knows (rays over the server's known-floor grid); once the stroke ends the
// component's value changes and the server plans once, replacing the estimate with the exact
// coverage. The pure functions below mirror studio/worldmap.py and models/paths/waypoints.py,
// which tests compare them against.
//
// Props: value (JSON waypoints [[x, y], ...], ground metres: x right of the photo, y ahead),
// base {extent: {x0, y1, span}, image (PNG data URI, the floor plan), cameras [[x, y, h]],
//       grid {n, data (base64 uint8)}, hfov (radians), start [x, y, h], scene_depth},
// settings {frames, speed, look, max_frames}, plan {waypoints, xy, headings, coverage} | null.

// ---- pure geometry (tested against the Python references) ------------------------------------
export function simplify(points, tolerance) {
  const n = points.length;
  if (n <= 2) return points.map((p) => [p[0], p[1]]);
  const keep = new Uint8Array(n);
  keep[0] = keep[n - 1] = 1;
  const stack = [[0, n - 1]];
  while (stack.length) {
    const [i, j] = stack.pop();
    if (j <= i + 1) continue;
    const [ax, ay] = points[i];
    const sx = points[j][0] - ax;
    const sy = points[j][1] - ay;
    const L2 = sx * sx + sy * sy;
    let best = -1;
    let bestD = -1;
    for (let k = i + 1; k < j; k++) {
      const px = points[k][0] - ax;
      const py = points[k][1] - ay;
      let d;
      if (L2 < 1e-18) d = Math.hypot(px, py);
      else {
        const t = Math.max(0, Math.min(1, (px * sx + py * sy) / L2));
        d = Math.hypot(px - t * sx, py - t * sy);
      }
      if (d > bestD) {
        bestD = d;
        best = k;
      }
    }
    if (bestD > tolerance) {
      keep[best] = 1;
      stack.push([i, best], [best, j]);
    }
  }
  return points.filter((_, k) => keep[k]).map((p) => [p[0], p[1]]);
}

// Centripetal Catmull-Rom through the points (ends mirrored), as models/paths/waypoints.py.
export function catmullRom(points, samplesPerSegment = 64) {
  const p = points;
  if (p.length === 1) return [[p[0][0], p[0][1]]];
  const m = p.length;
  const ext = [
    [2 * p[0][0] - p[1][0], 2 * p[0][1] - p[1][1]],
    ...p,
    [2 * p[m - 1][0] - p[m - 2][0], 2 * p[m - 1][1] - p[m - 2][1]],
  ];
  const out = [[p[0][0], p[0][1]]];
  const dist = (a, b) => Math.max(Math.hypot(b[0] - a[0], b[1] - a[1]), 1e-12) ** 0.5;
  for (let i = 0; i < m - 1; i++) {
    const [P0, P1, P2, P3] = [ext[i], ext[i + 1], ext[i + 2], ext[i + 3]];
    const t0 = 0;
    const t1 = t0 + dist(P0, P1);
    const t2 = t1 + dist(P1, P2);
    const t3 = t2 + dist(P2, P3);
    for (let s = 1; s <= samplesPerSegment; s++) {
      const t = t1 + (s / samplesPerSegment) * (t2 - t1);
      const lerp = (A, B, ta, tb) => [
        ((tb - t) / (tb - ta)) * A[0] + ((t - ta) / (tb - ta)) * B[0],
        ((tb - t) / (tb - ta)) * A[1] + ((t - ta) / (tb - ta)) * B[1],
      ];
      const A1 = lerp(P0, P1, t0, t1);
      const A2 = lerp(P1, P2, t1, t2);
      const A3 = lerp(P2, P3, t2, t3);
      const B1 = lerp(A1, A2, t0, t2);
      const B2 = lerp(A2, A3, t1, t3);
      out.push(s === samplesPerSegment ? [P2[0], P2[1]] : lerp(B1, B2, t1, t2));
    }
  }
  return out;
}

function arcLengths(pts) {
  const s = [0];
  for (let i = 1; i < pts.length; i++) {
    s.push(s[i - 1] + Math.hypot(pts[i][0] - pts[i - 1][0], pts[i][1] - pts[i - 1][1]));
  }
  return s;
}

// Points at arc lengths `at` (ascending) along the polyline pts with arc lengths s.
function interpAlong(pts, s, at) {
  const out = [];
  let j = 0;
  for (const a of at) {
    while (j < s.length - 2 && s[j + 1] < a) j++;
    const seg = s[j + 1] - s[j];
    const t = seg > 0 ? Math.max(0, Math.min(1, (a - s[j]) / seg)) : 0;
    out.push([pts[j][0] + t * (pts[j + 1][0] - pts[j][0]), pts[j][1] + t * (pts[j + 1][1] - pts[j][1])]);
  }
  return out;
}

const ease = (t) => 0.5 - 0.5 * Math.cos(Math.PI * Math.max(0, Math.min(1, t)));

// The cameras the server will plan (positions and headings on the map) for waypoints after a
// start pose [x, y, heading]: models.paths.waypoints.from_waypoints in map coordinates.
export function previewPath(start, waypoints, settings = {}) {
  let pts = [[start[0], start[1]], ...waypoints.map((p) => [p[0], p[1]])];
  pts = pts.filter((p, i) => i === 0 || Math.hypot(p[0] - pts[i - 1][0], p[1] - pts[i - 1][1]) > 1e-9);
  const h0 = start[2] || 0;
  if (pts.length < 2) return { xy: [pts[0]], headings: [h0], length: 0 };
  let maxSeg = 0;
  for (let i = 1; i < pts.length; i++) maxSeg = Math.max(maxSeg, Math.hypot(pts[i][0] - pts[i - 1][0], pts[i][1] - pts[i - 1][1]));
  const dense = catmullRom(pts, Math.max(64, Math.floor(40 * maxSeg) + 1));
  const sd = arcLengths(dense);
  const L = sd[sd.length - 1];
  const maxFrames = settings.max_frames || 600;
  let n = settings.speed > 0 ? Math.max(2, Math.round(L / settings.speed) + 1) : Math.max(2, settings.frames || 24);
  n = Math.min(n, maxFrames);
  const sFrames = Array.from({ length: n }, (_, i) => (L * i) / (n - 1));
  const xy = interpAlong(dense, sd, sFrames);
  let psi;
  if ((settings.look || "path") === "path") {
    const nGrid = Math.max(256, Math.min(4000, Math.ceil(L / 0.005) + 1));
    const ds = L / (nGrid - 1);
    const sGrid = Array.from({ length: nGrid }, (_, i) => i * ds);
    const grid = interpAlong(dense, sd, sGrid);
    const tan = grid.map((_, i) => {
      // np.gradient: central differences inside, one-sided at the ends (per unit of index,
      // so the ends weigh as much as the rest when smoothed).
      const i0 = Math.max(0, i - 1);
      const i1 = Math.min(nGrid - 1, i + 1);
      return [(grid[i1][0] - grid[i0][0]) / (i1 - i0), (grid[i1][1] - grid[i0][1]) / (i1 - i0)];
    });
    const sigma = Math.min(0.3, L / 6) / ds;
    const sm = gaussian1d(tan, sigma);
    let prev = null;
    const psiGrid = sm.map((t, i) => {
      const v = Math.hypot(t[0], t[1]) > 1e-12 ? t : tan[i];
      let a = Math.atan2(v[0], v[1]);
      if (prev !== null) a = prev + wrap(a - prev);
      prev = a;
      return a;
    });
    psi = sFrames.map((a) => {
      const k = Math.min(nGrid - 2, Math.floor(a / ds));
      const t = Math.max(0, Math.min(1, a / ds - k));
      return psiGrid[k] + t * (psiGrid[k + 1] - psiGrid[k]);
    });
  } else {
    psi = new Array(n).fill(h0);
  }
  // Ease from the start heading into the path's over >= 8 frames (3 degrees per frame).
  const rel = psi.map((p) => p - h0);
  const shift = 2 * Math.PI * Math.round(rel[0] / (2 * Math.PI));
  const nEase = Math.max(Math.ceil(Math.abs((rel[0] - shift) * 180 / Math.PI) / 3), 8);
  const headings = rel.map((r, i) => h0 + ease(i / Math.min(nEase, n - 1)) * (r - shift));
  return { xy, headings, length: L };
}

function wrap(a) {
  return a - 2 * Math.PI * Math.round(a / (2 * Math.PI));
}

function gaussian1d(v, sigma) {
  if (!(sigma > 0.5)) return v;
  const r = Math.ceil(4 * sigma);
  const w = [];
  for (let k = -r; k <= r; k++) w.push(Math.exp((-0.5 * k * k) / (sigma * sigma)));
  const n = v.length;
  return v.map((_, i) => {
    let x = 0;
    let y = 0;
    let tw = 0;
    for (let k = -r; k <= r; k++) {
      const j = Math.max(0, Math.min(n - 1, i + k)); // "nearest" edges, as scipy
      x += w[k + r] * v[j][0];
      y += w[k + r] * v[j][1];
      tw += w[k + r];
    }
    return [x / tw, y / tw];
  });
}

// The share of a view memory knows, estimated on the floor plan: the mirror of
// studio.worldmap.coverage_estimate. Each ray across the field of view is an image column; it
// marches through known free space until a seen surface (tS) or the unknown (tU). A row looking
// down meets the floor at eyeHeight / tan(-elevation), known when that lies before the unknown;
// other rows meet the wall, known when the ray ended at a seen surface or ran through known
// space to the range limit.
export function coverageEstimate(
  grid, n, extent, x, y, heading, hfov, rays = 24, maxRange = 8,
  eyeHeight = 1.6, vfov = null, pitch = 0, rows = 12,
) {
  const cell = extent.span / n;
  const vf = vfov === null || vfov === undefined ? 0.75 * hfov : vfov;
  const floorAt = [];
  for (let j = 0; j < rows; j++) {
    const e = pitch + ((j + 0.5) / rows - 0.5) * vf;
    floorAt.push(e < 0 ? eyeHeight / Math.tan(Math.max(-e, 1e-6)) : Infinity);
  }
  let known = 0;
  for (let k = 0; k < rays; k++) {
    const a = heading + ((k + 0.5) / rays - 0.5) * hfov;
    const sa = Math.sin(a);
    const ca = Math.cos(a);
    let tS = Infinity;
    let tU = Infinity;
    for (let t = 0; t < maxRange; t += cell / 2) {
      const px = (x + t * sa - extent.x0) / extent.span;
      const py = (extent.y1 - (y + t * ca)) / extent.span;
      const r = Math.floor(py * n);
      const c = Math.floor(px * n);
      const v = r >= 0 && r < n && c >= 0 && c < n ? grid[r * n + c] : 0;
      if (v === 2) {
        tS = t;
        break;
      }
      if (v === 0) {
        tU = t;
        break;
      }
    }
    const wallKnown = tU === Infinity;
    let col = 0;
    for (const d of floorAt) col += d < tS && d < maxRange ? (d <= tU ? 1 : 0) : wallKnown ? 1 : 0;
    known += col / rows;
  }
  return known / rays;
}

export function coverageColor(c) {
  // red (painted) -> yellow -> green (memory sees it)
  const t = Math.max(0, Math.min(1, c));
  const r = t < 0.5 ? 230 : Math.round(230 - (t - 0.5) * 2 * 180);
  const g = t < 0.5 ? Math.round(60 + t * 2 * 150) : 210;
  return `rgb(${r},${g},70)`;
}

function niceStep(raw) {
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

function decodeGrid(b64) {
  const s = atob(b64 || "");
  const g = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) g[i] = s.charCodeAt(i);
  return g;
}

// ---- the component -----------------------------------------------------------------------------
const TOOLS = [
  ["draw", "Draw", "Draw a path (or tap to add a point)"],
  ["pan", "Pan", "Drag to move the map (or use two fingers, or the right mouse button)"],
];

class MapSketch {
  constructor(host, props, trigger) {
    this.host = host;
    this.props = props;
    this.trigger = trigger;
    this.tool = "draw";
    this.wp = parseValue(props.value);
    this.history = [JSON.stringify(this.wp)];
    this.cursor = 0;
    this.selected = -1;
    this.view = null; // {cx, cy, zoom: px per metre}
    this.times = {};
    this.build();
    this.setBase(props.base);
  }

  build() {
    // Our own box inside the component's element (Gradio scopes component CSS to descendants).
    this.host.innerHTML = "";
    const r = (this.root = document.createElement("div"));
    r.className = "loci-map";
    this.host.append(r);
    const btn = (cls, text, title) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = cls;
      b.textContent = text;
      b.title = title;
      return b;
    };
    this.bar = document.createElement("div");
    this.bar.className = "lm-bar";
    for (const [v, text, title] of TOOLS) {
      const b = btn("lm-tool", text, title);
      b.dataset.tool = v;
      this.bar.append(b);
    }
    this.bar.append(
      btn("lm-undo", "↶ Undo", "Undo (Ctrl+Z)"),
      btn("lm-redo", "↷ Redo", "Redo (Ctrl+Shift+Z)"),
      btn("lm-delete", "✕ Point", "Delete the selected waypoint (or the last one)"),
      btn("lm-clear", "Clear", "Remove every waypoint"),
      btn("lm-zoom-in", "+", "Zoom in"),
      btn("lm-zoom-out", "−", "Zoom out"),
      btn("lm-fit", "Fit", "Show the whole map"),
    );
    this.canvas = document.createElement("canvas");
    this.canvas.className = "lm-canvas";
    this.canvas.tabIndex = 0;
    this.canvas.setAttribute("aria-label", "Top-down map: draw the camera path");
    this.stage = document.createElement("div");
    this.stage.className = "lm-stage";
    this.stage.append(this.canvas);
    this.status = document.createElement("div");
    this.status.className = "lm-status";
    this.legend = document.createElement("div");
    this.legend.className = "lm-legend";
    this.legend.innerHTML =
      "<span class='lm-ramp'></span> <span>memory already sees the view</span>" +
      "<span style='margin-left:auto'>mostly painted</span>";
    r.append(this.bar, this.stage, this.legend, this.status);
    this.bar.addEventListener("click", (e) => this.onButton(e));
    this.installPointer();
    new ResizeObserver(() => this.resize()).observe(this.stage);
    this.syncTools();
  }

  syncTools() {
    this.bar.querySelectorAll(".lm-tool").forEach((b) => b.classList.toggle("on", b.dataset.tool === this.tool));
    this.root.dataset.tool = this.tool;
    this.canvas.style.cursor = this.tool === "pan" ? "grab" : "crosshair";
  }

  onButton(e) {
    const b = e.target.closest("button");
    if (!b) return;
    if (b.dataset.tool) {
      this.tool = b.dataset.tool;
      this.syncTools();
    } else if (b.classList.contains("lm-undo")) this.undo();
    else if (b.classList.contains("lm-redo")) this.redo();
    else if (b.classList.contains("lm-delete")) this.deletePoint(this.selected >= 0 ? this.selected : this.wp.length - 1);
    else if (b.classList.contains("lm-clear")) this.commit([]);
    else if (b.classList.contains("lm-zoom-in")) this.zoomAt(1.5);
    else if (b.classList.contains("lm-zoom-out")) this.zoomAt(1 / 1.5);
    else if (b.classList.contains("lm-fit")) this.fit();
  }

  // ---- data ----------------------------------------------------------------------------------
  setBase(base) {
    this.base = base || null;
    this.root.dataset.state = base ? "ready" : "empty";
    this.grid = base && base.grid ? decodeGrid(base.grid.data) : null;
    this.img = null;
    if (base && base.image) {
      const img = new Image();
      img.onload = () => {
        this.img = img;
        this.draw();
      };
      img.src = base.image;
    }
    const extent = base && JSON.stringify(base.extent);
    if (base && (!this.view || this.viewFor !== extent)) this.fit(); // keep the user's zoom
    this.viewFor = extent;
    this.draw();
  }

  setValue(value) {
    const wp = parseValue(value);
    if (JSON.stringify(wp) === JSON.stringify(this.wp)) return;
    this.wp = wp;
    this.pushHistory();
    this.draw();
  }

  pushHistory() {
    const s = JSON.stringify(this.wp);
    if (this.history[this.cursor] === s) return;
    this.history = this.history.slice(0, this.cursor + 1);
    this.history.push(s);
    this.cursor = this.history.length - 1;
  }

  // A new list of waypoints from an edit: keep it, preview it, and let the server plan it.
  commit(wp) {
    this.wp = wp.map((p) => [round(p[0]), round(p[1])]);
    this.selected = Math.min(this.selected, this.wp.length - 1);
    this.pushHistory();
    this.publish();
  }

  publish() {
    this.times.edit = performance.now();
    this.draw();
    this.times.preview = performance.now();
    this.root.dataset.waypoints = String(this.wp.length);
    // Setting the value is what fires the component's "change" event (Gradio does it): the
    // server plans once per edit. (An explicit trigger("change") here would plan twice.)
    this.props.value = JSON.stringify(this.wp);
  }

  undo() {
    if (this.cursor === 0) return;
    this.cursor -= 1;
    this.wp = JSON.parse(this.history[this.cursor]);
    this.selected = -1;
    this.publish();
  }

  redo() {
    if (this.cursor >= this.history.length - 1) return;
    this.cursor += 1;
    this.wp = JSON.parse(this.history[this.cursor]);
    this.publish();
  }

  deletePoint(i) {
    if (i < 0 || i >= this.wp.length) return;
    const wp = this.wp.slice();
    wp.splice(i, 1);
    this.selected = -1;
    this.commit(wp);
  }

  // ---- view transform --------------------------------------------------------------------------
  size() {
    return { w: this.canvas.clientWidth || 1, h: this.canvas.clientHeight || 1 };
  }

  fit() {
    if (!this.base) return;
    const { w, h } = this.size();
    const e = this.base.extent;
    this.view = { cx: e.x0 + e.span / 2, cy: e.y1 - e.span / 2, zoom: Math.min(w, h) / e.span };
    this.draw();
  }

  toScreen(x, y) {
    const { w, h } = this.size();
    const v = this.view;
    return [w / 2 + (x - v.cx) * v.zoom, h / 2 - (y - v.cy) * v.zoom];
  }

  toWorld(sx, sy) {
    const { w, h } = this.size();
    const v = this.view;
    return [v.cx + (sx - w / 2) / v.zoom, v.cy - (sy - h / 2) / v.zoom];
  }

  zoomAt(f, sx, sy) {
    if (!this.view) return;
    const { w, h } = this.size();
    sx = sx ?? w / 2;
    sy = sy ?? h / 2;
    const [x, y] = this.toWorld(sx, sy);
    const e = this.base.extent;
    const fitZoom = Math.min(w, h) / e.span;
    this.view.zoom = Math.max(fitZoom / 4, Math.min(fitZoom * 40, this.view.zoom * f));
    const [x2, y2] = this.toWorld(sx, sy);
    this.view.cx += x - x2;
    this.view.cy += y - y2;
    this.draw();
  }

  resize() {
    const { w, h } = this.size();
    const dpr = Math.min(window.devicePixelRatio || 1, 2);
    this.canvas.width = Math.round(w * dpr);
    this.canvas.height = Math.round(h * dpr);
    this.dpr = dpr;
    if (this.base && this.view && this.lastSize) {
      this.view.zoom *= Math.min(w, h) / Math.min(this.lastSize.w, this.lastSize.h);
    }
    this.lastSize = { w, h };
    if (this.base && !this.view) this.fit();
    this.draw();
  }

  // ---- pointer input -----------------------------------------------------------------------------
  installPointer() {
    const c = this.canvas;
    const pts = new Map(); // active pointers (touch: two fingers pan and pinch)
    let gesture = null;
    const local = (e) => {
      const r = c.getBoundingClientRect();
      return [e.clientX - r.left, e.clientY - r.top];
    };
    c.addEventListener("pointerdown", (e) => {
      if (!this.base) return;
      c.focus();
      c.setPointerCapture(e.pointerId);
      pts.set(e.pointerId, local(e));
      const [sx, sy] = local(e);
      if (pts.size === 2) {
        // A second finger: whatever the first started becomes a pan/pinch.
        this.stroke = null;
        this.dragging = -1;
        const [a, b] = [...pts.values()];
        gesture = { type: "pinch", mid: [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2], dist: Math.hypot(a[0] - b[0], a[1] - b[1]) };
        this.draw();
        return;
      }
      if (this.tool === "pan" || e.button === 1 || e.button === 2) {
        gesture = { type: "pan", last: [sx, sy] };
        c.style.cursor = "grabbing";
        return;
      }
      const hit = this.hitWaypoint(sx, sy);
      if (hit >= 0) {
        this.selected = hit;
        this.dragging = hit;
        this.dragFrom = JSON.stringify(this.wp);
        gesture = { type: "drag" };
        this.draw();
        return;
      }
      this.selected = -1;
      this.stroke = { screen: [[sx, sy]], t0: performance.now() };
      gesture = { type: "stroke" };
    });
    c.addEventListener("pointermove", (e) => {
      if (!pts.has(e.pointerId)) return;
      const p = local(e);
      pts.set(e.pointerId, p);
      if (!gesture) return;
      if (gesture.type === "pinch" && pts.size === 2) {
        const [a, b] = [...pts.values()];
        const mid = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
        const dist = Math.hypot(a[0] - b[0], a[1] - b[1]);
        this.view.cx -= (mid[0] - gesture.mid[0]) / this.view.zoom;
        this.view.cy += (mid[1] - gesture.mid[1]) / this.view.zoom;
        if (gesture.dist > 10 && dist > 10) this.zoomAt(dist / gesture.dist, mid[0], mid[1]);
        gesture.mid = mid;
        gesture.dist = dist;
        this.draw();
      } else if (gesture.type === "pan") {
        this.view.cx -= (p[0] - gesture.last[0]) / this.view.zoom;
        this.view.cy += (p[1] - gesture.last[1]) / this.view.zoom;
        gesture.last = p;
        this.draw();
      } else if (gesture.type === "drag" && this.dragging >= 0) {
        const [x, y] = this.toWorld(p[0], p[1]);
        this.wp[this.dragging] = [round(x), round(y)];
        this.requestDraw();
      } else if (gesture.type === "stroke" && this.stroke) {
        // getCoalescedEvents: every sample the pointer made, not one per animation frame.
        const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
        for (const ev of events.length ? events : [e]) this.stroke.screen.push(local(ev));
        this.requestDraw();
      }
    });
    const end = (e) => {
      if (!pts.has(e.pointerId)) return;
      pts.delete(e.pointerId);
      if (!gesture) return;
      const type = gesture.type;
      if (type === "pinch" && pts.size) return; // wait for the last finger
      gesture = null;
      this.syncTools();
      if (type === "drag" && this.dragging >= 0) {
        this.dragging = -1;
        if (JSON.stringify(this.wp) !== this.dragFrom) this.commit(this.wp);
        else this.draw();
      } else if (type === "stroke" && this.stroke && e.type === "pointerup") {
        this.times.strokeEnd = performance.now();
        this.finishStroke();
      } else {
        this.stroke = null;
        this.draw();
      }
    };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("contextmenu", (e) => e.preventDefault());
    c.addEventListener("dblclick", (e) => {
      const [sx, sy] = local(e);
      const hit = this.hitWaypoint(sx, sy);
      if (hit >= 0) this.deletePoint(hit);
    });
    c.addEventListener(
      "wheel",
      (e) => {
        if (!this.view) return;
        e.preventDefault();
        const [sx, sy] = local(e);
        this.zoomAt(Math.exp(-e.deltaY * 0.0015), sx, sy);
      },
      { passive: false },
    );
    c.addEventListener("keydown", (e) => {
      const z = e.key === "z" || e.key === "Z";
      if ((e.ctrlKey || e.metaKey) && z) {
        e.preventDefault();
        e.shiftKey ? this.redo() : this.undo();
      } else if ((e.ctrlKey || e.metaKey) && (e.key === "y" || e.key === "Y")) {
        e.preventDefault();
        this.redo();
      } else if ((e.key === "Delete" || e.key === "Backspace") && this.selected >= 0) {
        e.preventDefault();
        this.deletePoint(this.selected);
      } else if (e.key === "+" || e.key === "=") this.zoomAt(1.25);
      else if (e.key === "-") this.zoomAt(0.8);
    });
  }

  hitWaypoint(sx, sy) {
    let best = -1;
    let bestD = 12; // px
    this.wp.forEach((p, i) => {
      const [x, y] = this.toScreen(p[0], p[1]);
      const d = Math.hypot(x - sx, y - sy);
      if (d <= bestD) {
        bestD = d;
        best = i;
      }
    });
    return best;
  }

  // The stroke becomes waypoints: order and direction kept, simplified to within 3 px.
  finishStroke() {
    const s = this.stroke;
    this.stroke = null;
    let drawn = 0;
    for (let i = 1; i < s.screen.length; i++) drawn += Math.hypot(s.screen[i][0] - s.screen[i - 1][0], s.screen[i][1] - s.screen[i - 1][1]);
    const world = s.screen.map(([x, y]) => this.toWorld(x, y));
    if (drawn < 6) {
      this.commit([...this.wp, world[0]]); // a tap: one more point at the end
      return;
    }
    const tol = Math.max(3 / this.view.zoom, 0.02);
    let pts = simplify(world, tol);
    // Starting at the path's end (or with no path yet) extends it; elsewhere starts a new one.
    const end = this.wp.length ? this.wp[this.wp.length - 1] : this.base.start;
    const [ex, ey] = this.toScreen(end[0], end[1]);
    const extend = !this.wp.length || Math.hypot(s.screen[0][0] - ex, s.screen[0][1] - ey) <= 24;
    if (extend && pts.length > 1 && Math.hypot(pts[0][0] - end[0], pts[0][1] - end[1]) < 24 / this.view.zoom) {
      pts = pts.slice(1); // the stroke began on the end point: do not double it
    }
    this.commit(extend && this.wp.length ? [...this.wp, ...pts] : pts);
  }

  // ---- drawing ---------------------------------------------------------------------------------
  requestDraw() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = 0;
      this.draw();
    });
  }

  currentPath() {
    const plan = this.props.plan;
    const key = JSON.stringify(this.wp);
    if (!this.stroke && plan && plan.xy && !plan.error && (plan.preset || JSON.stringify(plan.waypoints) === key)) {
      return { xy: plan.xy, headings: plan.headings, coverage: plan.coverage, exact: true };
    }
    let wp = this.wp;
    if (this.stroke && this.stroke.screen.length > 1) {
      const world = this.stroke.screen.map(([x, y]) => this.toWorld(x, y));
      wp = [...wp, ...simplify(world, Math.max(3 / this.view.zoom, 0.02))];
    }
    if (!wp.length || !this.base) return null;
    const p = previewPath(this.base.start, wp, this.props.settings || {});
    const depth = this.base.scene_depth || 3;
    const coverage = this.grid
      ? p.xy.map((q, i) =>
          coverageEstimate(this.grid, this.base.grid.n, this.base.extent, q[0], q[1], p.headings[i],
            this.base.hfov, 24, 2.5 * depth, this.base.eye_height, this.base.vfov, this.base.pitch))
      : null;
    return { ...p, coverage, exact: false };
  }

  draw() {
    const c = this.canvas;
    const ctx = c.getContext("2d");
    const dpr = this.dpr || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const { w, h } = this.size();
    ctx.fillStyle = "#181a1f";
    ctx.fillRect(0, 0, w, h);
    if (!this.base || !this.view) {
      ctx.fillStyle = "#aaa";
      ctx.font = "14px sans-serif";
      ctx.fillText("The map appears once the project has a photo.", 16, 28);
      this.status.textContent = "";
      return;
    }
    const e = this.base.extent;
    const [ix, iy] = this.toScreen(e.x0, e.y1);
    const isz = e.span * this.view.zoom;
    if (this.gridImage === undefined || this.gridFor !== this.grid) this.makeGridImage();
    ctx.imageSmoothingEnabled = false;
    if (this.gridImage) ctx.drawImage(this.gridImage, ix, iy, isz, isz);
    if (this.img) ctx.drawImage(this.img, ix, iy, isz, isz);
    this.drawGrid(ctx, w, h);
    this.drawCameras(ctx);
    const path = this.currentPath();
    if (path) this.drawPath(ctx, path);
    this.drawWaypoints(ctx);
    if (this.stroke && this.stroke.screen.length > 1) {
      ctx.strokeStyle = "rgba(255,255,255,.55)";
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      this.stroke.screen.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.stroke();
    }
    this.describe(path);
    this.root.dataset.drawn = String((Number(this.root.dataset.drawn) || 0) + 1);
    this.root.dataset.exact = path && path.exact ? "1" : "0";
    if (path && path.exact && this.times.edit && !this.times.planned) this.times.planned = performance.now();
  }

  makeGridImage() {
    this.gridFor = this.grid;
    this.gridImage = null;
    if (!this.grid) return;
    const n = this.base.grid.n;
    const cv = document.createElement("canvas");
    cv.width = cv.height = n;
    const g = cv.getContext("2d");
    const im = g.createImageData(n, n);
    for (let i = 0; i < n * n; i++) {
      if (this.grid[i] === 1) im.data.set([70, 110, 160, 70], i * 4); // seen free space
    }
    g.putImageData(im, 0, 0);
    this.gridImage = cv;
  }

  drawGrid(ctx, w, h) {
    const step = niceStep(Math.max(45, Math.min(w, h) / 8) / this.view.zoom); // a line every ~50-90 px
    const [x0, y1] = this.toWorld(0, 0);
    const [x1, y0] = this.toWorld(w, h);
    ctx.strokeStyle = "rgba(255,255,255,.09)";
    ctx.fillStyle = "rgba(255,255,255,.55)";
    ctx.lineWidth = 1;
    ctx.font = "11px sans-serif";
    ctx.beginPath();
    for (let x = Math.ceil(x0 / step) * step; x <= x1; x += step) {
      const [sx] = this.toScreen(x, 0);
      ctx.moveTo(Math.round(sx) + 0.5, 0);
      ctx.lineTo(Math.round(sx) + 0.5, h);
      ctx.fillText(`${+x.toFixed(2)} m`, sx + 3, h - 5);
    }
    for (let y = Math.ceil(y0 / step) * step; y <= y1; y += step) {
      const [, sy] = this.toScreen(0, y);
      ctx.moveTo(0, Math.round(sy) + 0.5);
      ctx.lineTo(w, Math.round(sy) + 0.5);
      ctx.fillText(`${+y.toFixed(2)} m`, 4, sy - 3);
    }
    ctx.stroke();
    ctx.fillText(`grid ${+step.toFixed(2)} m · north = the photo's view`, w - 190, 14);
  }

  arrow(ctx, x, y, heading, len, color, width) {
    const [sx, sy] = this.toScreen(x, y);
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.beginPath();
    ctx.moveTo(sx, sy);
    ctx.lineTo(sx + Math.sin(heading) * len, sy - Math.cos(heading) * len);
    ctx.stroke();
  }

  drawCameras(ctx) {
    const cams = this.base.cameras || [];
    if (cams.length > 1) {
      ctx.strokeStyle = "#ffc440";
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      cams.forEach(([x, y], i) => {
        const [sx, sy] = this.toScreen(x, y);
        i ? ctx.lineTo(sx, sy) : ctx.moveTo(sx, sy);
      });
      ctx.stroke();
    }
    const step = Math.max(1, Math.floor(cams.length / 12));
    cams.forEach(([x, y, hd], i) => {
      if (i % step && i !== cams.length - 1) return;
      this.arrow(ctx, x, y, hd, 12, "#ffc440", 2);
      const [sx, sy] = this.toScreen(x, y);
      ctx.fillStyle = "#ffc440";
      ctx.beginPath();
      ctx.arc(sx, sy, 3, 0, 2 * Math.PI);
      ctx.fill();
    });
    const s = this.base.start;
    if (s) {
      const [sx, sy] = this.toScreen(s[0], s[1]);
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(sx, sy, 7, 0, 2 * Math.PI);
      ctx.stroke();
      ctx.fillStyle = "#fff";
      ctx.font = "bold 10px sans-serif";
      ctx.fillText("start", sx + 9, sy + 12);
    }
  }

  drawPath(ctx, path) {
    const { xy, headings, coverage } = path;
    ctx.lineWidth = path.exact ? 4 : 3;
    ctx.setLineDash(path.exact ? [] : [7, 4]);
    for (let i = 1; i < xy.length; i++) {
      const [ax, ay] = this.toScreen(xy[i - 1][0], xy[i - 1][1]);
      const [bx, by] = this.toScreen(xy[i][0], xy[i][1]);
      ctx.strokeStyle = coverage ? coverageColor(coverage[i]) : "#50c8ff";
      ctx.beginPath();
      ctx.moveTo(ax, ay);
      ctx.lineTo(bx, by);
      ctx.stroke();
    }
    ctx.setLineDash([]);
    const tick = Math.max(1, Math.floor(xy.length / 16));
    for (let i = 0; i < xy.length; i += tick) this.arrow(ctx, xy[i][0], xy[i][1], headings[i], 10, "#fff", 1);
  }

  drawWaypoints(ctx) {
    ctx.font = "11px sans-serif";
    this.wp.forEach(([x, y], i) => {
      const [sx, sy] = this.toScreen(x, y);
      ctx.fillStyle = i === this.selected ? "#ffffff" : "#ff5a5a";
      ctx.beginPath();
      ctx.arc(sx, sy, i === this.selected ? 7 : 5, 0, 2 * Math.PI);
      ctx.fill();
      ctx.fillStyle = "#ff8a8a";
      ctx.fillText(String(i + 1), sx + 7, sy - 7);
    });
  }

  describe(path) {
    if (!this.wp.length) {
      this.status.textContent = "Draw a path from the start (white circle), or tap to add points.";
      return;
    }
    const plan = this.props.plan;
    if (plan && plan.error && JSON.stringify(plan.waypoints) === JSON.stringify(this.wp)) {
      this.status.textContent = `Not planned: ${plan.error}`;
      this.root.dataset.planError = "1";
      return;
    }
    this.root.dataset.planError = "0";
    if (!path) return;
    const cov = path.coverage || [];
    const mean = cov.length > 1 ? cov.slice(1).reduce((a, b) => a + b, 0) / (cov.length - 1) : 1;
    const len = path.length ?? pathLength(path.xy);
    this.status.textContent =
      `${this.wp.length} waypoints · ${path.xy.length} frames · ${len.toFixed(2)} m · ` +
      `memory sees ${Math.round(mean * 100)}% of the views on average ` +
      (path.exact ? "(planned)" : "(estimate; planning…)");
  }
}

function pathLength(xy) {
  let L = 0;
  for (let i = 1; i < xy.length; i++) L += Math.hypot(xy[i][0] - xy[i - 1][0], xy[i][1] - xy[i - 1][1]);
  return L;
}

function round(v) {
  return Math.round(v * 1000) / 1000;
}

function parseValue(v) {
  try {
    const a = typeof v === "string" ? JSON.parse(v || "[]") : v || [];
    return Array.isArray(a) ? a.filter((p) => Array.isArray(p) && p.length === 2 && p.every(Number.isFinite)) : [];
  } catch (e) {
    return [];
  }
}

export function mount(element, props, trigger, watch) {
  const map = new MapSketch(element, props, trigger);
  map.root.__lociMap = map; // for tests and the page's other controls
  watch("base", () => map.setBase(props.base));
  watch("value", () => map.setValue(props.value));
  watch(["plan", "settings"], () => map.draw());
  return map;
}
