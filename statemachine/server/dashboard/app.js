// The statemachine dashboard: an instance list and an instance page with a live graph.
// Plain DOM, no dependencies; every value from the server is inserted as text, never as HTML.
"use strict";

const STATUSES = ["pending", "running", "waiting", "paused", "compensating",
  "completed", "failed", "cancelled", "timed_out"];
const TERMINAL = new Set(["completed", "failed", "cancelled", "timed_out"]);
const ACTIVE = new Set(["pending", "running", "waiting", "paused", "compensating"]);
// EventSource has no wildcard listener: these are the engine's event types
const EVENT_TYPES = ["started", "progress", "completed", "failed", "cancelled", "timed_out",
  "paused", "resumed", "retried", "compensating", "event.received",
  "step.started", "step.completed", "step.failed", "step.retry", "step.skipped", "step.poll",
  "step.loop", "step.waiting", "step.cancelled", "step.compensated"]
  .map((t) => "workflow." + t).concat(["stream.overflow"]);
const PAGE = 50;
const TOKEN_KEY = "statemachine.token";

const RECONNECT_MS = 1000;

const state = { token: null, workflows: null, source: null, listening: 0, asking: false };

// -- helpers ---------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  return append(el, children);
}

// children may be nested arrays; null, undefined and false are skipped
function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined && child !== false) {
      el.append(child instanceof Node ? child : String(child));
    }
  }
  return el;
}

function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

function badge(status) {
  return h("span", { class: "badge", "data-status": status }, status);
}

// what each colour means: instance statuses on the list, step statuses on the graph
const STEP_LEGEND = [["", "not run"], ["running", "running"], ["waiting", "waiting"],
  ["completed", "completed"], ["failed", "failed"], ["skipped", "skipped"],
  ["cancelled", "cancelled"], ["compensated", "compensated (undone)"]];

function legend(items) {
  return h("div", { class: "legend", "aria-label": "colours" }, items.map(([status, label]) =>
    h("span", { class: "badge", "data-status": status || "pending" }, label)));
}

// a failed instance's failing step and error, in one line
function failure(inst) {
  const err = inst.error;
  if (!err || typeof err !== "object") return "";
  const what = [err.type, err.message].filter(Boolean).join(": ");
  return (err.step ? err.step + ": " : "") + what;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function duration(start, end) {
  if (!start || !end) return "";
  const ms = new Date(end) - new Date(start);
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function json(value) {
  return h("pre", {}, JSON.stringify(value, null, 2));
}

function flash(message) {
  const box = document.getElementById("flash");
  box.textContent = message || "";
  box.hidden = !message;
}

function debounce(fn, ms) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

// -- token and API ---------------------------------------------------------------------------

function initToken() {
  const url = new URL(location.href);
  const given = url.searchParams.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    url.searchParams.delete("token"); // keep it out of the address bar and the history
    history.replaceState(null, "", url);
  }
  state.token = sessionStorage.getItem(TOKEN_KEY);
  const forget = document.getElementById("forget-token");
  forget.hidden = !state.token;
  forget.onclick = () => { sessionStorage.removeItem(TOKEN_KEY); location.reload(); };
}

function askToken() {
  if (state.asking) return;
  state.asking = true;
  const token = prompt("This server needs a token (statemachine serve --token):");
  state.asking = false;
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    state.token = token;
    document.getElementById("forget-token").hidden = false;
    route();
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = "Bearer " + state.token;
  // every POST says JSON, even with no body: the server refuses others (a cross-site form
  // cannot send this type without a CORS preflight)
  if (body !== undefined || method === "POST") headers["Content-Type"] = "application/json";
  const res = await fetch("api/" + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await res.json().catch(() => null);
  if (res.status === 401) setTimeout(askToken, 0);
  if (!res.ok) {
    const err = data && data.error;
    throw new Error(err ? `${err.code}: ${err.message}` : `HTTP ${res.status}`);
  }
  return data;
}

// onEvent runs for every event, and also each time the stream (re)connects: events that
// happened before that (between the page's first load and the subscription, or while the
// connection was down) were not streamed, so the page must reload its data then.
// EventSource cannot send the token: with one, each connection opens with a fresh single-use
// ticket (POST stream-ticket), so the token never appears in a URL; a dropped connection is
// reopened here, with a new ticket, rather than by EventSource's own retry.
function listen(path, onEvent) {
  if (state.source) state.source.close();
  state.source = null;
  const generation = ++state.listening;
  const live = document.getElementById("live");
  const reopen = () => setTimeout(() => {
    if (state.listening === generation) listen(path, onEvent);
  }, RECONNECT_MS);
  const open = async () => {
    let url = "api/" + path;
    if (state.token) {
      let ticket;
      try { ticket = (await api("POST", "stream-ticket")).ticket; } catch (err) { reopen(); return; }
      url += (path.includes("?") ? "&" : "?") + "ticket=" + encodeURIComponent(ticket);
    }
    if (state.listening !== generation) return; // left the page meanwhile
    const source = new EventSource(url);
    source.onopen = () => {
      live.textContent = "live";
      live.classList.add("on");
      onEvent("stream.open", null);
    };
    source.onerror = () => {
      live.textContent = "reconnecting";
      live.classList.remove("on");
      if (state.token || source.readyState === EventSource.CLOSED) {
        source.close();
        if (state.source === source) reopen();
      }
    };
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (msg) => onEvent(type, JSON.parse(msg.data)));
    }
    state.source = source;
  };
  open();
}

async function workflows() {
  if (!state.workflows) state.workflows = await api("GET", "workflows");
  return state.workflows;
}

// -- routing ---------------------------------------------------------------------------------

function route() {
  flash("");
  const view = document.getElementById("view");
  const match = location.hash.match(/^#\/instances\/(.+)$/);
  const render = match ? showInstance(view, decodeURIComponent(match[1])) : showList(view);
  render.catch((err) => flash(err.message));
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => { initToken(); route(); });

// -- instance list ---------------------------------------------------------------------------

async function showList(view) {
  const filters = { status: "", workflow: "", offset: 0 };
  const defs = await workflows();
  const body = h("tbody");
  const pager = h("span", { class: "muted" });
  const prev = h("button", { type: "button", onclick: () => { filters.offset = Math.max(0, filters.offset - PAGE); load(); } }, "‹ newer");
  const next = h("button", { type: "button", onclick: () => { filters.offset += PAGE; load(); } }, "older ›");

  const statusSelect = h("select", { onchange: (e) => { filters.status = e.target.value; filters.offset = 0; load(); } },
    h("option", { value: "" }, "every status"), STATUSES.map((s) => h("option", { value: s }, s)));
  const workflowSelect = h("select", { onchange: (e) => { filters.workflow = e.target.value; filters.offset = 0; load(); } },
    h("option", { value: "" }, "every workflow"), defs.map((d) => h("option", { value: d.name }, d.name)));

  const startWorkflow = h("select", {}, defs.map((d) => h("option", { value: d.name }, `${d.name} v${d.version}`)));
  const startInput = h("textarea", { placeholder: "input as JSON, e.g. {\"order_id\": \"o-1\"}" });
  const start = async () => {
    let input = null;
    try { input = startInput.value.trim() ? JSON.parse(startInput.value) : null; } catch (err) { flash("input is not JSON: " + err.message); return; }
    try {
      const inst = await api("POST", `workflows/${encodeURIComponent(startWorkflow.value)}/instances`, { input });
      location.hash = "#/instances/" + encodeURIComponent(inst.id);
    } catch (err) { flash(err.message); }
  };

  const scheduleBox = h("div", { class: "panel", id: "schedules" });

  async function load() {
    if (!body.isConnected) return; // a late, debounced call after leaving the page
    const query = new URLSearchParams({ limit: PAGE, offset: filters.offset });
    if (filters.status) query.set("status", filters.status);
    if (filters.workflow) query.set("workflow", filters.workflow);
    try {
      const rows = await api("GET", "instances?" + query);
      fill(body, ...rows.map((inst) => h("tr", {},
        h("td", { class: "id" }, h("a", { href: "#/instances/" + encodeURIComponent(inst.id) }, inst.id)),
        h("td", {}, `${inst.workflow_name} v${inst.workflow_version}`),
        h("td", {}, badge(inst.status)),
        h("td", {}, inst.current_step || (inst.error && inst.error.step) || "",
          inst.error ? h("div", { class: "row-error", title: failure(inst) }, failure(inst)) : null),
        h("td", {}, when(inst.created_at)),
        h("td", {}, when(inst.completed_at)))));
      if (!rows.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No instances.")));
      prev.disabled = filters.offset === 0;
      next.disabled = rows.length < PAGE;
      pager.textContent = rows.length ? `${filters.offset + 1}–${filters.offset + rows.length}` : "";
    } catch (err) { flash(err.message); }
  }

  fill(view,
    h("div", { class: "panel" }, h("h2", {}, "Start an instance"),
      h("div", { class: "toolbar" }, startWorkflow, startInput, h("button", { type: "button", onclick: start, disabled: !defs.length }, "start"))),
    h("div", { class: "toolbar" }, statusSelect, workflowSelect, h("span", { class: "spacer" }), pager, prev, next),
    legend(STATUSES.map((s) => [s, s])),
    h("table", {}, h("thead", {}, h("tr", {}, ["id", "workflow", "status", "current step", "created", "completed"].map((t) => h("th", {}, t)))), body),
    scheduleBox);
  await load();
  await loadSchedules(scheduleBox);
  listen("stream", debounce(load, 300));
}

// the schedules of every workflow, under the instance list: hidden when there is none
async function loadSchedules(box) {
  let rows = [];
  try { rows = await api("GET", "schedules"); } catch (err) { flash(err.message); }
  box.hidden = !rows.length;
  fill(box, h("h2", {}, "Schedules"),
    h("table", {}, h("thead", {}, h("tr", {}, ["workflow", "schedule", "timezone", "next", "last", "state"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.map((s) => h("tr", {},
        h("td", {}, s.workflow), h("td", {}, s.spec), h("td", {}, s.timezone),
        h("td", {}, when(s.next_at)), h("td", {}, when(s.last_at)),
        h("td", {}, s.paused ? "paused" : "active"))))));
}

// -- instance page ---------------------------------------------------------------------------

async function showInstance(view, id) {
  const page = { inst: null, history: [], children: [], selected: null, def: null, schedules: [] };
  const header = h("div", { class: "panel" });
  const graphBox = h("div", { class: "graph panel" });
  const details = h("div", { class: "panel" });
  const log = h("div", { class: "log" });
  const children = h("div", { class: "children" });
  const eventForm = sendForm(id, () => refresh());
  fill(view, header, h("div", { class: "layout" },
    h("div", {}, graphBox, h("div", { class: "panel" }, h("h2", {}, "Events"), log)),
    h("div", {}, eventForm, children, details)));

  page.inst = await api("GET", "instances/" + encodeURIComponent(id));
  const defs = await workflows();
  page.def = defs.find((d) => d.hash === page.inst.definition_hash) ||
    defs.find((d) => d.name === page.inst.workflow_name) || null;
  page.schedules = await workflowSchedules(page.inst.workflow_name);
  drawGraph(graphBox, page);
  window.onresize = () => drawEdges(graphBox, page.def);

  async function refresh() {
    if (!graphBox.isConnected) return; // a late, debounced call after leaving the page
    try {
      [page.inst, page.history, page.children] = await Promise.all([
        api("GET", "instances/" + encodeURIComponent(id)),
        api("GET", `instances/${encodeURIComponent(id)}/history`),
        api("GET", "instances?" + new URLSearchParams({ parent: id, limit: 100 })),
      ]);
      paint();
    } catch (err) { flash(err.message); }
  }

  function paint() {
    renderHeader(header, page, control);
    eventForm.hidden = TERMINAL.has(page.inst.status);
    renderChildren(children, page.children);
    colourGraph(graphBox, page);
    drawEdges(graphBox, page.def);
    renderDetails(details, page);
    fill(log, ...page.history.slice().reverse().map((e) =>
      h("div", {}, `${new Date(e.at).toLocaleTimeString()}  ${e.type}${e.step ? "  " + e.step : ""}`)));
  }

  async function control(verb) {
    try {
      if (verb === "cancel" && !confirm("Cancel this instance?")) return;
      if (verb === "replay") {
        const copy = await api("POST", `instances/${encodeURIComponent(id)}/replay`);
        location.hash = "#/instances/" + encodeURIComponent(copy.id);
        return;
      }
      await api("POST", `instances/${encodeURIComponent(id)}/${verb}`);
      flash("");
      await refresh();
    } catch (err) { flash(err.message); }
  }

  graphBox.addEventListener("click", (ev) => {
    const node = ev.target.closest(".node");
    page.selected = node ? node.dataset.path : null;
    paint();
  });
  await refresh();
  listen(`instances/${encodeURIComponent(id)}/stream`, debounce(refresh, 150));
}

function renderHeader(box, page, control) {
  const inst = page.inst;
  const status = inst.status;
  const button = (verb, enabled, cls) =>
    h("button", { type: "button", class: cls, disabled: !enabled, onclick: () => control(verb) }, verb === "send" ? "send event" : verb);
  fill(box,
    h("h1", {}, `${inst.workflow_name} v${inst.workflow_version} `, badge(status)),
    h("div", { class: "muted" }, inst.id, inst.parent_id ? " · child of " : "",
      inst.parent_id ? h("a", { href: "#/instances/" + encodeURIComponent(inst.parent_id) }, inst.parent_id) : null),
    flowControl(page),
    h("div", { class: "toolbar actions" },
      button("cancel", ACTIVE.has(status), "danger"),
      button("pause", ["pending", "running", "waiting"].includes(status)),
      button("resume", status === "paused"),
      button("retry", status === "failed"),
      button("replay", true)));
}

// what decides when this workflow's instances start and are claimed: its concurrency limit
// and priority, and its schedules with their next fire times (an instance held back by a
// limit shows why here)
function flowControl(page) {
  const def = page.def;
  const notes = [];
  if (def && def.concurrency) {
    const per = def.concurrency.key ? ` per ${def.concurrency.key}` : "";
    notes.push(`at most ${def.concurrency.limit} running${per}`);
  }
  if (def && def.priority) notes.push(`priority ${def.priority}`);
  const schedules = page.schedules.length
    ? page.schedules.map((s) => `${s.spec} (${s.timezone}) · ` +
        (s.paused ? "paused" : s.next_at ? "next " + when(s.next_at) : "no tick left"))
    : (def && def.schedules) || [];
  if (!notes.length && !schedules.length) return null;
  return h("div", { class: "muted flow-control" },
    notes.length ? h("div", { class: "limits" }, "flow control: " + notes.join(" · ")) : null,
    schedules.map((text) => h("div", { class: "schedules" }, "scheduled: " + text)));
}

// one workflow's schedules from /api/schedules (nothing if it cannot be read: the header
// then falls back to the definition's list, without next fire times)
async function workflowSchedules(name) {
  try { return (await api("GET", "schedules")).filter((s) => s.workflow === name); } catch (err) { return []; }
}

// the event form: built once per page (not with the header, which is redrawn on every
// update), so what is typed survives live updates
function sendForm(id, done) {
  const name = h("input", { type: "text", name: "event-name", placeholder: "event name", required: true });
  const data = h("textarea", { name: "event-data", placeholder: "data as JSON (empty: null)" });
  const form = h("form", { class: "panel send-event" }, h("h2", {}, "Send an event"),
    h("div", { class: "toolbar" }, name, data, h("button", { type: "submit" }, "send event")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    let payload = null;
    try { payload = data.value.trim() ? JSON.parse(data.value) : null; } catch (err) { flash("data is not JSON: " + err.message); return; }
    try {
      await api("POST", `instances/${encodeURIComponent(id)}/events`, { name: name.value.trim(), data: payload });
      flash("");
      name.value = "";
      data.value = "";
      done();
    } catch (err) { flash(err.message); }
  });
  return form;
}

function renderChildren(box, children) {
  box.hidden = !children.length;
  fill(box, h("div", { class: "panel" }, h("h2", {}, "Children"), h("ul", {}, children.map((c) =>
    h("li", {}, h("a", { href: "#/instances/" + encodeURIComponent(c.id) }, c.id), " ", badge(c.status))))));
}

function renderDetails(box, page) {
  const inst = page.inst;
  const path = page.selected;
  if (!path) {
    fill(box, h("h2", {}, "Instance"),
      h("dl", {},
        h("dt", {}, "status"), h("dd", {}, inst.status),
        h("dt", {}, "current step"), h("dd", {}, inst.current_step || "—"),
        h("dt", {}, "created"), h("dd", {}, when(inst.created_at)),
        h("dt", {}, "started"), h("dd", {}, when(inst.started_at)),
        h("dt", {}, "completed"), h("dd", {}, when(inst.completed_at)),
        h("dt", {}, "took"), h("dd", {}, duration(inst.started_at, inst.completed_at))),
      h("h2", {}, "Input"), json(inst.input),
      inst.output !== null ? [h("h2", {}, "Output"), json(inst.output)] : null,
      inst.error ? [h("h2", {}, "Error"), errorView(inst.error)] : null,
      Object.keys(inst.metadata || {}).length ? [h("h2", {}, "Metadata"), json(inst.metadata)] : null,
      h("p", { class: "muted" }, "Click a step for its input, output and timings."));
    return;
  }
  const result = inst.step_results[path];
  const entries = page.history.filter((e) => e.step === path);
  fill(box, h("h2", {}, `Step ${path}`),
    result ? [
      h("dl", {},
        h("dt", {}, "status"), h("dd", {}, badge(result.status)),
        h("dt", {}, "attempts"), h("dd", {}, String(result.attempts)),
        h("dt", {}, "started"), h("dd", {}, when(result.started_at)),
        h("dt", {}, "completed"), h("dd", {}, when(result.completed_at)),
        h("dt", {}, "took"), h("dd", {}, duration(result.started_at, result.completed_at)),
        result.next_attempt_at ? [h("dt", {}, "next attempt"), h("dd", {}, when(result.next_attempt_at))] : null),
      h("h2", {}, "Input"), json(result.input),
      h("h2", {}, "Output"), json(result.output),
      result.error ? [h("h2", {}, "Error"), errorView(result.error)] : null,
    ] : h("p", { class: "muted" }, "This step has not run."),
    entries.length ? [h("h2", {}, "History"), h("div", { class: "log" },
      entries.map((e) => h("div", {}, `${new Date(e.at).toLocaleTimeString()}  ${e.type}`)))] : null);
}

function errorView(error) {
  const { traceback, ...rest } = error;
  return [json(rest), traceback ? h("details", {}, h("summary", {}, "traceback"), h("pre", {}, traceback)) : null];
}

// -- graph -----------------------------------------------------------------------------------

function drawGraph(box, page) {
  if (!page.def) {
    fill(box, h("p", { class: "muted" }, `Workflow ${page.inst.workflow_name} is not registered on this server: no graph.`));
    return;
  }
  fill(box, h("h2", {}, page.def.title || page.def.name), renderScope(page.def.graph), legend(STEP_LEGEND));
  drawEdges(box, page.def);
}

function renderScope(scope) {
  const rows = [];
  for (const node of scope.steps) (rows[node.layer] = rows[node.layer] || []).push(node);
  return h("div", { class: "scope" }, rows.filter(Boolean).map((row) => h("div", { class: "row" }, row.map(renderNode))));
}

function renderNode(node) {
  const el = h("div", { class: `node kind-${node.kind}`, "data-path": node.path, tabindex: 0, title: node.description },
    h("span", { class: "label" }, h("span", { class: "name" }, node.name), h("span", { class: "kind" }, node.kind)));
  if (node.branches.length) {
    el.classList.add("container");
    el.append(h("div", { class: "branches" }, node.branches.map((b) =>
      h("div", { class: "branch" }, h("div", { class: "branch-name" }, b.name), renderScope(b)))));
  }
  el.addEventListener("keydown", (ev) => { if (ev.key === "Enter") el.click(); });
  return el;
}

function allEdges(scope) {
  return scope.edges.concat(...scope.steps.flatMap((n) => n.branches.map(allEdges)));
}

// Forward edges leave from the bottom of their source's row (a vertical drop first, so they
// never cross a taller neighbour), spread along the source's width when it has several, and
// carry their label just under the source, on their own side (the leftmost edge's to the left,
// the rightmost's to the right); edges going back up (loops) run around the right-hand side.
function drawEdges(box, def) {
  if (!def) return;
  box.querySelector("svg")?.remove();
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", box.scrollWidth);
  svg.setAttribute("height", box.scrollHeight);
  svg.innerHTML = "<defs>" + ["next", "error", "back"].map((kind) =>
    `<marker id="arrow-${kind}" class="${kind}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z"/></marker>`).join("") + "</defs>";
  const origin = box.getBoundingClientRect();
  const place = (r) => {
    const left = r.left - origin.left + box.scrollLeft;
    const top = r.top - origin.top + box.scrollTop;
    return { left, top, right: left + r.width, bottom: top + r.height, cx: left + r.width / 2, cy: top + r.height / 2 };
  };
  const rect = (path) => {
    const el = box.querySelector(`[data-path="${CSS.escape(path)}"]`);
    if (!el) return null;
    const at = place(el.getBoundingClientRect());
    const row = el.parentElement.closest(".row");
    at.rowBottom = row ? Math.max(at.bottom, place(row.getBoundingClientRect()).bottom) : at.bottom;
    return at;
  };
  const edges = allEdges(def.graph)
    .map((edge) => ({ edge, s: rect(edge.source), t: rect(edge.target) }))
    .filter(({ s, t }) => s && t);
  // where each forward edge leaves its source: spread by target position, left to right
  const leaving = new Map();
  for (const item of edges) {
    item.back = item.edge.kind === "back" || item.t.top <= item.s.top;
    if (item.back) continue;
    if (!leaving.has(item.edge.source)) leaving.set(item.edge.source, []);
    leaving.get(item.edge.source).push(item);
  }
  for (const group of leaving.values()) {
    group.sort((a, b) => a.t.cx - b.t.cx);
    group.forEach((item, i) => {
      const s = item.s;
      const inset = Math.min(22, (s.right - s.left) / 4);
      item.x = group.length === 1 ? s.cx : s.left + inset + (s.right - s.left - 2 * inset) * i / (group.length - 1);
      // a label goes on its edge's side: the leftmost sibling's left, the rightmost's right
      if (group.length === 1) item.side = item.t.cx < item.x - 1 ? -1 : 1;
      else item.side = i === 0 ? -1 : i === group.length - 1 ? 1 : 0;
    });
  }
  const text = (x, y, anchor, label, kind) => {
    const el = document.createElementNS(ns, "text");
    el.setAttribute("x", x);
    el.setAttribute("y", y);
    el.setAttribute("text-anchor", anchor);
    el.setAttribute("class", kind);
    el.textContent = label.length > 28 ? label.slice(0, 27) + "…" : label;
    const title = document.createElementNS(ns, "title");
    title.textContent = label;
    el.append(title);
    return el;
  };
  const labels = [];
  for (const { edge, s, t, back, x, side } of edges) {
    let d;
    if (back) { // around the right side, back up
      const out = Math.max(s.right, t.right) + 36;
      d = `M${s.right},${s.cy} C${out},${s.cy} ${out},${t.cy} ${t.right},${t.cy}`;
      if (edge.label) labels.push(text(out - 6, (s.cy + t.cy) / 2, "start", edge.label, edge.kind));
    } else {
      const drop = s.rowBottom;
      const dy = Math.max(8, (t.top - drop) / 2);
      d = `M${x},${s.bottom} L${x},${drop} C${x},${drop + dy} ${t.cx},${t.top - dy} ${t.cx},${t.top}`;
      if (edge.label) {
        const anchor = side < 0 ? "end" : side > 0 ? "start" : "middle";
        labels.push(text(x + side * 5, drop + (side ? 12 : 26), anchor, edge.label, edge.kind));
      }
    }
    const line = document.createElementNS(ns, "path");
    line.setAttribute("d", d);
    line.setAttribute("class", edge.kind);
    line.setAttribute("marker-end", `url(#arrow-${edge.kind})`);
    svg.append(line);
  }
  svg.append(...labels); // over every line
  box.prepend(svg);
}

function colourGraph(box, page) {
  const inst = page.inst;
  for (const el of box.querySelectorAll(".node")) {
    const result = inst.step_results[el.dataset.path];
    if (result) el.dataset.status = result.status;
    else delete el.dataset.status;
    el.classList.toggle("selected", el.dataset.path === page.selected);
    el.querySelector(":scope > .attempts")?.remove();
    if (result && result.attempts > 1) el.append(h("span", { class: "attempts", title: "attempts" }, "×" + result.attempts));
  }
}
