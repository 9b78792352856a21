"""``/api/streams`` (operator token) and ``/api/streams/{stream}/health`` (Server-Sent Events).

The health stream sends one ``event: health`` every ``health_interval`` seconds from the app's
``HealthSource``, until the viewer goes away, the app shuts down, or ``MAX_SSE_SECONDS`` pass
(EventSource reconnects by itself), so no stream is held open forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from aiohttp import web

from camflow.errors import TokenError
from camflow.keys import is_stream_name
from edge.delivery import token_error, token_missing
from edge.http import CORS_HEADERS, error_response
from edge.state import CLOSING, EDGE

MAX_SSE_SECONDS = 3600.0


async def streams(request: web.Request) -> web.Response:
    state = request.app[EDGE]
    token = request.query.get("token", "")
    if not token:
        state.counters.token_missing += 1
        return error_response(
            401,
            "token_missing",
            "/api/streams needs an operator token in ?token= (camflow token admin)",
            headers={"WWW-Authenticate": 'Bearer realm="camflow"'},
        )
    try:
        state.auth.verify_operator(token)
    except TokenError as exc:
        return token_error(state, exc, "*")
    out = []
    for name in state.catalog.names:
        summary = await state.catalog.summary(name)
        if summary is not None:
            out.append({**summary.as_json(), "viewers": state.viewers.count(name)})
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
    if not is_stream_name(stream):
        state.counters.bad_path += 1
        return error_response(
            400, "bad_path", f"stream name {stream!r} is not valid: expected A-Z a-z 0-9 _ -"
        )
    token = request.query.get("token", "")
    if not token:
        return token_missing(state, request.path, stream)
    try:
        state.auth.verify_viewer(token, stream)
    except TokenError as exc:
        return token_error(state, exc, stream)
    resp = web.StreamResponse(
        headers={
            **CORS_HEADERS,
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
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
        data = json.dumps(sample if sample is not None else _unknown(stream), separators=(",", ":"))
        try:
            await resp.write(f"event: health\ndata: {data}\n\n".encode())
        except (ConnectionResetError, RuntimeError):
            break  # the viewer went away
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), timeout=state.health_interval)
    return resp


def add_api_routes(app: web.Application) -> None:
    app.router.add_get("/api/streams", streams)
    app.router.add_get("/api/streams/{stream}/health", health)
