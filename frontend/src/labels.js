// Labelled features on the map: draw, edit and delete points, polygons and multi-part
// polygons; a class (keys 1-9) or a numeric value per feature; undo; autosave with versions.
//
// Terra Draw edits single points and polygons only, so a MultiPolygon is split into one Terra
// Draw polygon per part (each with a fresh id) and joined again on save: every part can be
// moved, reshaped or deleted, and "Add part" draws a new part onto the selected feature.
// state.parts maps a feature id to its drawn ids, state.owner a drawn id to its feature;
// state.multi holds the features saved as multi-part (one part left stays a MultiPolygon).
import {
  TerraDraw,
  TerraDrawPointMode,
  TerraDrawPolygonMode,
  TerraDrawSelectMode,
} from "terra-draw";
import { TerraDrawMapLibreGLAdapter } from "terra-draw-maplibre-gl-adapter";
import { $, api, detail, setStatus, showConflictText, state } from "./api.js";
import { rampColor, rampLegend } from "./ramp.js";

const numeric = () => state.project.label_schema.kind === "value";
const range = () => [state.project.label_schema.min ?? null, state.project.label_schema.max ?? null];

export function colorOf(label) {
  if (numeric()) {
    const [lo, hi] = range();
    return rampColor(label, lo ?? 0, hi ?? 1);
  }
  return state.classes.find((c) => c.value === label)?.color || "#888888";
}

// ---------- the label panel: classes (keys 1-9) or a value in the target's range ----------
export function setupLabelPanel() {
  const schema = state.project.label_schema;
  $("#class-panel").hidden = numeric();
  $("#value-panel").hidden = !numeric();
  if (!numeric()) {
    state.classes = (schema.classes || []).slice(0, 9);
    state.currentClass = state.classes[0]?.value ?? null;
    renderClasses();
    return;
  }
  const [lo, hi] = range();
  const input = $("#value");
  if (lo !== null) input.min = String(lo);
  if (hi !== null) input.max = String(hi);
  $("#value-range").textContent = lo === null && hi === null ? "any number"
    : `from ${lo ?? "-∞"} to ${hi ?? "∞"}`;
  $("#value-legend").replaceChildren(rampLegend(lo ?? 0, hi ?? 1, "colour by value"));
  $("#value-form").onsubmit = (ev) => { ev.preventDefault(); setValue(input.value); };
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

// The value typed for the selected feature (and the next ones drawn), checked against the
// target's range before anything is saved.
function setValue(text) {
  const [lo, hi] = range();
  const x = Number(text);
  const error = $("#value-error");
  if (String(text).trim() === "" || !Number.isFinite(x)) { error.textContent = "enter a number"; return false; }
  if ((lo !== null && x < lo) || (hi !== null && x > hi)) {
    error.textContent = `${x} is outside the target range ${lo ?? "-∞"} to ${hi ?? "∞"}: not saved`;
    return false;
  }
  error.textContent = "";
  state.currentValue = String(x);
  relabelSelected(state.currentValue);
  return true;
}

export function pickClass(i) {
  const c = state.classes[i];
  if (!c) return;
  state.currentClass = c.value;
  renderClasses();
  relabelSelected(c.value);
}

function relabelSelected(label) {
  const fid = state.owner.get(state.selected);
  if (!fid) return;
  const before = state.known.get(fid);
  if (before) state.undo.push({ type: "update", id: fid, before: structuredClone(before) });
  for (const id of state.parts.get(fid)) state.draw.updateFeatureProperties(id, { label });
  save(fid);
}

const currentLabel = () => (numeric() ? state.currentValue : state.currentClass);

// ---------- Terra Draw ----------
export function setupDraw(map) {
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
  draw.on("finish", (id, ctx) => (ctx.action === "draw" ? drawn(id) : edited(id)));
  draw.on("select", (id) => {
    state.selected = id;
    const fid = state.owner.get(id);
    if (numeric() && fid) $("#value").value = draw.getSnapshotFeature(id)?.properties.label ?? "";
    $("#add-part").disabled = !fid || !canAddPart(fid);
  });
  draw.on("deselect", () => { state.selected = null; $("#add-part").disabled = true; });
  for (const b of document.querySelectorAll("[data-mode]")) b.onclick = () => setMode(b.dataset.mode);
  // viewers may look and inspect; the server refuses their edits anyway (403)
  const canEdit = state.project.role !== "viewer";
  for (const b of document.querySelectorAll("[data-mode=polygon], [data-mode=point], #delete, #undo, #add-part")) {
    b.disabled = !canEdit;
  }
  $("#add-part").disabled = true;
  $("#delete").onclick = deleteSelected;
  $("#undo").onclick = undo;
  $("#add-part").onclick = () => {
    const fid = state.owner.get(state.selected);
    if (!fid) return;
    state.addPartTo = fid;
    setMode("polygon");
    $("#note").textContent = "draw the new part; it joins the selected feature";
  };
  setMode("select");
}

const canAddPart = (fid) => state.draw.getSnapshotFeature(state.parts.get(fid)[0])?.geometry.type === "Polygon";

export function setMode(mode) {
  state.mode = mode;
  state.draw.setMode(mode === "inspect" ? "static" : mode);
  for (const b of document.querySelectorAll("[data-mode]")) b.classList.toggle("active", b.dataset.mode === mode);
}

// A shape just drawn: a task area being captured, a new part of a feature, or a new feature.
function drawn(id) {
  const draw = state.draw;
  if (state.capture) {
    const geometry = draw.getSnapshotFeature(id).geometry;
    draw.removeFeatures([id]);
    const done = state.capture;
    state.capture = null;
    setMode("select");
    done(geometry);
    return;
  }
  const fid = state.addPartTo;
  state.addPartTo = null;
  if (fid && state.parts.has(fid)) {
    const before = state.known.get(fid);
    if (before) state.undo.push({ type: "update", id: fid, before: structuredClone(before) });
    draw.updateFeatureProperties(id, { label: labelOf(fid) });
    state.parts.get(fid).push(id);
    state.owner.set(id, fid);
    state.multi.add(fid);
    $("#note").textContent = "";
    setMode("select");
    save(fid);
    return;
  }
  draw.updateFeatureProperties(id, { label: currentLabel() });
  state.parts.set(id, [id]);
  state.owner.set(id, id);
  state.undo.push({ type: "create", id });
  save(id);
}

function edited(id) {
  const fid = state.owner.get(id);
  if (!fid) return;
  const before = state.known.get(fid);
  if (before) state.undo.push({ type: "update", id: fid, before: structuredClone(before) });
  save(fid);
}

// Terra Draw keeps 9 decimals of a degree (0.1 mm): round coordinates to match, or it
// refuses the feature.
const round9 = (c) => (typeof c[0] === "number" ? c.map((v) => Math.round(v * 1e9) / 1e9) : c.map(round9));
const MULTI = { MultiPolygon: "Polygon", MultiPoint: "Point" };

// Put a saved feature on the map (replacing what is drawn for it). A feature Terra Draw
// refuses in any part is shown read-only instead, so that a save never drops a part.
export function place(f) {
  unplace(f.id);
  const type = MULTI[f.geometry.type] || f.geometry.type;
  const mode = type === "Point" ? "point" : "polygon";
  const coords = MULTI[f.geometry.type] ? f.geometry.coordinates : [f.geometry.coordinates];
  const items = coords.map((c, i) => ({
    id: MULTI[f.geometry.type] ? crypto.randomUUID() : f.id, type: "Feature",
    geometry: { type, coordinates: round9(c) }, properties: { mode, label: f.label, part: i },
  }));
  const results = state.draw.addFeatures(items);
  const bad = results.filter((r) => !r.valid);
  if (bad.length) {
    state.draw.removeFeatures(results.filter((r) => r.valid).map((r) => r.id));
    state.readonly.set(f.id, { type: "Feature", id: f.id, geometry: f.geometry, properties: { label: f.label } });
    return bad[0].reason || "refused by the editor";
  }
  state.parts.set(f.id, items.map((it) => it.id));
  for (const it of items) state.owner.set(it.id, f.id);
  if (MULTI[f.geometry.type]) state.multi.add(f.id); else state.multi.delete(f.id);
  return null;
}

function unplace(fid) {
  const ids = (state.parts.get(fid) || []).filter((id) => state.draw.getSnapshotFeature(id));
  if (ids.includes(state.selected)) { state.draw.deselectFeature?.(state.selected); state.selected = null; }
  if (ids.length) state.draw.removeFeatures(ids);
  for (const id of state.parts.get(fid) || []) state.owner.delete(id);
  state.parts.delete(fid);
  state.readonly.delete(fid);
}

export function placeAll(features) {
  const refused = features.map(place).filter(Boolean);
  refreshReadonly();
  const notes = [];
  if (refused.length) notes.push(`${refused.length} feature(s) shown read-only (the editor refuses them: ${refused[0]})`);
  $("#note").textContent = notes.join("; ");
}

export async function loadFeatures() {
  const r = await api("GET", `/api/projects/${state.project.id}/features`);
  for (const f of r.data) state.known.set(f.id, f);
  placeAll(r.data);
}

export function clearFeatures() {
  state.draw.clear();
  for (const m of [state.known, state.parts, state.owner, state.readonly, state.multi]) m.clear();
}

function refreshReadonly() {
  const map = state.map;
  const data = { type: "FeatureCollection", features: [...state.readonly.values()] };
  if (map.getSource("readonly")) { map.getSource("readonly").setData(data); return; }
  const color = numeric() ? "#888888" : ["match", ["coalesce", ["get", "label"], ""],
    ...state.classes.flatMap((c) => [c.value, c.color]), "#888888"];
  map.addSource("readonly", { type: "geojson", data });
  map.addLayer({ id: "readonly-fill", type: "fill", source: "readonly",
    paint: { "fill-color": color, "fill-opacity": 0.45 } });
  map.addLayer({ id: "readonly-line", type: "line", source: "readonly",
    paint: { "line-color": color, "line-width": 1.5 } });
}

const labelOf = (fid) => state.draw.getSnapshotFeature(state.parts.get(fid)?.[0])?.properties.label ?? null;

// The feature's geometry as drawn now: its parts joined again (a MultiPolygon stays one,
// even with one part left; a polygon with a part added becomes one).
function geometryOf(fid) {
  const parts = (state.parts.get(fid) || []).map((id) => state.draw.getSnapshotFeature(id)).filter(Boolean);
  if (!parts.length) return null;
  if (parts.length === 1 && !state.multi.has(fid)) return parts[0].geometry;
  return { type: `Multi${parts[0].geometry.type}`, coordinates: parts.map((p) => p.geometry.coordinates) };
}

// ---------- saving: chained so that one feature's edits reach the server in order ----------
let queue = Promise.resolve();
export function save(fid) {
  state.saving++;
  setStatus("saving…", "pending");
  queue = queue.then(() => saveNow(fid)).catch((e) => setStatus(`save failed: ${e}`, "error"))
    .finally(() => { if (--state.saving === 0 && !$("#save-status").classList.contains("error")) setStatus("saved"); });
  return queue;
}

async function saveNow(fid) {
  const geometry = geometryOf(fid);
  if (!geometry) return;
  const pid = state.project.id;
  const known = state.known.get(fid);
  const label = labelOf(fid);
  const r = known
    ? await api("PUT", `/api/projects/${pid}/features/${fid}`, { version: known.version, geometry, label })
    : await api("POST", `/api/projects/${pid}/features`, { id: fid, geometry, label });
  if (r.status === 200 || r.status === 201) {
    state.known.set(fid, r.data);
    $("#conflict").hidden = true;
  } else if (r.status === 409) {
    conflict(fid, r.data);
  } else {
    setStatus(`not saved: ${detail(r)}`, "error");
    throw new Error(detail(r));
  }
}

function conflict(fid, body) {
  showConflictText(`${body.detail}. The map now shows the saved version; your edit was not applied.`);
  unplace(fid);
  state.known.delete(fid);
  if (body.current) {
    state.known.set(fid, body.current);
    placeAll([body.current]);
  }
}

async function remove(fid) {
  const known = state.known.get(fid);
  unplace(fid);
  if (!known) return;
  const r = await api("DELETE", `/api/projects/${state.project.id}/features/${fid}?version=${known.version}`);
  if (r.status === 409) conflict(fid, r.data); else state.known.delete(fid);
}

// Delete removes the selected part of a multi-part feature, or the whole feature.
async function deleteSelected() {
  const id = state.selected;
  const fid = state.owner.get(id);
  if (!fid) return;
  const known = state.known.get(fid);
  const parts = state.parts.get(fid);
  state.draw.deselectFeature?.(id);
  state.selected = null;
  if (parts.length > 1) {
    if (known) state.undo.push({ type: "update", id: fid, before: structuredClone(known) });
    state.draw.removeFeatures([id]);
    parts.splice(parts.indexOf(id), 1);
    state.owner.delete(id);
    save(fid);
    return;
  }
  if (known) state.undo.push({ type: "delete", id: fid, before: structuredClone(known) });
  await remove(fid);
}

async function undo() {
  const step = state.undo.pop();
  if (!step) return;
  if (step.type === "create") {
    await remove(step.id);
  } else if (step.type === "update") {
    if (!state.known.get(step.id)) return;
    placeAll([step.before]);
    save(step.id);
  } else if (step.type === "delete") {
    const id = crypto.randomUUID(); // the old id stays a tombstone on the server
    placeAll([{ ...step.before, id }]);
    save(id);
  }
}

export function onKey(ev) {
  if (/^[1-9]$/.test(ev.key)) pickClass(Number(ev.key) - 1);
  else if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") { ev.preventDefault(); undo(); }
  else if (ev.key === "Delete" || ev.key === "Backspace") deleteSelected();
}

export { numeric, range };
