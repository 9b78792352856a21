"""The publish session state machine (sans-IO) fed the requests ffmpeg and GStreamer really send."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ingest.sources.rtsp.auth import AuthScheme, Challenger, DigestNonces
from ingest.sources.rtsp.headers import Challenge, TransportSpec
from ingest.sources.rtsp.message import Request, Response
from ingest.sources.rtsp.session import AuthRequest, PublishSession, State, Track
from tests.vectors import rtsp_auth, rtsp_publish


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeUdp:
    """Hands out port pairs like the server's pool; None when ``full``."""

    next_port: int = 20000
    full: bool = False
    bound: list[tuple[int, tuple[int, int] | None]] = field(default_factory=list)

    def bind(self, track: Track) -> tuple[int, int] | None:
        self.bound.append((track.index, track.client_ports))
        if self.full:
            return None
        ports = (self.next_port, self.next_port + 1)
        self.next_port += 2
        return ports


def allow(_: AuthRequest) -> bool:
    return True


def session(**kwargs: object) -> PublishSession:
    return PublishSession(allow, session_id="12345678", **kwargs)  # type: ignore[arg-type]


def handle(s: PublishSession, data: bytes) -> Response:
    return s.handle(Request.parse(data))


def request(method: str, uri: str, cseq: int, *headers: tuple[str, str]) -> Request:
    return Request(method, uri, (("CSeq", str(cseq)), *headers))


def announced(**kwargs: object) -> PublishSession:
    s = session(**kwargs)
    assert handle(s, rtsp_publish.GSTREAMER_1_22_ANNOUNCE).status == 200
    return s


SETUP_URI = "rtsp://127.0.0.1:8554/cam2/stream=0"


def setup(s: PublishSession, transport: str) -> Response:
    return s.handle(request("SETUP", SETUP_URI, 3, ("Transport", transport)))


def test_setup_tcp_interleaved_gstreamer_upper_case_mode() -> None:
    s = announced()
    resp = handle(s, rtsp_publish.GSTREAMER_1_22_SETUP)
    assert resp.status == 200
    assert resp.header("Transport") == "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"
    assert resp.header("Session") == "12345678;timeout=60"
    assert s.tracks[0].rtp_channel == 0 and s.state is State.READY


@pytest.mark.parametrize(
    "transport",
    [
        rtsp_publish.GSTREAMER_1_22_UDP_TRANSPORT,
        rtsp_auth.GSTREAMER_1_22_UDP_TRANSPORT_CAPTURED,
        rtsp_auth.FFMPEG_5_1_UDP_TRANSPORT,
        "RTP/AVP;unicast;client_port=5000-5001;mode=record",
        'rtp/avp/udp;UNICAST;Client_Port=5000-5001;Mode="RECORD"',
    ],
)
def test_setup_udp_binds_a_pair_and_answers_server_port(transport: str) -> None:
    udp = FakeUdp()
    s = announced(udp=udp)
    resp = setup(s, transport)
    assert resp.status == 200, resp.body
    client = TransportSpec.parse(transport).client_port
    assert client is not None
    assert (
        resp.header("Transport")
        == f"RTP/AVP;unicast;client_port={client[0]}-{client[1]};server_port=20000-20001"
    )
    assert udp.bound == [(0, client)]
    assert s.tracks[0].server_ports == (20000, 20001) and s.tracks[0].rtp_channel is None
    assert s.handle(request("RECORD", "rtsp://127.0.0.1:8554/cam2", 4, ("Session", "12345678"))).status == 200
    assert s.state is State.RECORDING


def test_setup_udp_repeated_keeps_its_ports() -> None:
    udp = FakeUdp()
    s = announced(udp=udp)
    for _ in range(2):
        resp = s.handle(
            request(
                "SETUP",
                SETUP_URI,
                3,
                ("Transport", rtsp_publish.GSTREAMER_1_22_UDP_TRANSPORT),
                ("Session", "12345678"),
            )
        )
        assert resp.status == 200
    assert len(udp.bound) == 1


def test_setup_udp_prefers_the_clients_first_usable_transport() -> None:
    s = announced(udp=FakeUdp())
    resp = setup(
        s, "RTP/AVP;multicast;mode=record,RTP/AVP/TCP;unicast;interleaved=4-5;mode=record,RTP/AVP;unicast"
    )
    assert resp.header("Transport") == "RTP/AVP/TCP;unicast;interleaved=4-5;mode=record"


def test_setup_multicast_only_is_461() -> None:
    s = announced(udp=FakeUdp())
    resp = setup(s, "RTP/AVP;multicast;destination=224.2.0.1;port=5000-5001;mode=record")
    assert resp.status == 461
    assert b"multicast" in resp.body
    assert s.state is State.ANNOUNCED


def test_setup_unknown_profile_is_461() -> None:
    resp = setup(announced(udp=FakeUdp()), "RTP/SAVP;unicast;client_port=5000-5001;mode=record")
    assert resp.status == 461 and b"expected RTP/AVP" in resp.body


@pytest.mark.parametrize(
    "transport",
    [
        "RTP/AVP/TCP;unicast;interleaved=0-1",
        "RTP/AVP;unicast;client_port=5000-5001",
        "RTP/AVP/TCP;unicast;interleaved=0-1;mode=play",
    ],
)
def test_setup_without_mode_record_is_400(transport: str) -> None:
    s = announced(udp=FakeUdp())
    resp = setup(s, transport)
    assert resp.status == 400
    assert b"expected mode=record" in resp.body
    assert s.tracks[0].is_setup is False


def test_setup_udp_without_client_port_is_400() -> None:
    resp = setup(announced(udp=FakeUdp()), "RTP/AVP;unicast;mode=record")
    assert resp.status == 400 and b"client_port" in resp.body


def test_setup_udp_when_disabled_is_461_naming_tcp() -> None:
    resp = setup(announced(), rtsp_publish.GSTREAMER_1_22_UDP_TRANSPORT)
    assert resp.status == 461 and b"RTP/AVP/TCP" in resp.body


def test_rtsps_skips_udp_for_tcp_and_refuses_udp_alone_with_461() -> None:
    """RTSPS: RTP stays inside the TLS connection. A client offering UDP then TCP gets TCP (as
    gortsplib picks the next usable transport); UDP alone is 461, even with UDP ports bound."""
    udp = FakeUdp()
    s = announced(udp=udp, secure=True)
    resp = setup(s, "RTP/AVP;unicast;client_port=5000-5001;mode=record,RTP/AVP/TCP;unicast;mode=record")
    assert resp.status == 200 and str(resp.header("Transport")).startswith("RTP/AVP/TCP;"), resp
    s = announced(udp=udp, secure=True)
    resp = setup(s, rtsp_publish.GSTREAMER_1_22_UDP_TRANSPORT)
    assert resp.status == 461 and b"TLS" in resp.body and b"RTP/AVP/TCP" in resp.body
    assert not udp.bound


def test_setup_udp_with_no_free_ports_is_503() -> None:
    s = announced(udp=FakeUdp(full=True))
    resp = setup(s, rtsp_publish.GSTREAMER_1_22_UDP_TRANSPORT)
    assert resp.status == 503 and b"UDP port" in resp.body
    assert s.state is State.ANNOUNCED


def test_keepalives_refresh_the_session_and_timeout_expires_it() -> None:
    clock = FakeClock()
    s = session(clock=clock, timeout=60)
    for data in rtsp_publish.GSTREAMER_1_22_REQUESTS[1:3]:
        assert handle(s, data).status == 200
    record = request("RECORD", "rtsp://127.0.0.1:8554/cam2", 4, ("Session", "12345678"))
    assert s.handle(record).status == 200
    for cseq, method in enumerate(("OPTIONS", "GET_PARAMETER", "OPTIONS"), start=5):
        clock.now += 59
        assert not s.expired()
        resp = s.handle(request(method, "rtsp://127.0.0.1:8554/cam2", cseq, ("Session", "12345678")))
        assert resp.status == 200
        if method == "GET_PARAMETER":
            assert resp.header("Session") == "12345678;timeout=60"
    clock.now += 59
    s.touch()  # an RTP packet
    clock.now += 60
    assert not s.expired()
    clock.now += 1
    assert s.expired()


def test_keepalive_with_another_session_is_454() -> None:
    s = announced()
    resp = s.handle(request("GET_PARAMETER", "rtsp://127.0.0.1:8554/cam2", 9, ("Session", "deadbeef")))
    assert resp.status == 454


def test_configured_timeout_is_announced() -> None:
    s = announced(timeout=3)
    assert handle(s, rtsp_publish.GSTREAMER_1_22_SETUP).header("Session") == "12345678;timeout=3"


def test_teardown_closes() -> None:
    s = session()
    for data in rtsp_publish.FFMPEG_5_1_REQUESTS:
        assert handle(s, data).status == 200
    assert s.state is State.CLOSED


def test_401_carries_every_configured_challenge_and_digest_reaches_the_authorizer() -> None:
    seen: list[AuthRequest] = []

    def deny(auth: AuthRequest) -> bool:
        seen.append(auth)
        return False

    nonces = DigestNonces(b"k" * 32, clock=lambda: 1_800_000_000.0)
    s = PublishSession(deny, challenges=Challenger((AuthScheme.DIGEST, AuthScheme.BASIC), nonces))
    resp = handle(s, rtsp_publish.GSTREAMER_1_22_ANNOUNCE)
    assert resp.status == 401
    digest, basic = (Challenge.parse(v) for v in resp.header_values("WWW-Authenticate"))
    assert (digest.scheme, digest.realm, digest.algorithm) == ("Digest", "camflow", "MD5")
    assert digest.nonce is not None and nonces.check(digest.nonce)
    assert (basic.scheme, basic.realm) == ("Basic", "camflow")
    uri, header = rtsp_auth.GSTREAMER_1_22_DIGEST["ANNOUNCE"]
    retry = Request.parse(rtsp_publish.GSTREAMER_1_22_ANNOUNCE)
    s.handle(Request(retry.method, uri, (*retry.headers, ("Authorization", header)), retry.body))
    assert seen[-1].digest is not None and seen[-1].digest.username == "cam1"
    assert seen[-1].method == "ANNOUNCE" and seen[-1].password is None
    s.handle(
        Request(
            retry.method, uri, (*retry.headers, ("Authorization", rtsp_auth.FFMPEG_5_1_BASIC)), retry.body
        )
    )
    assert seen[-1].digest is None and seen[-1].username == "cam1"
    assert seen[-1].password == rtsp_auth.BASIC_TOKEN
    assert s.state is State.INIT
