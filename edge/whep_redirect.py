"""WHEP on an edge that holds no live media (a distributed deployment): ``POST /whep/{stream}`` is
answered ``307 Temporary Redirect`` to the WHEP endpoint of the ingest node that holds the stream.

Every ingest process announces where its WHEP is served (``--whep-public-url``) in its health samples
on ``camflow.health``; the edge follows that topic (``edge.health.HealthFeed``) and sends a viewer to
the node whose sample of the stream is live and fresh (``camflow.health.HealthBoard.whep_url``). The
view token is checked first, as for the edge's playlists (401/403: nobody learns which streams are
live or where), and the query string (``?token=``) goes along; the body is not read (a 307 makes the
client send it again to the new URL): WHIP (RFC 9725) lets its endpoint redirect this way for load
balancing, and the WHEP draft (draft-ietf-wish-whep) follows WHIP. No such node: ``404
stream_not_live`` (the player plays HLS). The session's ``Location`` then comes from the ingest node,
relative to the URL the viewer was redirected to, so its ``DELETE`` goes there.
"""

from __future__ import annotations

from aiohttp import web

from camflow.keys import is_stream_name
from camflow.log import get_logger
from edge.access import viewer_refusal
from edge.health import HealthFeed
from edge.state import EDGE

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Post, Accept-Patch",
}
METHODS = "POST, OPTIONS"
log = get_logger("edge")


def _error(status: int, error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status, headers=CORS)


def whep_redirects(feed: HealthFeed) -> web.Application:
    """The routes, to mount at ``/whep`` on an edge without WHEP of its own."""

    async def post(request: web.Request) -> web.Response:
        stream = request.match_info["stream"]
        if not is_stream_name(stream):
            return _error(400, "bad_stream", f"{stream[:80]!r} is not a stream name")
        state = request.config_dict.get(EDGE)  # the edge's own token check (401/403) before any node
        if state is not None and (refused := await viewer_refusal(state, request, stream)) is not None:
            refused.headers.update(CORS)
            return refused
        base = feed.board.whep_url(stream)
        if base is None:
            log.info("whep_redirect_refused", stream_id=stream, reason="stream_not_live")
            return _error(
                404,
                "stream_not_live",
                f"no ingest node announces WebRTC playback of {stream!r} now: play it over HLS",
            )
        target = f"{base}/whep/{stream}"
        if request.query_string:
            target += "?" + request.query_string
        log.info("whep_redirected", stream_id=stream, to=base)
        return web.Response(status=307, headers={**CORS, "Location": target})

    async def preflight(request: web.Request) -> web.Response:
        return web.Response(
            status=204,
            headers={
                **CORS,
                "Allow": METHODS,
                "Accept-Post": "application/sdp",
                "Access-Control-Allow-Methods": METHODS,
                "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
                "Access-Control-Max-Age": "86400",
            },
        )

    app = web.Application()
    app.router.add_post("/{stream}", post)
    app.router.add_route("OPTIONS", "/{stream}", preflight)
    return app
