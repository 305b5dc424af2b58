// Browser side of syncclass signaling and media, shared by join.html and observe.html.
// Same /ws protocol as the edge agents (syncclass/protocol.py). Plain ES module.
import { readTimecode, lumaOfRgba, timecodeBandHeight } from "./timecode.js";

const STATS_INTERVAL_MS = 2000;
const LATENCY_WINDOW = 450; // samples per source (30 s at 15 fps)
const ICE_GATHER_TIMEOUT_MS = 5000;
const RELAY_GRACE_MS = 300; // after the first TURN relay candidate (see iceGathered)
/** Failed reconnects to our node before trying another node of the county (several nodes). */
const NODE_FAILURES_BEFORE_MOVING = 2;

/** Parse "#a=1&b=2" into an object. */
export function fragmentParams() {
  return Object.fromEntries(new URLSearchParams(location.hash.replace(/^#/, "")));
}

function median(values) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Everything the page measured; tests read it as window.syncclass.state. */
export class Measurements {
  constructor() {
    this.framesReceived = 0;
    this.frameTimes = [];
    this.latency = {};      // source classroom id -> {samples: [], all: [], last, advances}
    this.layout = null;
    this.audioContext = null;
    this.analyser = null;
  }
  fps() {
    const t = this.frameTimes;
    if (t.length < 2) return 0;
    return ((t.length - 1) * 1000) / (t[t.length - 1] - t[0]);
  }
  addLatency(source, captureMs, shownMs) {
    const s = (this.latency[source] ||= { samples: [], all: [], last: 0, advances: 0, read: 0 });
    const ms = shownMs - captureMs;
    s.samples.push(ms);
    if (s.samples.length > LATENCY_WINDOW) s.samples.shift();
    if (s.all.length < 200000) s.all.push(ms);
    s.read += 1;
    if (captureMs > s.last) {
      if (s.last) s.advances += 1;
      s.last = captureMs;
    }
  }
  summary() {
    const latency = {};
    for (const [cid, s] of Object.entries(this.latency)) {
      latency[cid] = { median_ms: median(s.samples), frames_read: s.read,
                       timecode_advances: s.advances, last_capture_ms: s.last };
    }
    return { frames_received: this.framesReceived, fps: this.fps(), latency,
             layout: this.layout,
             audio: this.audioContext ? this.audioContext.state : null };
  }
  /**
   * Level in dB (0 = full scale) of the received audio at `hz` ± `spread` (a fraction of
   * `hz`; at least ±1 bin), or null before audio. The mixer's lip sync may play a source
   * up to 5 % fast or slow for a while, moving its tones by as much.
   */
  toneLevelDb(hz, spread = 0) {
    if (!this.analyser) return null;
    const bins = new Float32Array(this.analyser.frequencyBinCount);
    this.analyser.getFloatFrequencyData(bins);
    const binHz = this.audioContext.sampleRate / this.analyser.fftSize;
    const lo = Math.min(Math.round(hz * (1 - spread) / binHz), Math.round(hz / binHz) - 1);
    const hi = Math.max(Math.round(hz * (1 + spread) / binHz), Math.round(hz / binHz) + 1);
    return Math.max(...bins.subarray(Math.max(lo, 0), Math.min(hi + 1, bins.length)));
  }
}

/**
 * Reads timecodes from every decoded frame of `video` at the places `layout` gives and
 * records glass-to-glass latency (capture on the source's clock -> frame on this page).
 */
export function measureVideo(video, m) {
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const onFrame = () => {
    const shown = performance.timeOrigin + performance.now();
    m.framesReceived += 1;
    m.frameTimes.push(shown);
    if (m.frameTimes.length > 60) m.frameTimes.shift();
    const layout = m.layout;
    if (layout && video.videoWidth === layout.width && video.videoHeight === layout.height) {
      if (canvas.width !== layout.width) { canvas.width = layout.width; canvas.height = layout.height; }
      ctx.drawImage(video, 0, 0);
      for (const p of layout.placements) {
        const band = Math.min(p.h, timecodeBandHeight(p.h) + 2);
        const img = ctx.getImageData(p.x, p.y, p.w, band);
        const tc = readTimecode(lumaOfRgba(img.data), p.w, 0, 0, p.w, p.h);
        if (tc && tc.source === p.classroom_number) m.addLatency(p.classroom_id, tc.captureMs, shown);
      }
    }
  };
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    const loop = () => { onFrame(); video.requestVideoFrameCallback(loop); };
    video.requestVideoFrameCallback(loop);
  } else {
    let last = -1;
    setInterval(() => { if (video.currentTime !== last) { last = video.currentTime; onFrame(); } }, 20);
  }
}

/** Play a remote audio track and analyse it (for the level meter and the tests). */
export function playAudio(track, audioEl, m) {
  const stream = new MediaStream([track]);
  audioEl.srcObject = stream;
  audioEl.play().catch(() => {});
  try {
    m.audioContext = new AudioContext({ sampleRate: 48000 });
    const src = m.audioContext.createMediaStreamSource(stream);
    m.analyser = m.audioContext.createAnalyser();
    m.analyser.fftSize = 8192;
    m.analyser.smoothingTimeConstant = 0.5;
    src.connect(m.analyser);
    m.audioContext.resume().catch(() => {});
  } catch (e) {
    console.warn("no audio analysis:", e);
  }
}

/** Wait until the peer connection gathered all its ICE candidates (no trickle ICE). */
export function iceGathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    // Behind a firewall that drops UDP, gathering through a turn:...?transport=udp URL
    // completes only when Chromium gives up on it (the 5 s timeout here): once one relay
    // candidate is in, the others that will come come within a moment.
    pc.addEventListener("icecandidate", (ev) => {
      if (ev.candidate && ev.candidate.type === "relay") setTimeout(resolve, RELAY_GRACE_MS);
    });
    setTimeout(resolve, ICE_GATHER_TIMEOUT_MS);
  });
}

/**
 * One signaling connection to the mixer. `hello` is the first message; `handlers[type]`
 * get server messages. Reconnects with backoff unless the credential was refused.
 */
export class Signaling {
  constructor(hello, handlers, log) {
    this.hello = hello;
    this.handlers = handlers;
    this.log = log;
    this.ws = null;
    this.refused = false;
    this.closed = false;
    this.backoff = 500;
    this.statsTimer = null;
    /** Several nodes: every node's URL (from the welcome); tried in turn when ours stops
     * answering. */
    this.nodes = [];
    /** The URL fragment to carry to another node (the credential typed into the form);
     * null: the page's own fragment. */
    this.redirectFragment = null;
    this.failures = 0;
  }
  /** Go to the same page on another node (its origin), credential in the fragment; if
   * that node does not answer (a node that just died may still be named by the others
   * for a lease's time), stay and reconnect here instead of loading an error page. */
  async goTo(origin) {
    this.closed = true;
    try {
      await fetch(origin + "/healthz", { mode: "no-cors", cache: "no-store" });
    } catch (e) {
      this.closed = false;
      this.log(`node ${origin} not reachable; retrying in ${this.backoff} ms`, "warn");
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 10000);
      return;
    }
    const frag = this.redirectFragment ? this.redirectFragment() : location.hash;
    location.assign(origin + location.pathname + location.search + frag);
  }
  connect() {
    const url = location.origin.replace(/^http/, "ws") + "/ws";
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = 500;
      this.failures = 0;
      ws.send(JSON.stringify(this.hello));
    };
    ws.onmessage = async (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === "error") {
        this.log(`mixer: ${msg.code}: ${msg.message}`, "error");
        if (msg.code === "auth_failed") this.refused = true;
      }
      if (msg.type === "redirect") {
        // Several nodes: this lesson runs on another node of the county (the node that
        // served this page names it from its config). Same page there, same credential.
        const target = new URL(msg.url);
        if (target.protocol !== "http:" && target.protocol !== "https:") {
          this.log(`redirect to ${msg.url} refused`, "error");
          return;
        }
        ws.onclose = null;  // goTo decides what comes next
        ws.close();
        if (this.handlers.close) this.handlers.close();
        this.log(`lesson on node ${msg.node_id}; going to ${target.origin}`, "info");
        await this.goTo(target.origin);
        return;
      }
      const h = this.handlers[msg.type];
      if (h) {
        try { await h(msg); } catch (e) { this.log(`error handling ${msg.type}: ${e}`, "error"); }
      }
    };
    ws.onclose = () => {
      if (this.handlers.close) this.handlers.close();
      if (this.refused || this.closed) return;
      this.failures += 1;
      const others = this.nodes.filter((u) => new URL(u).origin !== location.origin);
      if (this.failures >= NODE_FAILURES_BEFORE_MOVING && others.length) {
        // Our node stopped answering: another node resumes the lesson (or sends us to
        // the node that has it). The first other node after ours in the list, so the
        // pages of a dead node spread alike.
        const i = this.nodes.findIndex((u) => new URL(u).origin === location.origin);
        const after = [...this.nodes.slice(i + 1), ...this.nodes.slice(0, i + 1)];
        const target = new URL(after.find((u) => others.includes(u))).origin;
        this.log(`node not answering; going to ${target}`, "warn");
        void this.goTo(target);
        return;
      }
      this.log(`connection lost; retrying in ${this.backoff} ms`, "warn");
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 10000);
    };
  }
  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }
  startStats(m) {
    clearInterval(this.statsTimer);
    this.statsTimer = setInterval(() => {
      const latency_ms = {};
      for (const [cid, s] of Object.entries(m.latency)) {
        const med = median(s.samples);
        if (med !== null) latency_ms[cid] = med;
      }
      this.send({ type: "stats", frames_received: m.framesReceived,
                  fps: Math.round(m.fps() * 100) / 100, latency_ms });
    }, STATS_INTERVAL_MS);
  }
}

export function formatLessonMs(ms) {
  const s = Math.floor(ms / 1000);
  return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}
