"""The edge's API and operator endpoints.

- ``/api/streams`` (operator token): every stream's summary.
- ``/api/streams/{stream}/health`` (view token, Server-Sent Events): one ``event: health`` every
  ``health_interval`` seconds from the app's ``HealthSource``, with the health feed's picture
  (publish state and reason, ingest and transcode figures) laid over it when the edge has one.
- ``/api/health`` (operator token, Server-Sent Events): every ``HealthSample`` as it arrives on
  ``camflow.health`` (first the latest one of each stream and service), ``?stream=`` to keep one
  stream; without a bus, samples derived from the catalog every ``health_interval`` seconds.
  ``camflow tail --edge URL`` reads it.
- ``/metrics`` (Prometheus; with ``--workers N`` every worker's figures summed, viewers united) only
  to an operator token (``Authorization: Bearer`` or ``?token=``): its figures name every stream.
  Prometheus scrapes ``--metrics-port`` instead (``camflow.metrics.MetricsServer``, loopback by
  default), which needs no token.
- ``/readyz`` (the store answers, the edge is not shutting down, and the other in-process services
  are ready) and ``/healthz`` (in ``edge.app``): public, they name no stream.

SSE responses end when the client goes away, the app shuts down, or ``MAX_SSE_SECONDS`` pass
(EventSource reconnects by itself), so no stream is held open forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from camflow.events import HealthSample, StreamStateKind
from camflow.keys import is_stream_name
from camflow.metrics import add_source, remove_source
from edge.access import operator_refusal, viewer_refusal
from edge.health import HEALTH_FEED, HealthFeed
from edge.http import CORS_HEADERS, error_response
from edge.metrics import edge_metrics_response, edge_samples
from edge.state import CLOSING, EDGE, EdgeState

MAX_SSE_SECONDS = 3600.0
READY_TIMEOUT = 2.0
READY_KEY = "streams/.readyz"  # headed to prove the store answers (it need not exist)
SSE_HEADERS = {
    **CORS_HEADERS,
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
}


async def streams(request: web.Request) -> web.Response:
    state = request.app[EDGE]
    refused = operator_refusal(state, request)
    if refused is not None:
        return refused
    out = []
    feed = request.app.get(HEALTH_FEED)
    await state.viewers.census()  # with --workers N: every worker's viewers
    for name in state.catalog.names:
        summary = await state.catalog.summary(name)
        if summary is not None:
            row = {**summary.as_json(), "viewers": state.viewers.count(name)}
            out.append(_overlay(feed, name, row) or row)
    if feed is not None:
        # Streams the feed knows and the store does not (yet): a pulled camera that never
        # connected, a publish whose first segment is still being cut.
        listed = {row["stream"] for row in out}
        for name in feed.board.streams:
            merged = feed.board.merged(name)
            if name not in listed and merged is not None and merged["state"] is not None:
                out.append(_overlay(feed, name, {"stream": name, "viewers": 0}) or {})
    return web.json_response({"streams": out, "time": round(time.time(), 3)})


def _unknown(stream: str) -> dict[str, object]:
    return {
        "stream": stream,
        "state": "unknown",
        "viewers": 0,
        "time": round(time.time(), 3),
        "source": "edge",
    }


async def health(request: web.Request) -> web.StreamResponse:
    state = request.app[EDGE]
    stream = request.match_info["stream"]
    refused = await viewer_refusal(state, request, stream)
    if refused is not None:
        return refused
    resp = web.StreamResponse(headers=SSE_HEADERS)
    await resp.prepare(request)
    await resp.write(b"retry: 3000\n\n")
    closing = request.app[CLOSING]
    deadline = time.monotonic() + MAX_SSE_SECONDS
    while not closing.is_set() and time.monotonic() < deadline:
        try:
            sample = await state.health.sample(stream)
        except Exception as exc:  # a failing source must not end the stream
            state.log.warning("health_sample_failed", stream_id=stream, error=repr(exc))
            sample = None
        sample = _overlay(request.app.get(HEALTH_FEED), stream, sample)
        data = json.dumps(sample if sample is not None else _unknown(stream), separators=(",", ":"))
        try:
            await resp.write(f"event: health\ndata: {data}\n\n".encode())
        except (ConnectionResetError, RuntimeError):
            break  # the viewer went away
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), timeout=state.health_interval)
    return resp


def _overlay(feed: HealthFeed | None, stream: str, sample: dict[str, Any] | None) -> dict[str, Any] | None:
    """The catalog's sample with the health feed's picture of the stream laid over it."""
    merged = feed.board.merged(stream) if feed is not None else None
    if merged is None:
        return sample
    out = dict(sample or {"stream": stream, "time": round(time.time(), 3)})
    if merged["state"] is not None:
        out["state"], out["reason"] = merged["state"], merged["reason"]
    out["feed"] = {k: v for k, v in merged.items() if v is not None}
    out["source"] = "feed"
    return out


def _catalog_sample(state: EdgeState, summary: Any) -> HealthSample:
    return HealthSample(
        stream=summary.stream,
        service="edge",
        instance="catalog",
        at=time.time(),
        state=StreamStateKind(summary.state.value),
        reason="from the playlists in the store",
        bitrate=None if summary.bitrate is None else float(summary.bitrate),
        fps=summary.fps,
        segment_age=summary.last_segment_age,
        viewers=state.viewers.count(summary.stream),
    )


async def _write_event(resp: web.StreamResponse, sample: HealthSample) -> bool:
    data = json.dumps(sample.to_json(), separators=(",", ":"))
    try:
        await resp.write(f"event: health\ndata: {data}\n\n".encode())
    except (ConnectionResetError, RuntimeError):
        return False  # the client went away
    return True


async def health_feed(request: web.Request) -> web.StreamResponse:
    state = request.app[EDGE]
    refused = operator_refusal(state, request)
    if refused is not None:
        return refused
    only = request.query.get("stream")
    if only is not None and not is_stream_name(only):
        state.counters.bad_path += 1
        return error_response(400, "bad_path", f"stream {only!r} is not valid: expected A-Z a-z 0-9 _ -")
    feed = request.app.get(HEALTH_FEED)
    resp = web.StreamResponse(headers=SSE_HEADERS)
    await resp.prepare(request)
    await resp.write(b"retry: 3000\n\n")
    closing = request.app[CLOSING]
    deadline = time.monotonic() + MAX_SSE_SECONDS
    if feed is not None and feed.bus is not None:
        queue = feed.subscribe()
        try:
            for sample in feed.board.latest():
                if (only is None or sample.stream == only) and not await _write_event(resp, sample):
                    return resp
            while not closing.is_set() and time.monotonic() < deadline:
                try:
                    sample = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    continue
                if (only is None or sample.stream == only) and not await _write_event(resp, sample):
                    break
        finally:
            feed.unsubscribe(queue)
        return resp
    while not closing.is_set() and time.monotonic() < deadline:  # no bus: what the catalog knows
        await state.viewers.census()
        for name in [only] if only is not None else state.catalog.names:
            summary = await state.catalog.summary(name)
            if summary is not None and not await _write_event(resp, _catalog_sample(state, summary)):
                return resp
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), timeout=state.health_interval)
    return resp


async def metrics(request: web.Request) -> web.Response:
    state = request.app[EDGE]
    refused = operator_refusal(state, request)
    if refused is not None:
        return refused
    return await edge_metrics_response(state)


async def readyz(request: web.Request) -> web.Response:
    return await readyz_response(request.app)


async def readyz_response(app: web.Application) -> web.Response:
    """``/readyz`` of the edge application (also on ``--metrics-port``, ``edge.service``)."""
    state = app[EDGE]
    reasons = ["draining: shutting down"] if app[CLOSING].is_set() else []
    try:
        await asyncio.wait_for(state.store.head(READY_KEY), READY_TIMEOUT)
    except Exception as exc:
        reasons.append(f"store: {exc!r}")
    feed = app.get(HEALTH_FEED)
    if feed is not None and feed.readiness is not None:
        reasons += [r for r in feed.readiness.reasons() if not r.startswith("starting:")]
    if reasons:
        return web.json_response({"status": "not_ready", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready"})


async def _observed(app: web.Application) -> AsyncIterator[None]:
    """The edge's metrics source and health feed live as long as the app."""
    state = app[EDGE]
    source = edge_samples(state)
    add_source(source)
    feed = app.get(HEALTH_FEED)
    if feed is not None:
        await feed.start(state.viewers, lambda: state.catalog.names)
    yield
    if feed is not None:
        await feed.stop()
    remove_source(source)


def add_api_routes(app: web.Application) -> None:
    app.router.add_get("/api/streams", streams)
    app.router.add_get("/api/streams/{stream}/health", health)
    app.router.add_get("/api/health", health_feed)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/readyz", readyz)
    app.cleanup_ctx.append(_observed)
