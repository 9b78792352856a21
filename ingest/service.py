"""The ingest service: the RTSP server, with publish tokens checked against the shared secret.

A publisher proves it holds a publish token for the stream in one of three ways:

- ``?token=T`` in the URL (any valid token);
- RTSP Basic, ``rtsp://STREAM:T@host/STREAM`` (any valid token as the password);
- RTSP Digest (RFC 2617/7616, MD5) with user = stream and password = the stream's never-expiring
  publish token (``camflow token publish STREAM --ttl never``): Digest hides the password, so the
  server must be able to compute it, and only the ``"e": 0`` token is deterministic: it is recomputed
  under each key that verifies, so a camera keeps the password made under an older key until that key
  is retired.

With a device registry (``camflow.devices``), a device's credential (``cfd1.<device>.<secret>``)
works in the same three places: as ``?token=``, as the Basic password, and in Digest with user =
the device name, checked against the device's stored HA1. Such a request is answered by the
registry alone (the device must be unrevoked and the stream one of its own); anything else goes
to the HMAC token check unchanged. The session remembers the device, so that revoking it (or
taking the stream from it) ends the session (``RtspServer.end_device_sessions``).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from camflow.bus import Bus
from camflow.devices import DeviceRefused, DeviceRegistry, SeenWriter, is_device_credential
from camflow.errors import ConfigError, TokenError
from camflow.limits import ConnectionLimits
from camflow.log import get_logger
from camflow.tokens import Action, TokenSigner
from ingest.errors import ParseError
from ingest.media.live import LiveFeeds
from ingest.sources.rtsp.auth import REALM, AuthScheme, Challenger, DigestNonces, parse_schemes
from ingest.sources.rtsp.headers import DigestCredentials
from ingest.sources.rtsp.server import RtspServer
from ingest.sources.rtsp.session import Authorizer, AuthRequest, DeviceGrant
from ingest.sources.rtsp.udp import parse_port_range
from ingest.sources.rtsp.url import RtspUrl

log = get_logger("ingest")
DEFAULT_SCHEMES = (AuthScheme.DIGEST, AuthScheme.BASIC)


def _digest_refusal(
    signer: TokenSigner, nonces: DigestNonces, request: AuthRequest, creds: DigestCredentials
) -> str | None:
    """Why these Digest credentials do not authorize ``request``; None when they do."""
    if creds.username != request.stream:
        return f"Digest user {creds.username!r}: expected the stream name {request.stream!r}"
    if creds.realm != REALM:
        return f"Digest realm {creds.realm!r}: expected {REALM!r}"
    if not nonces.check(creds.nonce):
        return "Digest nonce is not one of ours or is older than its lifetime"
    try:
        path = RtspUrl.parse(creds.uri).path
        if path != request.stream and not path.startswith(request.stream + "/"):
            return f"Digest uri {creds.uri[:80]!r}: expected a URL of stream {request.stream!r}"
        # The only password a server can recompute: the stream's never-expiring publish token, under
        # each key that verifies (at most camflow.signing.MAX_KEYS).
        permanent = signer.permanent_tokens(request.stream, Action.PUBLISH)
        if not any(creds.verify(password, request.method) for password in permanent):
            return (
                "Digest response does not match the stream's never-expiring publish token under any of the"
                f" {len(permanent)} signing keys: a camera with credentials needs"
                " `camflow token publish STREAM --ttl never` as its password, or ?token="
            )
    except ParseError as exc:
        return str(exc)
    return None


def token_authorizer(
    signer: TokenSigner,
    schemes: tuple[AuthScheme, ...] = DEFAULT_SCHEMES,
    nonces: DigestNonces | None = None,
) -> Callable[[AuthRequest], bool]:
    def authorize(request: AuthRequest) -> bool:
        if request.digest is not None:
            if AuthScheme.DIGEST not in schemes or nonces is None:
                reason: str | None = "Digest authentication is not enabled (--rtsp-auth)"
            else:
                reason = _digest_refusal(signer, nonces, request, request.digest)
            if reason is not None:
                log.info("publish_refused", stream_id=request.stream, scheme="digest", reason=reason)
            return reason is None
        token = request.query.get("token")
        if not token and AuthScheme.BASIC in schemes:
            token = request.password
        if not token:
            return False
        try:
            signer.verify(token, request.stream, Action.PUBLISH)
        except TokenError as exc:
            log.info("publish_refused", stream_id=request.stream, reason=str(exc))
            return False
        return True

    return authorize


def _names_stream(uri: str, stream: str) -> bool:
    try:
        path = RtspUrl.parse(uri).path
    except ParseError:
        return False
    return path == stream or path.startswith(stream + "/")


def _device_digest(
    devices: DeviceRegistry, nonces: DigestNonces, request: AuthRequest, creds: DigestCredentials
) -> DeviceGrant | str | None:
    """A grant for Digest credentials of a device, why they are refused, or None when they are not a
    device's: user = the stream and no device's HA1 verifies them (a permanent HMAC token's)."""
    device = devices.get(creds.username) if devices.loaded.is_set() else None
    verified = (
        device is not None
        and bool(device.ha1)
        and creds.realm == REALM
        and nonces.check(creds.nonce)
        and _names_stream(creds.uri, request.stream)
        and creds.verify_ha1(device.ha1, request.method)
    )
    if device is not None and verified:
        return device.refusal(request.stream) or DeviceGrant(device.name)
    if creds.username == request.stream:
        return None
    if not devices.loaded.is_set():
        return "the device registry is not loaded yet (its backend is unavailable)"
    if device is None:
        return f"Digest user {creds.username!r}: no such device, and not the stream name {request.stream!r}"
    if device.revoked is not None:
        return f"device {device.name!r} is revoked"
    return f"Digest response does not match device {device.name!r} (credential, realm, nonce or uri)"


def _device_answer(
    devices: DeviceRegistry,
    schemes: tuple[AuthScheme, ...],
    nonces: DigestNonces | None,
    request: AuthRequest,
) -> tuple[str, DeviceGrant | str] | None:
    """(scheme, grant or refusal) for a request carrying a device credential; None otherwise."""
    if request.digest is not None:
        if AuthScheme.DIGEST not in schemes or nonces is None:
            return None  # the token check refuses it, saying why
        answer = _device_digest(devices, nonces, request, request.digest)
        return None if answer is None else ("digest", answer)
    scheme, token = "token", request.query.get("token")
    if not token and AuthScheme.BASIC in schemes:
        scheme, token = "basic", request.password
    if not token or not is_device_credential(token):
        return None
    try:
        device = devices.check_credential(token, request.stream).name
    except DeviceRefused as exc:
        return scheme, str(exc)
    if scheme == "basic" and request.username != device:  # as Digest: user = the device's name
        return scheme, f"Basic user {str(request.username)[:64]!r}: expected the device name {device!r}"
    return scheme, DeviceGrant(device)


def device_authorizer(
    tokens: Authorizer,
    devices: DeviceRegistry,
    seen: SeenWriter | None,
    schemes: tuple[AuthScheme, ...] = DEFAULT_SCHEMES,
    nonces: DigestNonces | None = None,
) -> Authorizer:
    """Device credentials checked against ``devices``; every other request goes to ``tokens``."""

    def authorize(request: AuthRequest) -> bool | DeviceGrant:
        found = _device_answer(devices, schemes, nonces, request)
        if found is None:
            return tokens(request)
        scheme, answer = found
        if isinstance(answer, str):
            log.info("publish_refused", stream_id=request.stream, scheme=scheme, reason=answer)
            return False
        if seen is not None:
            seen.note(answer.device, request.peer)
        return answer

    return authorize


def build_rtsp_server(
    bus: Bus,
    signer: TokenSigner,
    *,
    host: str,
    port: int | None,
    segment_target: float,
    session_timeout: int,
    handshake_timeout: float,
    max_connections: int,
    udp_ports: tuple[int, int] | None = None,
    auth_schemes: tuple[AuthScheme, ...] = DEFAULT_SCHEMES,
    devices: DeviceRegistry | None = None,
    seen: SeenWriter | None = None,
    tls_port: int | None = None,
    tls_context: ssl.SSLContext | None = None,
    limits: ConnectionLimits | None = None,
    part_target: float | None = None,
    live: LiveFeeds | None = None,
) -> RtspServer:
    """``devices``: the device registry (None: HMAC publish tokens only); ``seen`` records where and
    when each device published; ``limits`` (None: off, for benchmarks) caps connections per client
    address and bounds how long a request may take to arrive once a stream is announced."""
    nonces = DigestNonces(lambda: signer.derive_keys("rtsp-digest-nonce"))
    authorize: Authorizer = token_authorizer(signer, auth_schemes, nonces)
    if devices is not None:
        authorize = device_authorizer(authorize, devices, seen, auth_schemes, nonces)
    server = RtspServer(
        bus,
        authorize,
        host=host,
        port=port,
        segment_target=segment_target,
        session_timeout=session_timeout,
        challenges=Challenger(auth_schemes, nonces),
        udp_ports=udp_ports,
        handshake_timeout=handshake_timeout,
        max_connections=max_connections,
        tls_port=tls_port,
        tls_context=tls_context,
        limits=limits,
        part_target=part_target,
        live=live,
    )
    if devices is not None:
        devices.listen(
            lambda change: server.end_device_sessions(change.device, change.allowed, change.reason)
        )
    return server


def parse_rtsp_flags(udp_ports: str, auth: str) -> tuple[tuple[int, int] | None, tuple[AuthScheme, ...]]:
    """``--rtsp-udp-ports`` (FIRST-LAST, or ``off``) and ``--rtsp-auth``; a ConfigError names a bad value."""
    try:
        ports = None if udp_ports.strip().lower() == "off" else parse_port_range(udp_ports)
        return ports, parse_schemes(auth)
    except ParseError as exc:
        raise ConfigError(str(exc)) from None
