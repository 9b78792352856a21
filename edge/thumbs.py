"""Thumbnails at the edge: the latest picture of a stream, and the picture of a recorded moment.

- ``GET /thumb/{stream}.jpg?token=``: ``streams/{stream}/thumb.jpg`` (the transcoder's latest), fresh
  in the cache for ``THUMB_TTL`` seconds (the stream list);
- ``GET /api/streams/{stream}/thumb?at=ISO8601&token=``: the thumbnail of the recorded segment at
  that moment (``streams/{stream}/{epoch}/thumbs/{seq}.jpg``, its first picture), found in the
  recording index (``edge.vod``): the segment playing at ``at``, else the nearest one within
  ``MOMENT_REACH`` seconds (a moment in a gap shows the picture next to it). The player page's
  timeline shows it on hover. Thumbnails of segments never change: cached as immutable.

Same view token rules as ``/live``. Errors are JSON: no or a bad ``at`` is 400, nothing recorded near
it (or no thumbnail for that segment) is 404, a failing store 503.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from aiohttp import web

from camflow.errors import NotFound, StoreUnavailable
from camflow.hls.dates import format_date_time, parse_date_time
from camflow.keys import latest_thumbnail_key, thumbnail_key
from camflow.recordings import EpochRun
from edge.access import viewer_refusal
from edge.cache import CachedObject
from edge.http import error_response, http_date, store_unavailable_response
from edge.state import EDGE, EdgeState
from edge.vod import _recorded, _refusals, _Refused, _stream

THUMB_TTL = 2.0
MOMENT_REACH = 30.0  # seconds either side of ``at`` searched for a segment
MOMENT_CACHE = "private, max-age=60"  # a moment not yet recorded may be later (or deleted by retention)


def add_thumbnail_routes(app: web.Application) -> None:
    """Register both thumbnail routes on an edge application that has the recording routes."""
    app.router.add_get("/thumb/{stream}.jpg", latest)
    app.router.add_get("/api/streams/{stream}/thumb", moment)


def _immutable(_: bytes) -> None:
    return None


def _fresh(_: bytes) -> float:
    return THUMB_TTL


def nearest(runs: list[EpochRun], at: float) -> tuple[str, int, float] | None:
    """``(epoch, seq, start)`` of the segment playing at ``at``, else of the one nearest to it."""
    best: tuple[float, str, int, float] | None = None
    for run in runs:
        for s in run.segments:
            distance = 0.0 if s.wall_clock <= at < s.end else min(abs(s.wall_clock - at), abs(s.end - at))
            if best is None or distance < best[0]:
                best = (distance, run.epoch, s.seq, s.wall_clock)
    return None if best is None else best[1:]


async def _jpeg(
    state: EdgeState, stream: str, key: str, ttl: Callable[[bytes], float | None], missing: str
) -> CachedObject:
    try:
        return await state.cache.get(key, state.store.get, ttl)
    except NotFound:
        raise _Refused(error_response(404, "not_found", missing)) from None
    except StoreUnavailable as exc:
        raise _Refused(store_unavailable_response(str(exc))) from None
    except Exception as exc:
        state.counters.store_failed += 1
        state.log.error("store_failed", stream_id=stream, key=key, error=repr(exc))
        raise _Refused(
            error_response(502, "store_unavailable", f"the store could not serve {key!r}; try again")
        ) from None


def _image(cached: CachedObject, cache_control: str, extra: dict[str, str] | None = None) -> web.Response:
    headers = {
        "Cache-Control": cache_control,
        "ETag": cached.etag,
        "Last-Modified": http_date(cached.last_modified),
        **(extra or {}),
    }
    return web.Response(body=cached.data, content_type="image/jpeg", headers=headers)


@_refusals
async def latest(request: web.Request) -> web.Response:
    state = request.app[EDGE]
    stream = request.match_info["stream"]
    refused = await viewer_refusal(state, request, stream)
    if refused is not None:
        return refused
    cached = await _jpeg(
        state, stream, latest_thumbnail_key(stream), _fresh, f"stream {stream!r} has no thumbnail yet"
    )
    return _image(cached, f"private, max-age={int(THUMB_TTL)}")


def _moment(request: web.Request) -> float:
    text = request.query.get("at")
    if text is None:
        raise _Refused(
            error_response(400, "bad_time", "?at= is missing: expected ISO 8601, e.g. 2026-11-21T14:02:00Z")
        )
    try:
        at = parse_date_time(text)
    except (ValueError, OverflowError) as exc:
        raise _Refused(
            error_response(
                400, "bad_time", f"at={text!r} is not ISO 8601 with a zone, e.g. 2026-11-21T14:02:00Z ({exc})"
            )
        ) from None
    if not math.isfinite(at):
        raise _Refused(error_response(400, "bad_time", f"at={text!r} is not a finite time"))
    return at


@_refusals
async def moment(request: web.Request) -> web.Response:
    state = request.app[EDGE]
    stream, _ = await _stream(request, request.match_info["stream"])
    at = _moment(request)
    runs = await _recorded(request, stream, at - MOMENT_REACH, at + MOMENT_REACH)  # 404 when none
    found = nearest(runs, at)
    if found is None:  # not reached: a run has segments
        return error_response(404, "not_recorded", f"stream {stream!r} has nothing recorded near {at}")
    epoch, seq, start = found
    cached = await _jpeg(
        state,
        stream,
        thumbnail_key(stream, epoch, seq),
        _immutable,
        f"segment {seq} of stream {stream!r} (epoch {epoch}) has no thumbnail",
    )
    # The time of the picture shown (the segment's first frame), for a caption.
    return _image(cached, MOMENT_CACHE, {"Camflow-Time": format_date_time(start)})
