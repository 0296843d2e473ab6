// Tasks (areas to label, each with a time range, a status and an assignee), their review,
// "my tasks", and the project's members with their roles.
import { $, api, bbox, button, detail, el, options, showConflictText, state } from "./api.js";
import { setMode } from "./labels.js";

const STATUSES = ["pending", "in_progress", "completed", "to_be_reviewed", "reviewed", "cancelled"];
const ANNOTATOR_STATUSES = STATUSES.slice(0, 4); // review outcomes need a reviewer
const ROLES = ["viewer", "annotator", "reviewer", "admin"];
const rank = (role) => ROLES.indexOf(role);
const words = (s) => s.replaceAll("_", " ");

// ---------- my tasks (the project list page) ----------
export async function loadMyTasks() {
  const r = await api("GET", "/api/users/me/tasks");
  const ul = $("#my-tasks");
  ul.replaceChildren();
  for (const t of r.data || []) {
    const li = document.createElement("li");
    const a = el("a", t.name);
    a.href = `#/project/${t.project_id}/task/${t.id}`;
    li.append(a, ` — ${t.project_name} (${words(t.status)})`);
    ul.append(li);
  }
  $("#my-tasks-none").hidden = ul.children.length > 0;
}

// ---------- the task layer and list (the workspace) ----------
export function setupTasks(map) {
  map.addSource("tasks", { type: "geojson", data: { type: "FeatureCollection", features: [] } });
  map.addLayer({ id: "tasks", type: "line", source: "tasks",
    paint: { "line-color": ["case", ["==", ["get", "id"], ["literal", -1]], "#ff6d00", "#ffb300"],
      "line-width": 2 } });
  const admin = state.project.role === "admin";
  $("#new-task").hidden = !admin;
  $("#my-tasks-only").checked = state.project.role === "annotator";
  $("#my-tasks-only").onchange = renderTasks;
  if (admin) setupTaskForm();
}

export async function loadTasks() {
  const r = await api("GET", `/api/projects/${state.project.id}/tasks`);
  state.tasks = r.data || [];
  state.map.getSource("tasks")?.setData({ type: "FeatureCollection", features: state.tasks.map((t) => (
    { type: "Feature", geometry: t.geometry, properties: { id: t.id, name: t.name } })) });
  renderTasks();
}

function renderTasks() {
  const ul = $("#tasks");
  ul.replaceChildren();
  const mine = $("#my-tasks-only").checked;
  for (const t of state.tasks) {
    if (!mine || t.assignee === state.user.username) ul.append(taskItem(t));
  }
  highlight(state.focusTask);
}

function taskItem(t) {
  const role = state.project.role;
  const li = document.createElement("li");
  li.dataset.task = t.id;
  li.dataset.status = t.status;
  const go = el("a", t.name);
  go.href = "#";
  go.onclick = (ev) => { ev.preventDefault(); focusTask(t.id); };
  const dates = t.start_date || t.end_date ? ` ${t.start_date || "…"} to ${t.end_date || "…"}` : "";
  li.append(go, el("span", ` ${words(t.status)}${t.assignee ? ` · ${t.assignee}` : " · unassigned"}${dates}`));
  if (t.review_comment) li.append(el("div", `review: ${t.review_comment}`));
  const row = el("div");
  row.className = "tools";
  if (rank(role) >= rank("annotator")) {
    const allowed = rank(role) >= rank("reviewer") ? STATUSES : ANNOTATOR_STATUSES;
    const status = document.createElement("select");
    status.className = "task-status";
    options(status, [...new Set([t.status, ...allowed])].map((s) => [s, words(s)]), t.status);
    status.onchange = () => patchTask(t, { status: status.value });
    row.append(status);
  }
  if (role === "admin") {
    const who = document.createElement("select");
    who.className = "task-assignee";
    options(who, assigneeOptions(t.assignee), t.assignee || "");
    who.onchange = () => patchTask(t, { assignee: who.value || null });
    row.append(who);
  }
  li.append(row);
  if (rank(role) >= rank("reviewer") && t.status === "to_be_reviewed") {
    const comment = document.createElement("input");
    comment.placeholder = "comment (needed to reject)";
    comment.className = "review-comment";
    li.append(comment, button("Accept", () => review(t, true, comment.value)),
      button("Reject", () => review(t, false, comment.value)));
  }
  return li;
}

function assigneeOptions(current) {
  const names = state.members.map((m) => m.username);
  if (current && !names.includes(current)) names.push(current); // a former member keeps showing
  return [["", "unassigned"], ...names.map((n) => [n, n])];
}

async function patchTask(task, change) {
  const r = await api("PATCH", `/api/projects/${state.project.id}/tasks/${task.id}`,
    { version: task.version, ...change });
  taskResult(r);
}

async function review(task, accept, comment) {
  const r = await api("POST", `/api/projects/${state.project.id}/tasks/${task.id}/review`,
    { version: task.version, accept, comment });
  taskResult(r);
}

function taskResult(r) {
  $("#task-error").textContent = "";
  if (r.status === 409) showConflictText(`${detail(r)}; the list now shows the saved task`);
  else if (r.status !== 200) $("#task-error").textContent = detail(r);
  loadTasks();
}

// Zoom to a task and outline it; from "my tasks" links (#/project/P/task/T) too.
export function focusTask(id) {
  const t = state.tasks.find((x) => x.id === id);
  if (!t) { $("#task-error").textContent = `task ${id} is not in this project`; return; }
  state.focusTask = id;
  state.map.fitBounds(bbox(t.geometry), { padding: 40, duration: 0 });
  highlight(id);
}

function highlight(id) {
  state.map.setPaintProperty("tasks", "line-color",
    ["case", ["==", ["get", "id"], ["literal", id ?? -1]], "#ff6d00", "#ffb300"]);
  state.map.setPaintProperty("tasks", "line-width",
    ["case", ["==", ["get", "id"], ["literal", id ?? -1]], 4, 2]);
  for (const li of document.querySelectorAll("#tasks li")) li.classList.toggle("active", Number(li.dataset.task) === id);
}

// ---------- new task (admins): draw the area, or take the selected polygon or the project area ----------
function setupTaskForm() {
  const form = $("#new-task");
  let area = null;
  const setArea = (geometry, what) => { area = geometry; $("#task-area").textContent = what; };
  form.start.value = state.project.start_date || "";
  form.end.value = state.project.end_date || "";
  $("#task-draw").onclick = () => {
    state.capture = (geometry) => setArea(geometry, "drawn area");
    setMode("polygon");
    $("#task-area").textContent = "draw the task's area on the map…";
  };
  $("#task-use-selected").onclick = () => {
    const fid = state.owner.get(state.selected);
    const f = fid && state.known.get(fid);
    if (!f || f.geometry.type === "Point") { $("#task-error").textContent = "select a polygon first"; return; }
    setArea(f.geometry, "the selected polygon");
  };
  $("#task-use-aoi").onclick = () => {
    if (!state.project.aoi) { $("#task-error").textContent = "the project has no area yet"; return; }
    setArea(state.project.aoi, "the project area");
  };
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    if (!area) { $("#task-error").textContent = "choose the task's area: draw it, or use the selected polygon or the project area"; return; }
    const f = new FormData(form);
    const body = { name: f.get("name"), geometry: area, assignee: f.get("assignee") || null };
    if (f.get("start")) body.start_date = f.get("start");
    if (f.get("end")) body.end_date = f.get("end");
    const r = await api("POST", `/api/projects/${state.project.id}/tasks`, body);
    if (r.status !== 201) { $("#task-error").textContent = detail(r); return; }
    $("#task-error").textContent = "";
    form.name.value = "";
    setArea(null, "no area yet");
    await loadTasks();
  };
}

// ---------- members (everyone sees them; admins add, change and remove) ----------
export async function loadMembers() {
  const r = await api("GET", `/api/projects/${state.project.id}/members`);
  state.members = r.data || [];
  const admin = state.project.role === "admin";
  const ul = $("#members");
  ul.replaceChildren();
  for (const m of state.members) {
    const li = document.createElement("li");
    li.dataset.member = m.username;
    li.append(el("span", m.username));
    if (admin) {
      const role = document.createElement("select");
      options(role, ROLES.map((x) => [x, x]), m.role);
      role.onchange = () => setMember(m.username, role.value);
      li.append(role, button("Remove", () => removeMember(m.username)));
    } else li.append(el("span", ` ${m.role}`));
    ul.append(li);
  }
  $("#add-member").hidden = !admin;
  if (admin) {
    options($("#new-task select[name=assignee]"), assigneeOptions(null), "");
    $("#add-member").onsubmit = async (ev) => {
      ev.preventDefault();
      const f = new FormData(ev.target);
      if (await setMember(f.get("username").trim(), f.get("role"))) ev.target.reset();
    };
  }
}

async function setMember(username, role) {
  const r = await api("PUT", `/api/projects/${state.project.id}/members`, { username, role });
  return memberResult(r, 204);
}

async function removeMember(username) {
  const r = await api("DELETE", `/api/projects/${state.project.id}/members/${encodeURIComponent(username)}`);
  return memberResult(r, 204);
}

async function memberResult(r, ok) {
  $("#member-error").textContent = r.status === ok ? "" : detail(r);
  await loadMembers();
  renderTasks(); // assignee choices follow the members
  return r.status === ok;
}
