"""The edge's web application: HLS from the store through an in-memory cache, to viewers with a token.

Routes:

- ``/live/{stream}/...``: playlists, init sections, segments (``edge.delivery``)
- ``/watch/{stream}?token=``: the player page (hls.js served from disk); ``/``: live streams for an
  operator (``edge.pages``); ``/static/...``: the page's scripts
- ``/api/streams`` and ``/api/streams/{stream}/health`` (Server-Sent Events) (``edge.api``)
- ``/thumb/{stream}.jpg`` and ``/api/streams/{stream}/thumb?at=`` (a recorded moment) (``edge.thumbs``)
- ``/api/streams/{stream}/region``: where the stream is live, with ``--region`` (``edge.regions``)
- ``/healthz``

Every response carries CORS headers (added by the ``json_errors`` middleware); every error
is JSON ``{"error": ..., "detail": ...}``.
Background work (the stream listing, pruning viewers) runs in tasks owned by the app's
``cleanup_ctx``, cancelled at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path

from aiohttp import web

from camflow.bus import Bus
from camflow.errors import StoreUnavailable
from camflow.log import get_logger
from camflow.regions import RegionConfig, RegionWatch
from camflow.store import Store
from camflow.tokens import TokenSigner
from edge.api import add_api_routes
from edge.auth import Authorizer, ViewerCounter
from edge.blocking import LiveEnds
from edge.cache import ObjectCache
from edge.catalog import StreamCatalog
from edge.clip import add_clip_routes
from edge.delivery import live, object_fetcher
from edge.events_api import add_event_routes
from edge.health import CatalogHealth, HealthSource
from edge.http import CORS_HEADERS, CORS_ORIGIN, error_response, store_unavailable_response
from edge.idp import IdentityProvider, JwtSettings
from edge.metrics import count_requests
from edge.pages import add_page_routes, default_static_dir
from edge.paths import LIVE_PREFIX
from edge.policy import PlaylistPolicy, TokenCheck
from edge.regions import add_region_routes
from edge.state import CLOSING, EDGE, EdgeCounters, EdgeState
from edge.thumbs import add_thumbnail_routes
from edge.vod import add_recording_routes

__all__ = ["EDGE", "build_app", "error_response"]

MEDIA_SUFFIXES = (".m3u8", ".mp4", ".m4s")
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Range, Authorization, Content-Type",
    "Access-Control-Max-Age": "86400",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=PREFLIGHT_HEADERS)


async def healthz(request: web.Request) -> web.Response:
    state = request.app[EDGE]
    return web.json_response(
        {
            "status": "ok",
            "pid": os.getpid(),
            "cache": {
                **asdict(state.cache.stats),
                "bytes": state.cache.size_bytes,
                "objects": len(state.cache),
            },
            "refused": asdict(state.counters),
            "low_latency": {**asdict(state.ll.stats), "following": state.ll.following},
        }
    )


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if isinstance(exc, web.HTTPNotFound):
        # The server removes dot segments before routing, so /live/cam1/../../x/init.mp4
        # arrives as /x/init.mp4: a media path outside /live/ is a malformed request, not a miss.
        if request.path.endswith(MEDIA_SUFFIXES):
            return error_response(400, "bad_path", f"path {request.path!r} is not under {LIVE_PREFIX}")
        return error_response(404, "not_found", f"no route for {request.path!r}")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allow = ", ".join(sorted(exc.allowed_methods))
        return error_response(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {request.path!r}; use {allow}",
            headers={"Allow": allow},
        )
    return error_response(
        exc.status,
        exc.reason.lower().replace(" ", "_"),
        exc.text or exc.reason,
        headers={k: v for k, v in exc.headers.items() if k != "Content-Type"},
    )


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn the router's and aiohttp's HTTP errors, and any bug, into the edge's JSON errors; add CORS.

    CORS headers are added here rather than in an ``on_response_prepare`` signal: one hook per
    request instead of two (the /live responses carry them already, from memoised headers).
    A response prepared by its handler (Server-Sent Events) sets them itself.
    """
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _http_error(request, exc)
    except StoreUnavailable as exc:  # a recording or listing read during a store outage
        request.app[EDGE].log.warning("store_unavailable", path=request.path, error=str(exc))
        detail = f"the store is unavailable: {request.path!r} cannot be served now"
        response = store_unavailable_response(detail)
    except Exception:
        request.app[EDGE].log.exception("request_failed", method=request.method, path=request.path)
        response = error_response(500, "internal_error", "the edge failed to handle this request")
    if not response.prepared and CORS_ORIGIN not in response.headers:
        response.headers.update(CORS_HEADERS)
    return response


async def _refresh_catalog(state: EdgeState, interval: float) -> None:
    while True:
        try:
            await state.catalog.refresh()
        except Exception as exc:
            state.log.warning("catalog_refresh_failed", error=repr(exc))
        state.viewers.prune()
        await asyncio.sleep(interval)


def _background(interval: float, playlists: Bus | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        state = app[EDGE]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_refresh_catalog(state, interval), name="edge-catalog")]
        if playlists is not None:
            tasks.append(asyncio.create_task(state.ll.follow(playlists, stop), name="edge-playlists"))
        if state.auth.identity is not None:
            tasks.append(asyncio.create_task(state.auth.identity.run(), name="edge-jwks"))
        yield
        stop.set()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await state.ll.close()
        await state.cache.close()

    return ctx


def build_app(
    store: Store,
    signer: TokenSigner,
    *,
    playlist_max_age: float | None,
    cache_bytes: int,
    token_check: TokenCheck,
    identity: JwtSettings | None,
    health_source: HealthSource | None = None,
    health_interval: float = 2.0,
    catalog_interval: float = 5.0,
    static_dir: Path | None = None,
    playlists: Bus | None = None,
    region: RegionConfig | None = None,
) -> web.Application:
    """The edge application; the caller owns the store's lifecycle (start/close).

    ``playlist_max_age`` overrides the live playlists' ``max-age`` (default: half the target
    duration); ``cache_bytes`` bounds the in-memory cache; ``identity``: JWT view tokens of an
    identity provider (``edge.idp``), or None. ``playlists``: the bus whose ``camflow.playlists`` the
    edge follows to answer blocking playlist reloads as soon as a playlist changes (``edge.blocking``);
    without it, requests waiting for a playlist re-read it once per part target. ``region``: this
    edge's region; live playlists of a stream live in another region redirect there
    (``edge.regions``).
    """
    app = web.Application(middlewares=[count_requests, json_errors])
    viewers = ViewerCounter()
    cache = ObjectCache(cache_bytes)
    policy = PlaylistPolicy(playlist_max_age)
    fetch = object_fetcher(cache, store, policy)
    catalog = StreamCatalog(store, fetch)
    state = EdgeState(
        store=store,
        auth=Authorizer(signer, identity=None if identity is None else IdentityProvider(identity)),
        cache=cache,
        fetch=fetch,
        ll=LiveEnds(cache, fetch),
        policy=policy,
        token_check=token_check,
        viewers=viewers,
        catalog=catalog,
        health=health_source or CatalogHealth(catalog, viewers),
        health_interval=health_interval,
        static_dir=static_dir or default_static_dir(),
        counters=EdgeCounters(),
        log=get_logger("edge"),
        regions=None if region is None else RegionWatch(store, region),
    )
    app[EDGE] = state
    closing = asyncio.Event()
    app[CLOSING] = closing

    async def on_shutdown(app: web.Application) -> None:
        closing.set()

    app.on_shutdown.append(on_shutdown)
    app.cleanup_ctx.append(_background(catalog_interval, playlists))
    app.router.add_get("/healthz", healthz)
    app.router.add_get(LIVE_PREFIX + "{path:.*}", live)
    app.router.add_route("OPTIONS", LIVE_PREFIX + "{path:.*}", preflight)
    add_api_routes(app)
    add_recording_routes(app, store)
    add_clip_routes(app)
    add_event_routes(app)
    add_region_routes(app)
    add_thumbnail_routes(app)
    add_page_routes(app)
    return app
