"""Pages for people: ``/watch/{stream}?token=`` (the player; ``&rendition=NAME`` plays that rendition
alone instead of the master) and ``/?token=`` (live streams, operator).

The player uses hls.js, installed from npm into ``edge/web/node_modules`` by ``make install``
and served from disk at ``/static/hls.min.js``; nothing is loaded from another origin.
The stream list shows each live stream's latest thumbnail (``edge.thumbs``), refreshed by the page.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from aiohttp import web

from camflow.keys import is_rendition
from edge.access import operator_refusal, request_token, stream_refusal, viewer_refusal
from edge.http import error_response
from edge.state import EDGE, EdgeState

HLSJS_ENV = "CAMFLOW_HLSJS_DIR"
HERE = Path(__file__).resolve().parent


def default_static_dir() -> Path:
    return HERE / "static"


def hlsjs_path() -> Path:
    base = Path(os.environ.get(HLSJS_ENV) or HERE / "web" / "node_modules" / "hls.js" / "dist")
    return base / "hls.min.js"


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


async def _viewer_refusal(request: web.Request, state: EdgeState, stream: str) -> web.Response | None:
    """The error response for a bad stream name or a missing/invalid view token; None when allowed."""
    return stream_refusal(state, stream) or await viewer_refusal(state, request, stream)


async def watch(request: web.Request) -> web.Response:
    state = request.app[EDGE]
    stream = request.match_info["stream"]
    refused = await _viewer_refusal(request, state, stream)
    if refused is not None:
        return refused
    token = _carried_token(request)
    settings: dict[str, str] = {"stream": stream, "token": token}
    rendition = request.query.get("rendition")
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
        "<p id=health class=line>health: waiting for the first sample…</p>"
        "<p id=latency class=line>latency: -</p>"
        "<p id=status class=line>loading…</p>"
        "</main>"
        '<script src="/static/hls.min.js"></script><script src="/static/player.js"></script>'
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
        text=_page("live streams · camflow", f"<main><h1>Live streams</h1>{listing}</main>"),
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
