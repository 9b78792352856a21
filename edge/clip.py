"""Clip export at the edge: ``GET /clip/{stream}.mp4?start=ISO8601&end=ISO8601[&rendition=R]``.

One playable MP4 of the range (``camflow.clip``: stream copy of the recorded segments, video and
audio, from the keyframe at or before ``start``), streamed as it is assembled (chunked), with a
``Content-Disposition`` naming the stream and the range. Same token rules and JSON errors as the
VOD playlists (``edge.vod``): a bad time or end not after start is 400, a range over
``camflow.clip.MAX_SECONDS`` is 400 naming the limit, nothing recorded is 404. A store that fails
before the first byte is 503; after it, the response is cut short (the client sees a short read).
"""

from __future__ import annotations

from aiohttp import web

from camflow.clip import MAX_SECONDS, export_clip, file_name
from camflow.errors import MediaFormatError, StoreUnavailable
from camflow.hls.dates import format_date_time
from edge.http import error_response, store_unavailable_response
from edge.vod import VOD, _range, _recorded, _refusals, _Refused, _stream, _video_rendition

CLIP_TYPE = "video/mp4"


def add_clip_routes(app: web.Application) -> None:
    """Register ``/clip/{stream}.mp4`` on an edge application that has the recording routes."""
    app.router.add_get("/clip/{stream}.mp4", clip)


@_refusals
async def clip(request: web.Request) -> web.StreamResponse:
    stream, _ = await _stream(request, request.match_info["stream"])
    start, end = _range(request)
    if end - start > MAX_SECONDS:
        raise _Refused(
            error_response(
                400,
                "range_too_long",
                f"a clip of {end - start:.0f} s is over the export limit of {MAX_SECONDS} s "
                f"(from {format_date_time(start)}): export it in parts",
            )
        )
    try:
        runs = await _recorded(request, stream, start, end)
    except StoreUnavailable as exc:
        return store_unavailable_response(str(exc))
    rendition = _video_rendition(runs, request.query.get("rendition"))
    if not any(rendition in s.renditions for run in runs for s in run.segments):
        raise _Refused(
            error_response(
                404, "not_recorded", f"stream {stream!r} has no {rendition!r} rendition in that range"
            )
        )
    response = web.StreamResponse(
        headers={
            "Content-Type": CLIP_TYPE,
            "Content-Disposition": f'attachment; filename="{file_name(stream, start, end)}"',
            "Cache-Control": "private, no-store",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    state = request.app[VOD]
    try:
        stats = await export_clip(state.store, stream, runs, rendition, response.write, end)
    except (ConnectionResetError, StoreUnavailable, MediaFormatError) as exc:
        # Cut short: the connection is dropped, so the client sees a short read, not a whole file.
        state.log.warning("clip_cut_short", stream_id=stream, rendition=rendition, error=str(exc))
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    state.log.info(
        "clip_exported",
        stream_id=stream,
        rendition=rendition,
        segments=stats.segments,
        media_seconds=round(stats.media_seconds, 3),
        bytes=stats.bytes,
        missing=stats.missing,
        audio_dropped=stats.audio_dropped,
    )
    return response
