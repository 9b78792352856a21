// camflow player: hls.js (served by the edge from disk) in low-latency mode on
// /live/{stream}/master.m3u8?token=... (or one rendition's playlist with ?rendition=NAME on the page),
// the stream's health line from /api/streams/{stream}/health (Server-Sent Events), and the latency:
// wall clock minus the program date-time of the frame on screen (hls.playingDate), 4 times a second.
// Live, it starts at the live edge and jumps back to it after a stall or when it fell far behind.
// It also plays recordings: recording(ms) loads /vod/{stream}/master.m3u8 from that moment (up to
// VOD_SPAN_MS, then the next span, then live again) at the chosen speed; live() returns to the edge.
// Live, it can play over WebRTC instead (WHEP, edge/static/webrtc.js: /whep/{stream}, tens of ms behind
// the camera): by default where the server has WHEP (the page's config says so), with ?transport=webrtc,
// or the transport button; ?transport=hls asks for HLS. When WebRTC is refused or
// cannot start (no WHEP on this server, a limit, an H.265 stream, no UDP path), or fails while it
// plays, the player falls back to (LL-)HLS and says why; the button switches either way.
// window.camflow exposes the state for tests (tests/latency_probe.py reads it); window.camflowPlayer
// the controls (edge/static/timeline.js drives them).
(function () {
  "use strict";
  const root = document.getElementById("player");
  const config = JSON.parse(root.dataset.config);
  const token = "token=" + encodeURIComponent(config.token || "");
  const q = "?" + token;
  const stream = encodeURIComponent(config.stream);
  const pinned = config.rendition ? encodeURIComponent(config.rendition) : null;
  // config.src (a full playlist URL, no token added) is for the latency probe, which plays a peer's
  // LL-HLS with this same player; the edge's page never sets it.
  const liveSrc = config.src || "/live/" + stream + "/" + (pinned || "master") + ".m3u8" + q;
  const vodBase = "/vod/" + stream + "/" + (pinned || "master") + ".m3u8";
  const whepSrc = "/whep/" + stream + q;
  const video = document.getElementById("video");
  const statusLine = document.getElementById("status");
  const healthLine = document.getElementById("health");
  const latencyLine = document.getElementById("latency");
  const TICK_MS = 250; // latency display and live-edge checks
  const START_SLACK_S = 0.1; // on the first frame, a jump of more than this to the live position
  const STALL_SEEK_MS = 1000; // waiting longer than this jumps to the live edge
  const AFTER_STALL_MS = 15000; // ... and, resumed before the playlist had moved on, once it has (on
  // a playlist update or a tick) in the next 15 s: after an outage hls.js may take seconds to reload it
  const BEHIND_FACTOR = 3; // ... as does a latency above 3x the target latency (and 1 s beyond it)
  const VOD_SPAN_MS = 3 * 3600 * 1000; // one recording playlist covers at most this much
  const LIVE_MS = 3 * 1000; // a recording asked from this close to now plays live instead
  const CATCH_UP_MS = 10 * 1000; // a recording that ended this close to now goes on live
  const SPEEDS = [0.5, 1, 2, 4, 8];
  const state = {
    errors: [], stalls: 0, fatal: null, latency: null, samples: 0,
    clockLatency: null, waits: 0, liveSeeks: [], playing: false,
    mode: "live", speed: 1, recording: null, position: null,
    transport: "hls", preferred: config.transport === "webrtc" ? "webrtc" : "hls", webrtcError: null,
  };
  window.camflow = state;
  const listeners = [];
  const transportButton = document.getElementById("transport");
  const rtc = window.RTCPeerConnection && window.camflowWebRTC ? window.camflowWebRTC(video, whepSrc) : null;
  state.rtc = rtc;

  function show(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", Boolean(isError));
  }
  function changed() {
    for (const fn of listeners) fn(state);
  }

  let hls = null;
  let stalledAt = null; // when the current wait for data began (after playback had started)
  let lastJump = 0;
  let afterStallUntil = 0; // a stall's jump not made yet: tried again until then (ms)
  let startAt = null; // a recording's first moment (ms), sought once its playlist is known
  let pendingSeek = null; // ... at this media time, once the video has its metadata
  // Jump to hls.liveSyncPosition (target latency behind the live edge) when more than half a second
  // (or half the target) behind it; on the first frame, when more than START_SLACK_S behind it and
  // it is buffered already (an unseen jump: hls.js itself catches up only with over 1 s buffered,
  // which a low-latency player never has, so where it starts is where it stays); returns whether it
  // jumped.
  function seekToLive(reason) {
    const pos = hls && state.mode === "live" ? hls.liveSyncPosition : null;
    if (typeof pos !== "number" || !isFinite(pos)) return false;
    const slack = reason === "start" && isBuffered(pos) ? START_SLACK_S :
      Math.max(0.5, (hls.targetLatency || 0) / 2);
    if (pos - video.currentTime < slack) return false;
    state.liveSeeks.push({ reason: reason, from: video.currentTime, to: pos });
    if (state.liveSeeks.length > 100) state.liveSeeks.shift(); // a page open for days stays small
    video.currentTime = pos;
    return true;
  }

  function isBuffered(at) {
    for (let i = 0; i < video.buffered.length; i++) {
      if (video.buffered.start(i) <= at && at < video.buffered.end(i)) return true;
    }
    return false;
  }

  // The fragments of the loaded playlist; a recording's media time <-> wall clock (ms) through them.
  function fragments() {
    const details = hls ? hls.latestLevelDetails : null;
    return details && details.fragments ? details.fragments : [];
  }
  function timeOf(ms, frags) {
    for (const f of frags) {
      if (f.programDateTime === null) continue;
      if (ms < f.programDateTime) return f === frags[0] ? null : f.start; // in a gap: what follows it
      if (ms < f.programDateTime + f.duration * 1000) return f.start + (ms - f.programDateTime) / 1000;
    }
    return null;
  }

  function attach(src, live) {
    if (rtc) rtc.stop();
    state.transport = "hls";
    if (hls) hls.destroy();
    // lowLatencyMode: parts, blocking playlist reload and preload hints when the playlist has them;
    // the target latency is then the server's PART-HOLD-BACK (plain HLS: 3 target durations).
    // liveSyncDuration is left unset on purpose: set by the page, it would override PART-HOLD-BACK.
    // maxLiveSyncPlaybackRate: play up to 1.5x to catch up when behind the target.
    // liveSyncOnStallIncrease: each stall moves the target back by 0.5 s (hls.js: 1 s, which would
    // more than double an LL target of 3 x 200 ms parts after one stall); capped at a target duration.
    // A recording buffers a minute ahead (15 s of wall time at 4x).
    hls = new window.Hls(live ? {
      enableWorker: true,
      lowLatencyMode: true,
      maxLiveSyncPlaybackRate: 1.5,
      liveSyncOnStallIncrease: 0.5,
      backBufferLength: 30,
    } : { enableWorker: true, maxBufferLength: 60, backBufferLength: 30 });
    hls.on(window.Hls.Events.ERROR, function (_event, data) {
      state.errors.push({ type: data.type, details: data.details, fatal: data.fatal });
      if (state.errors.length > 100) state.errors.shift();
      if (data.details === window.Hls.ErrorDetails.BUFFER_STALLED_ERROR) state.stalls += 1;
      if (!data.fatal) return;
      state.fatal = data.details;
      if (!live && data.details === window.Hls.ErrorDetails.MANIFEST_LOAD_ERROR) {
        show("nothing recorded from " + when(state.recording.from) + ": back to live", true);
        playLive();
        return;
      }
      show("playback error: " + data.details, true);
      if (data.type === window.Hls.ErrorTypes.NETWORK_ERROR) hls.startLoad();
      else if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
    });
    hls.on(window.Hls.Events.MANIFEST_PARSED, function (_event, data) {
      if (live) {
        const why = state.webrtcError ? " (WebRTC unavailable: " + state.webrtcError + ")" : "";
        show("playing " + data.levels.length + " rendition(s) over HLS" + why, Boolean(why));
      }
      video.play().catch(function (err) { show("press play (" + err.name + ")"); });
    });
    hls.on(window.Hls.Events.LEVEL_UPDATED, function () {
      // A playlist since playback resumed after a stall, whose jump is still owed: jump now.
      if (live && stalledAt === null && Date.now() < afterStallUntil && seekToLive("stall")) {
        afterStallUntil = 0;
      }
    });
    hls.on(window.Hls.Events.LEVEL_LOADED, function (_event, data) {
      if (live || startAt === null) return;
      const t = timeOf(startAt, data.details.fragments);
      startAt = null;
      // The first segment began before the moment: seek once the video knows its metadata.
      if (t !== null && t > 0.05) pendingSeek = t;
    });
    hls.loadSource(src);
    hls.attachMedia(video);
    state.hls = hls;
  }

  function iso(ms) {
    return new Date(ms).toISOString();
  }
  function when(ms) {
    return new Date(ms).toLocaleString([], { hourCycle: "h23" });
  }
  function playLive(note, isError) {
    state.mode = "live";
    state.recording = null;
    state.playing = false; // the first "playing" seeks to the live edge again
    startAt = null;
    pendingSeek = null;
    video.defaultPlaybackRate = 1;
    attach(liveSrc, true);
    show(note || "back to live", isError);
    changed();
  }
  // Live over WebRTC (WHEP); back to (LL-)HLS, saying why, when it cannot start or later fails.
  function fallBack(reason) {
    state.webrtcError = reason;
    state.preferred = "hls"; // until the viewer asks for WebRTC again
    playLive("WebRTC unavailable (" + reason + "): playing HLS", true);
  }
  function playWebRTC() {
    if (!rtc) {
      fallBack("this browser has no WebRTC");
      return;
    }
    if (hls) hls.destroy();
    hls = null;
    state.hls = null;
    state.mode = "live";
    state.recording = null;
    state.transport = "webrtc";
    state.playing = false;
    state.webrtcError = null;
    startAt = null;
    pendingSeek = null;
    video.defaultPlaybackRate = 1;
    show("connecting over WebRTC (WHEP)…");
    changed();
    rtc.start().then(function () {
      if (state.transport !== "webrtc") return;
      state.playing = true;
      show("playing over WebRTC (WHEP)");
      changed();
    }).catch(function (err) {
      if (state.transport === "webrtc") fallBack(err.message);
    });
  }
  if (rtc) rtc.onfail = function (reason) { if (state.transport === "webrtc") fallBack(reason); };
  function live() {
    if (state.preferred === "webrtc") playWebRTC();
    else playLive();
  }
  function setTransport(name) {
    state.preferred = name === "webrtc" ? "webrtc" : "hls";
    live();
  }
  if (transportButton) {
    transportButton.addEventListener("click", function () {
      setTransport(state.transport === "webrtc" ? "hls" : "webrtc");
    });
    listeners.push(function () {
      transportButton.textContent = state.transport === "webrtc" ? "Switch to HLS" : "Switch to WebRTC";
    });
  }
  // Play the recording from ``ms`` (UNIX milliseconds): a seek inside the loaded recording, else a
  // new VOD playlist from there; a moment near now plays live.
  function playRecording(ms) {
    const now = Date.now();
    if (ms >= now - LIVE_MS) {
      if (state.mode !== "live") live();
      return;
    }
    if (state.mode === "recording" && ms >= state.recording.from && ms < state.recording.end) {
      const t = timeOf(ms, fragments());
      if (t !== null) {
        video.currentTime = t;
        changed();
        return;
      }
    }
    const end = Math.min(now, ms + VOD_SPAN_MS);
    state.mode = "recording";
    state.recording = { from: ms, end: end };
    startAt = ms;
    pendingSeek = null;
    video.defaultPlaybackRate = state.speed;
    attach(vodBase + "?start=" + encodeURIComponent(iso(ms)) + "&end=" + encodeURIComponent(iso(end)) + "&" + token, false);
    show("recording from " + when(ms));
    changed();
  }
  function position() {
    if (state.transport === "webrtc") return Date.now() - Math.max(0, rtc.latency || 0) * 1000;
    const date = hls ? hls.playingDate : null;
    return date ? date.getTime() : null;
  }
  function seekBy(seconds) {
    const at = position();
    if (at === null) return;
    if (state.mode === "live" && seconds > 0) return; // nothing after the live edge
    playRecording(at + seconds * 1000);
  }
  function setSpeed(speed) {
    if (SPEEDS.indexOf(speed) < 0) return;
    state.speed = speed;
    video.defaultPlaybackRate = state.mode === "recording" ? speed : 1;
    if (state.mode === "recording") video.playbackRate = speed; // live plays at 1x (hls.js catches up)
    changed();
  }
  function stepSpeed(step) {
    const i = SPEEDS.indexOf(state.speed) + step;
    if (i >= 0 && i < SPEEDS.length) setSpeed(SPEEDS[i]);
  }
  function togglePlay() {
    if (video.paused) video.play().catch(function (err) { show("press play (" + err.name + ")"); });
    else video.pause();
  }
  window.camflowPlayer = {
    live: live, transport: setTransport, recording: playRecording, seekBy: seekBy, setSpeed: setSpeed, stepSpeed: stepSpeed,
    togglePlay: togglePlay, position: position, speeds: SPEEDS, video: video,
    onChange: function (fn) { listeners.push(fn); },
  };

  if (window.Hls && window.Hls.isSupported()) {
    if (state.preferred === "webrtc") playWebRTC();
    else attach(liveSrc, true);
    video.addEventListener("playing", function () {
      if (state.mode === "live") {
        if (!state.playing) seekToLive("start"); // the edge moved on while the first part loaded
        else if (stalledAt !== null && Date.now() - stalledAt > STALL_SEEK_MS && !seekToLive("stall")) {
          afterStallUntil = Date.now() + AFTER_STALL_MS; // the playlist had not moved on yet (offline)
        }
      } else if (video.playbackRate !== state.speed) {
        video.playbackRate = state.speed;
      }
      state.playing = true;
      stalledAt = null;
    });
    video.addEventListener("waiting", function () {
      if (!state.playing) return;
      state.waits += 1;
      if (stalledAt === null) stalledAt = Date.now();
    });
    video.addEventListener("ended", function () { // the end of a recording's span: the next, or live
      if (state.mode !== "recording") return;
      const end = state.recording.end;
      if (end >= Date.now() - CATCH_UP_MS) live();
      else playRecording(end);
    });
    video.addEventListener("loadedmetadata", function () {
      if (pendingSeek !== null && state.mode === "recording") video.currentTime = pendingSeek;
      pendingSeek = null;
    });
    video.addEventListener("play", changed);
    video.addEventListener("pause", changed);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = liveSrc; // Safari plays (LL-)HLS natively
  } else {
    show("this browser cannot play HLS", true);
  }

  function tick() {
    if (state.transport === "webrtc") {
      state.position = position();
      if (state.playing) rtc.check().catch(function () { /* closed meanwhile */ });
      state.latency = typeof rtc.latency === "number" ? rtc.latency : rtc.delay;
      let behind = "–";
      if (typeof rtc.latency === "number") behind = rtc.latency.toFixed(2) + " s behind ingest";
      else if (typeof rtc.delay === "number") behind = rtc.delay.toFixed(3) + " s in network, buffer and decoder";
      latencyLine.textContent = "latency (WebRTC): " + behind;
      return;
    }
    if (!hls) return;
    const now = Date.now();
    state.position = position();
    if (state.mode === "recording") {
      const at = state.position;
      latencyLine.textContent = "recording: " + (at === null ? "–" : when(at)) +
        " · " + state.speed + "x";
      return;
    }
    if (stalledAt !== null && now - stalledAt > STALL_SEEK_MS && now - lastJump > 1000) {
      lastJump = now; // at most one try a second while the stall lasts (and again once it plays)
      seekToLive("stall");
    } else if (stalledAt === null && now < afterStallUntil && seekToLive("stall")) {
      afterStallUntil = 0;
    }
    const target = hls.targetLatency;
    const behind = hls.latency;
    // Not while waiting for data: the stall's jump above is made once the playlist has moved on.
    if (state.playing && stalledAt === null && !video.paused && target &&
        behind > BEHIND_FACTOR * target && behind > target + 1) {
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
    const details = hls.latestLevelDetails;
    const kind = details && details.partList && details.partList.length ? "LL-HLS" : "HLS";
    latencyLine.textContent = "latency (" + kind + "): " + (parts.join(" · ") || "–");
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
  const events = new EventSource("/api/streams/" + stream + "/health" + q);
  events.addEventListener("health", function (ev) {
    state.samples += 1;
    healthLine.textContent = describe(JSON.parse(ev.data));
  });
})();
