// syncclass ops dashboard: live lesson health over server-sent events, charts on <canvas>.
// No libraries (the classroom network is closed); charts are small line plots drawn here.
"use strict";

const state = {
  fields: [],          // history column names after ts_ms
  history: {},         // classroom_id -> [[ts_ms, ...fields]]
  mixerHistory: [],    // [[ts_ms, cpu, lag]]
  historyMs: 300000,
  thresholds: {},
};

const $ = (sel, root = document) => root.querySelector(sel);

function fmt(v, digits = 1) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(digits);
  return String(v);
}

function elapsed(s) {
  if (s === null || s === undefined) return "–";
  const m = Math.floor(s / 60), sec = Math.floor(s % 60);
  return `${m}:${String(sec).padStart(2, "0")}`;
}

function col(name) { return 1 + state.fields.indexOf(name); }

function trim(rows, now) {
  while (rows.length && rows[0][0] < now - state.historyMs) rows.shift();
}

// Line chart: series = [{idx, color}], optional horizontal threshold lines.
function drawChart(canvas, rows, series, lines = [], fixedMax = null) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  // The x axis spans the data so far (at least a minute), at most the kept history.
  const now = rows.length ? rows[rows.length - 1][0] : Date.now();
  const first = rows.length ? rows[0][0] : now;
  const span = Math.min(state.historyMs, Math.max(60000, now - first));
  const t0 = now - span;
  let max = fixedMax || 0;
  for (const r of rows) for (const s of series) if (r[s.idx] !== null && r[s.idx] > max) max = r[s.idx];
  for (const l of lines) if (!fixedMax && l.value * 1.2 > max && max > l.value * 0.5) max = l.value * 1.2;
  if (max <= 0) max = 1;
  max *= 1.1;
  const x = (t) => ((t - t0) / span) * w;
  const y = (v) => h - 2 - (v / max) * (h - 14);
  for (const l of lines) {
    if (l.value > max) continue;
    ctx.strokeStyle = l.color; ctx.setLineDash([4, 3]); ctx.beginPath();
    ctx.moveTo(0, y(l.value)); ctx.lineTo(w, y(l.value)); ctx.stroke(); ctx.setLineDash([]);
  }
  for (const s of series) {
    ctx.strokeStyle = s.color; ctx.lineWidth = 1.5; ctx.beginPath();
    let pen = false;
    for (const r of rows) {
      const v = r[s.idx];
      if (v === null || v === undefined) { pen = false; continue; }
      if (pen) ctx.lineTo(x(r[0]), y(v)); else ctx.moveTo(x(r[0]), y(v));
      pen = true;
    }
    ctx.stroke();
  }
  ctx.fillStyle = "#666"; ctx.font = "10px sans-serif";
  ctx.fillText(fmt(max / 1.1, 0), 2, 10);
  const last = rows.length ? rows[rows.length - 1][series[0].idx] : null;
  ctx.textAlign = "right"; ctx.fillText(fmt(last), w - 2, 10); ctx.textAlign = "left";
}

function card(h) {
  let el = document.querySelector(`.card[data-classroom="${CSS.escape(h.classroom_id)}"]`);
  if (!el) {
    el = $("#classroom-card").content.firstElementChild.cloneNode(true);
    el.dataset.classroom = h.classroom_id;
    $(".name", el).textContent = h.name;
    $(".cid", el).textContent = h.classroom_id;
    $(".role", el).textContent = h.role;
    $("#classrooms").appendChild(el);
  }
  return el;
}

function gradeField(name, v) {
  const t = state.thresholds;
  if (v === null || v === undefined) return "";
  if (name === "latency_ms") return v > t.latency_red_ms ? "red" : v > t.latency_amber_ms ? "amber" : "";
  if (name === "loss_in_percent" || name === "loss_out_percent") return v > t.loss_percent ? "red" : "";
  if (name === "jitter_ms") return v > t.jitter_ms ? "amber" : "";
  return "";
}

function renderClassroom(h) {
  const el = card(h);
  el.className = `card level-${h.level}`;
  el.dataset.level = h.level;
  $(".state", el).textContent = h.state + (h.lesson_id ? ` · ${h.lesson_id}` : "");
  $(".problems", el).textContent = h.problems.join(", ");
  for (const dd of el.querySelectorAll(".nums dd")) {
    let worst = "";
    for (const span of dd.querySelectorAll("[data-field]")) {
      const f = span.dataset.field;
      span.textContent = fmt(h[f]);
      const g = gradeField(f, h[f]);
      if (g === "red" || (g === "amber" && worst === "")) worst = g;
    }
    dd.className = worst;
  }
  const rows = state.history[h.classroom_id] || [];
  const t = state.thresholds;
  drawChart($('[data-chart="latency"]', el), rows, [{ idx: col("latency_ms"), color: "#1565c0" }],
    [{ value: t.latency_amber_ms, color: "#f9a825" }, { value: t.latency_red_ms, color: "#c62828" }]);
  drawChart($('[data-chart="loss"]', el), rows, [{ idx: col("loss_percent"), color: "#6a1b9a" }],
    [{ value: t.loss_percent, color: "#c62828" }]);
  drawChart($('[data-chart="fps"]', el), rows,
    [{ idx: col("fps_in"), color: "#2e7d32" }, { idx: col("fps_out"), color: "#ef6c00" }]);
  drawChart($('[data-chart="bitrate"]', el), rows,
    [{ idx: col("bitrate_in_kbps"), color: "#2e7d32" }, { idx: col("bitrate_out_kbps"), color: "#ef6c00" }]);
}

function recorderText(r) {
  if (!r) return "not attached";
  const parts = [`${r.state} · ${r.recorders} connected`];
  if (r.dropped) parts.push(`${r.dropped} dropped`);
  for (const [lesson, p] of Object.entries(r.progress || {})) parts.push(`${lesson}: ${p}`);
  if (r.ready) parts.push(`${r.ready} archived`);
  return parts.join(" · ");
}

function renderMixer(m) {
  if (!m) return;
  $("#mixer-cpu").textContent = fmt(m.cpu_percent);
  $("#mixer-rss").textContent = fmt(m.rss_mb, 0);
  $("#mixer-lag").textContent = fmt(m.loop_lag_ms);
  $("#mixer-audio-late").textContent = fmt(m.audio_late_ticks);
  $("#mixer-recorder").textContent = recorderText(m.recorder);
  const vb = $("#views tbody");
  vb.replaceChildren(...m.views.map((v) => {
    const tr = document.createElement("tr");
    for (const c of [v.lesson_id, v.view, fmt(v.fps), fmt(v.encode_ms, 2), v.frames_skipped, v.subscribers, fmt(v.bitrate_kbps, 0)]) {
      const td = document.createElement("td"); td.textContent = c; tr.appendChild(td);
    }
    return tr;
  }));
  const lb = $("#lessons tbody");
  lb.replaceChildren(...m.lessons.map((l) => {
    const tr = document.createElement("tr");
    tr.dataset.lesson = l.lesson_id;
    for (const c of [l.lesson_id, l.state, l.subject, l.grade, l.teacher, elapsed(l.elapsed_s)]) {
      const td = document.createElement("td"); td.textContent = c; tr.appendChild(td);
    }
    tr.lastChild.className = "elapsed";
    return tr;
  }));
  drawChart($("#chart-mixer"), state.mixerHistory,
    [{ idx: 1, color: "#1565c0" }, { idx: 2, color: "#c62828" }]);
}

function renderAlerts(snap) {
  const ul = $("#alerts");
  const items = snap.recent_alerts.slice().reverse().map((e) => {
    const li = document.createElement("li");
    li.className = e.data.state;
    li.textContent = `${new Date(e.ts_ms).toLocaleTimeString()} ${e.data.message}`;
    return li;
  });
  if (!items.length) { const li = document.createElement("li"); li.className = "none"; li.textContent = "none"; items.push(li); }
  ul.replaceChildren(...items);
}

function renderNodes(c) {
  // Several nodes (Redis): every live node of the registry, as this node last read it.
  const panel = $("#nodes-panel");
  panel.hidden = !c;
  if (!c) return;
  $("#nodes-redis").textContent = c.redis_up ? "up" : "unreachable";
  $("#nodes-self").textContent = c.node_id;
  const rows = c.nodes.map((n) => {
    const tr = document.createElement("tr");
    tr.dataset.node = n.node_id;
    const age = Math.max(0, (c.checked_ms - n.heartbeat_ms) / 1000);
    for (const v of [n.node_id, n.url, n.lessons, n.sessions, fmt(n.cpu_percent), `${fmt(age)} s ago`]) {
      const td = document.createElement("td");
      td.textContent = String(v);
      tr.appendChild(td);
    }
    return tr;
  });
  $("#nodes tbody").replaceChildren(...rows);
}

function apply(snap, withHistory) {
  state.fields = snap.history_fields;
  state.thresholds = snap.thresholds;
  state.historyMs = snap.history_s * 1000;
  $("#t-amber").textContent = snap.thresholds.latency_amber_ms;
  $("#t-red").textContent = snap.thresholds.latency_red_ms;
  $("#t-loss").textContent = snap.thresholds.loss_percent;
  $("#t-hist").textContent = Math.round(snap.history_s / 60);
  if (withHistory) {
    state.history = snap.history;
    state.mixerHistory = snap.mixer_history;
  } else {
    for (const h of snap.classrooms) {
      const rows = (state.history[h.classroom_id] ||= []);
      if (!rows.length || rows[rows.length - 1][0] < h.ts_ms) rows.push([h.ts_ms, ...state.fields.map((f) => h[f])]);
      trim(rows, snap.ts_ms);
    }
    if (snap.mixer) { state.mixerHistory.push([snap.mixer.ts_ms, snap.mixer.cpu_percent, snap.mixer.loop_lag_ms]); trim(state.mixerHistory, snap.ts_ms); }
  }
  for (const h of snap.classrooms) renderClassroom(h);
  renderMixer(snap.mixer);
  renderAlerts(snap);
  renderNodes(snap.cluster);
  $("#updated").textContent = new Date(snap.ts_ms).toLocaleTimeString();
  document.body.dataset.samples = String(Number(document.body.dataset.samples || 0) + 1);
}

function connect() {
  const es = new EventSource("/dashboard/events");
  const conn = $("#conn");
  es.addEventListener("open", () => { conn.textContent = "live"; conn.className = "conn live"; });
  es.addEventListener("error", () => { conn.textContent = "reconnecting…"; conn.className = "conn lost"; });
  es.addEventListener("init", (ev) => apply(JSON.parse(ev.data), true));
  es.addEventListener("sample", (ev) => apply(JSON.parse(ev.data), false));
  es.addEventListener("logout", () => { es.close(); window.location = "/dashboard/login"; });
}

document.addEventListener("DOMContentLoaded", connect);
