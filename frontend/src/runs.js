// Runs: start fine-tuning and prediction as background jobs, follow their progress and logs,
// read their metrics, and show a prediction on the map with its legend (class colours and
// names, or the colour ramp of a numeric target).
import { $, api, button, detail, el, state } from "./api.js";
import { numeric, range } from "./labels.js";
import { rampLegend } from "./ramp.js";

let polling = null;
export async function loadJobs() {
  const pid = state.project.id;
  const isAdmin = state.project.role === "admin";
  $("#run-controls").hidden = !isAdmin;
  if (!$("#encoder").value) $("#encoder").value = state.project.model || "";
  $("#start-finetune").onclick = () => startJob("finetune", {
    epochs: Number($("#epochs").value), ...($("#encoder").value ? { encoder: $("#encoder").value } : {}),
    // a numeric target is learnt per pixel (classes: the server's default, segmentation)
    ...(numeric() ? { task: "pixel_regression" } : {}),
  });
  $("#start-predict").onclick = () => {
    const ft = state.jobs.find((j) => j.kind === "finetune" && j.status === "succeeded"); // newest first
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
  li.dataset.kind = j.kind;
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

const fmt = (v) => (v === null || v === undefined ? "–" : (+v).toFixed(2));

function metricsTable(val) {
  const wrap = document.createElement("div");
  if (val.per_class === undefined && ("rmse" in val || "mae" in val)) { // a numeric target
    wrap.append(el("div", `val MAE ${fmt(val.mae)}, RMSE ${fmt(val.rmse)}, R² ${fmt(val.r2)}`));
    return wrap;
  }
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
  if (j.result.kind === "value") {
    // the map's own range when the job reports it, else the project's target range
    const [lo, hi] = j.result.range || range();
    legend.append(rampLegend(lo, hi, j.result.range ? "predicted value" : "target range"));
  }
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
