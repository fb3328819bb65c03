// faregate dashboard: vanilla JS, no dependencies. Charts are inline SVG drawn by the two small
// helpers below (lineChart, barChart). Everything shown is set with textContent: no HTML from data.
"use strict";

(() => {
  const NS = "http://www.w3.org/2000/svg";
  const $ = (sel) => document.querySelector(sel);
  const state = { range: 7, bucket: "", requestSeq: 0 };

  // -- formatting -----------------------------------------------------------------------------

  const num = (v) => (v == null ? "–" : Number(v).toLocaleString("en-US"));
  const pct = (v) => (v == null ? "–" : `${(v * 100).toFixed(v < 0.1 ? 2 : 1)}%`);
  const ms = (v) => (v == null ? "–" : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(v < 10 ? 2 : 0)} ms`);
  function money(v) { // rounded for display; exact values stay in data-value / title
    if (v == null) return "–";
    const x = Number(v);
    if (x === 0) return "$0";
    const digits = x >= 1 ? 2 : Math.min(9, 2 - Math.floor(Math.log10(x)));
    return `$${x.toFixed(digits)}`;
  }
  const shortLabel = (label) => label.slice(5); // drop the year

  // -- data -----------------------------------------------------------------------------------

  function windowParams() {
    const end = new Date();
    const start = new Date(end.getTime() - state.range * 86400 * 1000);
    const params = { start: start.toISOString(), end: end.toISOString() };
    if (state.bucket) params.bucket = state.bucket;
    return params;
  }

  async function api(path, params = {}) {
    const url = new URL(path, window.location.origin);
    for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) url.searchParams.set(k, v);
    const resp = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } });
    if (resp.status === 401) { window.location.assign("/ui/login"); throw new Error("session expired"); }
    const doc = await resp.json().catch(() => null);
    if (!resp.ok) {
      const err = new Error((doc && doc.error && doc.error.message) || `HTTP ${resp.status}`);
      err.status = resp.status;
      throw err;
    }
    return doc;
  }

  // -- SVG helpers ----------------------------------------------------------------------------

  function el(tag, attrs = {}, parent = null, text = null) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text != null) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    const n = v / p;
    return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * p;
  }

  function empty(box, message = "No data in this range.") {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = message;
    box.replaceChildren(p);
  }

  function legend(box, series) {
    const div = document.createElement("div");
    div.className = "legend";
    series.forEach((s, i) => {
      const item = document.createElement("span");
      const sw = document.createElement("span");
      sw.className = `swatch s${i % 6}`;
      item.append(sw, document.createTextNode(s.name));
      div.appendChild(item);
    });
    box.appendChild(div);
  }

  // A line chart: `labels` on x, one path (and a circle per point) per series; null = gap.
  function lineChart(box, labels, series, fmt) {
    const values = series.flatMap((s) => s.values.filter((v) => v != null));
    if (!labels.length || !values.length) return empty(box);
    box.replaceChildren();
    const W = Math.max(box.clientWidth || 0, 360), H = 190, m = { l: 64, r: 14, t: 10, b: 26 };
    const root = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg line", role: "img" }, box);
    const max = niceMax(Math.max(0, ...values));
    const span = W - m.l - m.r;
    const x = (i) => m.l + (labels.length === 1 ? span / 2 : (i * span) / (labels.length - 1));
    const y = (v) => H - m.b - (v / max) * (H - m.t - m.b);
    for (const f of [0, 0.5, 1]) {
      el("line", { x1: m.l, x2: W - m.r, y1: y(max * f), y2: y(max * f), class: "grid" }, root);
      el("text", { x: m.l - 6, y: y(max * f) + 4, class: "axis", "text-anchor": "end" }, root, fmt(max * f));
    }
    const ticks = labels.length === 1 ? [0] : [0, Math.floor((labels.length - 1) / 2), labels.length - 1];
    for (const i of new Set(ticks)) {
      const anchor = i === 0 && labels.length > 1 ? "start" : i === labels.length - 1 && i ? "end" : "middle";
      el("text", { x: x(i), y: H - 6, class: "axis", "text-anchor": anchor }, root, shortLabel(labels[i]));
    }
    series.forEach((s, si) => {
      let d = "", pen = false;
      s.values.forEach((v, i) => {
        if (v == null) { pen = false; return; }
        d += `${pen ? "L" : "M"}${x(i).toFixed(1)} ${y(v).toFixed(1)}`;
        pen = true;
      });
      el("path", { d, class: `series s${si % 6}`, "data-series": s.name }, root);
      const g = el("g", { class: `points s${si % 6}`, "data-series": s.name }, root);
      s.values.forEach((v, i) => {
        if (v == null) return;
        const c = el("circle", { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: labels.length > 60 ? 1.6 : 3,
          class: "point", "data-value": v, "data-label": labels[i] }, g);
        el("title", {}, c, `${s.name} · ${labels[i]}: ${fmt(v)}`);
      });
    });
    if (series.length > 1 || series[0].name) legend(box, series);
  }

  // A horizontal bar chart: one bar per item ({label, value, text}).
  function barChart(box, items, fmt) {
    if (!items.length || !items.some((it) => it.value > 0)) return empty(box);
    box.replaceChildren();
    const W = Math.max(box.clientWidth || 0, 360), row = 24, labelW = Math.min(170, W * 0.34), valueW = 150;
    const H = items.length * row + 4;
    const root = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg bars", role: "img" }, box);
    const max = Math.max(...items.map((it) => it.value)) || 1;
    items.forEach((it, i) => {
      const yy = i * row + 2;
      const label = it.label.length > 26 ? `${it.label.slice(0, 25)}…` : it.label;
      el("text", { x: labelW - 8, y: yy + 16, class: "bar-label", "text-anchor": "end" }, root, label);
      const width = Math.max(it.value > 0 ? 2 : 0, ((W - labelW - valueW) * it.value) / max);
      const bar = el("rect", { x: labelW, y: yy + 3, width: width.toFixed(1), height: row - 8, rx: 3, class: "bar",
        "data-label": it.label, "data-value": it.value }, root);
      el("title", {}, bar, `${it.label}: ${it.text || fmt(it.value)}`);
      el("text", { x: labelW + width + 6, y: yy + 16, class: "bar-value" }, root, it.text || fmt(it.value));
    });
  }

  // -- panels ---------------------------------------------------------------------------------

  function kpi(id, text, exact) {
    const node = $(`#${id} .value`);
    node.textContent = text;
    node.dataset.value = exact == null ? "" : String(exact);
    node.title = exact == null ? "" : String(exact);
  }

  function renderSummary(s) {
    const t = s.totals;
    kpi("kpi-requests", num(t.requests), t.requests);
    kpi("kpi-error-rate", pct(t.error_rate), t.error_rate);
    kpi("kpi-cost", money(t.cost_usd), t.cost_usd);
    kpi("kpi-saved", money(t.saved_usd), t.saved_usd);
    kpi("kpi-hit-rate", pct(t.hit_rate), t.hit_rate);
    lineChart($("#chart-spend-time"), s.buckets, [
      { name: "spend", values: s.series.cost_usd },
      { name: "saved by cache", values: s.series.saved_usd },
    ], money);
    const outcome = (c) => c.cache || "not cached";
    barChart($("#chart-cache"), s.cache.map((c) => ({ label: outcome(c), value: c.requests, text: num(c.requests) })), num);
    barChart($("#chart-saved"), s.cache.filter((c) => c.cache && c.cache.startsWith("hit"))
      .map((c) => ({ label: c.cache, value: Number(c.saved_usd), text: money(c.saved_usd) })), money);
    lineChart($("#chart-hit-rate"), s.buckets, [{ name: "hit rate", values: s.series.hit_rate }], pct);
  }

  function renderTraffic(t) {
    const top = t.providers.slice(0, 6);
    const name = (p) => p.provider || "none (refused / cached)";
    lineChart($("#chart-traffic"), t.buckets, top.map((p) => ({ name: name(p), values: p.series.requests })), num);
    lineChart($("#chart-errors"), t.buckets, top.map((p) => ({ name: name(p), values: p.series.error_rate })), pct);
  }

  function renderLatency(box, d) {
    lineChart(box, d.buckets, ["p50", "p95", "p99"].map((p) => ({ name: p, values: d.series[p] })), ms);
    box.dataset.count = d.overall.count;
  }

  function renderSpend(box, d) {
    const rows = d.rows.map((r) => ({ label: r.group == null ? "(none)" : r.group, value: Number(r.cost_usd),
      text: `${money(r.cost_usd)} · ${num(r.requests)} req` }));
    barChart(box, rows, money);
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    if (cls) {
      const b = document.createElement("span");
      b.className = `badge ${cls}`;
      b.textContent = text;
      td.appendChild(b);
    } else td.textContent = text == null ? "–" : String(text);
    td.title = td.textContent;
    tr.appendChild(td);
    return td;
  }

  function renderBreakers(d) {
    const body = $("#breakers tbody");
    body.replaceChildren();
    for (const r of d.deployments) {
      const tr = document.createElement("tr");
      tr.dataset.deployment = r.deployment;
      cell(tr, r.deployment); cell(tr, r.group); cell(tr, r.provider);
      cell(tr, r.cooling_down ? `${r.state} · cooling down` : r.state, r.state);
      cell(tr, `${num(r.failures)} / ${num(r.window_requests)}`); cell(tr, num(r.in_flight));
      cell(tr, ms(r.ewma_latency_ms)); cell(tr, r.last_error || "");
      body.appendChild(tr);
    }
  }

  const statusClass = (r) => (r.status >= 400 || r.error_code ? "error" : "ok");

  function renderRequests(d) {
    const body = $("#requests tbody");
    body.replaceChildren();
    if (!d.data.length) {
      const tr = document.createElement("tr");
      const td = cell(tr, "No requests match.");
      td.colSpan = 8;
      body.appendChild(tr);
      return;
    }
    for (const r of d.data) {
      const tr = document.createElement("tr");
      tr.dataset.id = r.request_id;
      tr.tabIndex = 0;
      cell(tr, r.created_at.replace("T", " ").slice(0, 19)); cell(tr, r.request_id); cell(tr, r.model);
      cell(tr, r.error_code ? `${r.status} ${r.error_code}` : r.status, statusClass(r));
      cell(tr, money(r.cost_usd)); cell(tr, ms(r.latency_ms)); cell(tr, ms(r.ttft_ms)); cell(tr, r.cache || "–");
      tr.addEventListener("click", () => openDetail(r.request_id, tr));
      tr.addEventListener("keydown", (e) => { if (e.key === "Enter") openDetail(r.request_id, tr); });
      body.appendChild(tr);
    }
  }

  async function openDetail(id, tr) {
    document.querySelectorAll("#requests tr.selected").forEach((x) => x.classList.remove("selected"));
    if (tr) tr.classList.add("selected");
    const box = $("#detail");
    box.hidden = false;
    box.dataset.loaded = "";
    $("#detail-title").textContent = id;
    const dl = $("#detail-fields");
    const logBox = $("#detail-log");
    dl.replaceChildren();
    logBox.replaceChildren();
    try {
      const d = await api(`/ui/api/requests/${encodeURIComponent(id)}`);
      for (const [k, v] of Object.entries(d.entry)) {
        const dt = document.createElement("dt");
        const dd = document.createElement("dd");
        dt.textContent = k;
        dd.textContent = v == null ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v);
        dd.dataset.field = k;
        dl.append(dt, dd);
      }
      renderLog(logBox, d.log);
    } catch (err) {
      const p = document.createElement("p");
      p.className = "panel-error";
      p.textContent = `Could not load this request: ${err.message}`;
      logBox.appendChild(p);
    }
    box.dataset.loaded = "1";
    box.scrollIntoView({ block: "start" });
  }

  function pretty(text) {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (e) { return String(text); }
  }

  // The request log (GET /admin/logs/{id}, when this gateway has it): trace id and the
  // redacted bodies, as text.
  function renderLog(box, log) {
    const p = document.createElement("p");
    p.className = "muted";
    p.id = "detail-log-status";
    box.appendChild(p);
    if (!log) { p.textContent = "Request logging is not available on this gateway."; return; }
    if (log.status === 404) { p.textContent = "No request log for this request (logging off, sampled out or expired)."; return; }
    if (log.status !== 200 || !log.body) { p.textContent = `The request log could not be read (HTTP ${log.status}).`; return; }
    const b = log.body;
    p.textContent = b.trace_id ? `Trace id: ${b.trace_id}` : "No trace id recorded.";
    if (b.trace_id) p.dataset.traceId = b.trace_id;
    const facts = [`${num(b.redactions)} redaction(s)`, b.truncated ? "truncated" : null,
      b.request_bytes != null ? `request ${num(b.request_bytes)} B` : null,
      b.response_bytes != null ? `response ${num(b.response_bytes)} B` : null].filter(Boolean);
    const info = document.createElement("p");
    info.className = "muted";
    info.textContent = facts.join(" · ");
    box.appendChild(info);
    for (const [name, text] of [["Request body", b.request_body], ["Response body", b.response_body]]) {
      const h = document.createElement("h5");
      h.textContent = name;
      const pre = document.createElement("pre");
      pre.className = "log-body";
      pre.textContent = text == null ? "(not kept)" : pretty(text);
      box.append(h, pre);
    }
  }

  // -- loading ----------------------------------------------------------------------------------

  async function panel(boxes, load, render) {
    try {
      render(await load());
    } catch (err) {
      for (const box of boxes) {
        const p = document.createElement("p");
        p.className = "panel-error";
        p.textContent = `Could not load: ${err.message}`;
        box.replaceChildren(p);
      }
      throw err;
    }
  }

  async function loadRequests() {
    const seq = ++state.requestSeq;
    const params = { ...windowParams(), q: $("#q").value.trim(), errors: $("#errors-only").checked ? "1" : "" };
    const d = await api("/ui/api/requests", params);
    if (seq === state.requestSeq) renderRequests(d);
  }

  async function loadAll() {
    const status = $("#status");
    status.textContent = "Loading…";
    status.classList.remove("failed");
    document.body.dataset.loaded = "";
    const w = windowParams();
    const spend = (by, id, limit = 10) => panel([$(id)], () => api("/ui/api/spend", { ...w, by, limit }),
      (d) => renderSpend($(id), d));
    const jobs = [
      panel([$("#chart-spend-time"), $("#chart-cache"), $("#chart-saved"), $("#chart-hit-rate")],
        () => api("/ui/api/summary", w), renderSummary),
      panel([$("#chart-traffic"), $("#chart-errors")], () => api("/ui/api/traffic", w), renderTraffic),
      panel([$("#chart-latency")], () => api("/ui/api/latency", { ...w, metric: "latency" }), (d) => {
        renderLatency($("#chart-latency"), d);
        kpi("kpi-p95", ms(d.overall.p95), d.overall.p95);
      }),
      panel([$("#chart-ttft")], () => api("/ui/api/latency", { ...w, metric: "ttft" }),
        (d) => renderLatency($("#chart-ttft"), d)),
      spend("model", "#chart-spend-model"), spend("team", "#chart-spend-team"),
      spend("feature", "#chart-spend-feature"), spend("key", "#chart-top-keys"), spend("user", "#chart-top-users"),
      panel([], () => api("/ui/api/breakers"), renderBreakers),
      loadRequests(),
    ];
    const results = await Promise.allSettled(jobs);
    const failed = results.filter((r) => r.status === "rejected");
    status.textContent = failed.length ? `${failed.length} panel(s) failed to load` : `Updated ${new Date().toLocaleTimeString()}`;
    status.classList.toggle("failed", failed.length > 0);
    document.body.dataset.loaded = "1";
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#controls").addEventListener("submit", (e) => {
      e.preventDefault();
      state.range = Number($("#range").value);
      state.bucket = $("#bucket").value;
      loadAll();
    });
    $("#range").addEventListener("change", () => $("#controls").requestSubmit());
    $("#bucket").addEventListener("change", () => $("#controls").requestSubmit());
    $("#search").addEventListener("submit", (e) => { e.preventDefault(); loadRequests().catch(() => {}); });
    $("#detail-close").addEventListener("click", () => { $("#detail").hidden = true; });
    loadAll();
  });
})();
