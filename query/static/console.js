// Operator console: polls the ingest tier's read API with the operator's bearer token and
// renders queue, chain, attempts and the task DAG. No build step, no libraries.
"use strict";

const POLL_MS = 2000;
// The read API verifies incrementally (only events stored since its last check), so the
// chain — and the rates computed from it — is sampled on every poll.
const SPARK_POINTS = 150; // 150 samples × 2 s = the last 5 minutes
const KEY = "leviathan.token";
const $ = (id) => document.getElementById(id);

let timer = null;
let prevSample = null; // {t, persisted, lag} from the last chain verification
const rates = []; // [{acc, per}]

function el(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const kid of kids) node.append(kid instanceof Node ? kid : String(kid ?? ""));
  return node;
}
function svg(tag, attrs, ...kids) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const kid of kids) node.append(kid);
  return node;
}

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path) {
  let res;
  try {
    res = await fetch(path, { headers: { Authorization: "Bearer " + sessionStorage.getItem(KEY) } });
  } catch (e) {
    throw new ApiError(0, "control plane unreachable (" + e.message + ")");
  }
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) {
    const detail = body && body.detail ? body.detail : res.status + " " + res.statusText;
    throw new ApiError(res.status, detail);
  }
  return body;
}

function banner(text) {
  const b = $("banner");
  b.textContent = text || "";
  b.hidden = !text;
}
function setState(id, text, kind) {
  const s = $(id);
  s.textContent = text || "";
  s.className = "state" + (kind ? " " + kind : "");
  s.hidden = !text;
}
function conn(text, kind) { $("conn").textContent = text; $("conn").className = "pill " + kind; }

function statusClass(status) {
  const s = String(status || "unknown").toLowerCase();
  if (/succe|done|complete|merged|pass/.test(s)) return "ok";
  if (/fail|error|abort|cancel|timeout/.test(s)) return "bad";
  if (/run|start|progress|claim/.test(s)) return "run";
  return "idle";
}
function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

// leviathan-cp dev prints /console#token=…: the fragment never reaches a server (nor its
// logs); it is moved to this tab's sessionStorage and taken out of the address bar at once.
function tokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token === null) return;
  history.replaceState(null, "", location.pathname + location.search);
  if (token.trim()) sessionStorage.setItem(KEY, token.trim());
}

function badge(status) { return el("span", { class: "badge " + statusClass(status) }, status || "unknown"); }

// ---- panels --------------------------------------------------------------------------

function renderStats(stats) {
  const body = $("partitions").tBodies[0];
  body.replaceChildren(...stats.partitions.map((p) => el("tr", {},
    el("td", {}, p.partition), el("td", {}, p.length),
    el("td", {}, p.lag === null ? "?" : p.lag), el("td", {}, p.pending),
    el("td", {}, (p.consumers || []).length))));
  $("dead").textContent = stats.dead_letters;
  $("dead").className = stats.dead_letters > 0 ? "bad-text" : "";
  setState("queue-state", stats.partitions.length ? "" : "no partitions configured", "empty");
}

function renderSpark() {
  const box = $("spark");
  const max = Math.max(1, ...rates.map((r) => Math.max(r.acc, r.per)));
  const line = (key) => rates.map((r, i) =>
    `${(i / Math.max(1, SPARK_POINTS - 1)) * 300},${58 - (r[key] / max) * 54}`).join(" ");
  box.replaceChildren(
    svg("polyline", { points: line("acc"), class: "acc" }),
    svg("polyline", { points: line("per"), class: "per" }));
  const last = rates[rates.length - 1];
  $("rates").textContent = last
    ? `now ${last.acc.toFixed(1)} / ${last.per.toFixed(1)} ev/s · peak ${max.toFixed(1)} (last ${Math.round(rates.length * POLL_MS / 1000)} s)`
    : "measuring…";
}

// Rates come from successive samples: persisted = growth of the events stored (sum of the
// chain's checked counts), accepted = persisted growth + growth of the unconsumed lag.
function sampleRates(chains, stats) {
  const now = performance.now();
  const persisted = chains.reduce((n, c) => n + c.checked, 0);
  const lag = stats ? stats.total_lag : 0;
  if (prevSample) {
    const dt = (now - prevSample.t) / 1000;
    const per = Math.max(0, (persisted - prevSample.persisted) / dt);
    const acc = Math.max(0, per + (lag - prevSample.lag) / dt);
    rates.push({ acc, per });
    if (rates.length > SPARK_POINTS) rates.shift();
  }
  prevSample = { t: now, persisted, lag };
  renderSpark();
}

// The verify endpoint lists only partitions holding events; the queue's partition count
// (from /v1/stats) fills in the empty ones so none silently disappears from the panel.
function renderChain(chains, stats) {
  const seen = new Set(chains.map((c) => c.partition));
  const empty = (stats ? stats.partitions : []).filter((p) => !seen.has(p.partition))
    .map((p) => ({ partition: p.partition, empty: true }));
  const all = [...chains, ...empty].sort((a, b) => a.partition - b.partition);
  $("chain").replaceChildren(...all.map((c) => c.empty
    ? el("li", { class: "idle" }, el("strong", {}, "partition " + c.partition + ": "), "no events yet")
    : el("li", { class: c.ok ? "ok" : "bad" },
    el("strong", {}, "partition " + c.partition + ": "),
    c.ok ? `intact · ${plural(c.checked, "event")} · head ${String(c.last_hash).slice(0, 12)}`
         : `BROKEN at seq ${c.broken_at_seq} (${c.broken_event_id}): ${c.reason}`)));
  setState("chain-state", chains.length ? "" : "no partitions hold events yet", "empty");
}

// Each attempt carries its own failure summary (?include=error): no join with a failure
// list whose newest entries may belong to other attempts.
function renderAttempts(attempts) {
  const rows = attempts.map((a) => {
    const pr = a.pr_url
      ? el("a", { href: a.pr_url, target: "_blank", rel: "noopener noreferrer" }, "#" + (a.pr_number ?? "PR"))
      : (a.pr_number ? "#" + a.pr_number : "");
    return el("tr", { class: "row-" + statusClass(a.status) },
      el("td", { class: "mono" }, a.attempt_id), el("td", { class: "mono" }, a.task_id || ""),
      el("td", {}, a.target || ""), el("td", {}, badge(a.status)), el("td", {}, pr),
      el("td", { class: "why" }, a.error || ""), el("td", { class: "mono" }, a.timestamp || ""));
  });
  $("attempts").tBodies[0].replaceChildren(...rows);
  $("attempts").hidden = rows.length === 0;
  setState("attempts-state", rows.length ? "" : "no attempts recorded yet", "empty");
}

// Layered DAG layout: a task's layer is 1 + the deepest layer among its dependencies
// (dependencies outside this target or cycles fall back to layer 0 / the current depth).
function layers(tasks) {
  const byId = new Map(tasks.map((t) => [t.task_id, t]));
  const depth = new Map();
  const visiting = new Set();
  const walk = (id) => {
    if (depth.has(id)) return depth.get(id);
    if (visiting.has(id) || !byId.has(id)) return -1;
    visiting.add(id);
    const d = 1 + Math.max(-1, ...byId.get(id).depends_on.map(walk));
    visiting.delete(id);
    depth.set(id, d);
    return d;
  };
  tasks.forEach((t) => walk(t.task_id));
  const out = [];
  for (const t of tasks) (out[depth.get(t.task_id)] ||= []).push(t);
  return out.filter(Boolean);
}

function renderDag(tasks) {
  const dag = $("dag");
  if (!tasks.length) {
    dag.replaceChildren();
    dag.setAttribute("width", 0); dag.setAttribute("height", 0);
    setState("tasks-state", "no tasks for this target", "empty");
    return;
  }
  setState("tasks-state", "");
  const W = 170, H = 50, GX = 60, GY = 22, PAD = 10;
  const cols = layers(tasks);
  const deepest = Math.max(...cols.map((c) => c.length));
  // Layers run left to right; when that does not fit (a phone) they run top to bottom.
  const vertical = PAD * 2 + cols.length * (W + GX) - GX > dag.parentElement.clientWidth;
  const pos = new Map();
  cols.forEach((col, layer) => col.forEach((t, i) => pos.set(t.task_id, vertical
    ? { x: PAD + i * (W + GY), y: PAD + layer * (H + GX) }
    : { x: PAD + layer * (W + GX), y: PAD + i * (H + GY) })));
  const wide = vertical ? deepest : cols.length, down = vertical ? cols.length : deepest;
  const width = PAD * 2 + wide * (W + (vertical ? GY : GX)) - (vertical ? GY : GX);
  const height = PAD * 2 + down * (H + (vertical ? GX : GY)) - (vertical ? GX : GY);
  const defs = svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, svg("path", { d: "M0,0L10,5L0,10z" })));
  // Each box's incoming and outgoing arrows get their own anchor along its side (ordered
  // by the other end's position), so arrows sharing a box are drawn apart.
  const links = [];
  for (const t of tasks) for (const dep of t.depends_on) {
    if (pos.has(dep) && dep !== t.task_id) links.push({ from: dep, to: t.task_id });
  }
  const across = (id) => (vertical ? pos.get(id).x : pos.get(id).y);
  const anchors = (key, other) => {
    const groups = new Map();
    for (const l of links) (groups.get(l[key]) || groups.set(l[key], []).get(l[key])).push(l);
    const out = new Map();
    for (const group of groups.values()) {
      group.sort((p, q) => across(p[other]) - across(q[other]));
      group.forEach((l, i) => out.set(l, (i + 1) / (group.length + 1)));
    }
    return out;
  };
  const outAt = anchors("from", "to"), inAt = anchors("to", "from");
  const edges = links.map((l) => {
    const a = pos.get(l.from), b = pos.get(l.to);
    let d;
    if (vertical) {
      const x1 = a.x + W * outAt.get(l), y1 = a.y + H, x2 = b.x + W * inAt.get(l), y2 = b.y;
      const my = (y1 + y2) / 2;
      d = `M${x1},${y1}C${x1},${my} ${x2},${my} ${x2},${y2}`;
    } else {
      const x1 = a.x + W, y1 = a.y + H * outAt.get(l), x2 = b.x, y2 = b.y + H * inAt.get(l);
      const mx = (x1 + x2) / 2;
      d = `M${x1},${y1}C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
    }
    return svg("path", { class: "edge", d, "marker-end": "url(#arrow)", "data-from": l.from, "data-to": l.to });
  });
  const nodes = tasks.map((t) => {
    const p = pos.get(t.task_id);
    // the task's own status; its latest attempt's is in the tooltip
    const st = t.status || "no status";
    const title = svg("title", {});
    title.textContent = `${t.task_id}${t.title ? " — " + t.title : ""}\nstatus: ${st}\nlatest attempt: ${t.latest_attempt_status || "none"}`;
    const name = svg("text", { x: p.x + 8, y: p.y + 20, class: "tname" });
    name.textContent = t.task_id.length > 22 ? t.task_id.slice(0, 21) + "…" : t.task_id;
    const sub = svg("text", { x: p.x + 8, y: p.y + 38, class: "tstat" });
    sub.textContent = st;
    return svg("g", { class: "task " + statusClass(t.status), "data-task": t.task_id, "data-status": st },
      title, svg("rect", { x: p.x, y: p.y, width: W, height: H, rx: 6 }), name, sub);
  });
  dag.replaceChildren(defs, ...edges, ...nodes);
  dag.setAttribute("width", width); dag.setAttribute("height", height);
  dag.setAttribute("viewBox", `0 0 ${width} ${height}`);
}

// The picker lists targets alphabetically and, until the operator picks one, shows the
// most recently active: the target of the task updated last.
let pickedTarget = false;
function renderTargets(allTasks) {
  const sel = $("target");
  const current = sel.value;
  const latest = new Map();
  for (const t of allTasks) {
    if (!t.target) continue;
    const at = t.updated_at || "";
    if (!latest.has(t.target) || at > latest.get(t.target)) latest.set(t.target, at);
  }
  const targets = [...latest.keys()].sort();
  if (targets.join("\n") !== [...sel.options].map((o) => o.value).join("\n")) {
    sel.replaceChildren(...targets.map((t) => el("option", { value: t }, t)));
  }
  const newest = targets.reduce((a, t) => (a === null || latest.get(t) > latest.get(a) ? t : a), null);
  sel.value = pickedTarget && targets.includes(current) ? current : (newest ?? "");
  return sel.value;
}

// ---- polling -------------------------------------------------------------------------

async function panel(stateId, work) {
  try { await work(); return null; } catch (e) {
    if (e.status === 401 || e.status === 403) throw e;
    setState(stateId, e.status === 503 ? "queue unavailable: " + e.message : "error: " + e.message, "error");
    return e;
  }
}

async function poll() {
  let stats = null;
  try {
    const errs = await Promise.all([
      panel("queue-state", async () => { stats = await api("/v1/stats"); renderStats(stats); }),
      panel("attempts-state", async () => {
        renderAttempts((await api("/v1/attempts?limit=50&include=error")).attempts);
      }),
      panel("tasks-state", async () => {
        const all = await api("/v1/tasks?limit=1000");
        const target = renderTargets(all.tasks);
        renderDag(target ? (await api("/v1/tasks?limit=1000&target=" + encodeURIComponent(target))).tasks : []);
      }),
    ]);
    errs.push(await panel("chain-state", async () => {
      const chains = await api("/v1/events/verify");
      renderChain(chains, stats);
      sampleRates(chains, stats);
    }));
    const failed = errs.filter(Boolean);
    conn(failed.length ? "degraded" : "live", failed.length ? "warn" : "ok");
    banner(failed.length ? failed.map((e) => e.message).filter((m, i, a) => a.indexOf(m) === i).join(" · ") : "");
  } catch (e) {
    stop();
    sessionStorage.removeItem(KEY);
    conn("token rejected", "bad");
    banner("token rejected: " + e.message + ". Enter a valid token.");
    showLogin();
    return;
  }
  timer = setTimeout(poll, POLL_MS);
}

function stop() { if (timer) clearTimeout(timer); timer = null; }

function showLogin() {
  $("panels").hidden = true; $("logout").hidden = true; $("login").hidden = false;
  $("token").value = ""; $("token").focus();
}

function start() {
  $("login").hidden = true; $("panels").hidden = false; $("logout").hidden = false;
  conn("connecting…", "idle"); prevSample = null; rates.length = 0;
  for (const id of ["queue-state", "chain-state", "attempts-state", "tasks-state"]) setState(id, "loading…", "loading");
  stop(); poll();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("token").value.trim());
    banner(""); start();
  });
  $("logout").addEventListener("click", () => { stop(); sessionStorage.removeItem(KEY); conn("not connected", "idle"); showLogin(); });
  $("target").addEventListener("change", () => { pickedTarget = true; stop(); poll(); });
  tokenFromFragment();
  if (sessionStorage.getItem(KEY)) start(); else showLogin();
});
