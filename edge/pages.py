"""Pages for people: ``/watch/{stream}?token=`` (the player and the recordings' timeline;
``&rendition=NAME`` plays that rendition alone instead of the master) and ``/?token=`` (live
streams, operator: a grid of their latest thumbnails, refreshed by ``static/streams.js``).

The player uses hls.js, installed from npm into ``edge/web/node_modules`` by ``make install``
and served from disk at ``/static/hls.min.js``; nothing is loaded from another origin.
The player page's scripts: ``static/player.js`` (live and recorded playback, speed; live over WebRTC
by default where WHEP is mounted (else with ``&transport=webrtc``; ``&transport=hls`` for HLS) or its
button, through ``static/webrtc.js``, falling back to HLS) and
``static/timeline.js`` (recorded ranges, events, thumbnails of ``edge.thumbs``, clip selection).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from aiohttp import web

from camflow.clip import MAX_SECONDS as CLIP_MAX_SECONDS
from camflow.keys import is_rendition
from edge.access import operator_refusal, request_token, viewer_refusal
from edge.http import error_response
from edge.state import EDGE

HLSJS_ENV = "CAMFLOW_HLSJS_DIR"
HERE = Path(__file__).resolve().parent


def default_static_dir() -> Path:
    return HERE / "static"


def hlsjs_path() -> Path:
    base = Path(os.environ.get(HLSJS_ENV) or HERE / "web" / "node_modules" / "hls.js" / "dist")
    return base / "hls.min.js"


def _buttons(label: str, attr: str, items: tuple[tuple[str, str], ...]) -> str:
    """A labelled group of toggle buttons, each with ``attr`` = value and its text."""
    buttons = "".join(f"<button type=button {attr}={v} aria-pressed=false>{t}</button>" for v, t in items)
    return f'<span class=group role=group aria-label="{label}">{buttons}</span>'


# The player's controls and timeline (edge/static/timeline.js fills the track and drives them).
SPEEDS = tuple((v, f"{v}x") for v in ("0.5", "1", "2", "4", "8"))
ZOOMS = (("600", "10 min"), ("3600", "1 h"), ("21600", "6 h"), ("86400", "24 h"), ("604800", "7 d"))
TIMELINE = (
    '<div id=controls class=controls role=toolbar aria-label="playback">'
    '<button type=button id=play aria-label="play or pause (space)">Pause</button>'
    '<button type=button id=live aria-pressed=true aria-label="back to live (L)">Live</button>'
    + _buttons("playback speed of recordings (+ and -)", "data-speed", SPEEDS)
    + _buttons("timeline zoom (mouse wheel)", "data-span", ZOOMS)
    + '<button type=button id=earlier aria-label="earlier on the timeline">◀</button>'
    '<button type=button id=later aria-label="later on the timeline">▶</button>'
    '<button type=button id=now aria-label="timeline up to now">Now</button>'
    "</div>"
    "<div id=timeline class=timeline>"
    "<div id=track class=track role=slider tabindex=0 aria-valuemin=0 aria-valuemax=0 aria-valuenow=0 "
    'aria-label="recordings: click or drag to play from a moment, shift-drag or two shift-clicks to '
    'select a clip, arrows seek">'
    "<div class=ranges></div><div class=events></div><div class=selection hidden></div>"
    "<div class=playhead></div><div class=cursor hidden></div></div>"
    "<div class=axis aria-hidden=true></div>"
    '<div id=preview class=preview hidden><img alt=""><span></span></div>'
    "</div>"
    "<p id=summary class=line aria-live=polite>recordings: loading…</p>"
    "<p id=clip class=line><span id=clip-text>Select a clip: shift-drag on the timeline, or [ and ] "
    "at the playhead.</span> "
    '<button type=button id=clip-start aria-label="clip starts at the playhead ([)">Clip start</button>'
    '<button type=button id=clip-end aria-label="clip ends at the playhead (])">Clip end</button>'
    "<a id=clip-link class=button download hidden>Download clip</a>"
    '<button type=button id=clip-clear hidden aria-label="clear the selection (Esc)">Clear</button></p>'
)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        '<link rel=stylesheet href="/static/camflow.css"></head>\n'
        f"<body>{body}</body></html>\n"
    )


def _viewers(n: int) -> str:
    return f"{n} viewer" if n == 1 else f"{n} viewers"


def _carried_token(request: web.Request) -> str:
    """The token the page's links and player carry: one that came in ``?token=``. A token that came
    as ``Authorization: Bearer`` is never written into a response (as in playlists): the client
    sends it again itself, and a page holding it could be kept by a cache keyed by URL alone."""
    token, in_query = request_token(request)
    return token if in_query else ""


def serves_whep(app: web.Application) -> bool:
    """Whether WHEP is mounted on this server (``/whep``: WebRTC playback, or its redirect)."""
    return any(getattr(r, "canonical", "") == "/whep" for r in app.router.resources())


async def watch(request: web.Request) -> web.Response:
    state = request.app[EDGE]
    stream = request.match_info["stream"]
    refused = await viewer_refusal(state, request, stream)
    if refused is not None:
        return refused
    token = _carried_token(request)
    settings: dict[str, str | int] = {"stream": stream, "token": token, "clip_max": CLIP_MAX_SECONDS}
    rendition = request.query.get("rendition")
    asked = request.query.get("transport")
    # Live over WebRTC (WHEP), HLS as the fallback: asked for, or by default where this server has
    # WHEP (its own, or the redirect of a distributed edge) and no rung is pinned (WHEP sends source).
    if asked == "webrtc" or (asked != "hls" and rendition is None and serves_whep(request.app)):
        settings["transport"] = "webrtc"
    if rendition is not None:  # one rendition's playlist instead of the master (no ABR): a pinned rung
        if not is_rendition(rendition):
            state.counters.bad_path += 1
            return error_response(
                400,
                "bad_path",
                f"rendition {rendition!r} is not valid: expected a rendition name such as 'source' or '360p'",
            )
        settings["rendition"] = rendition
    config = html.escape(json.dumps(settings), quote=True)
    body = (
        f'<main id=player data-config="{config}">'
        f"<h1>{html.escape(stream)}</h1>"
        "<video id=video muted autoplay playsinline controls></video>"
        f"{TIMELINE}"
        "<p id=health class=line>health: waiting for the first sample…</p>"
        "<p id=latency class=line>latency: -</p>"
        '<p class=line><button type=button id=transport aria-label="play live over WebRTC or HLS">'
        "Switch to WebRTC</button></p>"
        "<p id=status class=line>loading…</p>"
        "</main>"
        '<script src="/static/hls.min.js"></script><script src="/static/webrtc.js"></script>'
        '<script src="/static/player.js"></script>'
        '<script src="/static/timeline.js"></script>'
    )
    return web.Response(text=_page(f"{stream} · camflow", body), content_type="text/html")


async def index(request: web.Request) -> web.Response:
    state = request.app[EDGE]
    refused = operator_refusal(
        state, request, "the stream list needs an operator token: /?token=T with T from `camflow token admin`"
    )
    if refused is not None:
        return refused
    q = html.escape(_carried_token(request), quote=True)
    cards = []
    await state.viewers.census()  # with --workers N: every worker's viewers
    for name in state.catalog.names:
        summary = await state.catalog.summary(name)
        if summary is None or summary.state.value != "live":
            continue
        n = html.escape(name)
        facts = " · ".join(
            part
            for part in (
                summary.resolution,
                f"{summary.bitrate // 1000} kbit/s" if summary.bitrate else None,
                _viewers(state.viewers.count(name)),
            )
            if part
        )
        cards.append(
            f'<li class=card><a href="/watch/{n}?token={q}">'
            f'<img src="/thumb/{n}.jpg?token={q}" alt="latest thumbnail of {n}" '
            "onerror=\"this.classList.add('missing')\">"
            f"<strong>{n}</strong></a><span class=line>{html.escape(facts)}</span></li>"
        )
    listing = "<ul class=streams>" + "".join(cards) + "</ul>" if cards else "<p>No live streams.</p>"
    return web.Response(
        text=_page(
            "live streams · camflow",
            f'<main><h1>Live streams</h1>{listing}</main><script src="/static/streams.js"></script>',
        ),
        content_type="text/html",
        headers={"Cache-Control": "no-store"},
    )


async def hlsjs(request: web.Request) -> web.StreamResponse:
    path = hlsjs_path()
    if not path.is_file():
        return error_response(
            404,
            "not_found",
            f"hls.js is not installed at {str(path)!r}: run `make install` (npm ci in edge/web)",
        )
    return web.FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


def add_page_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/watch/{stream}", watch)
    app.router.add_get("/static/hls.min.js", hlsjs)
    app.router.add_static("/static/", app[EDGE].static_dir, append_version=False)
