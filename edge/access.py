"""Who may see what at the edge: the one viewer check and the one operator check, with their refusals.

Every route that serves a stream (``/live``, ``/vod``, ``?dvr=``, recordings, the player page,
thumbnails, a stream's health) asks ``viewer_refusal`` (which refuses a bad stream name first, as
``stream_refusal`` does for the routes that need no viewer); every operator route (``/``,
``/api/streams``, ``/api/health``) asks ``operator_refusal``. A view token for the stream or an
operator (admin) token passes (``edge.auth.Authorizer``, memoised). Refusals are counted and
answered alike everywhere: 401 ``token_missing`` (with ``WWW-Authenticate``), 403
``token_expired``, ``token_scope``, ``token_key_retired`` or ``token_invalid``. A token comes in
``?token=`` or ``Authorization: Bearer``; a JWT of the identity provider (``edge.idp``) passes as
a view token. The fast path (``edge.fastpath``) asks
``needs_token`` and the Authorizer itself, and leaves every refusal to these.
"""

from __future__ import annotations

from aiohttp import web

from camflow.errors import TokenError
from camflow.keys import is_stream_name
from camflow.tokens import TokenExpired, TokenKeyRetired, TokenScopeError
from edge.auth import OPERATOR_SCOPE
from edge.http import error_response
from edge.paths import LiveObject
from edge.policy import TokenCheck
from edge.state import EdgeState

TOKEN_PARAM = "token"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="camflow"'}
BEARER = "bearer "


def request_token(request: web.Request) -> tuple[str, bool]:
    """The request's token and whether it came in ``?token=`` (carried into playlist URIs) rather
    than ``Authorization: Bearer`` (which the client sends again itself); ("", False) without one."""
    token = request.query.get(TOKEN_PARAM, "")
    if token:
        return token, True
    header = request.headers.get("Authorization", "")
    if header[: len(BEARER)].lower() == BEARER:
        return header[len(BEARER) :].strip(), False
    return "", False


def needs_token(state: EdgeState, obj: LiveObject) -> bool:
    """Playlists always need a token; segments and init sections unless ``TokenCheck.PLAYLISTS``."""
    return obj.is_playlist or state.token_check is TokenCheck.ALL


def token_error(state: EdgeState, exc: TokenError, stream: str) -> web.Response:
    """403 naming why a token was refused (counted and logged)."""
    state.counters.token_refused += 1
    state.log.info("token_refused", stream_id=stream, reason=str(exc))
    if isinstance(exc, TokenExpired):
        return error_response(403, "token_expired", str(exc))
    if isinstance(exc, TokenScopeError):
        return error_response(403, "token_scope", str(exc))
    if isinstance(exc, TokenKeyRetired):
        return error_response(403, "token_key_retired", str(exc))
    return error_response(403, "token_invalid", str(exc))


def token_missing(state: EdgeState, what: str, stream: str) -> web.Response:
    """401 for a request without a view token (counted)."""
    state.counters.token_missing += 1
    return error_response(
        401,
        "token_missing",
        f"{what!r} needs a view token for stream {stream!r} in ?token= or Authorization: Bearer",
        headers=CHALLENGE,
    )


def stream_refusal(state: EdgeState, stream: str) -> web.Response | None:
    """400 ``bad_path`` (counted) for a stream name that is not one; None for a good name."""
    if is_stream_name(stream):
        return None
    state.counters.bad_path += 1
    return error_response(
        400, "bad_path", f"stream name {stream!r} is not valid: expected 1-64 characters of A-Z a-z 0-9 _ -"
    )


async def viewer_refusal(state: EdgeState, request: web.Request, stream: str) -> web.Response | None:
    """The 400 for a bad stream name (``stream_refusal``), else the 401/403 for a request without a
    good view (or operator) token or JWT for ``stream``; None when allowed. Only a JWT of a key id
    not seen yet waits (for the JWKS to be fetched again)."""
    if (refused := stream_refusal(state, stream)) is not None:
        return refused
    token, _ = request_token(request)
    if not token:
        return token_missing(state, request.path, stream)
    try:
        await state.auth.verify_viewer_learning(token, stream)
    except TokenError as exc:
        return token_error(state, exc, stream)
    return None


def operator_refusal(
    state: EdgeState, request: web.Request, detail: str | None = None
) -> web.Response | None:
    """The 401/403 for a request without a good operator token (``?token=`` or ``Authorization:
    Bearer``); None when allowed. JWTs never pass: they grant viewing only.

    ``detail`` replaces the 401's detail (the stream list page says where to get a token).
    """
    token, _ = request_token(request)
    if not token:
        state.counters.token_missing += 1
        return error_response(
            401,
            "token_missing",
            detail or f"{request.path} needs an operator token in ?token= (camflow token admin '*')",
            headers=CHALLENGE,
        )
    try:
        state.auth.verify_operator(token)
    except TokenError as exc:
        return token_error(state, exc, OPERATOR_SCOPE)
    return None
