// The colour ramp of numeric targets and regression maps: matplotlib's viridis (the server
// renders regression tiles with rio-tiler's "viridis"), sampled at nine stops.
import { el } from "./api.js";

const VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962",
  "#addc30", "#fde725"];

const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));

// The ramp's colour for `value` in [lo, hi] (clamped); grey for a missing value.
export function rampColor(value, lo, hi) {
  const x = Number(value);
  if (value === null || value === undefined || value === "" || !Number.isFinite(x)) return "#888888";
  const t = hi > lo ? Math.min(1, Math.max(0, (x - lo) / (hi - lo))) : 0.5;
  const pos = t * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(pos));
  const a = rgb(VIRIDIS[i]), b = rgb(VIRIDIS[i + 1]);
  const c = a.map((v, k) => Math.round(v + (b[k] - v) * (pos - i)));
  return `#${c.map((v) => v.toString(16).padStart(2, "0")).join("")}`;
}

// A legend bar: the gradient with its low and high ends labelled (`unit` after the numbers).
export function rampLegend(lo, hi, title) {
  const wrap = el("div");
  wrap.className = "ramp";
  wrap.append(el("div", title));
  const bar = el("div");
  bar.className = "ramp-bar";
  bar.style.background = `linear-gradient(to right, ${VIRIDIS.join(", ")})`;
  const ends = el("div");
  ends.className = "ramp-ends";
  ends.append(el("span", fmt(lo)), el("span", fmt(hi)));
  wrap.append(bar, ends);
  return wrap;
}

const fmt = (v) => (v === null || v === undefined ? "?" : String(+(+v).toPrecision(4)));
