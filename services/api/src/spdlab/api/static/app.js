// spdlab dashboard: a dependency-free single page over the REST API (/api/v1).
// Views: jobs (live progress over SSE), decompositions with their prompts, and a graph viewer.
"use strict";

const API = "/api/v1";
const main = document.getElementById("main");
const keyStore = {
  get: () => localStorage.getItem("spdlab_key"),
  set: (k) => localStorage.setItem("spdlab_key", k),
  clear: () => localStorage.removeItem("spdlab_key"),
};

class HttpError extends Error {
  constructor(status, detail) { super(`${status}: ${detail}`); this.status = status; }
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${keyStore.get()}`, ...(options.headers || {}) };
  const res = await fetch(API + path, { ...options, headers });
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text();
  if (!res.ok) throw new HttpError(res.status, body.detail || body);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

// --- SSE over fetch (EventSource cannot send the Authorization header) ---------------------------
async function followEvents(jobId, onEvent, signal) {
  let lastId = null;
  for (let attempt = 0; attempt < 20 && !signal.aborted; attempt++) {
    const headers = { Authorization: `Bearer ${keyStore.get()}` };
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    try {
      const res = await fetch(`${API}/jobs/${jobId}/events`, { headers, signal });
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const msg = parseSse(buf.slice(0, cut));
          buf = buf.slice(cut + 2);
          if (msg.id) lastId = msg.id;
          if (msg.event && onEvent(msg) === "stop") return;
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function parseSse(block) {
  const msg = { data: "" };
  for (const line of block.split("\n")) {
    const i = line.indexOf(":");
    if (i <= 0) continue;
    const field = line.slice(0, i), value = line.slice(i + 1).replace(/^ /, "");
    if (field === "data") msg.data += value; else msg[field] = value;
  }
  try { msg.data = JSON.parse(msg.data); } catch { /* plain text */ }
  return msg;
}

// --- views ---------------------------------------------------------------------------------------
function statusCell(job) {
  const td = el("td", { class: `status-${job.status}` }, job.status);
  if (job.status === "running" && job.progress?.total) {
    td.append(" ", el("progress", { max: job.progress.total, value: job.progress.current }));
  }
  return td;
}

async function jobsView() {
  const page = await api("/jobs?limit=50");
  const rows = (page.items || page).map((j) =>
    el("tr", {},
      el("td", {}, el("a", { href: `#/jobs/${j.id}` }, j.id.slice(0, 8))),
      el("td", {}, j.kind), statusCell(j), el("td", {}, j.progress?.stage || ""),
      el("td", {}, new Date(j.created_at).toLocaleString())));
  main.replaceChildren(el("div", { class: "card" }, el("h2", {}, "Jobs"),
    el("table", {}, el("tr", {}, ...["id", "kind", "status", "stage", "created"].map((h) => el("th", {}, h))), ...rows)));
}

async function jobView(id, signal) {
  const job = await api(`/jobs/${id}`);
  const bar = el("progress", { max: 1, value: 0 });
  const state = el("span", { class: `status-${job.status}` }, job.status);
  const log = el("div", { id: "events" });
  const cancel = el("button", { onclick: async () => { await api(`/jobs/${id}`, { method: "DELETE" }).catch(alertError); } }, "Cancel");
  const result = el("pre", {}, job.result ? JSON.stringify(job.result, null, 2) : "");
  main.replaceChildren(el("div", { class: "card" },
    el("h2", {}, `${job.kind} `, state), bar, " ", cancel, log, result));
  followEvents(id, (msg) => {
    const d = msg.data || {};
    if (msg.event === "progress" && d.total) { bar.max = d.total; bar.value = d.current; }
    log.append(`${msg.event} ${JSON.stringify(d)}\n`);
    log.scrollTop = log.scrollHeight;
    if (["succeeded", "failed", "cancelled"].includes(msg.event)) {
      state.textContent = msg.event; state.className = `status-${msg.event}`;
      api(`/jobs/${id}`).then((j) => { result.textContent = JSON.stringify(j.result ?? j.error, null, 2); linkResult(j); });
      return "stop";
    }
  }, signal);
  linkResult(job);

  function linkResult(j) {
    const ref = j.result_ref || "";
    const m = ref.match(/^graphs:([\d,]+)$/);
    if (!m) return;
    const links = m[1].split(",").map((g) => el("a", { href: `#/graphs/${g}` }, `graph ${g}`));
    main.firstChild.append(el("p", {}, "Open ", ...links.flatMap((a, i) => (i ? [", ", a] : [a]))));
  }
}

async function decompositionsView() {
  const page = await api("/decompositions");
  const items = page.items || page;
  main.replaceChildren(el("div", { class: "card" }, el("h2", {}, "Decompositions"),
    el("table", {}, el("tr", {}, ...["id", "name", "source", "created"].map((h) => el("th", {}, h))),
      ...items.map((d) => el("tr", {}, el("td", {}, d.id), el("td", {}, d.name), el("td", {}, d.source),
        el("td", {}, new Date(d.created_at).toLocaleString()))))));
}

// --- graph viewer: layers as rows, positions as columns, the strongest edges as lines ------------
async function graphView(id) {
  const controls = el("div", { class: "controls" });
  const ci = el("input", { type: "range", min: 0, max: 1, step: 0.01, value: 0 });
  const norm = el("select", {}, ...["layer", "target", "none"].map((n) => el("option", { value: n }, n)));
  const limit = el("input", { type: "number", min: 10, max: 20000, value: 500 });
  const info = el("span");
  const plot = el("div");
  const download = el("a", { href: "#" }, "Neuronpedia JSON");
  download.addEventListener("click", async (e) => {
    e.preventDefault();
    const data = await api(`/graphs/${id}?format=neuronpedia&ci_threshold=${ci.value}&edge_limit=${limit.value}`);
    const url = URL.createObjectURL(new Blob([JSON.stringify(data)], { type: "application/json" }));
    el("a", { href: url, download: `graph-${id}.json` }).click();
  });
  controls.append("CI >", ci, "normalize", norm, "edges", limit, download, info);
  main.replaceChildren(el("div", { class: "card" }, el("h2", {}, `Graph ${id}`), controls, plot));
  const draw = async () => {
    try {
      const g = await api(`/graphs/${id}?ci_threshold=${ci.value}&normalize=${norm.value}&edge_limit=${limit.value}`);
      info.textContent = `${g.stats.n_edges_returned} of ${g.stats.n_edges_after_filter} edges shown` +
        ` (${g.stats.n_edges_cut_by_limit} cut by the limit); L0 ${g.stats.l0_total}`;
      plot.replaceChildren(renderGraph(g));
    } catch (e) { alertError(e); }
  };
  for (const c of [ci, norm, limit]) c.addEventListener("change", draw);
  await draw();
}

function renderGraph(g) {
  const keys = g.nodes.key.map((k) => {
    const parts = k.split(":"); const idx = +parts.pop(); const pos = +parts.pop();
    return { layer: parts.join(":"), pos, idx };
  });
  const layers = [...new Set(keys.map((k) => k.layer))];
  // Forward order: embed, then per block attention (q, k, v, o) before the MLP, then output.
  const RANK = ["attn.q", "attn.k", "attn.v", "attn_fused.qkv", "attn.o", "attn_fused.o",
    "mlp.up", "glu.gate", "glu.up", "mlp.down", "glu.down"];
  const order = (l) => {
    if (l === "embed") return -1;
    if (l === "output") return 1e9;
    const [block, ...rest] = l.split(".");
    return +block * 100 + RANK.indexOf(rest.join("."));
  };
  layers.sort((a, b) => order(a) - order(b));
  const nPos = Math.max(...keys.map((k) => k.pos)) + 1;
  const W = Math.max(600, nPos * 60), rowH = 46, H = layers.length * rowH + 40;
  const slot = {};
  const xy = keys.map((k) => {
    const s = `${k.layer}:${k.pos}`; slot[s] = (slot[s] || 0) + 1;
    return [40 + k.pos * ((W - 60) / nPos) + (slot[s] % 8) * 5, H - 30 - layers.indexOf(k.layer) * rowH - Math.floor(slot[s] / 8) * 5];
  });
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H);
  const max = Math.max(1e-12, ...g.edges.value.map(Math.abs));
  const ns = (t, a) => { const n = document.createElementNS(svg.namespaceURI, t); for (const [k, v] of Object.entries(a)) n.setAttribute(k, v); return n; };
  g.edges.source.forEach((s, i) => {
    const v = g.edges.value[i];
    svg.append(ns("line", { x1: xy[s][0], y1: xy[s][1], x2: xy[g.edges.target[i]][0], y2: xy[g.edges.target[i]][1],
      stroke: v > 0 ? "#1a5fb4" : "#c01c28", "stroke-opacity": 0.15 + 0.85 * Math.abs(v) / max, "stroke-width": 0.5 + 2 * Math.abs(v) / max }));
  });
  keys.forEach((k, i) => {
    const c = ns("circle", { cx: xy[i][0], cy: xy[i][1], r: 3, fill: k.layer === "output" ? "#e66100" : k.layer === "embed" ? "#555" : "#26a269" });
    c.append(ns("title", {})); c.firstChild.textContent = `${g.nodes.key[i]} ci=${g.nodes.ci[i].toFixed(3)}`;
    svg.append(c);
  });
  layers.forEach((l, i) => { const t = ns("text", { x: 2, y: H - 27 - i * rowH }); t.textContent = l; svg.append(t); });
  (g.prompt_tokens || g.tokens || []).forEach((tok, p) => { const t = ns("text", { x: 40 + p * ((W - 60) / nPos), y: H - 5 }); t.textContent = tok; svg.append(t); });
  return svg;
}

// --- shell ---------------------------------------------------------------------------------------
function alertError(e) { main.prepend(el("p", { class: "error" }, e.message)); }

function login() {
  main.replaceChildren(document.getElementById("login").content.cloneNode(true));
  document.getElementById("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    keyStore.set(document.getElementById("key").value.trim());
    try { await route(); } catch (err) { keyStore.clear(); document.getElementById("login-error").textContent = err.message; }
  });
}

let current = new AbortController();
async function route() {
  current.abort(); current = new AbortController();
  if (!keyStore.get()) return login();
  const me = await api("/users/me");
  document.getElementById("who").textContent = `${me.name} (${me.role})`;
  const [, view, id] = (location.hash || "#/jobs").split("/");
  if (view === "jobs" && id) return jobView(id, current.signal);
  if (view === "graphs" && id) return graphView(id);
  if (view === "decompositions") return decompositionsView();
  return jobsView();
}

document.getElementById("logout").addEventListener("click", () => { keyStore.clear(); route(); });
window.addEventListener("hashchange", () => route().catch(alertError));
route().catch((e) => (e.status === 401 ? (keyStore.clear(), login()) : alertError(e)));
