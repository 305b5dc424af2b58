// Live watch page: the lesson's HLS playlist, with hls.js (vendored by scripts/vendor_js.sh)
// where the browser has no native HLS. State for tests and support in window.syncclassWatch.
"use strict";
(function () {
  const video = document.getElementById("video");
  const statusEl = document.getElementById("status");
  const src = "index.m3u8";
  const state = { engine: null, errors: [], hls: null };
  window.syncclassWatch = state;

  function setStatus(text) { statusEl.textContent = text; }

  video.addEventListener("playing", () => setStatus("live"));
  video.addEventListener("waiting", () => setStatus("buffering…"));

  if (window.Hls && window.Hls.isSupported()) {
    // Whole 2 s segments: start 3 s behind the playlist's end (one segment plus a margin
    // for the next to be listed), and speed up a little when we fall further behind.
    const hls = new window.Hls({
      liveSyncDuration: 3,
      liveMaxLatencyDuration: 10,
      maxLiveSyncPlaybackRate: 1.2,
      manifestLoadingMaxRetry: 30,
      manifestLoadingRetryDelay: 1000,
    });
    state.engine = "hls.js";
    state.hls = hls;
    hls.on(window.Hls.Events.ERROR, (_event, data) => {
      state.errors.push(`${data.type}:${data.details}${data.fatal ? ":fatal" : ""}`);
      if (!data.fatal) return;
      if (data.type === window.Hls.ErrorTypes.NETWORK_ERROR) {
        setStatus("reconnecting…");
        hls.startLoad();
      } else if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR) {
        hls.recoverMediaError();
      } else {
        setStatus(`cannot play: ${data.details}`);
      }
    });
    hls.loadSource(src);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    state.engine = "native";
    video.src = src;
  } else {
    setStatus("this browser cannot play HLS");
  }
  video.play().catch(() => setStatus("press play"));
})();
