"""Live playlists of a stream live in another region: ``307`` to that region's edge (``--region``).

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
"""

from __future__ import annotations

from aiohttp import web

from camflow.regions import DirectoryEntry
from edge.policy import NO_STORE
from edge.state import EdgeState


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
