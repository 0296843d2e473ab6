// HTTP helpers shared by every part of the UI: JSON calls with the CSRF header, uploads, and
// the small DOM helpers (text is always set with textContent: names are never parsed as HTML).

export const $ = (sel) => document.querySelector(sel);

// One object holds the UI's state; window.__geolatent exposes it to the browser tests.
export const state = {
  project: null, user: null, classes: [], currentClass: null, currentValue: null,
  selected: null, known: new Map(), parts: new Map(), owner: new Map(), readonly: new Map(),
  multi: new Set(),
  undo: [], saving: 0, map: null, draw: null, dates: [], preset: "true_color", capture: null,
  tasks: [], members: [], jobs: [],
};
window.__geolatent = state;

function csrf() {
  const m = document.cookie.match(/(?:^|; )gl_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

export async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") opts.headers["X-CSRF-Token"] = csrf();
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  return { status: r.status, data };
}

export async function upload(path, file, fields = {}) {
  const form = new FormData();
  form.append("file", file, file.name);
  for (const [k, v] of Object.entries(fields)) if (v) form.append(k, v);
  const r = await fetch(path, { method: "POST", body: form, credentials: "same-origin",
    headers: { "X-CSRF-Token": csrf() } });
  return { status: r.status, data: await r.json().catch(() => null) };
}

// A form that uploads its chosen file: `send(file, formData)` returns the response.
export function uploadForm(sel, send) {
  $(sel).onsubmit = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const file = f.get("file");
    if (file && file.size) await send(file, f);
  };
}

// The server's error message: a string, or FastAPI's list of field errors.
export function detail(r) {
  const d = r.data?.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
  return `error ${r.status}`;
}

export function el(tag, text) { const e = document.createElement(tag); e.textContent = text ?? ""; return e; }
export function button(text, onclick) { const b = el("button", text); b.type = "button"; b.onclick = onclick; return b; }
export function options(select, items, value) {
  select.replaceChildren(...items.map(([v, label]) => new Option(label, v)));
  if (value !== undefined) select.value = value;
}

export function bbox(geom) {
  let minx = 180, miny = 90, maxx = -180, maxy = -90;
  const walk = (c) => {
    if (typeof c[0] === "number") {
      minx = Math.min(minx, c[0]); maxx = Math.max(maxx, c[0]);
      miny = Math.min(miny, c[1]); maxy = Math.max(maxy, c[1]);
    } else c.forEach(walk);
  };
  walk(geom.coordinates);
  return [[minx, miny], [maxx, maxy]];
}

export function showConflictText(text) {
  $("#conflict").hidden = false;
  $("#conflict").textContent = `Conflict: ${text}`;
}

export function setStatus(text, cls = "") {
  const s = $("#save-status");
  s.textContent = text;
  s.className = cls;
}
