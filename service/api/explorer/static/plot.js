// SVG drawing without a library: the scatter plot with means and sigma ellipses, and
// the criterion curve of a model selection. Only attributes are set (never inline
// style), so the page's style-src 'self' policy holds.

const SVG_NS = "http://www.w3.org/2000/svg";

// Tableau 10: distinct for up to ten components, then repeating.
export const PALETTE = [
  "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
  "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
];
const UNLABELLED = "#888888";
// Past this many points a scatter is dense: its points are drawn translucent.
const DENSE = 800;

export function colour(label) {
  return label == null ? UNLABELLED : PALETTE[label % PALETTE.length];
}

function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

function clear(svg) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
}

function viewSize(svg) {
  const box = svg.viewBox.baseVal;
  return { width: box.width, height: box.height };
}

/** About `count` round tick values covering [lo, hi] (1, 2 or 5 times a power of ten). */
function ticks(lo, hi, count = 6) {
  const raw = (hi - lo) / count || 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return out;
}

function formatTick(value) {
  return Number(value.toPrecision(6)).toString();
}

/** Half extents of an ellipse rotated by `angle` degrees: its bounding box. */
function ellipseExtent(width, height, angle) {
  const t = (angle * Math.PI) / 180;
  const a = width / 2;
  const b = height / 2;
  return [
    Math.hypot(a * Math.cos(t), b * Math.sin(t)),
    Math.hypot(a * Math.sin(t), b * Math.cos(t)),
  ];
}

function axes(svg, frame, xTicks, yTicks, sx, sy, labels) {
  const g = el("g", { class: "axes" }, svg);
  el("rect", { class: "frame", x: frame.left, y: frame.top, width: frame.width, height: frame.height }, g);
  for (const v of xTicks) {
    const x = sx(v);
    el("line", { class: "grid", x1: x, x2: x, y1: frame.top, y2: frame.top + frame.height }, g);
    el("text", { class: "tick", x, y: frame.top + frame.height + 16, "text-anchor": "middle" }, g)
      .textContent = formatTick(v);
  }
  for (const v of yTicks) {
    const y = sy(v);
    el("line", { class: "grid", x1: frame.left, x2: frame.left + frame.width, y1: y, y2: y }, g);
    el("text", { class: "tick", x: frame.left - 6, y: y + 4, "text-anchor": "end" }, g)
      .textContent = formatTick(v);
  }
  if (labels) {
    el("text", { class: "axis-label", x: frame.left + frame.width, y: frame.top + frame.height + 30, "text-anchor": "end" }, g)
      .textContent = labels[0];
    const my = frame.top + frame.height / 2;
    el("text", { class: "axis-label", x: 12, y: my, "text-anchor": "middle", transform: `rotate(-90 12 ${my})` }, g)
      .textContent = labels[1];
  }
}

/**
 * The scatter plot. `points` are [x, y] in plotted coordinates, `labels` one
 * component per point (or null before a fit), `components` the `components` of
 * /ellipses (or []). Data units are scaled the same on both axes so that an
 * ellipse's shape and angle read true. `onFocus(i)` is called with the index of the
 * point under the pointer (or chosen with the arrow keys).
 */
export function drawScatter(svg, { points, labels, components, axisLabels, onFocus }) {
  clear(svg);
  const { width, height } = viewSize(svg);
  const frame = { left: 52, top: 10, width: width - 62, height: height - 54 };

  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  const grow = (x, y, dx = 0, dy = 0) => {
    x0 = Math.min(x0, x - dx); x1 = Math.max(x1, x + dx);
    y0 = Math.min(y0, y - dy); y1 = Math.max(y1, y + dy);
  };
  for (const [x, y] of points) grow(x, y);
  for (const c of components) {
    for (const s of c.sigmas) grow(c.mean[0], c.mean[1], ...ellipseExtent(s.width, s.height, s.angle));
    grow(c.mean[0], c.mean[1]);
  }
  if (!Number.isFinite(x0)) [x0, x1, y0, y1] = [-1, 1, -1, 1];
  // Equal scale on both axes, centred, with a 4% margin; a flat range gets a unit.
  const spanX = (x1 - x0) || 1;
  const spanY = (y1 - y0) || 1;
  const scale = Math.min(frame.width / spanX, frame.height / spanY) / 1.08;
  const cx = (x0 + x1) / 2;
  const cy = (y0 + y1) / 2;
  const sx = (x) => frame.left + frame.width / 2 + (x - cx) * scale;
  const sy = (y) => frame.top + frame.height / 2 - (y - cy) * scale; // SVG's y points down
  const half = (n) => n / 2 / scale;
  axes(
    svg, frame,
    ticks(cx - half(frame.width), cx + half(frame.width)),
    ticks(cy - half(frame.height), cy + half(frame.height)),
    sx, sy, axisLabels,
  );

  const clip = el("clipPath", { id: "scatter-clip" }, el("defs", {}, svg));
  el("rect", { x: frame.left, y: frame.top, width: frame.width, height: frame.height }, clip);
  const plot = el("g", { "clip-path": "url(#scatter-clip)" }, svg);

  // Dense data: translucent points, so that the cloud's density shows and the
  // ellipses drawn over it stay visible.
  const dots = el("g", { class: points.length > DENSE ? "points dense" : "points" }, plot);
  points.forEach(([x, y], i) => {
    const label = labels ? labels[i] : null;
    el("circle", {
      class: "point", cx: sx(x).toFixed(2), cy: sy(y).toFixed(2), r: 3,
      fill: colour(label), "data-index": i,
    }, dots);
  });

  // Ellipses and means above the points, but transparent to the pointer.
  const overlay = el("g", { class: "components" }, plot);
  for (const c of components) {
    const [mx, my] = [sx(c.mean[0]), sy(c.mean[1])];
    for (const s of c.sigmas) {
      // Counterclockwise in data coordinates is clockwise on screen (y flipped).
      const geometry = {
        cx: mx, cy: my, rx: (s.width / 2) * scale, ry: (s.height / 2) * scale,
        transform: `rotate(${-s.angle} ${mx} ${my})`,
      };
      // A light halo under each ellipse: drawn over points of its own colour, the
      // coloured stroke alone vanished into them.
      el("ellipse", { class: "halo", ...geometry, "data-component": c.component }, overlay);
      el("ellipse", {
        class: `sigma sigma-${s.n_sigma}`, ...geometry,
        stroke: colour(c.component), "data-component": c.component, "data-n-sigma": s.n_sigma,
      }, overlay);
    }
  }
  for (const c of components) {
    const [mx, my] = [sx(c.mean[0]), sy(c.mean[1])];
    el("path", {
      class: "mean", d: `M${mx - 7},${my}H${mx + 7}M${mx},${my - 7}V${my + 7}`,
      "data-component": c.component,
    }, overlay);
  }

  // A ring drawn above everything marks the point whose membership is shown; the
  // points themselves keep their order, so index i stays child i.
  const ring = el("circle", { class: "focus-ring", r: 6, visibility: "hidden" }, plot);
  let current = -1;
  const focusPoint = (i) => {
    const dot = dots.children[i];
    if (!dot) return;
    current = i;
    ring.setAttribute("cx", dot.getAttribute("cx"));
    ring.setAttribute("cy", dot.getAttribute("cy"));
    ring.setAttribute("visibility", "visible");
    onFocus(i);
  };
  dots.addEventListener("pointerover", (event) => {
    if (event.target.classList.contains("point")) focusPoint(Number(event.target.dataset.index));
  });
  // Keyboard: the plot is focusable; the arrow keys step through the points.
  svg.setAttribute("tabindex", "0");
  svg.onkeydown = (event) => {
    const n = dots.children.length;
    if (!n || !["ArrowRight", "ArrowLeft"].includes(event.key)) return;
    event.preventDefault();
    focusPoint(event.key === "ArrowRight" ? (current + 1) % n : (current - 1 + n) % n);
  };
}

/**
 * The BIC and AIC of each k (cells of one covariance_type), the best k marked.
 * `scores` are /v1/model-selection's `scores`; cells that failed (bic null) are left out.
 */
export function drawCurve(svg, { scores, criterion, bestK }) {
  clear(svg);
  const { width, height } = viewSize(svg);
  const frame = { left: 72, top: 12, width: width - 180, height: height - 56 };
  const cells = scores.filter((s) => s.bic != null && s.aic != null);
  if (!cells.length) return;
  const ks = cells.map((s) => s.n_components);
  const values = cells.flatMap((s) => [s.bic, s.aic]);
  const [k0, k1] = [Math.min(...ks), Math.max(...ks)];
  const [v0, v1] = [Math.min(...values), Math.max(...values)];
  const padV = (v1 - v0) * 0.08 || 1;
  const sx = (k) => frame.left + (k1 === k0 ? frame.width / 2 : ((k - k0) / (k1 - k0)) * frame.width);
  const sy = (v) => frame.top + frame.height - ((v - v0 + padV) / (v1 - v0 + 2 * padV)) * frame.height;
  axes(svg, frame, ks, ticks(v0 - padV, v1 + padV, 5), sx, sy, ["k (n_components)", "criterion (lower is better)"]);

  const series = [
    { name: "bic", label: "BIC", colour: PALETTE[0] },
    { name: "aic", label: "AIC", colour: PALETTE[1] },
  ];
  series.forEach((line, row) => {
    const g = el("g", { class: `series series-${line.name}` }, svg);
    el("polyline", {
      class: "curve", stroke: line.colour,
      points: cells.map((s) => `${sx(s.n_components)},${sy(s[line.name])}`).join(" "),
    }, g);
    for (const s of cells) {
      el("circle", { class: "cell", cx: sx(s.n_components), cy: sy(s[line.name]), r: 3, fill: line.colour }, g)
        .appendChild(el("title")).textContent = `k=${s.n_components}: ${line.label} ${s[line.name].toFixed(2)}`;
    }
    // Legend, right of the frame.
    const ly = frame.top + 14 + row * 20;
    el("line", { class: "curve", x1: frame.left + frame.width + 16, x2: frame.left + frame.width + 40, y1: ly, y2: ly, stroke: line.colour }, svg);
    el("text", { class: "legend", x: frame.left + frame.width + 46, y: ly + 4 }, svg).textContent = line.label;
  });

  const best = cells.find((s) => s.n_components === bestK);
  if (best) {
    const [bx, by] = [sx(bestK), sy(best[criterion])];
    el("circle", { class: "best", cx: bx, cy: by, r: 8, "data-k": bestK }, svg);
    el("text", { class: "best-label", x: bx, y: by - 12, "text-anchor": "middle" }, svg)
      .textContent = `best k = ${bestK}`;
  }
}
