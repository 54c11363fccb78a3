// Rollcall dashboard script: keeps the server-rendered pages live from the poller's
// server-sent events (GET /api/v1/events) and runs the "Poll now" buttons and filters.
// Rules: no framework, no build step, nothing fetched from elsewhere; every value put into
// the page goes through textContent (never innerHTML) except the server page's parts,
// which are HTML rendered (and escaped) by the poller itself.
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  function levelClass(levels, name) {
    const i = Math.max(0, levels.indexOf(name));
    if (i === 0) return "lvl-first";
    return i + 1 >= levels.length ? "lvl-last" : "lvl-mid";
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function timeEl(iso) {
    if (!iso) return el("span", "none", "—");
    const t = el("time", "rel", iso);
    t.setAttribute("datetime", iso);
    return t;
  }

  function msText(v) {
    return v === null || v === undefined ? "—" : v.toFixed(1) + " ms";
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

  function deficiencies(list) {
    if (!list.length) return el("span", "none", "none");
    const ul = el("ul", "defs");
    for (const d of list) {
      const li = el("li", "sev-" + d.severity, d.source);
      li.title = d.summary;
      ul.appendChild(li);
    }
    return ul;
  }

  function setCell(row, cls, node) {
    const td = row.querySelector("td." + cls);
    if (!td) return;
    td.replaceChildren(node);
  }

  // ---- fleet page ----
  const fleet = $("#fleet");
  const levels = fleet ? fleet.dataset.levels.split(",") : [];
  let filter = "all";

  function updateRow(s) {
    const row = document.getElementById("server-" + s.name);
    if (!row) return;
    const changed = row.dataset.state !== s.state || row.dataset.level !== s.level;
    row.dataset.state = s.state;
    row.dataset.level = s.level;
    setCell(row, "level", el("span", "badge " + levelClass(levels, s.level), s.level));
    setCell(row, "state", el("span", "badge st-" + s.state, s.state));
    setCell(row, "deficiencies", deficiencies(s.deficiencies));
    setCell(row, "last", timeEl(s.last_poll_at));
    setCell(row, "next", timeEl(s.next_poll_at));
    setCell(row, "offset", document.createTextNode(msText(s.clock_offset_ms)));
    setCell(row, "rtt", document.createTextNode(msText(s.rtt_ms)));
    if (changed) {
      row.classList.remove("flash");
      void row.offsetWidth;
      row.classList.add("flash");
    }
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
  }

  function applyFilter() {
    for (const r of $$("tr.server")) r.hidden = filter !== "all" && r.dataset.state !== filter;
  }

  for (const b of $$(".filter")) {
    b.addEventListener("click", () => {
      filter = b.dataset.state;
      for (const o of $$(".filter")) o.classList.toggle("active", o === b);
      applyFilter();
    });
  }

  async function reloadFleet() {
    try {
      const r = await fetch("/api/v1/servers");
      if (r.ok) for (const s of await r.json()) updateRow(s);
    } catch (e) { /* the next event brings it up to date */ }
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

  function drawChart(svg, points, key) {
    svg.replaceChildren();
    const ns = "http://www.w3.org/2000/svg";
    const vals = points.map((p) => p[key]);
    if (vals.length < 1) {
      const t = document.createElementNS(ns, "text");
      t.setAttribute("x", "6"); t.setAttribute("y", "44");
      t.textContent = "no answered polls yet";
      svg.appendChild(t);
      return;
    }
    let lo = Math.min(0, ...vals), hi = Math.max(0, ...vals);
    if (hi - lo < 1e-9) hi = lo + 1;
    const W = 300, H = 80, pad = 6;
    const t0 = points[0].t, t1 = points[points.length - 1].t;
    const x = (t) => (t1 === t0 ? W / 2 : ((t - t0) / (t1 - t0)) * W);
    const y = (v) => H - pad - ((v - lo) / (hi - lo)) * (H - 2 * pad);
    const zero = document.createElementNS(ns, "line");
    zero.setAttribute("class", "zero");
    zero.setAttribute("x1", "0"); zero.setAttribute("x2", String(W));
    zero.setAttribute("y1", String(y(0))); zero.setAttribute("y2", String(y(0)));
    svg.appendChild(zero);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.map((p) => x(p.t).toFixed(1) + "," + y(p[key]).toFixed(1)).join(" "));
    svg.appendChild(line);
    for (const [v, yy] of [[hi, 9], [lo, H - 2]]) {
      const t = document.createElementNS(ns, "text");
      t.setAttribute("x", "3"); t.setAttribute("y", String(yy));
      t.textContent = v.toFixed(1);
      svg.appendChild(t);
    }
  }
  function drawCharts() {
    const data = $("#chart-data");
    if (!data) return;
    let points = [];
    try { points = JSON.parse(data.textContent); } catch (e) { points = []; }
    const rtt = $("#chart-rtt"), off = $("#chart-offset");
    if (rtt) drawChart(rtt, points, "rtt");
    if (off) drawChart(off, points, "offset");
  }

  // ---- poll now (both pages; buttons may be re-rendered, so delegate) ----
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
        if (fleet) updateRow(s);
        if (serverPage) await reloadParts();
      }
    } catch (e) { /* shown by the live indicator */ }
    b.disabled = false;
    b.textContent = label;
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
      if (fleet) updateRow(s);
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
