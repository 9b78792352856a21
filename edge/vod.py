"""Recordings at the edge: time-range VOD playlists, DVR live windows, the recordings list.

``add_recording_routes(app, store, signer)`` registers, on an edge application:

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
  "end", "duration", "segments"}]}``, the covered time ranges (``?start=&end=`` narrow it).

Same token rules as ``/live``: a ``view`` token for the stream in ``?token=`` (401 without,
403 when wrong), carried into every URI of the playlists served. Errors are JSON
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

from camflow.errors import NotFound, TokenError
from camflow.keys import (
    dvr_playlist_key,
    is_rendition,
    is_stream_name,
    master_playlist_key,
    recordings_prefix,
)
from camflow.log import get_logger
from camflow.recordings import (
    EpochRun,
    IndexChunk,
    RecordingIndexError,
    buckets_between,
    covered,
    format_time,
    parse_chunk_key,
    parse_time,
    select,
)
from camflow.store import Store
from camflow.tokens import Action, TokenSigner
from edge.http import error_response
from edge.rewrite import add_token_to_playlist

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
DEFAULT_MAX_RANGE = 24 * 3600.0
MAX_DVR = 7 * 24 * 3600.0
VOD_CACHE = "public, max-age=5"
LIVE_CACHE = "public, max-age=1"
_SEGMENT_TAGS = frozenset(
    {"#EXT-X-DISCONTINUITY", "#EXT-X-MAP", "#EXT-X-PROGRAM-DATE-TIME", "#EXTINF", "#EXT-X-GAP"}
)
_LIVE_PLAYLIST_RE = re.compile(r"^/live/([^/]+)/([^/]+)\.m3u8$")
_AUDIO_URI = re.compile(r'^(#EXT-X-MEDIA:.*URI="[^"?]+\.m3u8)"')
AUDIO_GROUP = "aud"  # the packager's EXT-X-MEDIA group of a stream's audio rendition


@dataclass(frozen=True)
class VodState:
    store: Store
    signer: TokenSigner
    max_range: float
    log: Any


VOD = web.AppKey("vod", VodState)


class _Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def add_recording_routes(
    app: web.Application, store: Store, signer: TokenSigner, *, max_range: float = DEFAULT_MAX_RANGE
) -> None:
    """Register the recording routes (and the ``?dvr=`` middleware) on an edge application."""
    app[VOD] = VodState(store, signer, max_range, get_logger("edge.vod"))
    app.middlewares.append(dvr_middleware)
    app.router.add_get("/vod/{stream}/master.m3u8", vod_master)
    app.router.add_get("/vod/{stream}/{rendition}.m3u8", vod_rendition)
    app.router.add_get("/vod/{stream}.m3u8", vod_best)
    app.router.add_get("/api/streams/{stream}/recordings", recordings)


# --- checks ------------------------------------------------------------------------------------


def _stream(request: web.Request, name: str) -> tuple[str, str]:
    """``(stream, token)`` once the name is valid and the view token is good; else _Refused."""
    if not is_stream_name(name):
        raise _Refused(
            error_response(
                400,
                "bad_path",
                f"stream name {name!r} is not valid: expected 1-64 characters of A-Z a-z 0-9 _ -",
            )
        )
    token = request.query.get("token", "")
    if not token:
        raise _Refused(
            error_response(
                401,
                "token_missing",
                f"{request.path!r} needs a view token for stream {name!r} in ?token=",
                headers={"WWW-Authenticate": 'Bearer realm="camflow"'},
            )
        )
    try:
        request.app[VOD].signer.verify(token, name, Action.VIEW)
    except TokenError as exc:
        raise _Refused(error_response(403, "token_invalid", str(exc))) from None
    return name, token


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
            values.append(parse_time(text))
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
                400, "bad_range", f"end {format_time(end)} is not after start {format_time(start)}"
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
    state = request.app[VOD]
    wanted = set(buckets_between(start, end)) if math.isfinite(start) and math.isfinite(end) else None
    chunks: list[IndexChunk] = []
    for key in await state.store.list(recordings_prefix(stream)):
        parsed = parse_chunk_key(stream, key)
        if parsed is None or (wanted is not None and parsed[0] not in wanted):
            continue
        try:
            chunks.append(IndexChunk.parse(await state.store.get(key)))
        except NotFound:
            continue  # deleted by retention since the listing
        except RecordingIndexError as exc:
            state.log.warning("index chunk unreadable", stream_id=stream, key=key, error=str(exc))
    return select(chunks, start, end)


async def _recorded(request: web.Request, stream: str, start: float, end: float) -> list[EpochRun]:
    runs = await _runs(request, stream, start, end)
    if not runs:
        raise _Refused(
            error_response(
                404,
                "not_recorded",
                f"stream {stream!r} has no recording between {format_time(start)} and {format_time(end)}",
            )
        )
    return runs


def _query(start: float, end: float) -> str:
    return f"start={quote(format_time(start))}&end={quote(format_time(end))}"


def _vod_media(stream: str, runs: list[EpochRun], rendition: str) -> str | None:
    lines: list[str] = []
    longest = 0.0
    previous: tuple[str, int] | None = None
    for run in runs:
        for s in run.segments:
            if rendition not in s.renditions:
                continue
            base = f"/live/{stream}/{run.epoch}/{rendition}"
            if previous is None or previous[0] != run.epoch:
                if previous is not None:
                    lines.append("#EXT-X-DISCONTINUITY")
                lines.append(f'#EXT-X-MAP:URI="{base}/init.mp4"')
            elif s.seq != previous[1] + 1:
                lines.append("#EXT-X-DISCONTINUITY")
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_time(s.wall_clock)}")
            lines.append(f"#EXTINF:{s.duration:.3f},")
            lines.append(f"{base}/{s.seq:08d}.m4s")
            longest = max(longest, s.duration)
            previous = (run.epoch, s.seq)
    if previous is None:
        return None
    head = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{max(1, math.floor(float(f'{longest:.3f}') + 0.5))}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    return "\n".join([*head, *lines, "#EXT-X-ENDLIST"]) + "\n"


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


def _playlist(text: str, token: str, cache: str) -> web.Response:
    body = add_token_to_playlist(text, token)
    return web.Response(text=body, content_type=PLAYLIST_TYPE, headers={"Cache-Control": cache})


# --- handlers ----------------------------------------------------------------------------------


@_refusals
async def vod_master(request: web.Request) -> web.Response:
    stream, token = _stream(request, request.match_info["stream"])
    start, end = _range(request)
    runs = await _recorded(request, stream, start, end)
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    renditions = _renditions(runs)
    audio = {n: r for n, r in renditions.items() if _is_audio(r[1])}  # the transcoder's AAC rendition
    for name in sorted(audio)[:1]:
        lines.append(
            f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{AUDIO_GROUP}",NAME="{name}",DEFAULT=YES,AUTOSELECT=YES,'
            f'URI="{name}.m3u8?{_query(start, end)}"'
        )
    extra = max((r[0] for r in audio.values()), default=0)
    for name, (bandwidth, codecs, width, height, fps) in sorted(
        renditions.items(), key=lambda kv: (-kv[1][0], kv[0])
    ):
        if name in audio:
            continue
        if audio:
            bandwidth, codecs = bandwidth + extra, f"{codecs},{renditions[min(audio)][1]}"
        attrs = f'BANDWIDTH={bandwidth},CODECS="{codecs}",RESOLUTION={width}x{height}'
        if fps > 0:
            attrs += f",FRAME-RATE={fps:.3f}"
        if audio:
            attrs += f',AUDIO="{AUDIO_GROUP}"'
        lines += [f"#EXT-X-STREAM-INF:{attrs}", f"{name}.m3u8?{_query(start, end)}"]
    return _playlist("\n".join(lines) + "\n", token, VOD_CACHE)


async def _vod(request: web.Request, stream: str, token: str, rendition: str | None) -> web.Response:
    start, end = _range(request)
    runs = await _recorded(request, stream, start, end)
    if rendition is None:
        every = list(_renditions(runs).items())
        video = [kv for kv in every if not _is_audio(kv[1][1])] or every
        rendition = max(video, key=lambda kv: (kv[1][0], kv[0]))[0]
    if not is_rendition(rendition):
        raise _Refused(
            error_response(400, "bad_path", f"rendition {rendition!r} is not valid: expected a-z 0-9 _ -")
        )
    text = _vod_media(stream, runs, rendition)
    if text is None:
        raise _Refused(
            error_response(
                404, "not_recorded", f"stream {stream!r} has no {rendition!r} rendition in that range"
            )
        )
    return _playlist(text, token, VOD_CACHE)


@_refusals
async def vod_rendition(request: web.Request) -> web.Response:
    stream, token = _stream(request, request.match_info["stream"])
    return await _vod(request, stream, token, request.match_info["rendition"])


@_refusals
async def vod_best(request: web.Request) -> web.Response:
    stream, token = _stream(request, request.match_info["stream"])
    return await _vod(request, stream, token, request.query.get("rendition"))


@_refusals
async def recordings(request: web.Request) -> web.Response:
    stream, _ = _stream(request, request.match_info["stream"])
    start, end = _range(request, required=False)
    runs = await _runs(request, stream, start, end)
    chunks = [
        IndexChunk(stream, run.epoch, 0, run.renditions, {s.seq: s for s in run.segments}) for run in runs
    ]
    return web.json_response({"stream": stream, "ranges": [r.to_json() for r in covered(chunks)]})


# --- DVR ---------------------------------------------------------------------------------------


def trim_live(text: str, seconds: float) -> str:
    """A live media playlist cut to the entries of its last ``seconds`` (at least one).

    Removes entries from the front only, advancing MEDIA-SEQUENCE per entry and
    DISCONTINUITY-SEQUENCE per discontinuity removed, and repeats the EXT-X-MAP that
    applied to the first kept entry.
    """
    head: list[str] = []
    blocks: list[list[str]] = []
    pending: list[str] = []
    tail: list[str] = []
    for line in (ln.strip() for ln in text.splitlines() if ln.strip()):
        tag = line.partition(":")[0]
        if tag == "#EXT-X-ENDLIST":
            tail.append(line)
        elif not blocks and not pending and line.startswith("#") and tag not in _SEGMENT_TAGS:
            head.append(line)
        else:
            pending.append(line)
            if not line.startswith("#"):
                blocks.append(pending)
                pending = []
    durations = [float(next(ln for ln in b if ln.startswith("#EXTINF:"))[8:].split(",")[0]) for b in blocks]
    keep_from, total = len(blocks), 0.0
    while keep_from > 0 and (total < seconds or keep_from == len(blocks)):
        keep_from -= 1
        total += durations[keep_from]
    dropped = blocks[:keep_from]
    map_line = None
    for b in dropped:
        map_line = next((ln for ln in b if ln.startswith("#EXT-X-MAP")), map_line)
    kept = blocks[keep_from:]
    if kept and map_line is not None and not any(ln.startswith("#EXT-X-MAP") for ln in kept[0]):
        kept[0] = (
            [ln for ln in kept[0] if ln == "#EXT-X-DISCONTINUITY"]
            + [map_line]
            + [ln for ln in kept[0] if ln != "#EXT-X-DISCONTINUITY"]
        )
    msn_shift = len(dropped)
    dsn_shift = sum(1 for b in dropped if "#EXT-X-DISCONTINUITY" in b)
    out = []
    for line in head:
        tag, _, value = line.partition(":")
        if tag == "#EXT-X-MEDIA-SEQUENCE":
            line = f"{tag}:{int(value) + msn_shift}"
        elif tag == "#EXT-X-DISCONTINUITY-SEQUENCE":
            line = f"{tag}:{int(value) + dsn_shift}"
        out.append(line)
    for b in kept:
        out.extend(b)
    out.extend(tail)
    return "\n".join(out) + "\n"


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
    stream, token = _stream(request, name)
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
        body = (await state.store.get(key)).decode()
    except NotFound:
        detail = f"stream {stream!r} has no {'live' if playlist == 'master' else 'DVR'} playlist {playlist!r}"
        if playlist != "master":
            detail += " (is the packager's --dvr-window 0?)"
        return error_response(404, "not_found", detail)
    if playlist == "master":  # every rendition's URI, the audio one in EXT-X-MEDIA too
        body = "\n".join(
            f"{ln}?dvr={text}" if ln and not ln.startswith("#") else _AUDIO_URI.sub(rf'\1?dvr={text}"', ln)
            for ln in body.split("\n")
        )
    else:
        body = trim_live(body, seconds)
    return _playlist(body, token, LIVE_CACHE)
