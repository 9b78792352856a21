"""The edge in a region (``--region``): live playlists of a stream live in another region get a ``307``
to that region's edge, and ``GET /api/streams/{stream}/region`` says where the stream is live.

The stream directory (``camflow.regions``) in this region's replica names the region a stream is
live in; while that region's heartbeat is fresh here, a request for one of the stream's live
playlists is sent there with its path and query (the token goes along: regions share their signing
keys). A redirect, not a pull-through: a low-latency playlist is answered as soon as the owner's
packager writes it, which only the owner's edge hears of (its Kafka's ``camflow.playlists``), and
the media then comes from the owner's edge and the CDN in front of it, once for every viewer,
instead of crossing regions once per edge. Segments, parts and init sections are served here as
ever (they are immutable and replicated), and so are recordings (``/vod``): from this region's
replica. A stream live here, not live, unknown, or whose region is gone is served here as well.

The answer is cached per stream for ``camflow.regions.DIRECTORY_SECONDS``; the fast path
(``edge.fastpath``) serves a playlist only once this module has found the stream at home.

``/api/streams/{stream}/region`` (a view token for the stream, or an operator token): the stream's
directory entry as this region's replica has it, read now, with how old its region's heartbeat is
here and whether live requests for it are served here: ``{"stream", "region", "epoch", "live",
"edge", "at", "heartbeat_age", "served_here"}``. 404 ``not_in_directory`` when no region claimed the
stream, 404 ``no_regions`` on an edge without ``--region``.
"""

from __future__ import annotations

from aiohttp import web

from camflow.hls.dates import format_date_time
from camflow.regions import DirectoryEntry
from edge.access import viewer_refusal
from edge.http import error_response
from edge.policy import NO_STORE
from edge.state import EDGE, EdgeState


async def owner_elsewhere(state: EdgeState, stream: str) -> DirectoryEntry | None:
    """The directory entry of ``stream`` when it is live in another region, else None (also when the
    directory cannot be read: the stream is then served here, and the failure logged)."""
    if state.regions is None:
        return None
    try:
        return await state.regions.elsewhere(stream)
    except Exception as exc:
        state.counters.store_failed += 1
        state.log.warning("region_directory_unreadable", stream_id=stream, error=repr(exc))
        return None


def region_redirect(state: EdgeState, request: web.Request, owner: DirectoryEntry) -> web.Response:
    state.counters.region_redirects += 1
    target = owner.edge + str(request.rel_url)
    state.log.info("region_redirected", stream_id=owner.stream, region=owner.region, to=owner.edge)
    return web.Response(
        status=307,
        headers={"Location": target, "Cache-Control": NO_STORE},
        text=f"stream {owner.stream!r} is live in region {owner.region!r}: {target}\n",
    )


async def where(request: web.Request) -> web.Response:
    state = request.app[EDGE]
    stream = request.match_info["stream"]
    refused = await viewer_refusal(state, request, stream)
    if refused is not None:
        return refused
    regions = state.regions
    if regions is None:
        return error_response(404, "no_regions", "this edge runs in one region (no --region)")
    entry = await regions.entry(stream, fresh=True)
    if entry is None:
        return error_response(404, "not_in_directory", f"no region has claimed stream {stream!r}")
    beat = await regions.heartbeat(entry.region)
    age = None if beat is None else round(max(0.0, regions.clock() - beat.at), 3)
    body = {
        "stream": stream,
        "region": entry.region,
        "epoch": entry.epoch,
        "live": entry.live,
        "edge": entry.edge,
        "at": format_date_time(entry.at),
        "heartbeat_age": age,
        "served_here": await owner_elsewhere(state, stream) is None,
    }
    return web.json_response(body, headers={"Cache-Control": NO_STORE})


def add_region_routes(app: web.Application) -> None:
    app.router.add_get("/api/streams/{stream}/region", where)
