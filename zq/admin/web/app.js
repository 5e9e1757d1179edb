// The zq dashboard: polls the admin listener's JSON API once a second and shows what it
// finds, for a broker or a router (the `kind` of /api/overview says which). Plain DOM and
// two small <canvas> charts: no framework, no build step, nothing loaded from elsewhere
// (the listener's Content-Security-Policy forbids it, and inline scripts and styles).
// Server data goes in with textContent only: queue and consumer names are untrusted.
"use strict";

(() => {
  const POLL_MS = 1000;
  const TIMEOUT_MS = 5000;
  const WINDOW_S = 120; // seconds of history in the charts
  const GAP_S = 3.5; // a longer silence between two points breaks the line

  const $ = (id) => document.getElementById(id);

  // ---- formatting --------------------------------------------------------------------
  const int = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const one = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const two = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const DASH = "–";
  const count = (n) => (n == null ? DASH : int.format(n));
  const rate = (r) => (r == null ? DASH : (r >= 100 ? int : one).format(r));
  const ms = (m) => (m == null ? DASH : (m < 10 ? two : m < 100 ? one : int).format(m));
  const millis = (s) => (s == null ? DASH : ms(s * 1000)); // seconds, shown in ms
  const axis = new Intl.NumberFormat("en-US", { maximumFractionDigits: 3 });
  const duration = (s) => {
    if (s == null) return DASH;
    if (s < 60) return `${(s < 10 ? one : int).format(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  };
  const bytes = (n) => {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${(i === 0 || n >= 100 ? int : one).format(n)} ${units[i]}`;
  };
  const setText = (id, text) => {
    const el = $(id);
    if (el.textContent !== text) el.textContent = text;
  };

  // ---- the JSON API ------------------------------------------------------------------
  async function get(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    // #token=TOKEN: everything after "token=", as written (a token may hold + & = %).
    const hash = location.hash.slice(1);
    const token = hash.startsWith("token=") ? hash.slice("token=".length) : "";
    try {
      const res = await fetch(path, {
        headers: token ? { Authorization: `Bearer ${token}` } : {},
        cache: "no-store", signal: ctl.signal,
      });
      if (!res.ok) {
        let why = `${res.status} ${res.statusText}`;
        try { why = (await res.json()).error.message || why; } catch { /* not JSON */ }
        throw Object.assign(new Error(res.status === 401 ? `${why}: open the page as …/#token=TOKEN` : why),
          { status: res.status, api: true });
      }
      return await res.json();
    } catch (err) {
      if (err.api) throw err;
      const why = err.name === "AbortError" ? `no answer within ${TIMEOUT_MS / 1000} s`
        : err instanceof SyntaxError ? `${path} did not answer JSON` : "cannot reach the listener";
      throw Object.assign(new Error(why), { api: true });
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- tables: built from column lists, sorted by a click on a header ------------------
  class Table {
    // columns: [{key, label, num?, fmt?(value, row), value?(row), cls?(row)}];
    // mark(tr, row) sets the row's data-* attributes; empty: what an empty table says.
    constructor(id, columns, mark, empty, sort) {
      this.el = $(id);
      this.columns = columns;
      this.mark = mark;
      this.empty = empty;
      this.sort = sort || { key: columns[0].key, dir: 1 };
      this.rows = [];
      const head = this.el.createTHead().insertRow();
      this.heads = columns.map((c) => {
        const th = document.createElement("th");
        th.textContent = c.label;
        th.scope = "col";
        th.tabIndex = 0;
        th.dataset.key = c.key;
        if (c.num) th.classList.add("num");
        const toggle = () => {
          this.sort = { key: c.key, dir: this.sort.key === c.key ? -this.sort.dir : (c.num ? -1 : 1) };
          this.render(this.rows);
        };
        th.addEventListener("click", toggle);
        th.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(); } });
        head.appendChild(th);
        return th;
      });
      this.body = this.el.createTBody();
    }

    render(rows) {
      this.rows = rows;
      const col = this.columns.find((c) => c.key === this.sort.key) || this.columns[0];
      const val = (r) => (col.value ? col.value(r) : r[col.key]);
      const dir = this.sort.dir;
      const sorted = [...rows].sort((a, b) => {
        const x = val(a), y = val(b);
        if (x == null || y == null) return x == null ? (y == null ? 0 : 1) : -1; // blanks last
        return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * dir;
      });
      this.heads.forEach((th) => {
        th.setAttribute("aria-sort", th.dataset.key !== col.key ? "none" : dir > 0 ? "ascending" : "descending");
      });
      const out = sorted.map((row) => {
        const tr = document.createElement("tr");
        this.mark(tr, row);
        for (const c of this.columns) {
          const td = tr.insertCell();
          const v = c.value ? c.value(row) : row[c.key];
          td.textContent = c.fmt ? c.fmt(v, row) : v == null ? DASH : String(v);
          if (c.num) td.classList.add("num");
          const extra = c.cls && c.cls(row);
          if (extra) td.classList.add(...extra.split(" "));
        }
        return tr;
      });
      if (!out.length) {
        const tr = document.createElement("tr");
        const td = tr.insertCell();
        td.colSpan = this.columns.length;
        td.className = "empty";
        td.textContent = this.empty;
        out.push(tr);
      }
      this.body.replaceChildren(...out);
    }
  }

  // ---- charts: lines over the last WINDOW_S seconds on a <canvas> ----------------------
  class Chart {
    // series: [{key, label}]; each key has a colour in style.css (--c-KEY, .sw.KEY).
    constructor(id, legendId, series, fmt) {
      this.canvas = $(id);
      this.series = series;
      this.fmt = fmt;
      this.points = []; // {t (s, this page's clock), v: {key: number | null}}
      this.latest = new Map();
      const legend = $(legendId);
      for (const s of series) {
        const item = document.createElement("span");
        const sw = document.createElement("i");
        sw.className = `sw ${s.key}`;
        const value = document.createElement("b");
        this.latest.set(s.key, value);
        item.append(sw, `${s.label} `, value);
        legend.appendChild(item);
      }
    }

    push(values) {
      const t = performance.now() / 1000;
      this.points.push({ t, v: values });
      while (this.points.length && this.points[0].t < t - WINDOW_S - GAP_S) this.points.shift();
      for (const s of this.series) this.latest.get(s.key).textContent = this.fmt(values[s.key]);
      this.draw();
    }

    draw() {
      const c = this.canvas, dpr = window.devicePixelRatio || 1;
      const w = c.clientWidth, h = c.clientHeight;
      if (!w || !h) return;
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
        c.width = Math.round(w * dpr);
        c.height = Math.round(h * dpr);
      }
      const ctx = c.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, h);
      const css = getComputedStyle(c);
      const pad = { l: 52, r: 10, t: 10, b: 22 };
      const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
      const now = performance.now() / 1000;
      const x = (t) => pad.l + pw * (1 - (now - t) / WINDOW_S);
      let top = 0;
      for (const p of this.points) for (const s of this.series) top = Math.max(top, p.v[s.key] || 0);
      const { step, n } = gridOf(top);
      const y = (v) => pad.t + ph * (1 - v / (step * n));

      ctx.font = `11px ${css.fontFamily}`;
      ctx.lineWidth = 1;
      ctx.strokeStyle = css.getPropertyValue("--grid").trim() || "#e5e7eb";
      ctx.fillStyle = css.getPropertyValue("--muted").trim() || "#6b7280";
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      for (let i = 0; i <= n; i += 1) {
        const v = step * i, yy = Math.round(y(v)) + 0.5;
        ctx.beginPath(); ctx.moveTo(pad.l, yy); ctx.lineTo(pad.l + pw, yy); ctx.stroke();
        ctx.fillText(axis.format(v), pad.l - 6, yy);
      }
      ctx.textBaseline = "top";
      for (const [ago, text] of [[WINDOW_S, "−2 min"], [60, "−1 min"], [0, "now"]]) {
        ctx.textAlign = ago === WINDOW_S ? "left" : ago === 0 ? "right" : "center";
        ctx.fillText(text, x(now - ago), pad.t + ph + 6);
      }

      ctx.save();
      ctx.beginPath(); ctx.rect(pad.l, pad.t - 2, pw, ph + 4); ctx.clip();
      ctx.lineWidth = 2;
      ctx.lineJoin = "round";
      for (const s of this.series) {
        const colour = css.getPropertyValue(`--c-${s.key}`).trim();
        ctx.strokeStyle = ctx.fillStyle = colour;
        ctx.beginPath();
        const pts = this.points.filter((p) => p.v[s.key] != null);
        pts.forEach((p, i) => {
          const joined = (q) => q && Math.abs(p.t - q.t) <= GAP_S;
          const [px, py] = [x(p.t), y(p.v[s.key])];
          if (joined(pts[i - 1])) ctx.lineTo(px, py);
          else ctx.moveTo(px, py);
          if (!joined(pts[i - 1]) && !joined(pts[i + 1])) ctx.fillRect(px - 2, py - 2, 4, 4); // alone: a dot
        });
        ctx.stroke();
      }
      ctx.restore();
    }
  }

  function gridOf(top) { // n (at most 4) lines a round step apart, the last at or above top
    if (!(top > 0)) return { step: 0.25, n: 4 };
    const raw = top / 4, p = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((v) => v >= raw * (1 - 1e-9));
    return { step, n: Math.max(1, Math.ceil(top / step - 1e-9)) };
  }

  // ---- a broker --------------------------------------------------------------------
  const num = true;
  let clock = Date.now() / 1000; // the server's wall clock at its last overview (for "ago")
  const broker = {
    rates: new Chart("chart-rates", "legend-rates",
      [{ key: "publish", label: "publish" }, { key: "deliver", label: "deliver" }, { key: "ack", label: "ack" }], rate),
    latency: new Chart("chart-latency", "legend-latency",
      [{ key: "deliver_p99", label: "publish→deliver" }, { key: "confirm_p99", label: "publish→confirm" },
        { key: "commit_p99", label: "store commit" }], ms),
    queues: new Table("queues", [
      { key: "name", label: "queue" },
      { key: "ready", label: "ready", num, fmt: count }, // on disk included
      { key: "delayed", label: "delayed", num, fmt: count },
      { key: "in_flight", label: "in flight", num, fmt: count },
      { key: "consumers", label: "consumers", num, fmt: count },
      { key: "publish", label: "publish/s", num, fmt: rate, value: (q) => q.rates.publish },
      { key: "deliver", label: "deliver/s", num, fmt: rate, value: (q) => q.rates.deliver },
      { key: "oldest_age", label: "oldest", num, fmt: duration,
        value: (q) => (q.ready || q.delayed ? q.oldest_age : null) }, // 0 when empty
      { key: "dead", label: "dead", num, fmt: count, cls: (q) => (q.dead ? "warn" : "") },
      { key: "paused", label: "paused", fmt: (p) => (p ? "paused" : ""), cls: (q) => (q.paused ? "badge-cell" : "") },
    ], (tr, q) => { tr.dataset.queue = q.name; }, "No queues yet: publish to one and it appears here."),
    consumers: new Table("consumers", [
      { key: "name", label: "consumer", value: (c) => c.name || c.id.slice(0, 12) },
      { key: "queue", label: "queue" },
      { key: "in_flight", label: "in flight", num, fmt: count },
      { key: "credit", label: "credit", num, fmt: count },
      { key: "state", label: "state", cls: (c) => `state state-${c.active ? c.state : "paused"}`,
        value: (c) => (c.active ? c.state : `${c.state}, paused`) },
    ], (tr, c) => { tr.dataset.consumer = c.id; tr.dataset.queue = c.queue; }, "No consumers."),
    dead: new Table("dead", [
      { key: "queue", label: "queue" },
      { key: "origin", label: "from" },
      { key: "id", label: "id", num },
      { key: "reason", label: "last error", cls: () => "reason" },
      { key: "attempts", label: "attempts", num, fmt: count },
      { key: "dead_at", label: "when", num, fmt: (t) => (t == null ? DASH : `${duration(Math.max(0, clock - t))} ago`) },
    ], (tr, d) => { tr.dataset.id = d.id; tr.dataset.queue = d.queue; }, "No dead letters.", { key: "dead_at", dir: -1 }),
  };
  async function pollBroker(ov) {
    const [qs, cs, ds] = await Promise.all([get("api/queues"), get("api/consumers"), get("api/dead")]);
    clock = ov.time;
    const st = ov.store || {};
    const files = st.database_bytes ? ` · ${bytes(st.database_bytes + (st.wal_bytes || 0))}` : "";
    setText("storage", `${ov.storage || st.kind || "?"}${st.fsync ? ` (fsync ${st.fsync})` : ""}${files}${st.full ? " · FULL" : ""}`);
    $("storage").classList.toggle("bad", Boolean(st.full));
    setText("rate-publish", rate(ov.rates.publish));
    setText("rate-deliver", rate(ov.rates.deliver));
    setText("rate-ack", rate(ov.rates.ack));
    setText("ready", count(ov.ready));
    setText("in-flight", count(ov.in_flight));
    const lat = ov.latency_s || {};
    const p99 = (k) => (lat[k] ? lat[k].p99 : null);
    setText("p99-deliver", millis(p99("publish_deliver")));
    setText("p99-confirm", millis(p99("publish_confirm")));
    broker.rates.push(ov.rates);
    const inMs = (k) => (p99(k) == null ? null : p99(k) * 1000);
    broker.latency.push({ deliver_p99: inMs("publish_deliver"), confirm_p99: inMs("publish_confirm"),
      commit_p99: inMs("store_commit") });
    broker.queues.render(qs.queues);
    shownOf("queues-count", qs.queues.length, qs.total);
    broker.consumers.render(cs.consumers);
    shownOf("consumers-count", cs.consumers.length, cs.total);
    broker.dead.render(ds.dead);
    shownOf("dead-count", ds.dead.length, ds.total);
  }

  function shownOf(id, shown, total) {
    setText(id, shown < total ? `${count(shown)} of ${count(total)}` : count(total));
  }

  // ---- a router --------------------------------------------------------------------
  const router = {
    chart: new Chart("chart-router", "legend-router",
      [{ key: "forwarded", label: "to brokers" }, { key: "relayed", label: "to clients" },
        { key: "forwarded_publishes", label: "publishes" }], rate),
    links: new Table("links", [
      { key: "broker", label: "broker" },
      { key: "state", label: "state", cls: (l) => `state state-${l.state}` },
      { key: "endpoint", label: "endpoint" },
      { key: "up_since_s", label: "up for", num, fmt: duration },
      { key: "last_heard_s", label: "last heard", num, fmt: (s) => (s == null ? DASH : `${duration(s)} ago`) },
      { key: "in_flight_publishes", label: "in-flight publishes", num, fmt: count },
      { key: "held_frames", label: "held frames", num, fmt: count },
      { key: "errors", label: "errors", num, fmt: count, cls: (l) => (l.errors ? "warn" : "") },
      { key: "forwarded_out", label: "forwarded out", num, fmt: count },
      { key: "forwarded_in", label: "forwarded in", num, fmt: count },
      { key: "queues", label: "queues", num, fmt: count },
    ], (tr, l) => { tr.dataset.broker = l.broker; tr.dataset.state = l.state; }, "No brokers in the cluster file."),
    queues: new Table("queue-map", [{ key: "name", label: "queue" }, { key: "broker", label: "broker" }],
      (tr, q) => { tr.dataset.queue = q.name; tr.dataset.broker = q.broker; }, "No queues yet."),
    last: null, // {time, counters} of the previous overview: rates are their differences
  };

  async function pollRouter(ov) {
    const [cl, qs] = await Promise.all([get("api/cluster"), get("api/queues")]);
    setText("cluster", `${ov.cluster.id} v${ov.cluster.version}`);
    setText("links-up", `${ov.links_up} / ${ov.links_total}`);
    $("links-up").classList.toggle("bad", ov.links_up < ov.links_total);
    setText("router-queues-total", count(ov.queues_total));
    setText("clients", count(ov.clients));
    const rates = {};
    const prev = router.last, dt = prev ? ov.time - prev.time : 0;
    for (const k of ["forwarded", "relayed", "forwarded_publishes"]) {
      rates[k] = dt > 0 ? Math.max(0, (ov.counters[k] || 0) - (prev.counters[k] || 0)) / dt : null;
    }
    router.last = { time: ov.time, counters: ov.counters };
    setText("rate-forwarded-publishes", rate(rates.forwarded_publishes));
    setText("rate-forwarded", rate(rates.forwarded));
    setText("rate-relayed", rate(rates.relayed));
    router.chart.push(rates);
    const links = Object.entries(cl.brokers || {}).map(([id, l]) => ({ broker: id, ...l }));
    router.links.render(links);
    setText("links-count", count(links.length));
    router.queues.render(qs.queues);
    shownOf("queue-map-count", qs.queues.length, qs.total);
  }

  // ---- the loop --------------------------------------------------------------------
  let kind = null;
  let lastGood = null;

  async function poll() {
    try {
      const ov = await get("api/overview");
      if (ov.kind !== kind) {
        kind = ov.kind;
        document.body.classList.remove("kind-broker", "kind-router");
        document.body.classList.add(`kind-${kind}`);
        setText("kind", kind);
      }
      document.title = `zq ${kind} ${ov.id}`;
      setText("node-id", String(ov.id));
      setText("version", String(ov.version));
      setText("uptime", duration(ov.uptime_s));
      await (kind === "router" ? pollRouter(ov) : pollBroker(ov));
      lastGood = new Date();
      connected(true);
    } catch (err) {
      if (!err.api) console.error("zq dashboard:", err); // a bug here, not the listener's silence
      connected(false, err.message || "no answer", err.status === 401);
      drawCharts(); // the lines keep moving left: how long it has been silent shows
    }
  }

  function connected(ok, why, unauthorized) {
    const status = $("status");
    status.classList.remove("connecting");
    status.classList.toggle("live", ok);
    status.classList.toggle("down", !ok);
    setText("status", ok ? "live" : "disconnected");
    status.title = ok ? `updated ${lastGood.toLocaleTimeString()}` : why;
    $("banner").hidden = ok;
    document.body.classList.toggle("stale", !ok);
    if (!ok) {
      setText("banner-title", unauthorized ? "Not authorized." : "Disconnected.");
      setText("banner-reason", `${why[0].toUpperCase()}${why.slice(1).replace(/\.$/, "")}.`);
      setText("banner-since", lastGood ? `Retrying every second; the figures below are from ${
        lastGood.toLocaleTimeString()}.` : "Retrying every second.");
    }
  }

  async function loop() { // one poll at a time, a second apart: a slow answer never piles up
    const started = performance.now();
    await poll();
    setTimeout(loop, Math.max(0, POLL_MS - (performance.now() - started)));
  }

  function drawCharts() {
    for (const c of [broker.rates, broker.latency, router.chart]) c.draw();
  }

  window.addEventListener("resize", drawCharts);
  loop();
})();
