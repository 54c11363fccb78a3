// Rollcall dashboard script: keeps the server-rendered pages live from the poller's
// server-sent events (GET /api/v1/events) and runs the "Poll now" buttons and filters.
// Rules: no framework, no build step, nothing fetched from elsewhere; every value put into
// the page goes through textContent (never innerHTML) except HTML rendered (and escaped) by
// the poller itself: fleet rows (POST /fleet/rows) and a server page's parts. The script
// never renders a row or a part itself, so a live update always equals a reload.
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // "12 s ago" / "in 40 s", refreshed every second.
  function relative(iso) {
    const d = (Date.parse(iso) - Date.now()) / 1000;
    const a = Math.abs(d);
    let s;
    if (a < 1.5) return "now";
    if (a < 90) s = Math.round(a) + " s";
    else if (a < 5400) s = Math.round(a / 60) + " min";
    else if (a < 129600) s = Math.round(a / 3600) + " h";
    else s = Math.round(a / 86400) + " d";
    return d < 0 ? s + " ago" : "in " + s;
  }
  function tick() {
    for (const t of $$("time.rel")) {
      const iso = t.getAttribute("datetime");
      t.textContent = relative(iso);
      t.title = new Date(iso).toLocaleString();
    }
  }

  // "3 servers: 1 deficient", as the poller words it (dashboard/mod.rs, fleet_total).
  function plural(n, one, many) { return n + " " + (n === 1 ? one : many); }
  function fleetTotal(states) {
    let s = plural(states.length, "server", "servers");
    const problems = [];
    for (const st of ["deficient", "unreachable", "unknown"]) {
      const n = states.filter((x) => x === st).length;
      if (n > 0) problems.push(n + " " + st);
    }
    return problems.length ? s + ": " + problems.join(", ") : s;
  }

  // ---- fleet page ----
  const fleet = $("#fleet");
  let filter = "all";

  // Rows to re-fetch, batched: many polls within a moment cost one request.
  const pendingRows = new Set();
  let rowsTimer = null;
  function updateRow(name) {
    pendingRows.add(name);
    if (!rowsTimer) rowsTimer = setTimeout(fetchRows, 100);
  }
  async function fetchRows() {
    const names = Array.from(pendingRows);
    pendingRows.clear();
    try {
      const r = await fetch("/fleet/rows", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(names),
      });
      if (r.ok) {
        const t = document.createElement("template");
        t.innerHTML = await r.text(); // rendered and escaped by the poller
        for (const fresh of Array.from(t.content.querySelectorAll("tr.server"))) {
          const row = document.getElementById(fresh.id);
          if (!row) continue;
          const changed = row.dataset.state !== fresh.dataset.state || row.dataset.level !== fresh.dataset.level;
          row.replaceWith(fresh);
          markPollRefused(fresh);
          if (changed) fresh.classList.add("flash");
        }
      } else {
        for (const n of names) pendingRows.add(n);
      }
    } catch (e) {
      for (const n of names) pendingRows.add(n); // tried again with the next event
    }
    rowsTimer = null;
    if (pendingRows.size) rowsTimer = setTimeout(fetchRows, 1000);
    applyFilter();
    recount();
    tick();
  }

  function recount() {
    const rows = $$("tr.server");
    for (const c of $$("#level-counts .count")) {
      c.querySelector("b").textContent = rows.filter((r) => r.dataset.level === c.dataset.level).length;
    }
    for (const b of $$(".filter")) {
      const n = b.dataset.state === "all" ? rows.length : rows.filter((r) => r.dataset.state === b.dataset.state).length;
      b.querySelector(".n").textContent = n;
    }
    const total = $("#fleet-total");
    if (total) total.textContent = fleetTotal(rows.map((r) => r.dataset.state));
  }

  function applyFilter() {
    for (const r of $$("tr.server")) {
      if (filter === "all" || r.dataset.state === filter) r.removeAttribute("hidden");
      else r.hidden = true;
    }
  }

  for (const b of $$(".filter")) {
    b.addEventListener("click", () => {
      filter = b.dataset.state;
      for (const o of $$(".filter")) o.classList.toggle("active", o === b);
      applyFilter();
    });
  }

  function reloadFleet() {
    for (const r of $$("tr.server")) updateRow(r.dataset.server);
  }

  // ---- server page ----
  const serverPage = $("#server-page");
  let partsTimer = null;
  let partsBusy = false;

  async function reloadParts() {
    if (partsBusy) { partsTimer = setTimeout(reloadParts, 300); return; }
    partsBusy = true;
    try {
      const r = await fetch("/servers/" + encodeURIComponent(serverPage.dataset.server) + "/parts");
      if (r.ok) {
        $("#live-parts").innerHTML = await r.text(); // rendered and escaped by the poller
        markPollRefused($("#live-parts"));
        drawCharts();
        tick();
      }
    } catch (e) { /* keep what is shown */ }
    partsBusy = false;
  }
  function scheduleParts() {
    clearTimeout(partsTimer);
    partsTimer = setTimeout(reloadParts, 150);
  }

  // ---- charts: careful SVG, drawn at the element's own pixel size ----
  // Rules: the viewBox is the element's size in CSS pixels (never stretched, so text keeps
  // its shape) and is redrawn on resize; labels sit in gutters, never over the line; the
  // x axis is time, with ticks on round clock times; the y range is robust: the quartiles
  // widened by Tukey's far fences (3 x the interquartile range, at least 0.5 ms or a tenth
  // of the median), never wider than the data; 0 is always in the RTT range, and the
  // +-max_clock_skew band in the offset range once offsets come within half of it. So one
  // spike cannot flatten the rest: points beyond the fences are drawn on the edge as a red
  // triangle with their value as title, and the caption says how many were clipped.
  const SVG = "http://www.w3.org/2000/svg";
  function svgEl(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function quantile(sorted, q) {
    const pos = (sorted.length - 1) * q, lo = Math.floor(pos), hi = Math.ceil(pos);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
  }
  function niceStep(span, count) {
    const raw = span / Math.max(1, count), mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }
  // As many decimals as the step needs (0.25 keeps two), never "-0".
  function fmtVal(v, step) {
    let d = 0;
    while (d < 4 && Math.abs(Math.round(step * 10 ** d) - step * 10 ** d) > 1e-6) d++;
    return (Math.abs(v) < step / 1e6 ? 0 : v).toFixed(d);
  }
  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
    .map((s) => s * 1000);
  function fmtTime(t, step) {
    const d = new Date(t), p = (n) => String(n).padStart(2, "0");
    const hm = p(d.getHours()) + ":" + p(d.getMinutes());
    if (step >= 86400000) return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate());
    return step < 60000 ? hm + ":" + p(d.getSeconds()) : hm;
  }
  // The y range: robust (see the rules above), and the points it leaves out.
  function yRange(vals, key, skew) {
    const sorted = vals.slice().sort((a, b) => a - b);
    const q1 = quantile(sorted, 0.25), q3 = quantile(sorted, 0.75), med = quantile(sorted, 0.5);
    const fence = Math.max(3 * (q3 - q1), Math.abs(med) * 0.1, 0.5);
    let lo = Math.max(sorted[0], q1 - fence), hi = Math.min(sorted[sorted.length - 1], q3 + fence);
    const margin = Math.max((hi - lo) * 0.1, 0.1);
    lo -= margin; hi += margin;
    if (key === "rtt") lo = Math.max(0, Math.min(lo, 0));
    // The band only when the offsets come near it: small offsets keep their own scale.
    if (key === "offset" && skew > 0 && Math.max(Math.abs(lo), Math.abs(hi)) > skew / 2 && hi - lo < 4 * skew) {
      lo = Math.min(lo, -skew); hi = Math.max(hi, skew);
    }
    if (hi - lo < 1e-9) hi = lo + 1;
    return [lo, hi];
  }
  function drawChart(svg, stats, points, key) {
    svg.replaceChildren();
    const W = Math.max(200, Math.round(svg.clientWidth || 300)), H = Math.max(100, Math.round(svg.clientHeight || 140));
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    const L = 46, R = 10, T = 10, B = 22; // gutters: y labels left, time labels below
    const pts = points.filter((p) => typeof p[key] === "number" && isFinite(p[key]));
    if (pts.length < 1) {
      svg.appendChild(svgEl("text", { x: L, y: H / 2, class: "empty" }, "no answered polls yet"));
      if (stats) stats.textContent = "";
      return;
    }
    const vals = pts.map((p) => p[key]);
    const skew = Number(svg.dataset.maxSkewMs || 0);
    const [lo, hi] = yRange(vals, key, skew);
    let t0 = pts[0].t, t1 = pts[pts.length - 1].t;
    if (t1 - t0 < 1000) { t0 -= 30000; t1 += 30000; }
    const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
    // y grid and labels
    const ys = niceStep(hi - lo, Math.max(2, Math.floor((H - T - B) / 28)));
    for (let v = Math.ceil(lo / ys) * ys; v <= hi + 1e-9; v += ys) {
      const yy = y(v);
      svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: yy, y2: yy, class: Math.abs(v) < ys / 1e6 ? "zero" : "grid" }));
      svg.appendChild(svgEl("text", { x: L - 5, y: yy + 3, class: "ylab" }, fmtVal(Math.abs(v) < ys / 1e6 ? 0 : v, ys)));
    }
    // the max_clock_skew band
    if (key === "offset" && skew > 0) {
      for (const b of [skew, -skew]) {
        if (b > lo && b < hi) svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: y(b), y2: y(b), class: "limit" }));
      }
    }
    // time axis
    const want = Math.max(2, Math.floor((W - L - R) / 90));
    const ts = TIME_STEPS.find((s) => (t1 - t0) / s <= want) || 86400000;
    const tz = new Date(t0).getTimezoneOffset() * 60000; // round ticks on local clock times
    svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
    for (let t = Math.ceil((t0 - tz) / ts) * ts + tz; t <= t1; t += ts) {
      const xx = x(t);
      svg.appendChild(svgEl("line", { x1: xx, x2: xx, y1: H - B, y2: H - B + 4, class: "axis" }));
      svg.appendChild(svgEl("text", { x: xx, y: H - 6, class: "xlab" }, fmtTime(t, ts)));
    }
    // the line, clipped to the range; clipped points marked
    const clampY = (v) => y(Math.min(hi, Math.max(lo, v)));
    svg.appendChild(svgEl("polyline", { points: pts.map((p) => x(p.t).toFixed(1) + "," + clampY(p[key]).toFixed(1)).join(" ") }));
    let clipped = 0;
    for (const p of pts) {
      const v = p[key];
      if (v >= lo && v <= hi) continue;
      clipped++;
      const xx = x(p.t), up = v > hi, yy = up ? T : H - B;
      const d = up ? `M${xx - 4},${yy + 6} L${xx + 4},${yy + 6} L${xx},${yy} Z` : `M${xx - 4},${yy - 6} L${xx + 4},${yy - 6} L${xx},${yy} Z`;
      const m = svgEl("path", { d, class: "clipped" });
      m.appendChild(svgEl("title", {}, v.toFixed(1) + " ms at " + new Date(p.t).toLocaleTimeString()));
      svg.appendChild(m);
    }
    const last = vals[vals.length - 1];
    const sorted = vals.slice().sort((a, b) => a - b);
    if (stats) {
      const f = (v) => (Math.abs(v) < 0.05 ? 0 : v).toFixed(1);
      let t = " · last " + f(last) + " · median " + f(quantile(sorted, 0.5))
        + " · max " + f(sorted[sorted.length - 1]);
      if (key === "offset") t = " · last " + f(last) + " · min " + f(sorted[0]) + " · max " + f(sorted[sorted.length - 1]);
      if (clipped) t += " · " + clipped + (clipped === 1 ? " spike" : " spikes") + " off scale (▲▼)";
      stats.textContent = t;
    }
  }
  function drawCharts() {
    const data = $("#chart-data");
    if (!data) return;
    let points = [];
    try { points = JSON.parse(data.textContent); } catch (e) { points = []; }
    const rtt = $("#chart-rtt"), off = $("#chart-offset");
    if (rtt) drawChart(rtt, $("#chart-rtt-stats"), points, "rtt");
    if (off) drawChart(off, $("#chart-offset-stats"), points, "offset");
  }
  let resizeTimer = null;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(drawCharts, 150); });

  // ---- poll now (both pages; buttons may be re-rendered, so delegate) ----
  // A 403 is the user's role, which a page does not outlive: once refused, every poll-now
  // button says so and stays disabled, re-rendered rows included.
  let pollRefused = null;
  function markPollRefused(root) {
    if (!pollRefused) return;
    for (const b of root.querySelectorAll("button.poll-now")) {
      b.disabled = true;
      b.textContent = "Not allowed";
      b.title = pollRefused;
    }
  }
  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("button.poll-now");
    if (!b) return;
    b.disabled = true;
    const label = b.textContent;
    b.textContent = "Polling…";
    try {
      const r = await fetch("/api/v1/servers/" + encodeURIComponent(b.dataset.server) + "/poll", { method: "POST" });
      if (r.ok) {
        const s = await r.json();
        if (fleet) updateRow(s.name);
        if (serverPage) await reloadParts();
      } else if (r.status === 403) {
        pollRefused = await r.json().then((j) => j.error, () => r.statusText);
        markPollRefused(document);
        return;
      } else {
        // A poll on request within the last second (429) or a failure: say so briefly.
        b.title = await r.json().then((j) => j.error, () => r.statusText);
        b.textContent = r.status === 429 ? "Polled just now" : "Failed";
        await new Promise((done) => setTimeout(done, 1500));
      }
    } catch (e) { /* shown by the live indicator */ }
    b.disabled = false;
    b.textContent = label;
  });

  // ---- operator forms: downtimes and acknowledgements, sent to the JSON API ----
  async function apiSend(method, url, body, errorSpan) {
    try {
      const init = { method, headers: { "content-type": "application/json" } };
      if (body !== undefined) init.body = JSON.stringify(body);
      const r = await fetch(url, init);
      if (r.ok) { location.reload(); return; }
      const e = await r.json().catch(() => ({ error: r.statusText }));
      if (errorSpan) errorSpan.textContent = e.error || r.statusText;
    } catch (e) {
      if (errorSpan) errorSpan.textContent = String(e);
    }
  }
  document.addEventListener("submit", (ev) => {
    const f = ev.target.closest("form.api");
    if (!f) return;
    ev.preventDefault();
    const v = (n) => f.elements[n].value;
    let body;
    if (f.dataset.kind === "downtime") {
      const start = new Date();
      const end = new Date(start.getTime() + Number(v("hours")) * 3600 * 1000);
      body = { server: v("server"), starts_at: start.toISOString(), ends_at: end.toISOString(), comment: v("comment") };
    } else {
      body = { comment: v("comment") };
    }
    apiSend(f.dataset.method, f.dataset.url, body, f.querySelector(".form-error"));
  });
  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("button.api-delete");
    if (!b) return;
    b.disabled = true;
    apiSend("DELETE", b.dataset.url, undefined, null);
  });

  // ---- notification channel health ----
  const channels = new Map();
  function showChannels() {
    const banner = $("#notify-banner");
    const bad = Array.from(channels.values()).filter((c) => c.failing);
    banner.hidden = bad.length === 0;
    banner.replaceChildren();
    for (const c of bad) {
      const p = el("div");
      p.appendChild(el("b", "", "Notifications via " + c.name + " (" + c.kind + ") are failing: "));
      p.appendChild(document.createTextNode((c.last_error || "") + " — " + c.failed + " given up, " + c.sent + " sent"));
      banner.appendChild(p);
    }
  }
  async function loadChannels() {
    try {
      const r = await fetch("/api/v1/notifications");
      if (r.ok) for (const c of await r.json()) channels.set(c.name, c);
      showChannels();
    } catch (e) { /* try again on the next event */ }
  }

  // ---- live events ----
  function connect() {
    const live = $("#live");
    const es = new EventSource("/api/v1/events");
    es.onopen = () => {
      live.textContent = "live";
      live.classList.add("on");
      if (fleet) reloadFleet();
      loadChannels();
    };
    es.onerror = () => {
      live.textContent = "reconnecting";
      live.classList.remove("on");
    };
    es.addEventListener("poll", (e) => {
      const s = JSON.parse(e.data);
      if (fleet) updateRow(s.name);
      if (serverPage && s.name === serverPage.dataset.server) scheduleParts();
    });
    for (const name of ["transition", "clock"]) {
      es.addEventListener(name, (e) => {
        const d = JSON.parse(e.data);
        if (serverPage && d.server === serverPage.dataset.server) scheduleParts();
      });
    }
    es.addEventListener("notify", (e) => {
      const c = JSON.parse(e.data);
      channels.set(c.name, c);
      showChannels();
    });
    es.addEventListener("lagged", () => {
      if (fleet) reloadFleet();
      if (serverPage) scheduleParts();
    });
  }

  drawCharts();
  tick();
  setInterval(tick, 1000);
  connect();
})();
