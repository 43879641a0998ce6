// The cluster's web page: live over server-sent events (GET /events pushes this peer's
// view of the cluster whenever it changes); tasks and actions through the public API.
// A cluster with API tokens answers 401 until the user signs in: the token is kept in
// this tab's sessionStorage and sent as `Authorization: Bearer` on every request.
"use strict";

const FILTERS = ["state", "queue", "kind", "schedule", "search"];
const TERMINAL = ["succeeded", "failed", "cancelled"];
const samples = []; // [seconds, tasks finished], for the throughput chart
let lastCommit = -1;
let refreshing = false;

const TOKEN_KEY = "bullyq-token";
const $ = (selector) => document.querySelector(selector);
const clock = (t) => (t == null ? "-" : new Date(t * 1000).toLocaleTimeString());

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "-" : String(text);
  if (cls) td.className = cls;
  return td;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }));
}

// ------------------------------------------------------------------ signing in

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function showLogin(reason) {
  $("#login").hidden = false;
  $("#logout").hidden = true;
  $("#login-message").textContent = reason || "";
}

function setUpLogin() {
  $("#login").onsubmit = (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
    $("#token").value = "";
    $("#login").hidden = true;
    $("#logout").hidden = false;
    connect();
    refresh();
  };
  $("#logout").onclick = () => {
    sessionStorage.removeItem(TOKEN_KEY);
    streamGeneration++; // ends the live stream the token opened
    $("#live").textContent = "signed out";
    showLogin("signed out");
  };
  $("#logout").hidden = !sessionStorage.getItem(TOKEN_KEY);
}

async function api(method, path, body) {
  const headers = authHeaders();
  if (body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json();
  if (response.status === 401) showLogin(data.error ? data.error.message : "sign in");
  if (!response.ok) throw new Error(data.error ? data.error.message : response.status);
  return data;
}

// ------------------------------------------------------------------ the live view

function showCluster(view) {
  $("#peer").textContent = `peer ${view.id} (${view.role})`;
  const leader = $("#leader");
  leader.textContent = view.leader == null ? "no leader" : `leader ${view.leader} · term ${view.term}`;
  leader.className = view.ready ? "badge ok" : "badge";
  fill($("#members tbody"), view.members.map((m) => [
    cell(m.id, m.id === view.leader ? "leader" : ""),
    cell(m.status + (m.drained ? " (drained)" : ""), m.status),
    cell(m.role), cell(m.term), cell(m.last_index), cell(m.commit_index),
    cell(m.last_seen_ms == null ? "-" : `${m.last_seen_ms} ms ago`),
  ]));
  fill($("#queues tbody"), Object.entries(view.queues || {}).map(([name, c]) => [
    cell(name), cell(c.queued), cell(c.scheduled), cell(c.running),
  ]));
  fill($("#schedules tbody"), (view.schedules || []).map((s) => [
    cell(s.name + (s.paused ? " (paused)" : "")),
    cell(s.every != null ? `every ${s.every}s` : `cron ${s.cron}`),
    cell(clock(s.next_due)), cell(clock(s.last_due)), cell(s.fired),
  ]));
  const events = (view.events || []).slice().reverse();
  $("#events").replaceChildren(...events.map((e) => {
    const li = document.createElement("li");
    li.textContent = `${clock(e.at)} ${e.text}`;
    return li;
  }));
  const t = view.tasks || {};
  $("#totals").textContent = Object.entries(t).map(([k, v]) => `${k} ${v}`).join(" · ");
  chart((t.succeeded || 0) + (t.failed || 0) + (t.cancelled || 0));
  if (view.commit_index !== lastCommit) {
    lastCommit = view.commit_index;
    refresh();
  }
}

function chart(finished) {
  const now = Date.now() / 1000;
  samples.push([now, finished]);
  while (samples.length && samples[0][0] < now - 300) samples.shift();
  const canvas = $("#chart");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = samples[i][0] - samples[i - 1][0];
    if (dt > 0) rates.push([samples[i][0], (samples[i][1] - samples[i - 1][1]) / dt]);
  }
  const top = Math.max(1, ...rates.map((r) => r[1]));
  ctx.strokeStyle = "#1f5fbf";
  ctx.beginPath();
  rates.forEach(([at, rate], i) => {
    const x = canvas.width * (1 - (now - at) / 300);
    const y = canvas.height * (1 - rate / top);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = "#888";
  ctx.fillText(`${top.toFixed(0)}/s`, 4, 12);
}

// The event stream is read with fetch, not EventSource, which cannot send a token.
let streamGeneration = 0;

async function connect() {
  const generation = ++streamGeneration;
  while (generation === streamGeneration) {
    try {
      const response = await fetch("/events", { headers: authHeaders() });
      if (response.status === 401) {
        const data = await response.json();
        showLogin(data.error ? data.error.message : "sign in");
        $("#live").textContent = "signed out";
        return;
      }
      if (!response.ok) throw new Error(String(response.status));
      $("#live").textContent = "live";
      await readEvents(response.body.getReader(), generation);
    } catch (e) {
      $("#live").textContent = "reconnecting…";
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function readEvents(reader, generation) {
  const decoder = new TextDecoder();
  let buffer = "";
  while (generation === streamGeneration) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const message = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = message.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6));
      if (message.startsWith("event: cluster") && data.length) showCluster(JSON.parse(data.join("\n")));
    }
  }
  reader.cancel();
}

// ------------------------------------------------------------------ tasks

function filters() {
  const params = new URLSearchParams(location.search);
  const out = {};
  for (const name of FILTERS) if (params.get(name)) out[name] = params.get(name);
  if (params.get("after")) out.after = params.get("after");
  return out;
}

function actions(task) {
  const buttons = [];
  const add = (label, path) => {
    const button = document.createElement("button");
    button.className = `action ${label}`;
    button.dataset.id = task.id;
    button.textContent = label;
    button.onclick = async () => {
      try { await api("POST", `/tasks/${task.id}/${path}`); say(`${label}: task ${task.id}`); }
      catch (e) { say(`${label} refused: ${e.message}`); }
      refresh();
    };
    buttons.push(button);
  };
  if (!TERMINAL.includes(task.state)) add("cancel", "cancel");
  if (task.state === "failed" || task.state === "cancelled") add("retry", "retry");
  const td = document.createElement("td");
  td.append(...buttons);
  return td;
}

function say(text) { $("#message").textContent = text; }

async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const id = taskPageId();
    if (id != null) await showTask(id); else await showTasks();
  } catch (e) {
    say(`could not load: ${e.message}`);
  } finally {
    refreshing = false;
  }
}

async function showTasks() {
  const query = new URLSearchParams({ ...filters(), limit: "50" });
  const page = await api("GET", `/tasks?${query}`);
  fill($("#tasks tbody"), page.tasks.map((t) => {
    const link = document.createElement("a");
    link.href = `/ui/tasks/${t.id}`;
    link.textContent = t.id;
    const id = document.createElement("td");
    id.append(link);
    return [id, cell(t.kind), cell(t.state, t.state), cell(t.queue),
      cell(`${t.attempt}/${t.max_attempts}`), cell(t.worker), cell(clock(t.submitted_at)), actions(t)];
  }));
  const paging = $("#paging");
  paging.replaceChildren();
  if (page.next != null) {
    const next = document.createElement("a");
    next.href = `?${new URLSearchParams({ ...filters(), after: page.next })}`;
    next.textContent = "next page →";
    paging.append(next);
  }
}

function taskPageId() {
  const match = location.pathname.match(/^\/ui\/tasks\/(\d+)$/);
  return match ? Number(match[1]) : null;
}

async function showTask(id) {
  const task = await api("GET", `/tasks/${id}`);
  $("#task-title").textContent = `task ${task.id}: ${task.kind} — ${task.state}`;
  $("#task-title").className = task.state;
  const shown = ["state", "queue", "priority", "attempt", "max_attempts", "worker", "key",
    "schedule", "submitted_at", "started_at", "finished_at", "args", "result", "error"];
  fill($("#task-fields tbody"), shown.map((name) => {
    const value = task[name];
    const text = name.endsWith("_at") ? clock(value) : (typeof value === "object" && value !== null
      ? JSON.stringify(value) : value);
    return [cell(name), cell(text)];
  }));
  fill($("#attempts tbody"), (task.attempts || []).map((a) => [
    cell(a.attempt), cell(a.worker), cell(clock(a.started_at)), cell(clock(a.finished_at)),
    cell(a.outcome || "running", a.outcome || "running"), cell(a.error),
  ]));
  const links = $("#links");
  links.replaceChildren();
  const link = (label, ids) => {
    links.append(`${label}: `);
    if (!ids.length) links.append("none");
    ids.forEach((other) => {
      const a = document.createElement("a");
      a.href = `/ui/tasks/${other}`;
      a.textContent = `#${other} `;
      links.append(a);
    });
    links.append(document.createElement("br"));
  };
  link("depends on", task.depends_on || []);
  link("dependents", task.dependents || []);
  $("#task-actions").replaceChildren(actions(task));
}

function setUp() {
  const onTaskPage = taskPageId() != null;
  $("#overview").hidden = onTaskPage;
  $("#taskpage").hidden = !onTaskPage;
  const current = filters();
  for (const name of FILTERS) $(`#f-${name}`).value = current[name] || "";
  $("#filters").onsubmit = (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const name of FILTERS) if ($(`#f-${name}`).value) query.set(name, $(`#f-${name}`).value);
    window.history.pushState(null, "", `/?${query}`);
    refresh();
  };
  $("#requeue").onclick = async () => {
    const f = filters();
    const body = { state: f.state === "cancelled" ? "cancelled" : "failed" };
    if (f.queue) body.queue = f.queue;
    if (f.kind) body.kind = f.kind;
    try { const answer = await api("POST", "/tasks/requeue", body); say(`requeued ${answer.requeued}`); }
    catch (e) { say(`requeue refused: ${e.message}`); }
    refresh();
  };
  window.onpopstate = () => { setUp(); refresh(); };
}

setUpLogin();
setUp();
connect();
refresh();
