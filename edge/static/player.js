// camflow player: hls.js (served by the edge from disk) in low-latency mode on
// /live/{stream}/master.m3u8?token=... (or one rendition's playlist with ?rendition=NAME on the page),
// the stream's health line from /api/streams/{stream}/health (Server-Sent Events), and the latency:
// wall clock minus the program date-time of the frame on screen (hls.playingDate), 4 times a second.
// It starts at the live edge and jumps back to it after a stall or when it fell far behind.
// window.camflow exposes the state for tests (tests/latency_probe.py reads it).
(function () {
  "use strict";
  const root = document.getElementById("player");
  const config = JSON.parse(root.dataset.config);
  const q = "?token=" + encodeURIComponent(config.token || "");
  const base = "/live/" + encodeURIComponent(config.stream) + "/";
  // config.src (a full playlist URL, no token added) is for the latency probe, which plays a peer's
  // LL-HLS with this same player; the edge's page never sets it.
  const src = config.src || base + (config.rendition ? encodeURIComponent(config.rendition) : "master") + ".m3u8" + q;
  const video = document.getElementById("video");
  const statusLine = document.getElementById("status");
  const healthLine = document.getElementById("health");
  const latencyLine = document.getElementById("latency");
  const TICK_MS = 250; // latency display and live-edge checks
  const STALL_SEEK_MS = 1000; // waiting longer than this jumps to the live edge
  const BEHIND_FACTOR = 3; // ... as does a latency above 3x the target latency (and 1 s beyond it)
  const state = {
    errors: [], stalls: 0, fatal: null, latency: null, samples: 0,
    clockLatency: null, waits: 0, liveSeeks: [], playing: false,
  };
  window.camflow = state;

  function show(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", Boolean(isError));
  }

  let hls = null;
  let stalledAt = null; // when the current wait for data began (after playback had started)
  let lastJump = 0;
  // Jump to hls.liveSyncPosition (target latency behind the live edge) when more than half a second
  // (or half the target) behind it; returns whether it jumped.
  function seekToLive(reason) {
    const pos = hls ? hls.liveSyncPosition : null;
    if (typeof pos !== "number" || !isFinite(pos)) return false;
    const slack = Math.max(0.5, (hls.targetLatency || 0) / 2);
    if (pos - video.currentTime < slack) return false;
    state.liveSeeks.push({ reason: reason, from: video.currentTime, to: pos });
    if (state.liveSeeks.length > 100) state.liveSeeks.shift(); // a page open for days stays small
    video.currentTime = pos;
    return true;
  }

  if (window.Hls && window.Hls.isSupported()) {
    // lowLatencyMode: parts, blocking playlist reload and preload hints when the playlist has them;
    // the target latency is then the server's PART-HOLD-BACK (plain HLS: 3 target durations).
    // liveSyncDuration is left unset on purpose: set by the page, it would override PART-HOLD-BACK.
    // maxLiveSyncPlaybackRate: play up to 1.5x to catch up when behind the target.
    // liveSyncOnStallIncrease: each stall moves the target back by 0.5 s (hls.js: 1 s, which would
    // more than double an LL target of 3 x 200 ms parts after one stall); capped at a target duration.
    hls = new window.Hls({
      enableWorker: true,
      lowLatencyMode: true,
      maxLiveSyncPlaybackRate: 1.5,
      liveSyncOnStallIncrease: 0.5,
      backBufferLength: 30,
    });
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
    hls.loadSource(src);
    hls.attachMedia(video);
    state.hls = hls;
    video.addEventListener("playing", function () {
      if (!state.playing) seekToLive("start"); // the edge moved on while the first part loaded
      else if (stalledAt !== null && Date.now() - stalledAt > STALL_SEEK_MS) seekToLive("stall");
      state.playing = true;
      stalledAt = null;
    });
    video.addEventListener("waiting", function () {
      if (!state.playing) return;
      state.waits += 1;
      if (stalledAt === null) stalledAt = Date.now();
    });
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = src; // Safari plays (LL-)HLS natively
  } else {
    show("this browser cannot play HLS", true);
  }

  function tick() {
    if (!hls) return;
    const now = Date.now();
    if (stalledAt !== null && now - stalledAt > STALL_SEEK_MS && now - lastJump > 1000) {
      lastJump = now; // at most one try a second while the stall lasts (and again once it plays)
      seekToLive("stall");
    }
    const target = hls.targetLatency;
    const behind = hls.latency;
    if (state.playing && !video.paused && target && behind > BEHIND_FACTOR * target && behind > target + 1) {
      seekToLive("behind");
    }
    const parts = [];
    const date = hls.playingDate;
    if (date && state.playing) {
      state.clockLatency = (now - date.getTime()) / 1000;
      parts.push(state.clockLatency.toFixed(1) + " s behind the camera clock");
    }
    if (typeof behind === "number" && isFinite(behind) && behind > 0) {
      state.latency = behind;
      parts.push(behind.toFixed(1) + " s behind the live edge" + (target ? " (target " + target.toFixed(1) + " s)" : ""));
    }
    latencyLine.textContent = "latency: " + (parts.join(" · ") || "–");
  }
  setInterval(tick, TICK_MS);

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
  if (config.health === false) return; // the probe on a peer's server: no camflow health feed
  const events = new EventSource("/api/streams/" + encodeURIComponent(config.stream) + "/health" + q);
  events.addEventListener("health", function (ev) {
    state.samples += 1;
    healthLine.textContent = describe(JSON.parse(ev.data));
  });
})();
