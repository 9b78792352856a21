"""``/live/...``: playlists, init sections and segments from the cache (and, on a miss, the store).

Order of checks: the raw path is parsed into a store key (or refused with 400) before the token
is checked (401/403) and before the cache or store is touched. With ``TokenCheck.PLAYLISTS``
segments and init sections are served without a token; playlists always need one.
"""

from __future__ import annotations

import hashlib
from typing import cast

from aiohttp import web

from camflow.errors import NotFound, StoreUnavailable
from camflow.store import Store
from edge.access import needs_token, request_token, viewer_refusal
from edge.cache import CachedObject, Fetch, ObjectCache
from edge.errors import BadPath
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
from edge.paths import LiveObject, parse_live_path
from edge.policy import IMMUTABLE, PlaylistPolicy
from edge.rewrite import add_token_to_playlist
from edge.state import EDGE, EdgeState

BODY_VARIANTS = 64  # token-rewritten (and gzipped) bodies remembered per cached playlist


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
    state: EdgeState, cached: CachedObject, obj: LiveObject, token: str, gzipped: bool
) -> Representation:
    """The playlist as this viewer gets it (token in every URI) and its headers; memoised per entry."""
    memo = cached.derived
    variant = ("playlist", token, gzipped)
    hit = memo.get(variant)
    if hit is not None:
        return cast(Representation, hit)
    text = cached.data.decode("utf-8")
    body = add_token_to_playlist(text, token).encode("utf-8") if token else cached.data
    tag = hashlib.blake2b(token.encode(), digest_size=6).hexdigest() if token else "0"
    headers = {
        **CORS_HEADERS,
        "Content-Type": obj.content_type,
        "Last-Modified": http_date(cached.last_modified),
        "Cache-Control": state.policy.cache_control(cached.data),
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
    try:
        cached = await state.fetch(obj.key)
    except NotFound:
        state.counters.not_found += 1
        return error_response(404, "not_found", f"stream {obj.stream!r} has no object at {request.path!r}")
    except Exception as exc:
        return _store_failed(state, obj, exc)
    if obj.is_playlist:
        state.viewers.saw(obj.stream, token)
        gzipped = wants_gzip(request)
        try:
            body, headers = playlist_representation(state, cached, obj, token if carried else "", gzipped)
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
