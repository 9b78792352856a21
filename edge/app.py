"""The edge's web application: HLS playlists and media objects from the store, to viewers with a token.

One route serves everything under ``/live/``: ``edge.paths`` turns the raw path into a store
key (or refuses it with 400) before the token is checked and before the store is touched.
Every response carries CORS headers; every error is JSON ``{"error": ..., "detail": ...}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from camflow.errors import NotFound, TokenError
from camflow.log import get_logger
from camflow.store import Store
from camflow.tokens import Action, TokenExpired, TokenScopeError, TokenSigner
from edge.errors import BadPath, RangeNotSatisfiable
from edge.paths import LIVE_PREFIX, LiveObject, parse_live_path
from edge.rewrite import add_token_to_playlist

IMMUTABLE = "public, max-age=31536000, immutable"
MEDIA_SUFFIXES = (".m3u8", ".mp4", ".m4s")
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, ETag",
}
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, Authorization, Content-Type",
    "Access-Control-Max-Age": "86400",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class EdgeState:
    store: Store
    signer: TokenSigner
    playlist_cache_control: str
    log: Any


EDGE = web.AppKey("edge", EdgeState)


def error_response(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status, headers=headers)


def _token_error(exc: TokenError) -> web.Response:
    if isinstance(exc, TokenExpired):
        return error_response(403, "token_expired", str(exc))
    if isinstance(exc, TokenScopeError):
        return error_response(403, "token_scope", str(exc))
    return error_response(403, "token_invalid", str(exc))


def _store_failed(state: EdgeState, obj: LiveObject, exc: Exception) -> web.Response:
    state.log.error("store_failed", stream_id=obj.stream, key=obj.key, error=repr(exc))
    return error_response(502, "store_unavailable", f"the store could not serve {obj.key!r}; try again")


def _etag_matches(request: web.Request, etag: str) -> bool:
    wanted = request.if_none_match
    if not wanted:
        return False
    value = etag.strip('"')
    return any(e.value in ("*", value) for e in wanted)


def _byte_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """``(start, stop)`` of a satisfiable single Range, ``None`` for the whole object.

    A malformed Range is ignored (RFC 9110 allows it); an unsatisfiable one raises
    ``RangeNotSatisfiable``.
    """
    if "Range" not in request.headers:
        return None
    try:
        rng = request.http_range
    except ValueError:
        return None
    if rng.start is not None and rng.start >= size:
        raise RangeNotSatisfiable(
            f"range {request.headers['Range']!r} starts beyond the object's {size} bytes"
        )
    start, stop, _ = rng.indices(size)
    return (start, stop) if stop > start else None


async def _serve_playlist(
    request: web.Request, state: EdgeState, obj: LiveObject, token: str
) -> web.Response:
    try:
        raw = await state.store.get(obj.key)
    except NotFound:
        return error_response(404, "not_found", f"stream {obj.stream!r} has no playlist at {request.path!r}")
    except Exception as exc:
        return _store_failed(state, obj, exc)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _store_failed(state, obj, exc)
    body = add_token_to_playlist(text, token).encode("utf-8")
    return web.Response(
        body=body, content_type=obj.content_type, headers={"Cache-Control": state.playlist_cache_control}
    )


async def _serve_media(request: web.Request, state: EdgeState, obj: LiveObject) -> web.Response:
    def missing() -> web.Response:
        return error_response(404, "not_found", f"stream {obj.stream!r} has no object at {request.path!r}")

    try:
        info = await state.store.head(obj.key)
    except Exception as exc:
        return _store_failed(state, obj, exc)
    if info is None:
        return missing()
    headers = {"Cache-Control": IMMUTABLE, "Accept-Ranges": "bytes", "Content-Type": obj.content_type}
    etag = info.etag.strip('"')
    if etag:
        headers["ETag"] = f'"{etag}"'
        if _etag_matches(request, etag):
            return web.Response(status=304, headers=headers)
    if request.method == "HEAD":
        return web.Response(headers={**headers, "Content-Length": str(info.size)})
    try:
        data = await state.store.get(obj.key)
    except NotFound:
        return missing()
    except Exception as exc:
        return _store_failed(state, obj, exc)
    try:
        span = _byte_range(request, len(data))
    except RangeNotSatisfiable as exc:
        return error_response(
            416, "range_not_satisfiable", str(exc), headers={"Content-Range": f"bytes */{len(data)}"}
        )
    if span is None:
        return web.Response(body=data, headers=headers)
    start, stop = span
    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
    return web.Response(status=206, body=data[start:stop], headers=headers)


async def live(request: web.Request) -> web.Response:
    state = request.app[EDGE]
    try:
        obj = parse_live_path(request.rel_url.raw_path)
    except BadPath as exc:
        return error_response(400, "bad_path", str(exc))
    token = request.query.get("token", "")
    if not token:
        return error_response(
            401,
            "token_missing",
            f"{request.path!r} needs a view token for stream {obj.stream!r} in ?token=",
            headers={"WWW-Authenticate": 'Bearer realm="camflow"'},
        )
    try:
        state.signer.verify(token, obj.stream, Action.VIEW)
    except TokenError as exc:
        return _token_error(exc)
    if obj.is_playlist:
        return await _serve_playlist(request, state, obj, token)
    return await _serve_media(request, state, obj)


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=PREFLIGHT_HEADERS)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn the router's and aiohttp's HTTP errors, and any bug, into the edge's JSON errors."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        # The server removes dot segments before routing, so /live/cam1/../../x/init.mp4
        # arrives as /x/init.mp4: a media path outside /live/ is a malformed request, not a miss.
        if request.path.endswith(MEDIA_SUFFIXES):
            return error_response(400, "bad_path", f"path {request.path!r} is not under {LIVE_PREFIX}")
        return error_response(404, "not_found", f"no route for {request.path!r}")
    except web.HTTPMethodNotAllowed as exc:
        allow = ", ".join(sorted(exc.allowed_methods))
        return error_response(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {request.path!r}; use {allow}",
            headers={"Allow": allow},
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(
            exc.status,
            exc.reason.lower().replace(" ", "_"),
            exc.text or exc.reason,
            headers={k: v for k, v in exc.headers.items() if k != "Content-Type"},
        )
    except Exception:
        request.app[EDGE].log.exception("request_failed", method=request.method, path=request.path)
        return error_response(500, "internal_error", "the edge failed to handle this request")


async def add_cors(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(CORS_HEADERS)


def build_app(store: Store, signer: TokenSigner, *, playlist_max_age: float = 1.0) -> web.Application:
    """The edge application; the caller owns the store's lifecycle (start/close)."""
    app = web.Application(middlewares=[json_errors])
    app[EDGE] = EdgeState(
        store=store,
        signer=signer,
        playlist_cache_control=f"public, max-age={max(1, int(playlist_max_age))}",
        log=get_logger("edge"),
    )
    app.on_response_prepare.append(add_cors)
    app.router.add_get("/healthz", healthz)
    app.router.add_get(LIVE_PREFIX + "{path:.*}", live)
    app.router.add_route("OPTIONS", LIVE_PREFIX + "{path:.*}", preflight)
    return app
