// The geolatent labeling UI: log in, pick or create a project, view its imagery (time slider,
// presets, pixel values) and draw / edit / delete labelled points and polygons. Every edit is
// saved at once (autosave) with the version it was based on; a stale edit comes back as 409 and
// the conflict is shown with the other user's version, never silently overwritten.
import maplibregl from "maplibre-gl";
import "maplibre-gl/dist/maplibre-gl.css";
import {
  TerraDraw,
  TerraDrawPointMode,
  TerraDrawPolygonMode,
  TerraDrawSelectMode,
} from "terra-draw";
import { TerraDrawMapLibreGLAdapter } from "terra-draw-maplibre-gl-adapter";
import "./style.css";

const $ = (sel) => document.querySelector(sel);
const state = {
  project: null, classes: [], currentClass: null, selected: null, known: new Map(),
  undo: [], saving: 0, map: null, readonly: new Map(), draw: null, dates: [], preset: "true_color",
};
window.__geolatent = state; // for scripted checks (the browser tests)

function csrf() {
  const m = document.cookie.match(/(?:^|; )gl_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

async function api(method, path, body) {
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

async function upload(path, file, fields = {}) {
  const form = new FormData();
  form.append("file", file, file.name);
  for (const [k, v] of Object.entries(fields)) if (v) form.append(k, v);
  const r = await fetch(path, { method: "POST", body: form, credentials: "same-origin",
    headers: { "X-CSRF-Token": csrf() } });
  return { status: r.status, data: await r.json().catch(() => null) };
}

function show(id) {
  for (const s of ["login", "projects", "workspace"]) $("#" + s).hidden = s !== id;
}

// ---------- login and projects ----------
async function start() {
  const me = await api("GET", "/api/auth/me");
  if (me.status !== 200) return showLogin();
  state.user = me.data;
  const m = location.hash.match(/^#\/project\/(\d+)$/);
  if (m) return openProject(Number(m[1]));
  return showProjects();
}

function showLogin() {
  show("login");
  $("#login-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const r = await api("POST", "/api/auth/login",
      { username: f.get("username"), password: f.get("password") });
    if (r.status !== 200) { $("#login-error").textContent = r.data?.detail || "login failed"; return; }
    start();
  };
}

async function showProjects() {
  show("projects");
  $("#whoami").textContent = state.user.username;
  const r = await api("GET", "/api/projects");
  const list = $("#project-list");
  list.replaceChildren();
  for (const p of r.data || []) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = `#/project/${p.id}`;
    a.textContent = p.name; // textContent: names are never parsed as HTML
    li.append(a, ` (${p.role})`);
    list.append(li);
  }
  $("#new-project").hidden = !state.user.is_admin;
  $("#new-project").onsubmit = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const type = f.get("imagery");
    const body = { name: f.get("name"), imagery: type === "local" ? { type, path: "imagery" } : { type } };
    for (const [k, key] of [["start", "start_date"], ["end", "end_date"], ["model", "model"]]) {
      if (f.get(k)) body[key] = f.get(k);
    }
    const r = await api("POST", "/api/projects", body);
    if (r.status !== 201) { $("#project-error").textContent = detail(r); return; }
    const aoi = f.get("aoi");
    if (aoi && aoi.size) {
      const u = await upload(`/api/projects/${r.data.id}/aoi`, aoi);
      if (u.status !== 200) { $("#project-error").textContent = `project created; area not set: ${detail(u)}`; return; }
    }
    location.hash = `#/project/${r.data.id}`;
  };
}

function detail(r) {
  const d = r.data?.detail;
  return typeof d === "string" ? d : JSON.stringify(d);
}

window.addEventListener("hashchange", () => { location.reload(); });

// ---------- the workspace ----------
async function openProject(id) {
  const r = await api("GET", `/api/projects/${id}`);
  if (r.status !== 200) { location.hash = ""; return showProjects(); }
  const p = (state.project = r.data);
  show("workspace");
  $("#back").onclick = (ev) => { ev.preventDefault(); location.hash = ""; };
  $("#project-name").textContent = p.name;
  $("#import").hidden = p.role !== "admin";
  $("#import").onsubmit = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const file = f.get("file");
    if (!file || !file.size) return;
    const r = await upload(`/api/projects/${p.id}/features/import`, file, { field: f.get("field") });
    $("#import-result").textContent = r.status === 200
      ? `added ${r.data.added} label(s)${r.data.problems.length ? `; ${r.data.problems.length} dropped: ${r.data.problems[0]}` : ""}`
      : detail(r);
    if (r.status === 200) {
      state.draw.clear();
      state.known.clear();
      state.readonly.clear();
      await loadFeatures();
    }
  };
  for (const fmt of ["geojson", "gpkg", "studio"]) {
    $(`#dl-${fmt}`).href = `/api/projects/${p.id}/features/export/${fmt}`;
  }
  state.classes = (p.label_schema.classes || []).slice(0, 9);
  state.currentClass = state.classes[0]?.value ?? null;
  renderClasses();

  setImagery((await api("GET", `/api/projects/${p.id}/imagery`)).data);
  $("#add-image").hidden = p.role !== "admin";
  $("#add-image").onsubmit = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const file = f.get("file");
    if (!file || !file.size) return;
    const r = await upload(`/api/projects/${p.id}/imagery`, file,
      { modality: f.get("modality"), date: f.get("date"), bands: f.get("bands") });
    $("#add-image-result").textContent = r.status === 201 ? "added" : detail(r);
    if (r.status === 201) { setImagery(r.data); updateTiles(); }
  };

  const bounds = p.aoi ? bbox(p.aoi) : [[-170, -60], [170, 75]]; // no area yet: the world
  const map = (state.map = new maplibregl.Map({
    container: "map",
    // no basemap: nothing is fetched from the internet
    style: { version: 8, sources: {}, layers: [
      { id: "background", type: "background", paint: { "background-color": "#dde3ea" } }] },
    bounds, fitBoundsOptions: { padding: 20 }, attributionControl: false,
  }));
  map.on("load", async () => {
    map.addSource("imagery", { type: "raster", tiles: [tileUrl()], tileSize: 256 });
    map.addLayer({ id: "imagery", type: "raster", source: "imagery" });
    map.addSource("aoi", { type: "geojson", data: p.aoi || { type: "FeatureCollection", features: [] } });
    map.addLayer({ id: "aoi", type: "line", source: "aoi",
      paint: { "line-color": "#ffffff", "line-width": 1.5, "line-dasharray": [2, 2] } });
    setupDraw(map);
    await loadFeatures();
    await Promise.all([loadTasks(), loadJobs()]);
    document.body.dataset.ready = "1";
  });
  map.on("click", (ev) => { if (state.mode === "inspect") inspect(ev.lngLat); });
  $("#preset").onchange = () => {
    state.preset = $("#preset").value;
    state.dates = state.imagery.scenes[presetModality(state.preset)] || [];
    $("#time").max = String(Math.max(0, state.dates.length - 1));
    updateTiles();
  };
  $("#time").oninput = updateTiles;
  updateDate();
}

const presetModality = (k) => (k && k.startsWith("sar") ? "sentinel1" : "sentinel2_l2a");

function setImagery(img) {
  state.imagery = img;
  const presets = Object.entries(img.presets);
  $("#preset").replaceChildren(...presets.map(([k, label]) => new Option(label, k)));
  state.preset = presets[0]?.[0];
  state.dates = img.scenes[presetModality(state.preset)] || [];
  $("#time").max = String(Math.max(0, state.dates.length - 1));
  $("#time").value = String(Math.floor(state.dates.length / 2));
  updateDate();
}

function tileUrl() {
  const date = state.dates[Number($("#time").value)] || "";
  return `${location.origin}/api/projects/${state.project.id}/imagery/tiles/${state.preset}/${date}/{z}/{x}/{y}.png`;
}

function updateDate() { $("#date").textContent = state.dates[Number($("#time").value)] || "no imagery"; }

function updateTiles() {
  updateDate();
  state.map?.getSource("imagery")?.setTiles([tileUrl()]);
}

function bbox(geom) {
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

function renderClasses() {
  const ol = $("#classes");
  ol.replaceChildren();
  state.classes.forEach((c, i) => {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = c.color;
    li.append(sw, `${c.name}`);
    li.dataset.value = c.value;
    li.title = `key ${i + 1}`;
    li.classList.toggle("active", c.value === state.currentClass);
    li.onclick = () => pickClass(i);
    ol.append(li);
  });
}

function colorOf(label) {
  return state.classes.find((c) => c.value === label)?.color || "#888888";
}

function setupDraw(map) {
  const fill = (f) => colorOf(f.properties.label);
  const draw = (state.draw = new TerraDraw({
    adapter: new TerraDrawMapLibreGLAdapter({ map }),
    modes: [
      new TerraDrawPolygonMode({ styles: { fillColor: fill, outlineColor: fill, fillOpacity: 0.45 } }),
      new TerraDrawPointMode({ styles: { pointColor: fill } }),
      new TerraDrawSelectMode({
        flags: {
          polygon: { feature: { draggable: true, coordinates: { midpoints: true, draggable: true, deletable: true } } },
          point: { feature: { draggable: true } },
        },
        styles: { selectedPolygonColor: fill, selectedPolygonOutlineColor: "#ffffff" },
      }),
    ],
  }));
  draw.start();
  draw.on("finish", (id, ctx) => {
    if (ctx.action === "draw") {
      draw.updateFeatureProperties(id, { label: state.currentClass });
      state.undo.push({ type: "create", id });
    } else {
      const before = state.known.get(id);
      if (before) state.undo.push({ type: "update", id, before: structuredClone(before) });
    }
    save(id);
  });
  draw.on("select", (id) => { state.selected = id; });
  draw.on("deselect", () => { state.selected = null; });
  for (const b of document.querySelectorAll("[data-mode]")) b.onclick = () => setMode(b.dataset.mode);
  // viewers may look and inspect; the server refuses their edits anyway (403)
  const canEdit = state.project.role !== "viewer";
  for (const b of document.querySelectorAll("[data-mode=polygon], [data-mode=point], #delete, #undo")) {
    b.disabled = !canEdit;
  }
  $("#delete").onclick = deleteSelected;
  $("#undo").onclick = undo;
  setMode("select");
}

function setMode(mode) {
  state.mode = mode;
  state.draw.setMode(mode === "inspect" ? "static" : mode);
  for (const b of document.querySelectorAll("[data-mode]")) b.classList.toggle("active", b.dataset.mode === mode);
}

async function loadFeatures() {
  const r = await api("GET", `/api/projects/${state.project.id}/features`);
  const feats = r.data.map(toDraw);
  for (const f of r.data) state.known.set(f.id, f);
  if (feats.length) addToMap(feats);
}

// Terra Draw keeps 9 decimals of a degree (0.1 mm): round imported coordinates to match, or
// it refuses the feature.
const round9 = (c) => (typeof c[0] === "number" ? c.map((v) => Math.round(v * 1e9) / 1e9) : c.map(round9));

function toDraw(f) {
  const mode = f.geometry.type === "Point" ? "point" : "polygon";
  const geometry = { type: f.geometry.type, coordinates: round9(f.geometry.coordinates) };
  return { id: f.id, type: "Feature", geometry, properties: { mode, label: f.label } };
}

// Terra Draw edits points and polygons; multi-part features (from imports) are shown read-only.
const EDITABLE = ["Point", "Polygon"];
function addToMap(features) {
  const drawable = features.filter((f) => EDITABLE.includes(f.geometry.type));
  for (const f of features) if (!EDITABLE.includes(f.geometry.type)) state.readonly.set(f.id, f);
  const results = drawable.length ? state.draw.addFeatures(drawable) : [];
  const bad = results.filter((r) => !r.valid);
  refreshReadonly();
  const notes = [];
  if (bad.length) notes.push(`${bad.length} feature(s) cannot be shown: ${bad[0].reason}`);
  if (state.readonly.size) notes.push(`${state.readonly.size} multi-part feature(s) shown read-only`);
  $("#note").textContent = notes.join("; ");
}

function refreshReadonly() {
  const map = state.map;
  const data = { type: "FeatureCollection", features: [...state.readonly.values()] };
  if (map.getSource("readonly")) { map.getSource("readonly").setData(data); return; }
  const color = ["match", ["coalesce", ["get", "label"], ""],
    ...state.classes.flatMap((c) => [c.value, c.color]), "#888888"];
  map.addSource("readonly", { type: "geojson", data });
  map.addLayer({ id: "readonly-fill", type: "fill", source: "readonly",
    paint: { "fill-color": color, "fill-opacity": 0.45 } });
  map.addLayer({ id: "readonly-line", type: "line", source: "readonly",
    paint: { "line-color": color, "line-width": 1.5 } });
}

function setStatus(text, cls = "") {
  const s = $("#save-status");
  s.textContent = text;
  s.className = cls;
}

// Saves are chained so that one feature's edits reach the server in order.
let queue = Promise.resolve();
function save(id) {
  state.saving++;
  setStatus("saving…", "pending");
  queue = queue.then(() => saveNow(id)).catch((e) => setStatus(`save failed: ${e}`, "error"))
    .finally(() => { if (--state.saving === 0 && !$("#save-status").classList.contains("error")) setStatus("saved"); });
  return queue;
}

async function saveNow(id) {
  const f = state.draw.getSnapshotFeature(id);
  if (!f) return;
  const pid = state.project.id;
  const known = state.known.get(id);
  const r = known
    ? await api("PUT", `/api/projects/${pid}/features/${id}`,
      { version: known.version, geometry: f.geometry, label: f.properties.label ?? null })
    : await api("POST", `/api/projects/${pid}/features`,
      { id, geometry: f.geometry, label: f.properties.label ?? null });
  if (r.status === 200 || r.status === 201) {
    state.known.set(id, r.data);
    $("#conflict").hidden = true;
  } else if (r.status === 409) {
    conflict(id, r.data);
  } else {
    setStatus(`not saved: ${detail(r)}`, "error");
    throw new Error(detail(r));
  }
}

function conflict(id, body) {
  const box = $("#conflict");
  box.hidden = false;
  box.textContent = `Conflict: ${body.detail}. The map now shows the saved version; your edit was not applied.`;
  state.draw.removeFeatures([id]);
  state.known.delete(id);
  if (body.current) {
    state.known.set(id, body.current);
    addToMap([toDraw(body.current)]);
  }
}

async function deleteSelected() {
  const id = state.selected;
  if (!id) return;
  const known = state.known.get(id);
  state.draw.deselectFeature?.(id);
  state.draw.removeFeatures([id]);
  state.selected = null;
  if (!known) return;
  state.undo.push({ type: "delete", id, before: structuredClone(known) });
  const r = await api("DELETE", `/api/projects/${state.project.id}/features/${id}?version=${known.version}`);
  if (r.status === 409) conflict(id, r.data);
  else state.known.delete(id);
}

async function undo() {
  const step = state.undo.pop();
  if (!step) return;
  const pid = state.project.id;
  if (step.type === "create") {
    const known = state.known.get(step.id);
    state.draw.removeFeatures([step.id]);
    if (known) {
      const r = await api("DELETE", `/api/projects/${pid}/features/${step.id}?version=${known.version}`);
      if (r.status === 409) conflict(step.id, r.data); else state.known.delete(step.id);
    }
  } else if (step.type === "update") {
    const cur = state.known.get(step.id);
    if (!cur) return;
    state.draw.updateFeatureGeometry(step.id, step.before.geometry);
    state.draw.updateFeatureProperties(step.id, { label: step.before.label });
    save(step.id);
  } else if (step.type === "delete") {
    const id = crypto.randomUUID(); // the old id stays a tombstone on the server
    addToMap([toDraw({ ...step.before, id })]);
    save(id);
  }
}

function pickClass(i) {
  const c = state.classes[i];
  if (!c) return;
  state.currentClass = c.value;
  renderClasses();
  const id = state.selected;
  if (id && state.draw.getSnapshotFeature(id)) {
    const before = state.known.get(id);
    if (before) state.undo.push({ type: "update", id, before: structuredClone(before) });
    state.draw.updateFeatureProperties(id, { label: c.value });
    save(id);
  }
}

document.addEventListener("keydown", (ev) => {
  if ($("#workspace").hidden || ev.target.tagName === "INPUT") return;
  if (/^[1-9]$/.test(ev.key)) pickClass(Number(ev.key) - 1);
  else if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") { ev.preventDefault(); undo(); }
  else if (ev.key === "Delete" || ev.key === "Backspace") deleteSelected();
});

async function inspect(lngLat) {
  const date = state.dates[Number($("#time").value)];
  const r = await api("GET", `/api/projects/${state.project.id}/imagery/point?lon=${lngLat.lng}&lat=${lngLat.lat}&date=${date}&modality=${presetModality(state.preset)}`);
  $("#pixel").textContent = r.status === 200
    ? `${date} @ ${lngLat.lng.toFixed(5)}, ${lngLat.lat.toFixed(5)}\n` +
      Object.entries(r.data.values).map(([k, v]) => `${k}: ${v === null ? "nodata" : +v.toFixed(3)}`).join("\n")
    : detail(r);
}

// ---------- tasks and review ----------
async function loadTasks() {
  const r = await api("GET", `/api/projects/${state.project.id}/tasks`);
  const ul = $("#tasks");
  ul.replaceChildren();
  const reviewer = ["reviewer", "admin"].includes(state.project.role);
  for (const t of r.data || []) {
    const li = document.createElement("li");
    li.append(`${t.name}: ${t.status.replaceAll("_", " ")}${t.assignee ? ` (${t.assignee})` : ""}`);
    if (t.review_comment) li.append(el("div", `review: ${t.review_comment}`));
    if (reviewer && t.status === "to_be_reviewed") {
      const comment = document.createElement("input");
      comment.placeholder = "comment (needed to reject)";
      const accept = button("Accept", () => review(t, true, comment.value));
      const reject = button("Reject", () => review(t, false, comment.value));
      li.append(comment, accept, reject);
    }
    ul.append(li);
  }
}

async function review(task, accept, comment) {
  const r = await api("POST", `/api/projects/${state.project.id}/tasks/${task.id}/review`,
    { version: task.version, accept, comment });
  if (r.status === 409) showConflictText(detail(r));
  else if (r.status !== 200) setStatus(detail(r), "error");
  loadTasks();
}

function showConflictText(text) {
  $("#conflict").hidden = false;
  $("#conflict").textContent = `Conflict: ${text}`;
}

function el(tag, text) { const e = document.createElement(tag); e.textContent = text; return e; }
function button(text, onclick) { const b = el("button", text); b.onclick = onclick; return b; }

// ---------- runs ----------
let polling = null;
async function loadJobs() {
  const pid = state.project.id;
  const isAdmin = state.project.role === "admin";
  $("#run-controls").hidden = !isAdmin;
  if (!$("#encoder").value) $("#encoder").value = state.project.model || "";
  $("#start-finetune").onclick = () => startJob("finetune", {
    epochs: Number($("#epochs").value), ...($("#encoder").value ? { encoder: $("#encoder").value } : {}),
  });
  $("#start-predict").onclick = () => {
    const ft = state.jobs?.find((j) => j.kind === "finetune" && j.status === "succeeded");
    if (!ft) { $("#run-error").textContent = "fine-tune a model first"; return; }
    startJob("predict", { model_job: ft.id });
  };
  const r = await api("GET", `/api/projects/${pid}/jobs`);
  state.jobs = r.data || [];
  const ul = $("#jobs");
  ul.replaceChildren();
  for (const j of state.jobs) ul.append(jobItem(j, isAdmin));
  const active = state.jobs.some((j) => ["queued", "running"].includes(j.status));
  clearTimeout(polling);
  if (active) polling = setTimeout(loadJobs, 1500);
}

async function startJob(kind, params) {
  $("#run-error").textContent = "";
  const r = await api("POST", `/api/projects/${state.project.id}/jobs`, { kind, params });
  if (r.status !== 201) $("#run-error").textContent = detail(r);
  loadJobs();
}

function jobItem(j, isAdmin) {
  const li = document.createElement("li");
  li.dataset.job = j.id;
  li.dataset.status = j.status;
  li.append(el("strong", `#${j.id} ${j.kind}`), ` ${j.status}`);
  const prog = document.createElement("progress");
  prog.max = 1; prog.value = j.progress;
  li.append(prog);
  if (j.error) li.append(el("div", j.error));
  if (isAdmin && ["queued", "running"].includes(j.status)) {
    li.append(button("Cancel", async () => {
      await api("POST", `/api/projects/${state.project.id}/jobs/${j.id}/cancel`);
      loadJobs();
    }));
  }
  if (j.kind === "predict" && j.status === "succeeded") {
    li.append(button("Show on map", () => showResult(j)));
    for (const f of j.result.files || []) {
      const a = el("a", ` ${f} `);
      a.href = `/api/projects/${state.project.id}/jobs/${j.id}/files/${f}`;
      li.append(a);
    }
  }
  if (j.kind === "finetune" && j.result?.metrics?.val) li.append(metricsTable(j.result.metrics.val));
  const log = document.createElement("details");
  log.append(el("summary", "log"), el("pre", j.log));
  li.append(log);
  return li;
}

function metricsTable(val) {
  const wrap = document.createElement("div");
  const fmt = (v) => (v === null || v === undefined ? "–" : (+v).toFixed(2));
  wrap.append(el("div", `val accuracy ${fmt(val.accuracy)}, mIoU ${fmt(val.miou)}, macro F1 ${fmt(val.f1_macro)}`));
  const names = Object.keys(val.per_class || {});
  const t = document.createElement("table");
  t.className = "metrics";
  t.append(row(["class", "recall", "precision", "n"], "th"));
  for (const n of names) {
    const c = val.per_class[n];
    t.append(row([n, fmt(c.accuracy), fmt(c.precision), String(c.support)]));
  }
  wrap.append(t);
  if (val.confusion) {
    // the confusion matrix as a heat map: rows = true class, columns = predicted
    const cm = document.createElement("table");
    cm.className = "metrics confusion";
    cm.append(row(["true \\ pred", ...names.map((n) => n.slice(0, 4))], "th"));
    const max = Math.max(1, ...val.confusion.flat());
    val.confusion.forEach((r, i) => {
      const tr = row([names[i], ...r.map(String)]);
      [...tr.children].slice(1).forEach((td, k) => {
        td.style.background = `rgba(31,120,180,${r[k] / max})`;
      });
      cm.append(tr);
    });
    wrap.append(cm);
  }
  return wrap;
}

function row(cells, tag = "td") {
  const tr = document.createElement("tr");
  for (const c of cells) tr.append(el(tag, c));
  return tr;
}

function showResult(j) {
  const map = state.map;
  const url = `${location.origin}/api/projects/${state.project.id}/jobs/${j.id}/tiles/{z}/{x}/{y}.png`;
  if (map.getLayer("result")) map.removeLayer("result");
  if (map.getSource("result")) map.removeSource("result");
  map.addSource("result", { type: "raster", tiles: [url], tileSize: 256 });
  map.addLayer({ id: "result", type: "raster", source: "result", paint: { "raster-opacity": 0.8 } }, "aoi");
  const legend = $("#legend");
  legend.replaceChildren(el("strong", `Prediction #${j.id}`));
  for (const e of j.result.legend || []) {
    const d = document.createElement("div");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = e.color;
    d.append(sw, e.name);
    legend.append(d);
  }
  legend.hidden = false;
  state.resultJob = j.id;
}

start();
