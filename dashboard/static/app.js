// fedzip dashboard: polls api/state and draws the charts as inline SVG.
// No dependencies and no build step; every chart's <svg> carries
// data-points (points drawn) and data-rounds (last round shown), and every
// series <path> its own data-points, so a test can read them from the DOM.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const W = 480, H = 240, M = { l: 56, r: 12, t: 22, b: 26 };
const rounds = new Map(); // round number -> round
let state = null;
let last = 0; // highest round received

function el(name, attrs, parent) {
  const e = document.createElementNS(SVGNS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}

function text(parent, x, y, s, anchor) {
  const t = el("text", { x: x, y: y, "text-anchor": anchor || "start" }, parent);
  t.textContent = s;
  return t;
}

function human(n) {
  if (!isFinite(n)) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : 1)) + " " + u[i];
}

// si formats a byte count with decimal units, for log axes.
function si(n) {
  const u = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return +n.toPrecision(3) + " " + u[i];
}

// fmt formats a tick value; dec is the number of decimals its step needs.
function fmt(v, dec) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.001 || a >= 1e6)) return v.toExponential(1);
  return v.toFixed(Math.max(0, Math.min(dec || 0, 6)));
}

// niceStep returns a round step that cuts [lo, hi] into about n parts.
function niceStep(lo, hi, n) {
  const step0 = (hi - lo || 1) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(step0)));
  return [1, 2, 2.5, 5, 10].map(s => s * mag).find(s => s >= step0) || 10 * mag;
}

// niceTicks returns about n round numbers spanning [lo, hi].
function niceTicks(lo, hi, n) {
  const step = niceStep(lo, hi, n);
  const out = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

// lineChart draws series [{name, points: [[x, y], ...]}] on svg. opt.log
// uses a log10 y axis (non-positive values are skipped); opt.yMin and
// opt.yMax fix the y range; opt.yFmt formats y tick labels.
function lineChart(svg, series, opt) {
  opt = opt || {};
  svg.replaceChildren();
  const pts = [];
  series.forEach(s => {
    s.points = s.points.filter(p => isFinite(p[1]) && (!opt.log || p[1] > 0));
    pts.push(...s.points);
  });
  svg.dataset.points = pts.length;
  svg.dataset.rounds = pts.length ? Math.max(...pts.map(p => p[0])) : 0;
  if (!pts.length) {
    text(svg, W / 2, H / 2, opt.empty || "no data yet", "middle").setAttribute("class", "empty");
    return;
  }
  const tf = opt.log ? Math.log10 : (v => v);
  let x0 = Math.min(...pts.map(p => p[0])), x1 = Math.max(...pts.map(p => p[0]));
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  let y0 = opt.yMin !== undefined ? opt.yMin : Math.min(...pts.map(p => tf(p[1])));
  let y1 = opt.yMax !== undefined ? opt.yMax : Math.max(...pts.map(p => tf(p[1])));
  if (y0 === y1) { y0 -= opt.log ? 1 : Math.abs(y0) * 0.1 || 1; y1 += opt.log ? 1 : Math.abs(y1) * 0.1 || 1; }
  if (opt.log) { y0 = Math.floor(y0); y1 = Math.ceil(y1); }
  else {
    // Widen the range to whole ticks, within the fixed bounds.
    const st = niceStep(y0, y1, 5);
    if (opt.yMin === undefined) y0 = +(Math.floor(y0 / st + 1e-9) * st).toPrecision(12);
    if (opt.yMax === undefined) y1 = +(Math.ceil(y1 / st - 1e-9) * st).toPrecision(12);
  }
  const X = x => M.l + (x - x0) / (x1 - x0) * (W - M.l - M.r);
  const Y = y => H - M.b - (tf(y) - y0) / (y1 - y0) * (H - M.t - M.b);
  const yTicks = opt.log ? niceTicks(y0, y1, Math.min(5, y1 - y0)).filter(Number.isInteger).map(e => Math.pow(10, e))
    : niceTicks(y0, y1, 5);
  const step = String(+niceStep(y0, y1, 5).toPrecision(6));
  const dec = opt.log || !step.includes(".") ? 0 : step.split(".")[1].length;
  const yFmt = opt.yFmt || fmt;
  yTicks.forEach(v => {
    const y = Y(v);
    el("line", { x1: M.l, x2: W - M.r, y1: y, y2: y, class: "grid-line" }, svg);
    text(svg, M.l - 6, y + 4, yFmt(v, dec), "end");
  });
  niceTicks(x0, x1, 6).filter(Number.isInteger).forEach(v => {
    text(svg, X(v), H - M.b + 16, String(v), "middle");
  });
  el("line", { x1: M.l, x2: M.l, y1: M.t, y2: H - M.b, class: "axis" }, svg);
  el("line", { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b, class: "axis" }, svg);
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const d = s.points.map((p, j) => (j ? "L" : "M") + X(p[0]).toFixed(1) + " " + Y(p[1]).toFixed(1)).join(" ");
    el("path", { d: d, class: "series s" + i, "data-series": s.name, "data-points": s.points.length }, svg);
    if (s.points.length < 60) {
      s.points.forEach(p => el("circle", { cx: X(p[0]).toFixed(1), cy: Y(p[1]).toFixed(1), r: 2.5, class: "s" + i }, svg));
    }
  });
  // Legend, top right: the series that have points.
  let lx = W - M.r;
  series.slice().reverse().forEach((s, k) => {
    const i = series.length - 1 - k;
    if (!s.points.length) return;
    text(svg, lx, 12, s.name, "end");
    lx -= s.name.length * 6.2 + 6;
    el("rect", { x: lx - 10, y: 4, width: 10, height: 10, class: "s" + i }, svg);
    lx -= 22;
  });
}

// barChart draws, per round, the reported clients and above them the
// missing ones.
function barChart(svg, rs) {
  svg.replaceChildren();
  svg.dataset.points = rs.length;
  svg.dataset.rounds = rs.length ? rs[rs.length - 1].round : 0;
  if (!rs.length) {
    text(svg, W / 2, H / 2, "no data yet", "middle").setAttribute("class", "empty");
    return;
  }
  const maxSel = Math.max(1, ...rs.map(r => Math.max(r.selected, r.reported)));
  const x0 = rs[0].round, x1 = rs[rs.length - 1].round;
  const n = x1 - x0 + 1;
  const bw = (W - M.l - M.r) / n;
  const Y = v => H - M.b - v / maxSel * (H - M.t - M.b);
  niceTicks(0, maxSel, 4).filter(Number.isInteger).forEach(v => {
    el("line", { x1: M.l, x2: W - M.r, y1: Y(v), y2: Y(v), class: "grid-line" }, svg);
    text(svg, M.l - 6, Y(v) + 4, String(v), "end");
  });
  rs.forEach(r => {
    const x = M.l + (r.round - x0) * bw + bw * 0.1;
    const w = Math.max(bw * 0.8, 0.5);
    const missing = Math.max(r.selected - r.reported, 0);
    el("rect", { x: x.toFixed(1), y: Y(r.reported).toFixed(1), width: w.toFixed(2), height: (Y(0) - Y(r.reported)).toFixed(1),
      class: "bar-ok", "data-round": r.round, "data-reported": r.reported }, svg);
    if (missing) {
      el("rect", { x: x.toFixed(1), y: Y(r.reported + missing).toFixed(1), width: w.toFixed(2), height: (Y(r.reported) - Y(r.reported + missing)).toFixed(1),
        class: "bar-missing", "data-round": r.round, "data-missing": missing }, svg);
    }
  });
  niceTicks(x0, x1, 6).filter(Number.isInteger).forEach(v => {
    text(svg, M.l + (v - x0 + 0.5) * bw, H - M.b + 16, String(v), "middle");
  });
  el("line", { x1: M.l, x2: M.l, y1: M.t, y2: H - M.b, class: "axis" }, svg);
  el("line", { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b, class: "axis" }, svg);
  text(svg, W - M.r, 12, "missing", "end");
  el("rect", { x: W - M.r - 58, y: 4, width: 10, height: 10, class: "bar-missing" }, svg);
  text(svg, W - M.r - 66, 12, "reported", "end");
  el("rect", { x: W - M.r - 128, y: 4, width: 10, height: 10, class: "bar-ok" }, svg);
}

function render() {
  const s = state;
  const rs = Array.from(rounds.values()).sort((a, b) => a.round - b.round);
  document.title = "fedzip · " + (s.title || s.mode);
  document.getElementById("title").textContent = s.title || "fedzip";
  document.getElementById("run").textContent = [s.mode + (s.node ? " " + s.node : ""), s.model, s.strategy,
    s.upload_codec ? "upload " + s.upload_codec : ""].filter(Boolean).join(" · ");
  const closed = rs.length ? rs[rs.length - 1].round : 0;
  const pct = s.total_rounds ? Math.min(100, 100 * closed / s.total_rounds) : 0;
  document.getElementById("bar-fill").style.width = (s.done ? 100 : pct) + "%";
  let line;
  if (s.done) line = "finished: " + closed + " rounds";
  else if (s.phase === "collecting") {
    line = "round " + s.round + (s.total_rounds ? " of " + s.total_rounds : "") + " · collecting · " + s.received + " of " + s.selected + " updates";
    if (s.deadline) line += " · deadline in " + Math.max(0, Math.round((Date.parse(s.deadline) - Date.now()) / 1000)) + " s";
  } else line = "round " + closed + (s.total_rounds ? " of " + s.total_rounds : "") + " closed · " + s.phase;
  document.getElementById("progress-text").textContent = line;

  const acc = rs.filter(r => r.test_accuracy !== undefined);
  // Federated evaluation: plotted at the model version it evaluated (the
  // round before), where the test accuracy of that model is plotted.
  const fed = rs.filter(r => r.fed_accuracy !== undefined);
  const up = rs.reduce((a, r) => a + r.upload_bytes, 0), down = rs.reduce((a, r) => a + r.download_bytes, 0);
  const dense = rs.reduce((a, r) => a + (r.ratio > 0 ? r.ratio * r.upload_bytes : 0), 0);
  const upRated = rs.reduce((a, r) => a + (r.ratio > 0 ? r.upload_bytes : 0), 0);
  // The total ratio: dense FedAvg's bytes over the rounds that know them.
  const denseTotal = rs.reduce((a, r) => a + (r.dense_bytes || 0), 0);
  const totalRated = rs.reduce((a, r) => a + (r.dense_bytes ? r.upload_bytes + r.download_bytes : 0), 0);
  const wire = rs.reduce((a, r) => a + (r.wire_bytes || 0), 0);
  const totals = [
    ["rounds", String(closed) + (s.total_rounds ? " / " + s.total_rounds : "")],
    ["test accuracy", acc.length ? (100 * acc[acc.length - 1].test_accuracy).toFixed(2) + " %" : "–"],
    ["best", acc.length ? (100 * Math.max(...acc.map(r => r.test_accuracy))).toFixed(2) + " %" : "–"],
    ["federated accuracy", fed.length ? (100 * fed[fed.length - 1].fed_accuracy).toFixed(2) + " %" : "–"],
    ["total bytes", human(up + down)],
    ["vs dense FedAvg", totalRated ? (denseTotal / totalRated).toFixed(1) + "× smaller" : "–"],
    ["uploaded", human(up)], ["downloaded", human(down)],
  ];
  if (wire) totals.push(["on the wire", human(wire)]);
  totals.push(["upload compression", upRated ? (dense / upRated).toFixed(1) + "×" : "–"]);
  const dl = document.getElementById("totals");
  dl.replaceChildren();
  totals.forEach(([k, v]) => {
    const d = document.createElement("div");
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k; dd.textContent = v;
    d.append(dt, dd); dl.appendChild(d);
  });

  lineChart(document.getElementById("chart-accuracy"),
    [{ name: "test accuracy", points: acc.map(r => [r.round, r.test_accuracy]) },
     { name: "federated accuracy", points: fed.map(r => [r.fed_version || 0, r.fed_accuracy]) }],
    { yFmt: (v, dec) => (100 * v).toFixed(Math.max(0, dec - 2)) + "%", empty: "no evaluation yet" });
  lineChart(document.getElementById("chart-loss"), [
    { name: "test loss", points: rs.filter(r => r.test_loss !== undefined).map(r => [r.round, r.test_loss]) },
    { name: "train loss", points: rs.filter(r => r.train_loss !== undefined).map(r => [r.round, r.train_loss]) },
    { name: "federated loss", points: fed.filter(r => r.fed_loss !== undefined).map(r => [r.fed_version || 0, r.fed_loss]) },
  ]);
  const bytesSeries = [
    { name: "total", points: rs.map(r => [r.round, r.upload_bytes + r.download_bytes]) },
    { name: "upload", points: rs.map(r => [r.round, r.upload_bytes]) },
    { name: "download", points: rs.map(r => [r.round, r.download_bytes]) },
  ];
  if (wire) bytesSeries.push({ name: "on the wire", points: rs.filter(r => r.wire_bytes > 0).map(r => [r.round, r.wire_bytes]) });
  lineChart(document.getElementById("chart-bytes"), bytesSeries, { log: true, yFmt: si });
  lineChart(document.getElementById("chart-ratio"),
    [{ name: "total ratio", points: rs.filter(r => r.dense_bytes > 0 && r.upload_bytes + r.download_bytes > 0)
        .map(r => [r.round, r.dense_bytes / (r.upload_bytes + r.download_bytes)]) },
     { name: "upload ratio", points: rs.filter(r => r.ratio > 0).map(r => [r.round, r.ratio]) }],
    { log: true, yFmt: v => fmt(v, 0) + "×" }); // a log axis: a total of 2× beside an upload of 400×
  barChart(document.getElementById("chart-clients"), rs);

  const cluster = document.getElementById("cluster");
  cluster.hidden = s.mode !== "coordinator";
  if (!cluster.hidden) {
    const tb = document.querySelector("#nodes tbody");
    tb.replaceChildren();
    (s.nodes || []).forEach(n => {
      const tr = document.createElement("tr");
      if (n.self) tr.className = "self";
      tr.dataset.role = n.role;
      [n.id + (n.self ? " (this node)" : ""), n.role, n.grpc_addr || "", n.raft_addr, n.term || "", n.commit_index || "", n.applied_index || ""]
        .forEach((v, i) => {
          const td = document.createElement("td");
          td.textContent = v;
          if (i === 1) td.className = "role-" + n.role;
          tr.appendChild(td);
        });
      tb.appendChild(tr);
    });
    document.getElementById("clients-line").textContent =
      "clients: " + (s.registered || 0) + " registered, " + (s.alive || 0) + " alive";
  }
}

function setConn(cls, msg) {
  const c = document.getElementById("conn");
  c.className = "badge " + cls;
  c.textContent = msg;
}

async function poll() {
  let wait = 1000;
  try {
    // The session cookie set by opening the page as /?token=TOKEN goes
    // with the request (same origin); the token is never in a data URL.
    const res = await fetch("api/state?since=" + last, { credentials: "same-origin", cache: "no-store" });
    if (res.status === 401) {
      setConn("bad", "unauthorized: open this page once as /?token=TOKEN");
      wait = 5000;
    } else if (!res.ok) {
      setConn("bad", "error " + res.status);
    } else {
      state = await res.json();
      if (state.rounds_total < rounds.size) { rounds.clear(); last = 0; } // the node restarted: fetch all again
      state.rounds.forEach(r => { rounds.set(r.round, r); last = Math.max(last, r.round); });
      setConn("ok", state.done ? "finished" : "live");
      render();
      if (state.done) wait = 5000;
    }
  } catch (e) {
    setConn("bad", "disconnected");
    wait = 2000;
  }
  setTimeout(poll, wait);
}

poll();
