// camflow timeline, under the player (edge/static/player.js, window.camflowPlayer): the stream's
// recorded ranges and gaps (GET /api/streams/{stream}/recordings) and its events (GET
// /api/streams/{stream}/events; none when that answers 404) over a zoomable window of time.
// Hover shows the thumbnail of the moment (/api/streams/{stream}/thumb?at=); a click or a drag plays
// the recording from there; shift-drag, two shift-clicks, or [ and ] at the playhead select a clip
// for /clip/{stream}.mp4. Keyboard: space play/pause, arrows seek 5 s (shift: 1 min), L live,
// + and - speed, Esc clears the selection. window.camflowTimeline exposes the state for tests.
(function () {
  "use strict";
  const player = window.camflowPlayer;
  const track = document.getElementById("track");
  if (!player || !track) return;
  const config = JSON.parse(document.getElementById("player").dataset.config);
  const stream = encodeURIComponent(config.stream);
  const token = "token=" + encodeURIComponent(config.token || "");
  const rendition = config.rendition ? "&rendition=" + encodeURIComponent(config.rendition) : "";
  const CLIP_MAX_MS = (config.clip_max || 6 * 3600) * 1000;
  const MIN_SPAN = 60e3;
  const MAX_SPAN = 30 * 86400e3;
  const REFRESH_MS = 10e3; // the ranges and events are asked again this often
  const THUMB_STEPS = [2e3, 10e3, 30e3, 60e3, 300e3, 600e3, 1800e3, 3600e3];
  const TICKS = [60e3, 300e3, 600e3, 1800e3, 3600e3, 3 * 3600e3, 6 * 3600e3, 12 * 3600e3, 86400e3];
  const $ = function (sel) { return document.querySelector(sel); };
  const rangesBox = track.querySelector(".ranges");
  const eventsBox = track.querySelector(".events");
  const selectionBox = track.querySelector(".selection");
  const playhead = track.querySelector(".playhead");
  const cursor = track.querySelector(".cursor");
  const axis = $("#timeline .axis");
  const preview = $("#preview");
  const previewImg = preview.querySelector("img");
  const previewText = preview.querySelector("span");
  const summary = $("#summary");
  const view = { span: 3600e3, end: null }; // end null: the view follows now
  const tl = {
    view: view, ranges: [], events: [], eventsStatus: null, loads: 0, selection: { start: null, end: null },
    thumbs: { asked: 0, shown: 0, failed: 0 }, hover: null,
  };
  window.camflowTimeline = tl;

  // --- time and place ----------------------------------------------------------------------
  function viewEnd() { return view.end === null ? Date.now() : view.end; }
  function viewStart() { return viewEnd() - view.span; }
  function timeAt(clientX) {
    const box = track.getBoundingClientRect();
    const f = Math.min(1, Math.max(0, (clientX - box.left) / box.width));
    return viewStart() + f * view.span;
  }
  function xOf(ms) { // client x of a moment, for tests and markers
    const box = track.getBoundingClientRect();
    return box.left + (ms - viewStart()) / view.span * box.width;
  }
  function pct(ms) { return ((ms - viewStart()) / view.span * 100).toFixed(4) + "%"; }
  function iso(ms) { return new Date(ms).toISOString(); }
  function clock(ms, seconds) {
    const opts = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    if (seconds) opts.second = "2-digit";
    return new Date(ms).toLocaleTimeString([], opts);
  }
  function day(ms) { return new Date(ms).toLocaleDateString([], { month: "short", day: "numeric" }); }
  function stamp(ms) { return (view.span > 86400e3 ? day(ms) + " " : "") + clock(ms, true); }
  function duration(ms) {
    const s = Math.round(ms / 1000);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function recordedAt(ms) { return tl.ranges.some(function (r) { return r.start <= ms && ms < r.end; }); }
  // A moment in a gap plays from the next recorded range (the last one's end if none follows).
  function playable(ms) {
    if (recordedAt(ms)) return ms;
    const next = tl.ranges.find(function (r) { return r.start > ms; });
    return next ? next.start : ms;
  }

  // --- data --------------------------------------------------------------------------------
  async function getJson(path) {
    const resp = await fetch(path, { cache: "no-store" });
    return { status: resp.status, body: resp.ok ? await resp.json() : null };
  }
  let generation = 0;
  async function load() {
    const mine = ++generation;
    const margin = Math.min(view.span / 10, 6 * 3600e3); // 30 d + 12 h: under the events API's 31 d
    const q = "?start=" + encodeURIComponent(iso(viewStart() - margin)) + "&end=" +
      encodeURIComponent(iso(viewEnd() + margin)) + "&" + token;
    const base = "/api/streams/" + stream;
    try {
      const [rec, ev] = await Promise.all([getJson(base + "/recordings" + q), getJson(base + "/events" + q)]);
      if (mine !== generation) return; // a newer view asked since
      tl.loads += 1;
      if (rec.body) {
        tl.ranges = rec.body.ranges.map(function (r) {
          return { start: Date.parse(r.start), end: Date.parse(r.end), segments: r.segments, epoch: r.epoch };
        });
      } else {
        summary.textContent = "recordings: the edge answered " + rec.status;
      }
      tl.eventsStatus = ev.status; // 404: no events API on this edge (yet)
      tl.events = ev.body && ev.body.events ? ev.body.events : [];
    } catch (err) {
      summary.textContent = "recordings: " + err;
    }
    render();
  }
  let pending = null;
  function reload() { // after a view change: at most one request pair per 200 ms
    if (pending !== null) return;
    pending = setTimeout(function () { pending = null; load(); }, 200);
  }

  // --- drawing -----------------------------------------------------------------------------
  function renderRanges() {
    const start = viewStart();
    const end = viewEnd();
    const pixel = view.span / Math.max(1, track.clientWidth);
    const merged = []; // ranges closer than a pixel drawn as one
    for (const r of tl.ranges) {
      if (r.end <= start || r.start >= end) continue;
      const last = merged[merged.length - 1];
      if (last && r.start - last.end < pixel) last.end = Math.max(last.end, r.end);
      else merged.push({ start: r.start, end: r.end });
    }
    rangesBox.replaceChildren(...merged.map(function (r) {
      const el = document.createElement("div");
      el.className = "range";
      el.style.left = pct(Math.max(r.start, start));
      el.style.width = ((Math.min(r.end, end) - Math.max(r.start, start)) / view.span * 100).toFixed(4) + "%";
      el.dataset.start = iso(r.start);
      el.dataset.end = iso(r.end);
      el.title = "recorded " + stamp(r.start) + " – " + stamp(r.end);
      return el;
    }));
    const inView = tl.ranges.filter(function (r) { return r.end > start && r.start < end; });
    const recorded = inView.reduce(function (a, r) { return a + Math.min(r.end, end) - Math.max(r.start, start); }, 0);
    const gaps = Math.max(0, merged.length - 1);
    const events = tl.events.length ? ", " + tl.events.length + (tl.events.length === 1 ? " event" : " events") : "";
    summary.textContent = inView.length
      ? "recordings: " + merged.length + (merged.length === 1 ? " range, " : " ranges, ") + gaps +
        (gaps === 1 ? " gap, " : " gaps, ") + duration(recorded) + " recorded of the " + duration(view.span) + " shown" + events
      : "recordings: nothing between " + stamp(start) + " and " + stamp(end) + events;
  }
  function renderEvents() {
    const start = viewStart();
    const end = viewEnd();
    const shown = tl.events.slice(0, 500).filter(function (e) {
      const a = Date.parse(e.start || e.time);
      const b = Date.parse(e.end || e.time);
      return b >= start && a <= end;
    });
    eventsBox.replaceChildren(...shown.map(function (e) {
      const a = Date.parse(e.start || e.time);
      const b = Math.max(a, Date.parse(e.end || e.time));
      const el = document.createElement("button");
      el.type = "button";
      el.className = "event" + (e.lock ? " lock" : "");
      el.style.left = pct(Math.max(a, start));
      el.style.width = "max(4px, " + ((Math.min(b, end) - Math.max(a, start)) / view.span * 100).toFixed(4) + "%)";
      const what = (e.type || "event") + (e.label ? ": " + e.label : "") + " at " + stamp(Date.parse(e.time || e.start)) +
        (e.lock ? " (kept past retention)" : "");
      el.title = what;
      el.setAttribute("aria-label", "play event " + what);
      el.dataset.id = e.id;
      el.addEventListener("click", function (ev) { ev.stopPropagation(); player.recording(playable(a)); });
      el.addEventListener("pointerdown", function (ev) { ev.stopPropagation(); });
      return el;
    }));
  }
  function renderAxis() {
    const start = viewStart();
    const step = TICKS.find(function (t) { return view.span / t <= 8; }) || 7 * 86400e3;
    const offset = new Date(start).getTimezoneOffset() * 60e3; // ticks on local hours and midnights
    const labels = [];
    for (let t = Math.ceil((start - offset) / step) * step + offset; t < viewEnd() && labels.length < 20; t += step) {
      const el = document.createElement("span");
      el.style.left = pct(t);
      el.textContent = step >= 86400e3 || new Date(t).getHours() + new Date(t).getMinutes() === 0 ? day(t) : clock(t, false);
      labels.push(el);
    }
    axis.replaceChildren(...labels);
  }
  function renderSelection() {
    const s = tl.selection;
    const link = $("#clip-link");
    const text = $("#clip-text");
    const clear = $("#clip-clear");
    const has = s.start !== null;
    selectionBox.hidden = !has;
    clear.hidden = !has;
    if (!has) {
      link.hidden = true;
      text.textContent = "Select a clip: shift-drag on the timeline, or [ and ] at the playhead.";
      return;
    }
    const a = s.end === null ? s.start : Math.min(s.start, s.end);
    const b = s.end === null ? s.start : Math.max(s.start, s.end);
    selectionBox.style.left = pct(a);
    selectionBox.style.width = "max(2px, " + ((b - a) / view.span * 100).toFixed(4) + "%)";
    if (s.end === null || b - a < 1000) {
      link.hidden = true;
      text.textContent = "Clip from " + stamp(a) + ": now pick its end (shift-click or ]).";
    } else if (b - a > CLIP_MAX_MS) {
      link.hidden = true;
      text.textContent = "Clip " + stamp(a) + " – " + stamp(b) + " is " + duration(b - a) +
        ": over the export limit of " + duration(CLIP_MAX_MS) + ".";
    } else {
      link.hidden = false;
      link.href = "/clip/" + stream + ".mp4?start=" + encodeURIComponent(iso(a)) + "&end=" +
        encodeURIComponent(iso(b)) + rendition + "&" + token;
      text.textContent = "Clip " + stamp(a) + " – " + stamp(b) + " (" + duration(b - a) + ")";
    }
  }
  function renderPlayhead() {
    const at = player.position();
    const live = window.camflow.mode === "live";
    playhead.hidden = at === null || at < viewStart() || at > viewEnd();
    if (at !== null) playhead.style.left = pct(at);
    playhead.classList.toggle("live", live);
    track.setAttribute("aria-valuemin", String(Math.round(viewStart() / 1000)));
    track.setAttribute("aria-valuemax", String(Math.round(viewEnd() / 1000)));
    track.setAttribute("aria-valuenow", String(Math.round((at || viewEnd()) / 1000)));
    track.setAttribute("aria-valuetext", live ? "live" : at === null ? "loading" : "recording at " + stamp(at));
  }
  function renderControls() {
    const st = window.camflow;
    $("#play").textContent = player.video.paused ? "Play" : "Pause";
    $("#live").setAttribute("aria-pressed", String(st.mode === "live"));
    for (const b of document.querySelectorAll("[data-speed]")) {
      b.setAttribute("aria-pressed", String(Number(b.dataset.speed) === st.speed));
    }
    for (const b of document.querySelectorAll("[data-span]")) {
      b.setAttribute("aria-pressed", String(Number(b.dataset.span) * 1000 === view.span));
    }
    $("#later").disabled = view.end === null;
  }
  function render() {
    renderRanges();
    renderEvents();
    renderAxis();
    renderSelection();
    renderPlayhead();
    renderControls();
  }

  // --- the view ----------------------------------------------------------------------------
  function setView(span, end) {
    view.span = Math.min(MAX_SPAN, Math.max(MIN_SPAN, span));
    view.end = end === null || end >= Date.now() - view.span / 100 ? null : end;
    render();
    reload();
  }
  function zoomAround(ms, factor) {
    const span = Math.min(MAX_SPAN, Math.max(MIN_SPAN, view.span * factor));
    const start = ms - (ms - viewStart()) * span / view.span;
    setView(span, start + span);
  }
  function pan(fraction) { setView(view.span, viewEnd() + view.span * fraction); }

  // --- hover preview -----------------------------------------------------------------------
  let thumbTimer = null;
  let thumbWanted = null;
  function showPreview(clientX, ms) {
    const box = track.getBoundingClientRect();
    const step = THUMB_STEPS.find(function (s) { return s >= view.span / box.width * 6; }) || 3600e3;
    const at = Math.round(ms / step) * step;
    cursor.hidden = false;
    cursor.style.left = pct(ms);
    preview.hidden = false;
    preview.style.left = Math.min(box.width - 170, Math.max(0, clientX - box.left - 80)) + "px";
    previewText.textContent = stamp(ms) + (recordedAt(ms) ? "" : " · not recorded");
    tl.hover = ms;
    const near = tl.ranges.some(function (r) { return r.start - 30e3 <= at && at < r.end + 30e3; });
    const url = near ? "/api/streams/" + stream + "/thumb?at=" + encodeURIComponent(iso(at)) + "&" + token : null;
    if (url === thumbWanted) return;
    thumbWanted = url;
    clearTimeout(thumbTimer);
    if (url === null) { previewImg.hidden = true; return; }
    thumbTimer = setTimeout(function () { tl.thumbs.asked += 1; previewImg.src = url; }, 60);
  }
  function hidePreview() {
    preview.hidden = true;
    cursor.hidden = true;
    tl.hover = null;
  }
  previewImg.addEventListener("load", function () { previewImg.hidden = false; tl.thumbs.shown += 1; });
  previewImg.addEventListener("error", function () { previewImg.hidden = true; tl.thumbs.failed += 1; });

  // --- pointer -----------------------------------------------------------------------------
  let drag = null;
  function select(a, b) {
    tl.selection.start = a;
    tl.selection.end = b;
    renderSelection();
  }
  track.addEventListener("pointerdown", function (e) {
    if (e.button !== 0) return;
    track.setPointerCapture(e.pointerId);
    drag = { x: e.clientX, t: timeAt(e.clientX), shift: e.shiftKey, moved: false };
    e.preventDefault();
    track.focus();
  });
  track.addEventListener("pointermove", function (e) {
    const t = timeAt(e.clientX);
    showPreview(e.clientX, t);
    if (drag === null) return;
    if (Math.abs(e.clientX - drag.x) > 3) drag.moved = true;
    if (drag.shift && drag.moved) select(drag.t, t);
  });
  track.addEventListener("pointerup", function (e) {
    if (drag === null) return;
    const t = timeAt(e.clientX);
    const d = drag;
    drag = null;
    if (!d.shift) {
      player.recording(playable(t)); // a click, or the end of a drag: play from there
    } else if (d.moved) {
      select(d.t, t);
    } else if (tl.selection.start !== null && tl.selection.end === null) {
      select(tl.selection.start, t); // the second shift-click ends the selection
    } else {
      select(t, null);
    }
    render();
  });
  track.addEventListener("pointerleave", function () { if (drag === null) hidePreview(); });
  track.addEventListener("pointercancel", function () { drag = null; hidePreview(); });
  track.addEventListener("wheel", function (e) {
    e.preventDefault();
    if (Math.abs(e.deltaX) > Math.abs(e.deltaY) || e.shiftKey) {
      pan((e.deltaX || e.deltaY) / Math.max(1, track.clientWidth));
    } else {
      zoomAround(timeAt(e.clientX), e.deltaY > 0 ? 1.25 : 0.8);
    }
  }, { passive: false });

  // --- buttons and keys --------------------------------------------------------------------
  function at(id, fn) { $(id).addEventListener("click", fn); }
  at("#play", function () { player.togglePlay(); });
  at("#live", function () { player.live(); });
  at("#earlier", function () { pan(-0.5); });
  at("#later", function () { pan(0.5); });
  at("#now", function () { setView(view.span, null); });
  at("#clip-clear", function () { select(null, null); });
  function markStart() { const p = player.position(); if (p !== null) select(p, tl.selection.end); }
  function markEnd() {
    const p = player.position();
    if (p !== null) select(tl.selection.start === null ? p - 60e3 : tl.selection.start, p);
  }
  at("#clip-start", markStart);
  at("#clip-end", markEnd);
  for (const b of document.querySelectorAll("[data-speed]")) {
    b.addEventListener("click", function () { player.setSpeed(Number(b.dataset.speed)); });
  }
  for (const b of document.querySelectorAll("[data-span]")) {
    b.addEventListener("click", function () {
      const span = Number(b.dataset.span) * 1000;
      const p = player.position();
      if (view.end === null || p === null) setView(span, view.end);
      else setView(span, p + span / 2); // a recording being reviewed stays in the middle
    });
  }
  document.addEventListener("keydown", function (e) {
    const target = e.target;
    const tag = target && target.tagName;
    if (e.ctrlKey || e.metaKey || e.altKey || tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") return;
    const onControl = tag === "BUTTON" || tag === "A";
    let handled = true;
    if (e.key === " " || e.key === "k") {
      if (onControl) return; // the focused button or link is pressed instead
      player.togglePlay();
    } else if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
      player.seekBy((e.key === "ArrowLeft" ? -1 : 1) * (e.shiftKey ? 60 : 5));
    } else if (e.key === "l" || e.key === "L") {
      player.live();
    } else if (e.key === "+" || e.key === "=") {
      player.stepSpeed(1);
    } else if (e.key === "-" || e.key === "_") {
      player.stepSpeed(-1);
    } else if (e.key === "[") {
      markStart();
    } else if (e.key === "]") {
      markEnd();
    } else if (e.key === "Escape") {
      select(null, null);
    } else {
      handled = false;
    }
    if (handled) e.preventDefault();
  });

  player.onChange(function () { renderPlayhead(); renderControls(); });
  tl.xOf = xOf;
  tl.timeAt = timeAt;
  tl.setView = setView;
  window.addEventListener("resize", render);
  let ticks = 0;
  setInterval(function () { // the playhead 4 times a second; a view that follows now moves once a second
    renderPlayhead();
    ticks += 1;
    if (view.end === null && ticks % 4 === 0) { renderRanges(); renderEvents(); renderAxis(); renderSelection(); }
  }, 250);
  setInterval(function () { if (!document.hidden) load(); }, REFRESH_MS); // a background tab asks nothing
  render();
  load();
})();
