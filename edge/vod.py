"""Recordings at the edge: time-range VOD playlists, DVR live windows, the recordings list.

``add_recording_routes(app, store)`` registers, on an edge application:

- ``GET /vod/{stream}/master.m3u8?start=ISO8601&end=ISO8601``: a master naming one VOD
  playlist per recorded rendition (peak BANDWIDTH of the range, CODECS, RESOLUTION,
  FRAME-RATE), so players keep ABR;
- ``GET /vod/{stream}/{rendition}.m3u8?start=&end=`` and ``GET /vod/{stream}.m3u8?start=&end=``
  (the highest-bandwidth rendition, or ``&rendition=``): EXT-X-PLAYLIST-TYPE:VOD with
  ENDLIST, every epoch of the range with EXT-X-DISCONTINUITY between them (and before a
  segment that is missing from the recording). Segment and init URIs are the edge's
  ``/live/{stream}/{epoch}/{rendition}/...`` objects, so they are cached and served by
  the same code as live;
- ``GET /live/{stream}/master.m3u8?dvr=SECONDS`` and ``/live/{stream}/{rendition}.m3u8?dvr=``:
  the live playlist that reaches back SECONDS, cut from the packager's DVR playlist
  (``--dvr-window``) at the live end: each reload only gains entries at the end and loses
  them at the front, with MEDIA-SEQUENCE and DISCONTINUITY-SEQUENCE advanced, as RFC 8216
  6.2.2 wants (a middleware: ``/live/`` without ``dvr`` is left to the live route);
- ``GET /api/streams/{stream}/recordings``: ``{"stream", "ranges": [{"epoch", "start",
  "end", "duration", "segments"}], "start", "end", "recorded"}``, the covered time ranges
  (``?start=&end=`` narrow them to the segments overlapping the window; default everything
  kept), and, when there is any, where the first starts, the last ends and the seconds recorded.

Time ranges are resolved by ``camflow.recording_reader.RecordingReader`` from the index's day
summaries: the store requests per query depend on the window, not on the history kept.

Same token rules as ``/live`` (``edge.access``): a ``view`` token for the stream, or an operator
token, in ``?token=`` (401 without, 403 when wrong), carried into every URI of the playlists
served. The playlists are written by the HLS contract (``camflow.hls``). Errors are JSON
``{"error", "detail"}``: a bad ISO time, end not after start or a range over
``max_range`` is 400; nothing recorded in the range is 404.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from camflow.clip import AUDIO, best_video_rendition
from camflow.errors import NotFound
from camflow.hls.dates import format_date_time, parse_date_time
from camflow.hls.errors import PlaylistError
from camflow.hls.master import AudioRendition, Variant, write_master
from camflow.hls.media import MediaPlaylist, Segment
from camflow.hls.scan import map_uris, trim
from camflow.hls.tags import AUDIO_GROUP, rounded_target
from camflow.hls.tags import VOD as PLAYLIST_TYPE_VOD
from camflow.keys import (
    dvr_playlist_key,
    is_rendition,
    master_playlist_key,
)
from camflow.log import get_logger
from camflow.recording_reader import RecordingReader
from camflow.recordings import EpochRun
from camflow.store import Store
from edge.access import request_token, viewer_refusal
from edge.http import error_response
from edge.rewrite import TOKEN_PARAM, add_token_to_playlist
from edge.state import EDGE

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
DEFAULT_MAX_RANGE = 24 * 3600.0
MAX_DVR = 7 * 24 * 3600.0
VOD_CACHE = "public, max-age=5"
LIVE_CACHE = "public, max-age=1"
_LIVE_PLAYLIST_RE = re.compile(r"^/live/([^/]+)/([^/]+)\.m3u8$")


@dataclass(frozen=True)
class VodState:
    store: Store
    max_range: float
    log: Any
    reader: RecordingReader


VOD = web.AppKey("vod", VodState)


class _Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def add_recording_routes(app: web.Application, store: Store, *, max_range: float = DEFAULT_MAX_RANGE) -> None:
    """Register the recording routes (and the ``?dvr=`` middleware) on an edge application
    (``edge.app.build_app``: its ``EDGE`` state checks the tokens)."""
    log = get_logger("edge.vod")
    app[VOD] = VodState(store, max_range, log, RecordingReader(store, log=log))
    app.middlewares.append(dvr_middleware)
    app.router.add_get("/vod/{stream}/master.m3u8", vod_master)
    app.router.add_get("/vod/{stream}/{rendition}.m3u8", vod_rendition)
    app.router.add_get("/vod/{stream}.m3u8", vod_best)
    app.router.add_get("/api/streams/{stream}/recordings", recordings)


# --- checks ------------------------------------------------------------------------------------


async def _stream(request: web.Request, name: str) -> tuple[str, str]:
    """``(stream, token)`` once the name is valid and the view token is good; else _Refused. The token
    is "" when it came in ``Authorization: Bearer`` (the client sends it again; URIs do not carry it)."""
    state = request.app[EDGE]
    refused = await viewer_refusal(state, request, name)
    if refused is not None:
        raise _Refused(refused)
    token, carried = request_token(request)
    return name, token if carried else ""


def _range(request: web.Request, *, required: bool = True) -> tuple[float, float]:
    state = request.app[VOD]
    values: list[float] = []
    for param in ("start", "end"):
        text = request.query.get(param)
        if text is None:
            if required:
                raise _Refused(
                    error_response(
                        400, "bad_time", f"?{param}= is missing: expected ISO 8601, e.g. 2026-11-21T14:02:00Z"
                    )
                )
            values.append(-math.inf if param == "start" else math.inf)
            continue
        try:
            values.append(parse_date_time(text))
        except (ValueError, OverflowError) as exc:
            raise _Refused(
                error_response(
                    400,
                    "bad_time",
                    f"{param}={text!r} is not ISO 8601 with a zone, e.g. 2026-11-21T14:02:00Z ({exc})",
                )
            ) from None
    start, end = values
    if end <= start:
        raise _Refused(
            error_response(
                400, "bad_range", f"end {format_date_time(end)} is not after start {format_date_time(start)}"
            )
        )
    if required and end - start > state.max_range:
        raise _Refused(
            error_response(
                400,
                "range_too_long",
                f"range of {end - start:.0f} s is over the limit of {state.max_range:.0f} s",
            )
        )
    return start, end


def _refusals(handler: Any) -> Any:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except _Refused as refused:
            return refused.response

    return wrapped


# --- the index ---------------------------------------------------------------------------------


async def _runs(request: web.Request, stream: str, start: float, end: float) -> list[EpochRun]:
    return await request.app[VOD].reader.runs(stream, start, end)


async def _recorded(request: web.Request, stream: str, start: float, end: float) -> list[EpochRun]:
    runs = await _runs(request, stream, start, end)
    if not runs:
        raise _Refused(
            error_response(
                404,
                "not_recorded",
                f"stream {stream!r} has no recording between "
                f"{format_date_time(start)} and {format_date_time(end)}",
            )
        )
    return runs


def _query(start: float, end: float) -> str:
    return f"start={quote(format_date_time(start))}&end={quote(format_date_time(end))}"


def _vod_media(stream: str, runs: list[EpochRun], rendition: str, token: str = "") -> str | None:
    """The VOD media playlist; with ``token``, carried into every URI as it is written (what
    ``add_token_to_playlist`` would do, without a second pass over thousands of lines)."""
    query = f"?{TOKEN_PARAM}={quote(token, safe='')}" if token else ""
    segments: list[Segment] = []
    previous: tuple[str, int] | None = None
    for run in runs:
        for s in run.segments:
            if rendition not in s.renditions:
                continue
            base = f"/live/{stream}/{run.epoch}/{rendition}"
            # between epochs, and where a segment is missing from the recording
            gap = previous is not None and (previous[0] != run.epoch or s.seq != previous[1] + 1)
            segments.append(
                Segment(
                    f"{base}/{s.seq:08d}.m4s{query}",
                    s.duration,
                    f"{base}/init.mp4{query}",
                    s.wall_clock,
                    discontinuity=gap,
                )
            )
            previous = (run.epoch, s.seq)
    if not segments:
        return None
    return MediaPlaylist(
        rounded_target(max(s.duration for s in segments)),
        tuple(segments),
        discontinuity_sequence=None,
        playlist_type=PLAYLIST_TYPE_VOD,
        ended=True,
    ).render()


def _renditions(runs: list[EpochRun]) -> dict[str, tuple[int, str, int, int, float]]:
    """name -> (peak bandwidth, codecs, width, height, frame rate) over the range."""
    out: dict[str, tuple[int, str, int, int, float]] = {}
    for run in runs:
        for r in run.renditions.values():
            old = out.get(r.name)
            if old is None or r.bandwidth > old[0]:
                out[r.name] = (r.bandwidth, r.codecs, r.width, r.height, r.frame_rate)
    return out


def _is_audio(codecs: str) -> bool:
    return codecs.startswith("mp4a.")


def _video_rendition(runs: list[EpochRun], asked: str | None) -> str:
    """``asked`` once it is a valid name (else _Refused), or the range's highest-bandwidth video."""
    if asked is None:
        return best_video_rendition(runs) or AUDIO
    if not is_rendition(asked):
        raise _Refused(
            error_response(400, "bad_path", f"rendition {asked!r} is not valid: expected a-z 0-9 _ -")
        )
    return asked


def _playlist(text: str, token: str, cache: str) -> web.Response:
    body = add_token_to_playlist(text, token) if token else text
    return web.Response(text=body, content_type=PLAYLIST_TYPE, headers={"Cache-Control": cache})


# --- handlers ----------------------------------------------------------------------------------


@_refusals
async def vod_master(request: web.Request) -> web.Response:
    stream, token = await _stream(request, request.match_info["stream"])
    start, end = _range(request)
    runs = await _recorded(request, stream, start, end)
    renditions = _renditions(runs)
    query = _query(start, end)
    audio = {n: r for n, r in renditions.items() if _is_audio(r[1])}  # the transcoder's AAC rendition
    media = [AudioRendition(AUDIO_GROUP, name, f"{name}.m3u8?{query}") for name in sorted(audio)[:1]]
    extra = max((r[0] for r in audio.values()), default=0)
    variants: list[Variant] = []
    for name, (bandwidth, codecs, width, height, fps) in sorted(
        renditions.items(), key=lambda kv: (-kv[1][0], kv[0])
    ):
        if name in audio:
            continue
        if audio:
            bandwidth, codecs = bandwidth + extra, f"{codecs},{renditions[min(audio)][1]}"
        group = AUDIO_GROUP if audio else None
        variants.append(Variant(f"{name}.m3u8?{query}", bandwidth, None, codecs, width, height, fps, group))
    return _playlist(write_master(variants, media), token, VOD_CACHE)


async def _vod(request: web.Request, stream: str, token: str, rendition: str | None) -> web.Response:
    start, end = _range(request)
    runs = await _recorded(request, stream, start, end)
    rendition = _video_rendition(runs, rendition)
    text = _vod_media(stream, runs, rendition, token)
    if text is None:
        raise _Refused(
            error_response(
                404, "not_recorded", f"stream {stream!r} has no {rendition!r} rendition in that range"
            )
        )
    return _playlist(text, "", VOD_CACHE)  # the token is in its URIs already


@_refusals
async def vod_rendition(request: web.Request) -> web.Response:
    stream, token = await _stream(request, request.match_info["stream"])
    return await _vod(request, stream, token, request.match_info["rendition"])


@_refusals
async def vod_best(request: web.Request) -> web.Response:
    stream, token = await _stream(request, request.match_info["stream"])
    return await _vod(request, stream, token, request.query.get("rendition"))


@_refusals
async def recordings(request: web.Request) -> web.Response:
    stream, _ = await _stream(request, request.match_info["stream"])
    start, end = _range(request, required=False)
    ranges = await request.app[VOD].reader.covered(stream, start, end)
    body: dict[str, Any] = {"stream": stream, "ranges": [r.to_json() for r in ranges]}
    if ranges:
        body["start"] = format_date_time(ranges[0].start)
        body["end"] = format_date_time(max(r.end for r in ranges))
        body["recorded"] = round(sum(r.end - r.start for r in ranges), 3)
    return web.json_response(body)


# --- DVR ---------------------------------------------------------------------------------------


@web.middleware
async def dvr_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    match = _LIVE_PLAYLIST_RE.match(request.path)
    if match is None or "dvr" not in request.query or request.method not in ("GET", "HEAD"):
        response: web.StreamResponse = await handler(request)
        return response
    try:
        return await _dvr(request, match.group(1), match.group(2))
    except _Refused as refused:
        return refused.response


async def _dvr(request: web.Request, name: str, playlist: str) -> web.Response:
    state = request.app[VOD]
    stream, token = await _stream(request, name)
    text = request.query["dvr"]
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not (0 < seconds <= MAX_DVR):
        raise _Refused(
            error_response(400, "bad_dvr", f"dvr={text!r} is not a number of seconds in (0, {MAX_DVR:.0f}]")
        )
    if playlist == "master":
        key = master_playlist_key(stream)
    elif is_rendition(playlist):
        key = dvr_playlist_key(stream, playlist)
    else:
        raise _Refused(
            error_response(400, "bad_path", f"playlist {playlist!r} is not master or a rendition name")
        )
    try:
        data = await state.store.get(key)
    except NotFound:
        detail = f"stream {stream!r} has no {'live' if playlist == 'master' else 'DVR'} playlist {playlist!r}"
        if playlist != "master":
            detail += " (is the packager's --dvr-window 0?)"
        return error_response(404, "not_found", detail)
    try:
        body = data.decode()
        if playlist == "master":  # every rendition's URI, the audio one in EXT-X-MEDIA too
            return _playlist(map_uris(body, lambda uri: f"{uri}?dvr={text}"), token, LIVE_CACHE)
        body = trim(body, seconds)
    except (UnicodeDecodeError, PlaylistError) as exc:  # a stored object camflow did not write whole
        state.log.error("dvr_playlist_unreadable", stream_id=stream, key=key, error=str(exc))
        return error_response(502, "bad_playlist", f"stored playlist {key!r} is not readable: {exc}")
    return _playlist(body, token, LIVE_CACHE)
