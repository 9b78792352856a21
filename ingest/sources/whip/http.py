"""The WHIP HTTP resources (RFC 9725) on aiohttp, mounted under ``/whip``.

- ``POST /whip/{stream}``, ``Content-Type: application/sdp``, ``Authorization: Bearer <publish
  token or device credential>``: ``201 Created``, the SDP answer, ``Location:
  /whip/{stream}/{session}``, ``ETag``.
  Refusals: bad stream name 400, missing/invalid token 401 (``WWW-Authenticate: Bearer``), other
  media type 415, an offer aiortc cannot take (no H264/VP8 video, no ICE credentials or
  fingerprint, garbage) 400, an offer over ``MAX_OFFER`` bytes 413, an offer not received within
  the body deadline (``camflow.limits``) 408, too many sessions 503. A stream already being
  published is taken over: the old session ends (as RTSP does with a camera that reconnects).
- ``DELETE /whip/{stream}/{session}``: ends the session (200); unknown session 404.
- ``PATCH`` (trickle ICE, ICE restart): 405 with ``Allow`` (RFC 9725 4.3.1: neither is supported;
  aiortc gathers every candidate before it answers).
- ``OPTIONS`` on both: CORS preflight, ``Accept-Post: application/sdp``.

A device credential (``cfd1.<device>.<secret>``, ``camflow.devices``) is checked against the device
registry; the session remembers its device and ends when the device is revoked or loses the stream.
Every error is JSON ``{"error", "detail"}``, counted by status (``WhipService.refused``) and logged
(``whip_refused``); a refused credential also as ``publish_refused`` with the reason, as RTSP does.
On its own port (``serve_whip``) a ``camflow.guard.ConnectionGuard`` applies the listener limits
(per-client cap, head, body and idle deadlines, head size); mounted on the edge, the edge's does.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from camflow.bus import Bus
from camflow.devices import DeviceChange, DeviceRefused, DeviceRegistry, SeenWriter, is_device_credential
from camflow.errors import TokenError
from camflow.guard import ConnectionGuard, GuardedSite
from camflow.keys import is_stream_name
from camflow.limits import ConnectionLimits
from camflow.log import get_logger
from camflow.tokens import Action, TokenSigner
from ingest.media.live import LiveFeeds
from ingest.sources.whip.errors import WhipError
from ingest.sources.whip.ice import IcePolicy
from ingest.sources.whip.session import SessionLimits, WhipSession

PREFIX = "/whip"
MAX_SESSIONS = 256
MAX_OFFER = 64 * 1024  # bytes of an SDP offer (a browser's is 3-10 KB)
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Post, Accept-Patch",
}
POST_METHODS = "POST, OPTIONS"
SESSION_METHODS = "DELETE, OPTIONS"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = get_logger("ingest")


def json_error(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"error": error, "detail": detail}, status=status, headers={**CORS, **(headers or {})}
    )


def preflight(methods: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            status=204,
            headers={
                **CORS,
                "Allow": methods,
                "Accept-Post": "application/sdp",
                "Access-Control-Allow-Methods": methods,
                "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
                "Access-Control-Max-Age": "86400",
            },
        )

    return handler


def error_middleware(
    endpoint: str, refused: dict[int, int], challenge: Callable[[int], dict[str, str] | None]
) -> Middleware:
    """Every refusal of ``endpoint`` (``whip``, ``whep``) as JSON ``{"error", "detail"}`` with CORS,
    counted by status in ``refused`` and logged (``<endpoint>_refused``); ``challenge`` adds the
    headers of a status (``WWW-Authenticate`` on 401, ``Allow`` on 405)."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        stream = request.match_info.get("stream")
        try:
            return await handler(request)
        except WhipError as exc:
            response = json_error(exc.status, exc.error, exc.reason, challenge(exc.status))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            detail = exc.text or exc.reason
            if isinstance(exc, web.HTTPMethodNotAllowed):
                allowed = ", ".join(sorted(exc.allowed_methods))
                detail = f"{request.method} is not allowed on {request.path!r}; use {allowed}"
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            response = json_error(exc.status, exc.reason.lower().replace(" ", "_"), detail, headers)
        except Exception:
            log.exception(f"{endpoint}_request_failed", method=request.method, path=request.path)
            response = json_error(
                500, "internal_error", f"the {endpoint.upper()} endpoint failed to handle this request"
            )
        refused[response.status] = refused.get(response.status, 0) + 1
        log.info(f"{endpoint}_refused", stream_id=stream, method=request.method, status=response.status)
        return response

    return errors


async def read_offer(request: web.Request, limits: ConnectionLimits | None) -> str:
    """The SDP offer in the body, within the body deadline of ``limits`` (a chunked one too, which
    the listener cannot frame); a WhipError 408 or 413 when it does not arrive in time or is too big."""
    if limits is None:
        return await request.text()
    seconds = limits.body_deadline(0.0, request.content_length or MAX_OFFER)
    try:
        async with asyncio.timeout(seconds):
            body = await request.content.read(MAX_OFFER + 1)
            while len(body) <= MAX_OFFER and not request.content.at_eof():
                body += await request.content.read(MAX_OFFER + 1 - len(body))
    except TimeoutError:
        raise WhipError(408, "request_timeout", f"the offer was not received within {seconds:g} s") from None
    if len(body) > MAX_OFFER:
        raise WhipError(413, "offer_too_large", f"offer over {MAX_OFFER} bytes")
    return body.decode(request.charset or "utf-8", errors="replace")


def check_sdp_body(request: web.Request) -> None:
    """A WhipError 415 or 413 for a body that is not an SDP offer of at most MAX_OFFER bytes."""
    if request.content_type != "application/sdp":
        raise WhipError(
            415,
            "unsupported_media_type",
            f"body of type {request.content_type!r}: expected application/sdp",
        )
    if (request.content_length or 0) > MAX_OFFER:
        raise WhipError(
            413,
            "offer_too_large",
            f"offer of {request.content_length} bytes: expected at most {MAX_OFFER}",
        )


def created(prefix: str, stream: str, session_id: str, answer: str) -> web.Response:
    """The ``201 Created`` of a WHIP or WHEP session: its SDP answer, ``Location`` and ``ETag``."""
    return web.Response(
        status=201,
        body=answer.encode(),
        content_type="application/sdp",
        headers={**CORS, "Location": f"{prefix}/{stream}/{session_id}", "ETag": f'"{session_id}"'},
    )


def no_patch() -> WhipError:
    """The 405 of a PATCH to a WHIP or WHEP session (trickle ICE, ICE restart)."""
    detail = "trickle ICE and ICE restarts are not supported: send every candidate in the offer"
    return WhipError(405, "method_not_allowed", detail)


class Mountable(Protocol):
    def app(self) -> web.Application: ...


class WhipService:
    """The WHIP sessions of this ingest process, one per stream, and their HTTP application."""

    def __init__(
        self,
        bus: Bus,
        signer: TokenSigner,
        *,
        policy: IcePolicy | None = None,
        limits: SessionLimits,
        max_sessions: int = MAX_SESSIONS,
        devices: DeviceRegistry | None = None,
        seen: SeenWriter | None = None,
        connection_limits: ConnectionLimits | None = None,
        live: LiveFeeds | None = None,
    ) -> None:
        """``devices``: the device registry (None: HMAC publish tokens only); ``seen`` records where
        and when each device published; ``connection_limits``: the offer's body deadline (None: only
        the listener's)."""
        self.bus = bus
        self.live = live
        self.devices = devices
        self.seen = seen
        self.connection_limits = connection_limits
        if devices is not None:
            devices.listen(self._device_changed)
        self.signer = signer
        self.policy = policy or IcePolicy()
        self.limits = limits
        self.max_sessions = max_sessions
        self.sessions: dict[str, WhipSession] = {}
        self.refused: dict[int, int] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def app(self) -> web.Application:
        """The routes, to mount at ``/whip`` (``parent.add_subapp(PREFIX, service.app())``)."""
        app = web.Application(middlewares=[error_middleware("whip", self.refused, self._challenge)])
        app.router.add_post("/{stream}", self._post)
        app.router.add_route("OPTIONS", "/{stream}", preflight(POST_METHODS))
        app.router.add_delete("/{stream}/{session}", self._delete)
        app.router.add_patch("/{stream}/{session}", self._patch)
        app.router.add_route("OPTIONS", "/{stream}/{session}", preflight(SESSION_METHODS))
        return app

    async def stop(self) -> None:
        """End every session (each flushes its segments and marks its stream offline)."""
        await asyncio.gather(*(s.close("shutdown") for s in list(self.sessions.values())))
        await asyncio.gather(*self._closing, return_exceptions=True)

    @staticmethod
    def _challenge(status: int) -> dict[str, str] | None:
        if status == 405:
            return {"Allow": SESSION_METHODS}
        return {"WWW-Authenticate": 'Bearer realm="camflow"'} if status == 401 else None

    def _authorize(self, request: web.Request, stream: str) -> str | None:
        """The device the request's credential is (None: an HMAC publish token); a 401 WhipError
        when it authorizes no publish of ``stream``."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise WhipError(
                401, "unauthorized", "expected Authorization: Bearer <publish token of the stream>"
            )
        if self.devices is not None and is_device_credential(token.strip()):
            try:
                device = self.devices.check_credential(token.strip(), stream).name
            except DeviceRefused as exc:
                log.info("publish_refused", stream_id=stream, scheme="bearer", reason=str(exc))
                raise WhipError(401, "unauthorized", f"device credential refused: {exc}") from None
            if self.seen is not None:
                self.seen.note(device, request.remote or "")
            return device
        try:
            self.signer.verify(token.strip(), stream, Action.PUBLISH)
        except TokenError as exc:
            log.info("publish_refused", stream_id=stream, scheme="bearer", reason=str(exc))
            raise WhipError(401, "unauthorized", f"publish token refused: {exc}") from None
        return None

    async def _post(self, request: web.Request) -> web.Response:
        stream = request.match_info["stream"]
        if not is_stream_name(stream):
            raise WhipError(
                400, "bad_stream", f"stream name {stream[:80]!r}: expected 1-64 characters of A-Z a-z 0-9 _ -"
            )
        device = self._authorize(request, stream)
        check_sdp_body(request)
        offer = await read_offer(request, self.connection_limits)
        if not offer.strip():
            raise WhipError(400, "bad_sdp", "empty body: expected an SDP offer")
        if stream not in self.sessions and len(self.sessions) >= self.max_sessions:
            raise WhipError(
                503, "too_many_sessions", f"{len(self.sessions)} WHIP sessions: the limit; retry later"
            )
        session = WhipSession(self.bus, stream, self.policy, self.limits, self._forget, self.live)
        session.device = device
        try:
            answer = await session.answer(offer)
        except BaseException:
            await session.close("refused")
            raise
        old = self.sessions.get(stream)
        self.sessions[stream] = session
        if old is not None:
            self._end(old, "replaced")
        return created(PREFIX, stream, session.id, answer)

    def _session(self, request: web.Request) -> WhipSession:
        stream, sid = request.match_info["stream"], request.match_info["session"]
        session = self.sessions.get(stream)
        if session is None or session.id != sid:
            raise WhipError(404, "not_found", f"no WHIP session {sid[:40]!r} of stream {stream[:80]!r}")
        return session

    async def _delete(self, request: web.Request) -> web.Response:
        await self._session(request).close("deleted")
        return web.Response(status=200, headers=CORS)

    async def _patch(self, request: web.Request) -> web.Response:
        self._session(request)
        raise no_patch()

    def _forget(self, session: WhipSession) -> None:
        if self.sessions.get(session.stream) is session:
            del self.sessions[session.stream]

    def _device_changed(self, change: DeviceChange) -> None:
        for session in list(self.sessions.values()):
            if session.device == change.device and session.stream not in change.allowed:
                log.warning(
                    "device_session_ended",
                    device=change.device,
                    stream_id=session.stream,
                    reason=change.reason,
                    protocol="whip",
                )
                self._end(session, f"device {change.device}: {change.reason}")

    def _end(self, session: WhipSession, reason: str) -> None:
        task = asyncio.create_task(session.close(reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


async def serve_whip(
    service: WhipService,
    host: str,
    port: int,
    limits: ConnectionLimits,
    tls_context: ssl.SSLContext | None = None,
    whep: Mountable | None = None,
) -> Callable[[], Awaitable[None]]:
    """``camflow ingest``: /whip (and /whep, ``whep``'s) on its own HTTP listener (HTTPS with
    ``tls_context``), guarded by ``limits``; returns the coroutine function that stops it."""
    root = web.Application(client_max_size=MAX_OFFER + 1024)
    root.add_subapp(PREFIX, service.app())
    if whep is not None:
        root.add_subapp("/whep", whep.app())
    runner = web.AppRunner(root, access_log=None, keepalive_timeout=limits.idle_timeout)
    await runner.setup()
    try:
        await GuardedSite(
            runner, ConnectionGuard("whip", limits), host, port, ssl_context=tls_context
        ).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("whip_listening", host=host, port=port, tls=tls_context is not None)
    return runner.cleanup
