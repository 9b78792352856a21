"""The WHEP HTTP resources (WebRTC-HTTP Egress Protocol) on aiohttp, mounted under ``/whep`` beside
``/whip`` (same listener: the edge's port in ``camflow run``, ingest's in ``camflow ingest``).

- ``POST /whep/{stream}``, ``Content-Type: application/sdp`` (the viewer's recvonly offer), a VIEW
  token of the stream as ``Authorization: Bearer <token>`` or ``?token=``: ``201 Created``, the SDP
  answer, ``Location: /whep/{stream}/{session}``, ``ETag``.
  Refusals, JSON ``{"error", "detail"}`` as WHIP's: bad stream name 400, missing/invalid token 401
  (``WWW-Authenticate: Bearer``), other media type 415, an offer that cannot receive H.264 400, the
  stream not published to this ingest 404, its codec not H.264 409, an offer over ``MAX_OFFER``
  bytes 413, not received within the body deadline 408, no ICE candidate to answer with 503
  (``no_usable_candidate``), and the limits: too many sessions in all 503 (``too_many_sessions``),
  on the stream 503 (``too_many_viewers``), from one client address 429 (``too_many_client_sessions``),
  each with ``Retry-After``.
- ``DELETE /whep/{stream}/{session}``: ends the session (200); unknown session 404.
- ``PATCH``: 405 with ``Allow`` (no trickle ICE, no ICE restart).
- ``OPTIONS`` on both: CORS preflight, ``Accept-Post: application/sdp``.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp import web

from camflow.errors import TokenError
from camflow.keys import is_stream_name
from camflow.limits import ConnectionLimits
from camflow.log import get_logger
from camflow.tokens import Action, TokenSigner
from ingest.media.live import LiveFeeds
from ingest.media.mux import H264
from ingest.sources.whip.errors import WhipError
from ingest.sources.whip.http import (
    CORS,
    POST_METHODS,
    SESSION_METHODS,
    check_sdp_body,
    created,
    error_middleware,
    no_patch,
    preflight,
    read_offer,
)
from ingest.sources.whip.ice import IcePolicy
from ingest.sources.whip.whep import WhepLimits, WhepSession

PREFIX = "/whep"
MAX_SESSIONS = 500  # WHEP sessions of this process, every stream
MAX_VIEWERS = 200  # of one stream
MAX_CLIENT_SESSIONS = 20  # from one client address
RETRY_AFTER = "5"
log = get_logger("ingest")


class WhepService:
    """The WHEP sessions of this ingest process and their HTTP application."""

    def __init__(
        self,
        feeds: LiveFeeds,
        signer: TokenSigner,
        *,
        policy: IcePolicy | None = None,
        limits: WhepLimits,
        max_sessions: int = MAX_SESSIONS,
        max_viewers: int = MAX_VIEWERS,
        max_client_sessions: int = MAX_CLIENT_SESSIONS,
        connection_limits: ConnectionLimits | None = None,
    ) -> None:
        self.feeds = feeds
        self.signer = signer
        self.policy = policy or IcePolicy()
        self.limits = limits
        self.max_sessions = max_sessions
        self.max_viewers = max_viewers
        self.max_client_sessions = max_client_sessions
        self.connection_limits = connection_limits
        self.sessions: dict[str, WhepSession] = {}  # by session id
        self.refused: dict[int, int] = {}
        self._clients: Counter[str] = Counter()

    def app(self) -> web.Application:
        """The routes, to mount at ``/whep`` (``parent.add_subapp(PREFIX, service.app())``)."""
        app = web.Application(middlewares=[error_middleware("whep", self.refused, self._challenge)])
        app.router.add_post("/{stream}", self._post)
        app.router.add_route("OPTIONS", "/{stream}", preflight(POST_METHODS))
        app.router.add_delete("/{stream}/{session}", self._delete)
        app.router.add_patch("/{stream}/{session}", self._patch)
        app.router.add_route("OPTIONS", "/{stream}/{session}", preflight(SESSION_METHODS))
        return app

    async def stop(self) -> None:
        await asyncio.gather(*(s.close("shutdown") for s in list(self.sessions.values())))

    @staticmethod
    def _challenge(status: int) -> dict[str, str] | None:
        if status == 405:
            return {"Allow": SESSION_METHODS}
        if status in (429, 503):
            return {"Retry-After": RETRY_AFTER}
        return {"WWW-Authenticate": 'Bearer realm="camflow"'} if status == 401 else None

    def _authorize(self, request: web.Request, stream: str) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        token = token or request.query.get("token", "").strip()
        if not token:
            raise WhipError(
                401,
                "unauthorized",
                "expected Authorization: Bearer <view token of the stream>, or ?token=<view token>",
            )
        try:
            self.signer.verify(token, stream, Action.VIEW)
        except TokenError as exc:
            log.info("view_refused", stream_id=stream, protocol="whep", reason=str(exc))
            raise WhipError(401, "unauthorized", f"view token refused: {exc}") from None

    def _check_limits(self, stream: str, client: str) -> None:
        if len(self.sessions) >= self.max_sessions:
            raise WhipError(
                503, "too_many_sessions", f"{len(self.sessions)} WHEP sessions: the limit; retry later"
            )
        feed = self.feeds.get(stream)
        if feed is not None and len(feed.viewers) >= self.max_viewers:
            raise WhipError(
                503,
                "too_many_viewers",
                f"stream {stream!r} has {len(feed.viewers)} WebRTC viewers: the limit; retry later or"
                " play it over HLS",
            )
        if self._clients[client] >= self.max_client_sessions:
            raise WhipError(
                429,
                "too_many_client_sessions",
                f"{self._clients[client]} WHEP sessions from {client}: the limit per client address",
            )

    async def _post(self, request: web.Request) -> web.Response:
        stream = request.match_info["stream"]
        if not is_stream_name(stream):
            raise WhipError(
                400, "bad_stream", f"stream name {stream[:80]!r}: expected 1-64 characters of A-Z a-z 0-9 _ -"
            )
        self._authorize(request, stream)
        check_sdp_body(request)
        offer = await read_offer(request, self.connection_limits)
        if not offer.strip():
            raise WhipError(400, "bad_sdp", "empty body: expected an SDP offer")
        client = request.remote or ""
        self._check_limits(stream, client)
        feed = self.feeds.get(stream)
        if feed is None or not feed.live:
            raise WhipError(
                404, "stream_not_live", f"stream {stream!r} is not being published to this ingest"
            )
        if feed.codec != H264:
            raise WhipError(
                409,
                "unsupported_codec",
                f"stream {stream!r} is {feed.codec}: WebRTC playback sends H.264 only; play it over HLS",
            )
        session = WhepSession(self.feeds, feed, self.policy, self.limits, self._forget, client)
        self.sessions[session.id] = session
        self._clients[client] += 1
        try:
            answer = await session.answer(offer)
        except BaseException:
            await session.close("refused")
            raise
        return created(PREFIX, stream, session.id, answer)

    def _session(self, request: web.Request) -> WhepSession:
        stream, sid = request.match_info["stream"], request.match_info["session"]
        session = self.sessions.get(sid)
        if session is None or session.stream != stream:
            raise WhipError(404, "not_found", f"no WHEP session {sid[:40]!r} of stream {stream[:80]!r}")
        return session

    async def _delete(self, request: web.Request) -> web.Response:
        await self._session(request).close("deleted")
        return web.Response(status=200, headers=CORS)

    async def _patch(self, request: web.Request) -> web.Response:
        self._session(request)
        raise no_patch()

    def _forget(self, session: WhepSession) -> None:
        if self.sessions.pop(session.id, None) is not None:
            self._clients[session.client] -= 1
            if self._clients[session.client] <= 0:
                del self._clients[session.client]
