"""``/live/...``: playlists, init sections, segments and parts from the cache (and, on a miss, the store).

Order of checks: the raw path is parsed into a store key (or refused with 400) before the token
is checked (401/403) and before the cache or store is touched. With ``TokenCheck.PLAYLISTS``
segments, parts and init sections are served without a token; playlists always need one.

Low-latency HLS (docs/low-latency.md): a media playlist request with ``_HLS_msn`` (and
``_HLS_part``) is held until the playlist holds that part (``edge.blocking``), ``_HLS_skip=YES``
gets a delta update; both only where the playlist says ``CAN-BLOCK-RELOAD=YES`` (else the query
is ignored, as by a server without blocking reload). A part or segment at the playlist's end that
is not in the store yet (the preload hint, a segment listed before its worker wrote it) is held
until it is.
"""

from __future__ import annotations

import functools
import hashlib
from typing import cast

from aiohttp import web

from camflow.errors import NotFound, StoreUnavailable
from camflow.hls.errors import PlaylistError
from camflow.hls.lowlatency import End, LowLatencyFacts, delta
from camflow.keys import media_playlist_key
from camflow.store import Store
from edge.access import needs_token, request_token, viewer_refusal
from edge.blocking import reload_wait, view_of
from edge.cache import CachedObject, Fetch, ObjectCache
from edge.errors import BadPath
from edge.hlsquery import BadQuery, BlockingQuery
from edge.http import (
    CORS_HEADERS,
    error_response,
    gzip_bytes,
    http_date,
    not_modified,
    send_bytes,
    store_unavailable_response,
    wants_gzip,
)
from edge.paths import LIVE_PREFIX, Kind, LiveObject, parse_live_path
from edge.policy import IMMUTABLE, NO_STORE, PlaylistPolicy
from edge.regions import owner_elsewhere, region_redirect
from edge.rewrite import add_token_to_playlist
from edge.state import EDGE, EdgeState

BODY_VARIANTS = 64  # token-rewritten (and gzipped) bodies remembered per cached playlist
HOLD_BEHIND = 8  # segments before the playlist's newest whose missing objects are still held
MIN_PART_HOLD = 1.0  # seconds a missing part is held at least (else 3 part targets)


def _immutable(_: bytes) -> None:
    return None


def object_fetcher(cache: ObjectCache, store: Store, policy: PlaylistPolicy) -> Fetch:
    """``fetch(key)``: the object from the cache, loaded from the store once on a miss; raises NotFound.

    Keys ending in ``.m3u8`` are playlists (fresh for the policy's memory lifetime); everything
    else is immutable.
    """

    async def fetch(key: str) -> CachedObject:
        ttl = policy.memory_ttl if key.endswith(".m3u8") else _immutable
        return await cache.get(key, store.get, ttl)

    return fetch


def _store_failed(state: EdgeState, obj: LiveObject, exc: Exception) -> web.Response:
    state.counters.store_failed += 1
    state.log.error("store_failed", stream_id=obj.stream, key=obj.key, error=repr(exc))
    if isinstance(exc, StoreUnavailable):
        return store_unavailable_response(f"the store is unavailable: {obj.key!r} cannot be served now")
    return error_response(502, "store_failed", f"the store could not serve {obj.key!r}; try again")


Representation = tuple[bytes, dict[str, str]]


def playlist_representation(
    state: EdgeState,
    cached: CachedObject,
    obj: LiveObject,
    token: str,
    gzipped: bool,
    *,
    blocking: bool = False,
    skip_until: float | None = None,
) -> Representation:
    """The playlist as this viewer gets it (token in every URI) and its headers; memoised per entry.

    ``blocking``: the answer to a blocking reload (a short lifetime); ``skip_until``: a delta update
    skipping the segments older than that many seconds from the end."""
    memo = cached.derived
    variant = ("playlist", token, gzipped, blocking, skip_until)
    hit = memo.get(variant)
    if hit is not None:
        return cast(Representation, hit)
    text = cached.data.decode("utf-8")
    if skip_until is not None:
        try:
            text = delta(text, skip_until)
        except PlaylistError as exc:  # a full playlist is a valid answer to _HLS_skip
            state.log.warning("delta_update_failed", stream_id=obj.stream, key=obj.key, error=str(exc)[:200])
    body = add_token_to_playlist(text, token).encode("utf-8") if token else text.encode("utf-8")
    tag = hashlib.blake2b(token.encode(), digest_size=6).hexdigest() if token else "0"
    if skip_until is not None:
        tag += "-d"
    cache_control = (
        state.policy.blocking_cache_control() if blocking else state.policy.cache_control(cached.data)
    )
    headers = {
        **CORS_HEADERS,
        "Content-Type": obj.content_type,
        "Last-Modified": http_date(cached.last_modified),
        "Cache-Control": cache_control,
        "Vary": "Accept-Encoding",
        "ETag": f'"{cached.etag.strip(chr(34))}-{tag}{"-gz" if gzipped else ""}"',
    }
    if gzipped:
        body = gzip_bytes(body)
        headers["Content-Encoding"] = "gzip"
    if len(memo) >= BODY_VARIANTS:
        memo.clear()
    memo[variant] = (body, headers)
    return body, headers


def media_representation(cached: CachedObject, obj: LiveObject) -> Representation:
    hit = cached.derived.get("media")
    if hit is not None:
        return cast(Representation, hit)
    headers = {
        **CORS_HEADERS,
        "Content-Type": obj.content_type,
        "Last-Modified": http_date(cached.last_modified),
        "Cache-Control": IMMUTABLE,
        "Accept-Ranges": "bytes",
        "ETag": cached.etag,
    }
    cached.derived["media"] = (cached.data, headers)
    return cached.data, headers


async def live(request: web.Request) -> web.StreamResponse:
    state = request.app[EDGE]
    try:
        obj = parse_live_path(request.rel_url.raw_path)
    except BadPath as exc:
        state.counters.bad_path += 1
        state.log.info("bad_path", path=request.rel_url.raw_path[:200], reason=str(exc)[:200])
        return error_response(400, "bad_path", str(exc))
    token, carried = request_token(request)
    if needs_token(state, obj):
        refused = await viewer_refusal(state, request, obj.stream)
        if refused is not None:
            return refused
    if obj.is_playlist and (owner := await owner_elsewhere(state, obj.stream)) is not None:
        return region_redirect(state, request, owner)
    query: BlockingQuery | None = None
    if obj.kind is Kind.MEDIA:
        try:
            query = BlockingQuery.parse(request.query)
        except BadQuery as exc:
            state.counters.bad_query += 1
            return error_response(400, "bad_query", str(exc), headers={"Cache-Control": NO_STORE})
    since = state.ll.generation(obj.stream, obj.rendition) if obj.rendition else 0
    try:
        held = obj.kind in HELD and state.ll.holding(obj.key)
        cached = await _hold(state, obj, since) if held else await state.fetch(obj.key)
        if cached is None:
            raise NotFound(obj.key)
    except NotFound:
        found = await _hold(state, obj, since) if obj.kind in HELD and not held else None
        if found is None:
            state.counters.not_found += 1
            return error_response(
                404, "not_found", f"stream {obj.stream!r} has no object at {request.path!r}"
            )
        cached = found
    except Exception as exc:
        return _store_failed(state, obj, exc)
    if obj.is_playlist:
        state.viewers.saw(obj.stream, token)
        gzipped = wants_gzip(request)
        blocking, skip_until = False, None
        if query is not None:
            try:
                answer = await _blocking(state, obj, query, cached, since)
            except Exception as exc:  # re-reading the playlist failed (NotFound: it was removed)
                return _store_failed(state, obj, exc)
            if isinstance(answer, web.Response):
                return answer
            cached, blocking, skip_until = answer
        try:
            body, headers = playlist_representation(
                state,
                cached,
                obj,
                token if carried else "",
                gzipped,
                blocking=blocking,
                skip_until=skip_until,
            )
        except UnicodeDecodeError as exc:
            return _store_failed(state, obj, exc)
    else:
        gzipped = False
        body, headers = media_representation(cached, obj)
    asked = request.headers
    if "If-None-Match" in asked or "If-Modified-Since" in asked:
        etag = headers["ETag"]
        if not_modified(request, etag, cached.last_modified) or (
            gzipped and not_modified(request, etag.replace("-gz", ""), cached.last_modified)
        ):
            return web.Response(status=304, headers=headers)
    if "Range" in asked and not gzipped:
        return send_bytes(request, body, dict(headers))
    return web.Response(body=body, headers=headers)


HELD = (Kind.PART, Kind.SEGMENT)


async def _hold(state: EdgeState, obj: LiveObject, since: int) -> CachedObject | None:
    """A part or segment missing from the store, once it is there; None (a 404) when its rendition's
    playlist is not a low-latency one, or the object is not at its end, or not written in time."""
    try:
        playlist = await state.fetch(media_playlist_key(obj.stream, obj.rendition))
    except Exception:
        return None
    view = view_of(playlist)
    if view is None or view.endlist:
        return None
    newest = newest_object(obj.stream, view)
    if newest is None or obj.epoch != newest.epoch:
        return None
    if not newest.seq - HOLD_BEHIND <= obj.seq <= newest.seq + 1:
        return None
    if obj.kind is not Kind.PART:
        return await state.ll.hold(obj.key, obj.stream, obj.rendition, reload_wait(view), since)
    if never_written(obj, view):  # the miss may predate the playlist read: look once more
        try:
            return await state.fetch(obj.key)
        except Exception:
            return None
    timeout = max(MIN_PART_HOLD, 3 * view.part_target)
    gone = functools.partial(_gone, obj)
    return await state.ll.hold(obj.key, obj.stream, obj.rendition, timeout, since, gone)


def never_written(obj: LiveObject, view: LowLatencyFacts | None) -> bool:
    """Whether the playlist (``view``) shows that part ``obj``, if missing, will never exist: the playlist
    ended, or the last thing it lists is of a later segment (a later epoch, a later segment's part, a
    later segment) or is the part's own segment, complete (the parts of a listed segment are written
    before it is listed). A preload hint proves nothing: the packager may guess the boundary wrong."""
    if obj.kind is not Kind.PART or view is None:
        return False
    if view.endlist:
        return True
    last = _named(obj.stream, view.last_uri)
    if last is None:
        return False
    if last.epoch != obj.epoch:
        return last.epoch > obj.epoch
    return last.seq > obj.seq or (last.seq == obj.seq and last.kind is Kind.SEGMENT)


def _gone(obj: LiveObject, playlist: CachedObject) -> bool:
    return never_written(obj, view_of(playlist))


def _named(stream: str, uri: str | None) -> LiveObject | None:
    """The part or segment a playlist URI names (relative to the playlist, as the packager writes them:
    ``{epoch}/{rendition}/NNNNNNNN[.PPP].m4s``); None for anything else."""
    if uri is None:
        return None
    try:
        named = parse_live_path(f"{LIVE_PREFIX}{stream}/{uri.partition('?')[0]}")
    except BadPath:
        return None
    return named if named.kind in HELD else None


def newest_object(stream: str, view: LowLatencyFacts) -> LiveObject | None:
    """The newest part or segment the playlist names: its preload hint, else its last URI (relative
    to the playlist, as the packager writes them: ``{epoch}/{rendition}/NNNNNNNN[.PPP].m4s``)."""
    for uri in (view.preload_hint, view.last_uri):
        named = _named(stream, uri)
        if named is not None:
            return named
    return None


async def _blocking(
    state: EdgeState, obj: LiveObject, query: BlockingQuery, cached: CachedObject, since: int
) -> tuple[CachedObject, bool, float | None] | web.Response:
    """The playlist a ``_HLS_*`` request gets (with: was it a blocking reload, the skip boundary),
    or its 400/503. A playlist without CAN-BLOCK-RELOAD=YES is answered as without the query."""
    view = view_of(cached)
    if view is None or not view.blocking:
        return cached, False, None
    if query.blocks:
        reason = _too_far(state, obj, query, view)
        if reason is not None and state.ll.may_recheck(obj.stream, obj.rendition):
            # this worker's copy may be behind the playlist the player read (another worker, a CDN)
            state.cache.expire(obj.key)
            cached = await state.fetch(obj.key)
            view = view_of(cached)
            if view is None or not view.blocking:  # no longer a low-latency playlist
                return cached, False, None
            reason = _too_far(state, obj, query, view)
        if reason is not None:
            state.counters.bad_query += 1
            return error_response(400, "bad_query", reason, headers={"Cache-Control": NO_STORE})
        reached = await state.ll.reload(obj.stream, obj.rendition, query, cached, since)
        if reached is None:
            wait = reload_wait(view)
            return error_response(
                503,
                "playlist_not_ready",
                f"{obj.rendition}.m3u8 of stream {obj.stream!r} did not reach _HLS_msn={query.msn}"
                + ("" if query.part is None else f" _HLS_part={query.part}")
                + f" within {wait:g} s (3 target durations)",
                headers={"Cache-Control": NO_STORE},
            )
        cached = reached
        view = view_of(cached)
    skip_until = view.can_skip_until if query.skip and view is not None else None
    return cached, query.blocks, skip_until


def _too_far(state: EdgeState, obj: LiveObject, query: BlockingQuery, view: LowLatencyFacts) -> str | None:
    ends = [e for e in (view.end, state.ll.end(obj.stream, obj.rendition)) if e is not None]
    return query.too_far(max(ends, default=End(-1, -1)))
