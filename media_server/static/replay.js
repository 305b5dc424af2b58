// Replay page: the lesson video with its analytics on one timeline (video seconds), the
// 评课 comments at their lesson time; clicking a comment or the timeline seeks the video.
"use strict";
(async function () {
  const video = document.getElementById("video");
  const canvas = document.getElementById("timeline");
  const list = document.getElementById("comments");
  const form = document.getElementById("comment-form");
  const state = { data: null, ready: false };
  window.syncclassReplay = state;

  const resp = await fetch("data.json", { credentials: "same-origin" });
  if (!resp.ok) { list.textContent = `cannot load the lesson (${resp.status})`; return; }
  const data = await resp.json();
  state.data = data;
  const tl = data.timeline;
  const duration = () => video.duration || tl.duration_s || 1;

  function fmt(s) {
    s = Math.max(0, Math.round(s));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  function seek(s) {
    video.currentTime = Math.max(0, Math.min(s, duration() - 0.05));
  }
  state.seek = seek;

  function renderComments() {
    list.replaceChildren();
    for (const c of data.comments) {
      const div = document.createElement("div");
      div.className = "comment";
      div.dataset.videoS = c.video_s;
      div.dataset.seq = `${c.origin}-${c.seq}`;
      const when = document.createElement("b");
      when.textContent = fmt(c.video_s) + " ";
      const who = document.createElement("span");
      who.textContent = `${c.author}: `;
      const text = document.createElement("span");
      text.textContent = c.text;
      div.append(when, who, text);
      div.addEventListener("click", () => seek(c.video_s));
      list.append(div);
    }
  }

  const rooms = tl.classrooms;
  const rowH = 18, top = 6;
  const stRow = rooms.length;
  const commentRow = rooms.length + 1;
  canvas.height = top + (rooms.length + 2) * rowH + 14;

  function x(s) { return (s / duration()) * canvas.width; }

  function draw() {
    const g = canvas.getContext("2d");
    g.fillStyle = "#1a1a1a";
    g.fillRect(0, 0, canvas.width, canvas.height);
    g.font = "11px sans-serif";
    rooms.forEach((r, i) => {
      const y = top + i * rowH;
      g.fillStyle = "#555";
      for (const [a, b] of r.present) g.fillRect(x(a), y + rowH - 4, Math.max(1, x(b) - x(a)), 2);
      g.fillStyle = r.role === "main" ? "#4a90e2" : "#f5a623";
      for (const [a, b] of r.speech) g.fillRect(x(a), y + 2, Math.max(1, x(b) - x(a)), rowH - 8);
      g.fillStyle = "#e74c3c";
      for (const t of r.hands) g.fillText("▲", x(t) - 4, y + rowH - 5);
      g.fillStyle = "#aaa";
      g.fillText(r.label || r.id, 4, y + 11);
    });
    if (tl.st) {
      const y = top + stRow * rowH;
      const w = tl.st.interval_s;
      [...tl.st.codes].forEach((c, i) => {
        g.fillStyle = c === "T" ? "#4a90e2" : "#f5a623";
        const a = tl.st.first_s + i * w;
        g.fillRect(x(a), y + 4, Math.max(1, x(a + w) - x(a) - 1), rowH - 8);
      });
      g.fillStyle = "#aaa";
      g.fillText("S-T", 4, y + 11);
    }
    for (const d of tl.directing || []) {
      g.fillStyle = "#2ecc71";
      g.fillRect(x(d.t), top, 1, rooms.length * rowH);
    }
    const yc = top + commentRow * rowH;
    g.fillStyle = "#c9f";
    for (const c of data.comments) g.fillText("◆", x(c.video_s) - 4, yc + 12);
    g.fillStyle = "#fff";
    g.fillRect(x(video.currentTime || 0), 0, 2, canvas.height);
  }

  function drawST() {
    const st = tl.st;
    const c = document.getElementById("st");
    const g = c.getContext("2d");
    g.fillStyle = "#1a1a1a";
    g.fillRect(0, 0, c.width, c.height);
    if (!st || !st.curve || !st.curve.length) return;
    const n = Math.max(1, ...st.curve.map(([t, s]) => Math.max(t, s)));
    g.strokeStyle = "#4a90e2";
    g.beginPath();
    st.curve.forEach(([t, s], i) => {
      const px = 10 + (t / n) * (c.width - 20), py = c.height - 10 - (s / n) * (c.height - 20);
      if (i) g.lineTo(px, py); else g.moveTo(px, py);
    });
    g.stroke();
    document.getElementById("st-summary").textContent =
      `Rt ${st.rt} · Ch ${st.ch} · ${st.lesson_type || ""} (x: T, y: S)`;
  }

  canvas.addEventListener("click", (ev) => {
    const r = canvas.getBoundingClientRect();
    seek(((ev.clientX - r.left) / r.width) * duration());
  });
  video.addEventListener("timeupdate", () => {
    draw();
    document.getElementById("comment-at").textContent = fmt(video.currentTime);
  });
  video.addEventListener("loadedmetadata", () => { draw(); state.ready = true; });

  if (data.can_comment) {
    form.hidden = false;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const text = document.getElementById("comment-text").value.trim();
      if (!text) return;
      const r = await fetch("comments", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text, video_s: video.currentTime }),
      });
      if (!r.ok) { alert(`comment not saved: ${await r.text()}`); return; }
      data.comments.push(await r.json());
      data.comments.sort((a, b) => a.lesson_ms - b.lesson_ms);
      document.getElementById("comment-text").value = "";
      renderComments();
      draw();
    });
  }
  renderComments();
  drawST();
  draw();
  if (video.readyState >= 1) state.ready = true;
})();
