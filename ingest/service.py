"""The ingest service: the RTSP server, with publish tokens checked against the shared secret."""

from __future__ import annotations

from collections.abc import Callable

from camflow.bus import Bus
from camflow.errors import TokenError
from camflow.log import get_logger
from camflow.tokens import Action, TokenSigner
from ingest.rtsp.server import RtspServer
from ingest.rtsp.session import AuthRequest

log = get_logger("ingest")


def token_authorizer(signer: TokenSigner) -> Callable[[AuthRequest], bool]:
    def authorize(request: AuthRequest) -> bool:
        # The token comes in ?token=..., or as the password of rtsp://user:token@host/stream
        # (the user name is the stream's) for cameras that only know credentials.
        token = request.query.get("token") or request.password
        if not token:
            return False
        try:
            signer.verify(token, request.stream, Action.PUBLISH)
        except TokenError as exc:
            log.info("publish_refused", stream_id=request.stream, reason=str(exc))
            return False
        return True

    return authorize


def build_rtsp_server(
    bus: Bus,
    signer: TokenSigner,
    *,
    host: str,
    port: int,
    segment_target: float = 2.0,
    session_timeout: int = 60,
) -> RtspServer:
    return RtspServer(
        bus,
        token_authorizer(signer),
        host=host,
        port=port,
        segment_target=segment_target,
        session_timeout=session_timeout,
    )
