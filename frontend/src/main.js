// The geolatent web app: log in, pick or create a project, view its imagery (time slider,
// presets, pixel values), label it (labels.js), manage tasks and members (tasks.js) and run
// fine-tuning and prediction (runs.js). Every edit is saved at once with the version it was
// based on; a stale edit comes back as 409 and is shown, never silently overwritten.
import maplibregl from "maplibre-gl";
import "maplibre-gl/dist/maplibre-gl.css";
import { $, api, bbox, detail, state, upload, uploadForm } from "./api.js";
import { clearFeatures, loadFeatures, onKey, setupDraw, setupLabelPanel } from "./labels.js";
import { loadJobs } from "./runs.js";
import { focusTask, loadMembers, loadMyTasks, loadTasks, setupTasks } from "./tasks.js";
import "./style.css";

function show(id) {
  for (const s of ["login", "projects", "workspace"]) $("#" + s).hidden = s !== id;
}

// ---------- login and projects ----------
async function start() {
  const me = await api("GET", "/api/auth/me");
  if (me.status !== 200) return showLogin();
  state.user = me.data;
  const m = location.hash.match(/^#\/project\/(\d+)(?:\/task\/(\d+))?$/);
  if (m) return openProject(Number(m[1]), m[2] ? Number(m[2]) : null);
  return showProjects();
}

function showLogin() {
  show("login");
  $("#login-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const r = await api("POST", "/api/auth/login",
      { username: f.get("username"), password: f.get("password") });
    if (r.status !== 200) { $("#login-error").textContent = detail(r); return; }
    start();
  };
}

// Distinct colours for classes named without one (ColorBrewer Set1 / Dark2).
const PALETTE = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf",
  "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e"];

// "forest:#1b7837, grassland" -> classes; a class's value is its name.
function parseClasses(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean).map((s, i) => {
    const [name, color] = s.split(":").map((x) => x.trim());
    return { value: name, name, color: color || PALETTE[i % PALETTE.length] };
  });
}

function labelSchema(f) {
  if (f.get("labels") === "value") {
    const num = (k) => (f.get(k) === "" ? null : Number(f.get(k)));
    return { kind: "value", min: num("min"), max: num("max") };
  }
  const classes = parseClasses(f.get("classes") || "");
  return classes.length ? { kind: "class", classes } : null; // none: the sample's classes
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
    a.textContent = p.name;
    li.append(a, ` (${p.role})`);
    list.append(li);
  }
  loadMyTasks();
  const form = $("#new-project");
  form.hidden = !state.user.is_admin;
  const kind = form.querySelector("select[name=labels]");
  kind.onchange = () => {
    form.querySelector(".class-fields").hidden = kind.value === "value";
    form.querySelector(".value-fields").hidden = kind.value !== "value";
  };
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const type = f.get("imagery");
    const body = { name: f.get("name"), imagery: type === "local" ? { type, path: "imagery" } : { type } };
    for (const [k, key] of [["start", "start_date"], ["end", "end_date"], ["model", "model"]]) {
      if (f.get(k)) body[key] = f.get(k);
    }
    const schema = labelSchema(f);
    if (schema) body.label_schema = schema;
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

window.addEventListener("hashchange", () => { location.reload(); });

// ---------- the workspace ----------
async function openProject(id, taskId) {
  const r = await api("GET", `/api/projects/${id}`);
  if (r.status !== 200) { location.hash = ""; return showProjects(); }
  const p = (state.project = r.data);
  show("workspace");
  $("#back").onclick = (ev) => { ev.preventDefault(); location.hash = ""; };
  $("#project-name").textContent = p.name;
  $("#import").hidden = p.role !== "admin";
  uploadForm("#import", async (file, f) => {
    const r = await upload(`/api/projects/${p.id}/features/import`, file, { field: f.get("field") });
    $("#import-result").textContent = r.status === 200
      ? `added ${r.data.added} label(s)${r.data.problems.length ? `; ${r.data.problems.length} dropped: ${r.data.problems[0]}` : ""}`
      : detail(r);
    if (r.status === 200) {
      clearFeatures();
      await loadFeatures();
    }
  });
  for (const fmt of ["geojson", "gpkg", "studio"]) {
    $(`#dl-${fmt}`).href = `/api/projects/${p.id}/features/export/${fmt}`;
  }
  setupLabelPanel();

  setImagery((await api("GET", `/api/projects/${p.id}/imagery`)).data);
  $("#add-image").hidden = p.role !== "admin";
  uploadForm("#add-image", async (file, f) => {
    const r = await upload(`/api/projects/${p.id}/imagery`, file,
      { modality: f.get("modality"), date: f.get("date"), bands: f.get("bands") });
    $("#add-image-result").textContent = r.status === 201 ? "added" : detail(r);
    if (r.status === 201) { setImagery(r.data); updateTiles(); }
  });

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
    setupTasks(map);
    setupDraw(map);
    await loadFeatures();
    await loadMembers();
    await Promise.all([loadTasks(), loadJobs()]);
    if (taskId !== null) focusTask(taskId);
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

document.addEventListener("keydown", (ev) => {
  if ($("#workspace").hidden || ["INPUT", "SELECT", "TEXTAREA"].includes(ev.target.tagName)) return;
  onKey(ev);
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
