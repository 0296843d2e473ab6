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
  undo: [], saving: 0, map: null, draw: null, dates: [], preset: "true_color",
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
    const name = new FormData(ev.target).get("name");
    const r = await api("POST", "/api/projects", { name, imagery: { type: "sample" } });
    if (r.status !== 201) { $("#project-error").textContent = detail(r); return; }
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
  for (const fmt of ["geojson", "gpkg", "studio"]) {
    $(`#dl-${fmt}`).href = `/api/projects/${p.id}/features/export/${fmt}`;
  }
  state.classes = (p.label_schema.classes || []).slice(0, 9);
  state.currentClass = state.classes[0]?.value ?? null;
  renderClasses();

  const img = (await api("GET", `/api/projects/${p.id}/imagery`)).data;
  const presets = Object.entries(img.presets);
  $("#preset").replaceChildren(...presets.map(([k, label]) => new Option(label, k)));
  state.preset = presets[0]?.[0];
  state.dates = img.scenes[presetModality(state.preset)] || [];
  $("#time").max = String(Math.max(0, state.dates.length - 1));
  $("#time").value = String(Math.floor(state.dates.length / 2));

  const bounds = bbox(p.aoi);
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
    map.addSource("aoi", { type: "geojson", data: p.aoi });
    map.addLayer({ id: "aoi", type: "line", source: "aoi",
      paint: { "line-color": "#ffffff", "line-width": 1.5, "line-dasharray": [2, 2] } });
    setupDraw(map);
    await loadFeatures();
    document.body.dataset.ready = "1";
  });
  map.on("click", (ev) => { if (state.mode === "inspect") inspect(ev.lngLat); });
  $("#preset").onchange = () => { state.preset = $("#preset").value; updateTiles(); };
  $("#time").oninput = updateTiles;
  updateDate();
}

const presetModality = (k) => (k === "sar" ? "sentinel1" : "sentinel2_l2a");

function tileUrl() {
  const date = state.dates[Number($("#time").value)] || "";
  return `${location.origin}/api/projects/${state.project.id}/imagery/tiles/${state.preset}/${date}/{z}/{x}/{y}.png`;
}

function updateDate() { $("#date").textContent = state.dates[Number($("#time").value)] || "no imagery"; }

function updateTiles() {
  state.dates = (state.dates.length ? state.dates : []);
  updateDate();
  state.map.getSource("imagery")?.setTiles([tileUrl()]);
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

function addToMap(features) {
  const results = state.draw.addFeatures(features);
  const bad = results.filter((r) => !r.valid);
  if (bad.length) setStatus(`${bad.length} feature(s) cannot be shown: ${bad[0].reason}`, "error");
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

start();
