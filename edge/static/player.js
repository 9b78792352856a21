// camflow player: hls.js (served by the edge from disk) on /live/{stream}/master.m3u8?token=...,
// the stream's health line from /api/streams/{stream}/health (Server-Sent Events), and the
// latency to the live edge. window.camflow exposes the state for tests.
(function () {
  "use strict";
  const root = document.getElementById("player");
  const config = JSON.parse(root.dataset.config);
  const q = "?token=" + encodeURIComponent(config.token);
  const base = "/live/" + encodeURIComponent(config.stream) + "/";
  const video = document.getElementById("video");
  const statusLine = document.getElementById("status");
  const healthLine = document.getElementById("health");
  const latencyLine = document.getElementById("latency");
  const state = { errors: [], stalls: 0, fatal: null, latency: null, samples: 0 };
  window.camflow = state;

  function show(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", Boolean(isError));
  }

  let hls = null;
  if (window.Hls && window.Hls.isSupported()) {
    hls = new window.Hls({ liveSyncDurationCount: 3, enableWorker: true });
    hls.on(window.Hls.Events.ERROR, function (_event, data) {
      state.errors.push({ type: data.type, details: data.details, fatal: data.fatal });
      if (data.details === window.Hls.ErrorDetails.BUFFER_STALLED_ERROR) state.stalls += 1;
      if (!data.fatal) return;
      state.fatal = data.details;
      show("playback error: " + data.details, true);
      if (data.type === window.Hls.ErrorTypes.NETWORK_ERROR) hls.startLoad();
      else if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
    });
    hls.on(window.Hls.Events.MANIFEST_PARSED, function (_event, data) {
      show("playing " + data.levels.length + " rendition(s)");
      video.play().catch(function (err) { show("press play (" + err.name + ")"); });
    });
    hls.loadSource(base + "master.m3u8" + q);
    hls.attachMedia(video);
    state.hls = hls;
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = base + "master.m3u8" + q; // Safari plays HLS natively
  } else {
    show("this browser cannot play HLS", true);
  }

  setInterval(function () {
    if (!hls) return;
    const parts = [];
    if (typeof hls.latency === "number" && isFinite(hls.latency) && hls.latency > 0) {
      state.latency = hls.latency;
      parts.push(hls.latency.toFixed(1) + " s behind the live edge");
    }
    const date = hls.playingDate;
    if (date) parts.push(((Date.now() - date.getTime()) / 1000).toFixed(1) + " s behind the camera clock");
    latencyLine.textContent = "latency to live edge: " + (parts.join(" · ") || "–");
  }, 1000);

  function describe(s) {
    const parts = [s.state];
    if (s.resolution) parts.push(s.resolution);
    if (s.bitrate) parts.push(Math.round(s.bitrate / 1000) + " kbit/s");
    if (s.fps) parts.push(s.fps + " fps");
    parts.push(s.viewers + (s.viewers === 1 ? " viewer" : " viewers"));
    if (typeof s.last_segment_age === "number") parts.push("last segment " + s.last_segment_age.toFixed(1) + " s ago");
    const fixes = s.feed && s.feed.corrections ? Object.values(s.feed.corrections) : [];
    const fixed = fixes.reduce(function (a, b) { return a + b; }, 0);
    if (fixed) parts.push(fixed + (fixed === 1 ? " media fix" : " media fixes"));
    return "health: " + parts.join(" · ");
  }
  const events = new EventSource("/api/streams/" + encodeURIComponent(config.stream) + "/health" + q);
  events.addEventListener("health", function (ev) {
    state.samples += 1;
    healthLine.textContent = describe(JSON.parse(ev.data));
  });
})();
