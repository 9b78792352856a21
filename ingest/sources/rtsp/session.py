"""The RTSP publish session as a state machine: requests in, responses out. No I/O.

States follow RFC 2326 for a recording session: INIT → (ANNOUNCE) ANNOUNCED → (SETUP of
every announced medium) READY → (RECORD) RECORDING → (TEARDOWN) CLOSED. The socket code
(``ingest/sources/rtsp/connection.py``) feeds requests, writes the responses and watches ``state``.

Transports: RTP/AVP/TCP interleaved, and RTP/AVP (or RTP/AVP/UDP) unicast, whose server ports come
from the ``UdpBinder`` the socket side passes in. Multicast is refused with 461, a transport without
``mode=record`` (any case) with 400. Every request, and every RTP/RTCP packet the socket side reports
with ``touch()``, keeps the session alive; ``expired()`` says when ``timeout`` seconds passed without.
"""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from camflow.keys import is_stream_name
from ingest.errors import ParseError
from ingest.sources.rtsp.auth import REALM, basic_only
from ingest.sources.rtsp.headers import (
    BasicCredentials,
    DigestCredentials,
    Session,
    Transport,
    TransportSpec,
    parse_authorization,
)
from ingest.sources.rtsp.message import Request, Response
from ingest.sources.rtsp.sdp import MediaDescription, SessionDescription
from ingest.sources.rtsp.url import RtspUrl, split_setup_url

PUBLIC = "DESCRIBE, ANNOUNCE, SETUP, PLAY, RECORD, PAUSE, GET_PARAMETER, TEARDOWN, OPTIONS"
SUPPORTED_VIDEO = {"H264", "H265"}
SUPPORTED_AUDIO = {"MPEG4-GENERIC", "MP4A-LATM", "PCMU", "PCMA"}
STATIC_AUDIO = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1)}  # RFC 3551 static payload types
__all__ = [
    "REALM",
    "AuthRequest",
    "Authorizer",
    "DeviceGrant",
    "PublishSession",
    "State",
    "Track",
    "UdpBinder",
]


class State(enum.Enum):
    INIT = "init"
    ANNOUNCED = "announced"
    READY = "ready"
    RECORDING = "recording"
    CLOSED = "closed"


@dataclass(frozen=True)
class AuthRequest:
    stream: str
    query: Mapping[str, str]
    username: str | None  # Basic, or user:password in the URL
    password: str | None
    method: str = "ANNOUNCE"
    digest: DigestCredentials | None = None  # Authorization: Digest ..., verified by the authorizer
    peer: str = ""  # the client's address


@dataclass(frozen=True)
class DeviceGrant:
    """An accepted request whose credential was a registered device's (``camflow.devices``)."""

    device: str


# True: accepted (an HMAC publish token); a DeviceGrant: accepted as that device; False: refused
Authorizer = Callable[[AuthRequest], bool | DeviceGrant]


@dataclass
class Track:
    """One announced medium and how its packets arrive."""

    index: int
    media: MediaDescription
    control: str
    rtp_channel: int | None = None  # TCP interleaved channel of RTP (RTCP is rtp_channel + 1)
    client_ports: tuple[int, int] | None = None  # UDP: the camera's RTP and RTCP ports
    server_ports: tuple[int, int] | None = None  # UDP: ours

    @property
    def is_setup(self) -> bool:
        return self.rtp_channel is not None or self.server_ports is not None

    @property
    def encoding(self) -> str:
        return self.media.rtpmap.encoding_name.upper() if self.media.rtpmap else ""

    @property
    def is_video(self) -> bool:
        return self.media.kind == "video"

    @property
    def audio_format(self) -> tuple[str, int, int | None] | None:
        """(encoding, clock rate, channels) of a supported audio track (rtpmap, or a static type)."""
        if self.media.kind != "audio":
            return None
        rtpmap = self.media.rtpmap
        if rtpmap is not None:
            found = (rtpmap.encoding_name.upper(), rtpmap.clock_rate, rtpmap.channels)
        elif self.media.payload_type in STATIC_AUDIO:
            found = STATIC_AUDIO[self.media.payload_type]
        else:
            return None
        return found if found[0] in SUPPORTED_AUDIO else None


class UdpBinder(Protocol):
    """The socket side's UDP ports: bind a pair for ``track`` (its ``client_ports`` are set)."""

    def bind(self, track: Track) -> tuple[int, int] | None: ...  # (RTP, RTCP) ports; None when none free


class PublishSession:
    """One client connection's RTSP dialogue for a publish."""

    def __init__(
        self,
        authorize: Authorizer,
        *,
        timeout: int = 60,
        peer: str = "",
        session_id: str | None = None,
        challenges: Callable[[], tuple[str, ...]] = basic_only,
        udp: UdpBinder | None = None,
        secure: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``secure``: the connection is RTSPS; RTP must stay inside it (TCP interleaved), so a UDP
        transport is skipped, and refused (461) when the client offers nothing else, as gortsplib
        (mediamtx) does: RTP over UDP would leave the TLS connection, unencrypted."""
        self._authorize = authorize
        self._challenges = challenges
        self._udp = udp
        self._secure = secure
        self._clock = clock
        self.timeout = timeout
        self.session_id = session_id or secrets.token_hex(8)
        self.peer = peer
        self.device: str | None = None  # the device that authenticated the session, if one did
        self.last_activity = clock()
        self.state = State.INIT
        self.stream: str | None = None
        self.announce_url: RtspUrl | None = None
        self.sdp: SessionDescription | None = None
        self.tracks: list[Track] = []
        self.refusals: dict[int, int] = {}

    @property
    def video_track(self) -> Track | None:
        return next((t for t in self.tracks if t.is_video and t.encoding in SUPPORTED_VIDEO), None)

    @property
    def audio_track(self) -> Track | None:
        """The first set-up audio track camflow can carry (AAC, G.711); others are ignored."""
        return next((t for t in self.tracks if t.is_setup and t.audio_format is not None), None)

    def track_for_channel(self, channel: int) -> tuple[Track, bool] | None:
        """(track, is_rtcp) for an interleaved channel."""
        for track in self.tracks:
            if track.rtp_channel is None:
                continue
            if channel == track.rtp_channel:
                return track, False
            if channel == track.rtp_channel + 1:
                return track, True
        return None

    def touch(self) -> None:
        """Activity that is not a request (RTP or RTCP from the camera) keeps the session alive."""
        self.last_activity = self._clock()

    def expired(self) -> bool:
        return self._clock() - self.last_activity > self.timeout

    def handle(self, request: Request) -> Response:
        self.last_activity = self._clock()
        if request.cseq is None:
            return self._refuse(request, 400, "missing CSeq")
        method = request.method.upper()
        handler = {
            "OPTIONS": self._options,
            "GET_PARAMETER": self._keepalive,
            "SET_PARAMETER": self._keepalive,
            "ANNOUNCE": self._announce,
            "SETUP": self._setup,
            "RECORD": self._record,
            "TEARDOWN": self._teardown,
            "DESCRIBE": self._describe,
            "PLAY": self._play,
            "PAUSE": self._pause,
        }.get(method)
        if handler is None:
            return self._refuse(request, 501, f"method {request.method!r} is not implemented")
        try:
            return handler(request)
        except ParseError as exc:
            return self._refuse(request, 400, str(exc))

    # --- responses -----------------------------------------------------------------

    def _refuse(
        self, request: Request, status: int, why: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> Response:
        self.refusals[status] = self.refusals.get(status, 0) + 1
        body = (why + "\r\n").encode()
        return Response.reply_to(
            request,
            status,
            (*headers, ("Content-Type", "text/plain"), ("Content-Length", str(len(body)))),
            body,
        )

    def _ok(self, request: Request, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        return Response.reply_to(request, 200, headers)

    def _session_header(self) -> tuple[str, str]:
        return ("Session", str(Session(self.session_id, self.timeout)))

    def _check_session(self, request: Request) -> Response | None:
        value = request.header("Session")
        if value is None:
            return self._refuse(request, 454, "missing Session header")
        if Session.parse(value).session_id != self.session_id:
            return self._refuse(request, 454, f"session {value!r} not found")
        return None

    # --- methods -------------------------------------------------------------------

    def _options(self, request: Request) -> Response:
        return self._ok(request, (("Public", PUBLIC),))

    def _keepalive(self, request: Request) -> Response:
        if request.header("Session") is not None and (refused := self._check_session(request)):
            return refused
        return self._ok(request, (self._session_header(),) if self.state is not State.INIT else ())

    def _describe(self, request: Request) -> Response:
        return self._refuse(
            request, 404, "camflow ingest does not serve streams over RTSP; watch them over HLS"
        )

    def _play(self, request: Request) -> Response:
        return self._refuse(request, 455, "PLAY is not valid on a publish session")

    def _pause(self, request: Request) -> Response:
        # RFC 2326 A.2: PAUSE while recording returns to Ready (GStreamer sends it at end of stream).
        if self.state not in (State.RECORDING, State.READY):
            return self._refuse(request, 455, f"PAUSE in state {self.state.value}")
        if refused := self._check_session(request):
            return refused
        self.state = State.READY
        return self._ok(request, (self._session_header(),))

    def _announce(self, request: Request) -> Response:
        if self.state is not State.INIT:
            return self._refuse(request, 455, f"ANNOUNCE in state {self.state.value}")
        url = RtspUrl.parse(request.uri)
        if not is_stream_name(url.path):
            return self._refuse(
                request, 404, f"no stream path {url.path!r}: expected rtsp://host:port/<stream>"
            )
        username, password = url.username, url.password
        digest = None
        auth = request.header("Authorization")
        if auth is not None:
            creds = parse_authorization(auth)
            if isinstance(creds, BasicCredentials):
                username, password = creds.username, creds.password
            else:
                digest = creds
        grant = self._authorize(
            AuthRequest(url.path, url.query, username, password, request.method, digest, self.peer)
        )
        if not grant:
            challenges = tuple(("WWW-Authenticate", value) for value in self._challenges())
            return self._refuse(
                request, 401, "a valid publish token is required (?token=..., or as the password)", challenges
            )
        ctype = (request.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/sdp":
            return self._refuse(request, 400, f"ANNOUNCE body of type {ctype!r}: expected application/sdp")
        sdp = SessionDescription.parse(request.body)
        tracks = [Track(i, media, media.control or f"trackID={i}") for i, media in enumerate(sdp.media)]
        if not any(t.is_video and t.encoding in SUPPORTED_VIDEO for t in tracks):
            found = [t.encoding or t.media.kind for t in tracks]
            return self._refuse(request, 415, f"announced media {found}: expected an H264 video track")
        self.stream, self.announce_url, self.sdp, self.tracks = url.path, url, sdp, tracks
        self.device = grant.device if isinstance(grant, DeviceGrant) else None
        self.state = State.ANNOUNCED
        return self._ok(request)

    def _setup(self, request: Request) -> Response:
        if self.state not in (State.ANNOUNCED, State.READY):
            return self._refuse(request, 455, f"SETUP in state {self.state.value}")
        if self.state is State.READY and (refused := self._check_session(request)):
            return refused
        assert self.stream is not None
        target = split_setup_url(request.uri, self.stream, [t.control for t in self.tracks])
        track = next((t for t in self.tracks if t.control == target.control), None)
        if track is None:
            if len(self.tracks) == 1 and target.path == self.stream:
                track = self.tracks[0]
            else:
                return self._refuse(request, 404, f"SETUP URL {request.uri!r} names no announced medium")
        header = request.header("Transport")
        if header is None:
            return self._refuse(request, 400, "missing Transport header")
        chosen = self._choose_transport(Transport.parse(header))
        if isinstance(chosen, str):
            return self._refuse(request, 461, chosen)
        if not chosen.is_record:
            return self._refuse(
                request, 400, f"Transport {str(chosen)!r} without mode=record: expected mode=record"
            )
        if chosen.lower_transport == "UDP":
            reply = self._setup_udp(track, chosen)
            if isinstance(reply, tuple):
                return self._refuse(request, *reply)
        else:
            reply = self._setup_tcp(track, chosen)
        self.state = State.READY
        return self._ok(request, (("Transport", str(reply)), self._session_header()))

    def _setup_tcp(self, track: Track, spec: TransportSpec) -> TransportSpec:
        used = {
            c
            for t in self.tracks
            if t.rtp_channel is not None and t is not track
            for c in (t.rtp_channel, t.rtp_channel + 1)
        }
        channels = spec.interleaved
        if channels is None or channels[0] in used or channels[1] in used:
            first = next(c for c in range(0, 254, 2) if c not in used and c + 1 not in used)
            channels = (first, first + 1)
        track.rtp_channel = channels[0]
        return TransportSpec(
            "RTP/AVP/TCP", "unicast", interleaved=(channels[0], channels[0] + 1), mode="record"
        )

    def _setup_udp(self, track: Track, spec: TransportSpec) -> TransportSpec | tuple[int, str]:
        if spec.client_port is None:
            return 400, f"Transport {str(spec)!r} without client_port: expected client_port=N-M"
        if self._udp is None:
            return 461, f"Transport {spec.protocol}: UDP is not enabled on this server; use RTP/AVP/TCP"
        if track.server_ports is None or track.client_ports != spec.client_port:
            track.client_ports = spec.client_port
            ports = self._udp.bind(track)
            if ports is None:
                return 503, "no free UDP port pair on the server: use RTP/AVP/TCP or retry later"
            track.server_ports = ports
        return TransportSpec(
            "RTP/AVP", "unicast", client_port=spec.client_port, server_port=track.server_ports
        )

    def _choose_transport(self, transport: Transport) -> TransportSpec | str:
        """The client's first usable unicast RTP/AVP spec, or why none is."""
        reasons = []
        for spec in transport.specs:
            if spec.delivery == "multicast":
                reasons.append(f"{spec.protocol};multicast (multicast is not supported)")
                continue
            if spec.lower_transport is None:
                reasons.append(f"{spec.protocol} (expected RTP/AVP, RTP/AVP/UDP or RTP/AVP/TCP)")
                continue
            if self._secure and spec.lower_transport == "UDP":
                reasons.append(
                    f"{spec.protocol} (RTSPS carries RTP inside its TLS connection only, over UDP it would "
                    "travel unencrypted: use RTP/AVP/TCP)"
                )
                continue
            return spec
        return "no usable transport: " + "; ".join(reasons)

    def _record(self, request: Request) -> Response:
        if self.state is not State.READY:
            return self._refuse(request, 455, f"RECORD in state {self.state.value}")
        if refused := self._check_session(request):
            return refused
        if any(not t.is_setup for t in self.tracks if t.is_video and t.encoding in SUPPORTED_VIDEO):
            return self._refuse(request, 455, "RECORD before the video track was set up")
        self.state = State.RECORDING
        return self._ok(request, (self._session_header(),))

    def _teardown(self, request: Request) -> Response:
        if self.state is not State.INIT and (refused := self._check_session(request)):
            return refused
        self.state = State.CLOSED
        return self._ok(request)
