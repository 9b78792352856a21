"""Events on a stream's timeline at the edge (``camflow.stream_events``: the objects and their rules).

- ``POST /api/streams/{stream}/events``: a JSON body (``type``, ``label``, ``time`` or ``start``
  and ``end``, ``pre_roll``, ``post_roll``, ``lock``) records an event: 201 with the event and a
  ``Location``. An operator (admin) token, the stream's publish token, or the credential of a
  device that may publish the stream (when this process has the device registry), so a camera or
  a motion detector posts its own; 400 ``bad_event`` naming the field otherwise wrong.
- ``GET /api/streams/{stream}/events?start=&end=&type=`` (view token): the events touching the
  range (default the last 24 h, at most ``MAX_RANGE``), oldest first: ``{"stream", "events"}``.
- ``GET /api/streams/{stream}/events/{id}`` (view token) and ``DELETE`` (operator token; this is
  what releases a lock): the event, 204, or 404.

Tokens come in ``?token=`` or ``Authorization: Bearer``, like everywhere else. Bodies over
``MAX_BODY`` bytes are 413. Refusals are counted (``edge.state.EdgeCounters``) and JSON.
"""

from __future__ import annotations

import asyncio
import json
import math
import time

from aiohttp import web

from camflow.devices.model import DeviceRefused, is_device_credential
from camflow.devices.registry import DeviceRegistry
from camflow.errors import NotFound, StoreUnavailable, TokenError
from camflow.hls.dates import format_date_time, parse_date_time
from camflow.stream_events import (
    EventError,
    StreamEvent,
    day_prefixes,
    event_key,
    ids_touching,
    new_event,
    span_of,
)
from camflow.tokens import Action
from edge.access import (
    operator_refusal,
    request_token,
    stream_refusal,
    token_error,
    token_missing,
    viewer_refusal,
)
from edge.http import error_response, store_unavailable_response
from edge.state import EDGE, EdgeState

DEVICES = web.AppKey("devices", DeviceRegistry)  # set when the process follows the device registry
MAX_BODY = 4096
MAX_RANGE = 31 * 86_400.0
DEFAULT_RANGE = 86_400.0
READS = 16  # event objects read at once


def add_event_routes(app: web.Application) -> None:
    app.router.add_post("/api/streams/{stream}/events", post_event)
    app.router.add_get("/api/streams/{stream}/events", list_events)
    app.router.add_get("/api/streams/{stream}/events/{id}", get_event)
    app.router.add_delete("/api/streams/{stream}/events/{id}", delete_event)


def _bad(state: EdgeState, status: int, error: str, detail: str) -> web.Response:
    state.counters.bad_query += 1
    return error_response(status, error, detail)


def _poster(request: web.Request, state: EdgeState, stream: str) -> str | web.Response:
    """Who may post an event to ``stream`` (``admin``, ``publish``, ``device:NAME``), or the refusal."""
    token, _ = request_token(request)
    if not token:
        return token_missing(state, request.path, stream)
    devices = request.app.get(DEVICES)
    if devices is not None and is_device_credential(token):
        try:
            return f"device:{devices.check_credential(token, stream).name}"
        except DeviceRefused as exc:
            return token_error(state, TokenError(str(exc)), stream)
    try:
        state.auth.verify(token, stream, Action.PUBLISH)
        return "publish"
    except TokenError as exc:
        refused = exc
    try:
        state.auth.verify_operator(token)
        return "admin"
    except TokenError:
        return token_error(state, refused, stream)


async def post_event(request: web.Request) -> web.Response:
    state = request.app[EDGE]
    stream = request.match_info["stream"]
    if (refused := stream_refusal(state, stream)) is not None:
        return refused
    who = _poster(request, state, stream)
    if isinstance(who, web.Response):
        return who
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _bad(state, 413, "body_too_large", f"an event body is at most {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        return _bad(state, 413, "body_too_large", f"an event body is at most {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"null")
        event = new_event(stream, body, by=who, now=time.time())
    except json.JSONDecodeError as exc:
        return _bad(state, 400, "bad_event", f"the body is not JSON: {exc}")
    except EventError as exc:
        return _bad(state, 400, "bad_event", str(exc))
    try:
        await state.store.put(event.key, event.render(), "application/json")
    except StoreUnavailable as exc:
        state.counters.store_failed += 1
        return store_unavailable_response(str(exc))
    state.log.info(
        "event_posted", stream_id=stream, event_id=event.id, type=event.type, lock=event.lock, by=who
    )
    location = f"/api/streams/{stream}/events/{event.id}"
    return web.json_response(event.to_json(), status=201, headers={"Location": location})


async def _events(state: EdgeState, stream: str, start: float, end: float) -> list[StreamEvent]:
    keys: list[str] = []
    for prefix in day_prefixes(stream, start, end):
        keys.extend(await state.store.list(prefix))
    ids = ids_touching(keys, start, end)
    limit = asyncio.Semaphore(READS)

    async def read(event_id: str) -> StreamEvent | None:
        async with limit:
            try:
                return StreamEvent.parse(await state.store.get(event_key(stream, event_id)))
            except NotFound:
                return None  # deleted since the listing
            except EventError as exc:
                state.log.warning("event_unreadable", stream_id=stream, event_id=event_id, error=str(exc))
                return None

    return [e for e in await asyncio.gather(*(read(i) for i in ids)) if e is not None]


def _range(request: web.Request) -> tuple[float, float]:
    now = time.time()
    start_text, end_text = request.query.get("start"), request.query.get("end")
    end = parse_date_time(end_text) if end_text else now
    start = parse_date_time(start_text) if start_text else end - DEFAULT_RANGE
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        raise ValueError(f"end {format_date_time(end)} is not after start {format_date_time(start)}")
    if end - start > MAX_RANGE:
        raise ValueError(f"a range of {end - start:.0f} s is over the limit of {MAX_RANGE:.0f} s")
    return start, end


async def list_events(request: web.Request) -> web.Response:
    state = request.app[EDGE]
    stream = request.match_info["stream"]
    refused = await viewer_refusal(state, request, stream)
    if refused is not None:
        return refused
    try:
        start, end = _range(request)
    except ValueError as exc:
        return _bad(
            state, 400, "bad_range", f"{exc}: expected ?start=&end= in ISO 8601, e.g. 2026-12-03T14:00:00Z"
        )
    kind = request.query.get("type")
    try:
        found = await _events(state, stream, start, end)
    except StoreUnavailable as exc:
        state.counters.store_failed += 1
        return store_unavailable_response(str(exc))
    events = [e.to_json() for e in found if kind is None or e.type == kind]
    return web.json_response({"stream": stream, "events": events}, headers={"Cache-Control": "no-store"})


async def _one(request: web.Request, state: EdgeState, stream: str) -> StreamEvent | web.Response:
    event_id = request.match_info["id"]
    try:
        span_of(event_id)
        return StreamEvent.parse(await state.store.get(event_key(stream, event_id)))
    except (EventError, NotFound):
        state.counters.not_found += 1
        return error_response(404, "no_event", f"stream {stream!r} has no event {event_id!r}")
    except StoreUnavailable as exc:
        state.counters.store_failed += 1
        return store_unavailable_response(str(exc))


async def get_event(request: web.Request) -> web.Response:
    state = request.app[EDGE]
    stream = request.match_info["stream"]
    refused = await viewer_refusal(state, request, stream)
    if refused is not None:
        return refused
    found = await _one(request, state, stream)
    return found if isinstance(found, web.Response) else web.json_response(found.to_json())


async def delete_event(request: web.Request) -> web.Response:
    state = request.app[EDGE]
    stream = request.match_info["stream"]
    refused = stream_refusal(state, stream) or operator_refusal(state, request)
    if refused is not None:
        return refused
    found = await _one(request, state, stream)
    if isinstance(found, web.Response):
        return found
    try:
        await state.store.delete(found.key)
    except StoreUnavailable as exc:
        state.counters.store_failed += 1
        return store_unavailable_response(str(exc))
    state.log.info("event_deleted", stream_id=stream, event_id=found.id, lock=found.lock)
    return web.Response(status=204)
