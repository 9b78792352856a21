from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.errors import ParseError
from ingest.sources.rtsp.headers import (
    BasicCredentials,
    Challenge,
    DigestCredentials,
    Session,
    Transport,
    TransportSpec,
    digest_response,
    parse_auth_params,
    parse_authorization,
)
from ingest.sources.rtsp.message import Request
from tests.vectors.rtsp_publish import FFMPEG_5_1_SETUP, GSTREAMER_1_22_SETUP, GSTREAMER_1_22_UDP_TRANSPORT

FUZZ = settings(database=None, max_examples=300)


def transport_of(data: bytes) -> str:
    value = Request.parse(data).header("Transport")
    assert value is not None
    return value


def test_ffmpeg_transport() -> None:
    value = transport_of(FFMPEG_5_1_SETUP)
    transport = Transport.parse(value)
    (spec,) = transport.specs
    assert spec == TransportSpec("RTP/AVP/TCP", "unicast", interleaved=(0, 1), mode="record")
    assert spec.lower_transport == "TCP"
    assert spec.is_record
    assert str(transport) == value


def test_gstreamer_transport_mode_upper_case() -> None:
    spec = Transport.parse(transport_of(GSTREAMER_1_22_SETUP)).specs[0]
    assert spec.mode == "record"
    assert spec.is_record
    assert spec.interleaved == (0, 1)
    assert str(spec) == "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"


def test_gstreamer_udp_transport() -> None:
    spec = Transport.parse(GSTREAMER_1_22_UDP_TRANSPORT).specs[0]
    assert spec.protocol == "RTP/AVP/UDP"
    assert spec.lower_transport == "UDP"
    assert spec.client_port == (46626, 46627)
    assert spec.interleaved is None
    assert spec.is_record


def test_transport_list_unknown_params_and_quoted_mode() -> None:
    value = (
        "RTP/SAVP;unicast;client_port=5000-5001, "
        'rtp/avp;multicast;ttl=16;destination=224.2.0.1;mode="PLAY",'
        "RTP/AVP/TCP;interleaved=4"
    )
    transport = Transport.parse(value)
    first, second, third = transport.specs
    assert first.protocol == "RTP/SAVP"
    assert first.lower_transport is None
    assert second.protocol == "RTP/AVP"
    assert second.lower_transport == "UDP"
    assert second.delivery == "multicast"
    assert second.params == (("ttl", "16"), ("destination", "224.2.0.1"))
    assert second.param("TTL") == "16"
    assert second.mode == "play"
    assert not second.is_record
    assert third.interleaved == (4, 5)
    assert third.delivery is None
    assert Transport.parse(str(transport)) == transport


def test_transport_server_reply() -> None:
    spec = TransportSpec("RTP/AVP/UDP", "unicast", client_port=(46626, 46627), server_port=(8000, 8001))
    assert str(spec) == "RTP/AVP/UDP;unicast;client_port=46626-46627;server_port=8000-8001"
    assert TransportSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("", "at least one"),
        ("TCP;unicast", "protocol"),
        ("RTP/AVP/TCP;interleaved=a-b", "interleaved"),
        ("RTP/AVP/TCP;interleaved=0-256", "interleaved"),
        ("RTP/AVP/TCP;interleaved", "interleaved"),
        ("RTP/AVP;client_port=70000-70001", "client_port"),
        ("RTP/AVP;client_port=-1", "client_port"),
        ("RTP/AVP;mode=", "mode"),
        (" , ", "at least one"),
    ],
)
def test_transport_rejects(value: str, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        Transport.parse(value)


def test_session_header() -> None:
    assert Session.parse("12345678") == Session("12345678")
    session = Session.parse("12345678; timeout=60")
    assert session == Session("12345678", 60)
    assert str(session) == "12345678;timeout=60"
    assert Session.parse(str(session)) == session
    with pytest.raises(ParseError, match="Session id"):
        Session.parse("bad id")
    with pytest.raises(ParseError, match="timeout"):
        Session.parse("abc;timeout=soon")


def test_basic_authorization() -> None:
    credentials = parse_authorization("Basic dXNlcjpwYXNzOndvcmQ=")
    assert credentials == BasicCredentials("user", "pass:word")
    assert str(credentials) == "Basic dXNlcjpwYXNzOndvcmQ="
    with pytest.raises(ParseError, match="base64"):
        parse_authorization("Basic !!!")
    with pytest.raises(ParseError, match="':'"):
        parse_authorization("Basic dXNlcg==")  # "user"
    # make fuzz (rtsp-headers): a non-ASCII character in the base64 raised ValueError past the session
    with pytest.raises(ParseError, match="base64"):
        parse_authorization("Basic Y2FtMTp\uffff\uffff")


# RFC 2617 section 3.5 example (HTTP, but the computation is the same for RTSP).
RFC2617_AUTHORIZATION = (
    'Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
    'uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", '
    'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def test_digest_rfc2617_example() -> None:
    credentials = parse_authorization(RFC2617_AUTHORIZATION)
    assert isinstance(credentials, DigestCredentials)
    assert credentials.username == "Mufasa"
    assert credentials.realm == "testrealm@host.com"
    assert credentials.qop == "auth"
    assert credentials.nc == "00000001"
    assert credentials.cnonce == "0a4f113b"
    assert credentials.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    assert credentials.verify("Circle Of Life", "GET")
    assert not credentials.verify("circle of life", "GET")
    assert not credentials.verify("Circle Of Life", "ANNOUNCE")
    assert parse_authorization(str(credentials)) == credentials


def test_digest_without_qop_like_ffmpeg() -> None:
    # ffmpeg and GStreamer answer an RTSP challenge without qop: response = MD5(HA1:nonce:HA2).
    response = digest_response(
        username="cam",
        password="secret",
        realm="camflow",
        method="ANNOUNCE",
        uri="rtsp://127.0.0.1:8554/cam1",
        nonce="abc123",
    )
    ha1 = hashlib.md5(b"cam:camflow:secret").hexdigest()
    ha2 = hashlib.md5(b"ANNOUNCE:rtsp://127.0.0.1:8554/cam1").hexdigest()
    assert response == hashlib.md5(f"{ha1}:abc123:{ha2}".encode()).hexdigest()
    value = (
        f'Digest username="cam", realm="camflow", nonce="abc123", uri="rtsp://127.0.0.1:8554/cam1", '
        f'response="{response}"'
    )
    credentials = parse_authorization(value)
    assert isinstance(credentials, DigestCredentials)
    assert credentials.verify("secret", "ANNOUNCE")


def test_digest_sha256_rfc7616_example() -> None:
    # RFC 7616 section 3.9.1.
    response = digest_response(
        username="Mufasa",
        password="Circle of Life",
        realm="http-auth@example.org",
        method="GET",
        uri="/dir/index.html",
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        algorithm="SHA-256",
        qop="auth",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert response == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_digest_rejects() -> None:
    with pytest.raises(ParseError, match="response"):
        parse_authorization('Digest username="a", realm="b", nonce="c", uri="d"')
    with pytest.raises(ParseError, match="algorithm"):
        digest_response(
            username="a", password="b", realm="c", method="d", uri="e", nonce="f", algorithm="SHA-1"
        )
    with pytest.raises(ParseError, match="scheme"):
        parse_authorization("Bearer abc")
    with pytest.raises(ParseError, match="closing quote"):
        parse_auth_params('realm="unterminated')


def test_challenge_round_trip() -> None:
    challenge = Challenge.parse(
        'Digest realm="camflow", nonce="n0nce", algorithm=MD5, qop="auth", stale=TRUE'
    )
    assert challenge == Challenge("Digest", "camflow", "n0nce", "MD5", "auth", None, True)
    assert Challenge.parse(str(challenge)) == challenge
    basic = Challenge.parse('Basic realm="cam \\"one\\""')
    assert basic == Challenge("Basic", 'cam "one"')
    assert str(basic) == 'Basic realm="cam \\"one\\""'
    with pytest.raises(ParseError, match="nonce"):
        Challenge.parse('Digest realm="x"')


@FUZZ
@given(st.text(max_size=120))
def test_fuzz_header_parsers_only_raise_parse_error(value: str) -> None:
    for parse in (Transport.parse, Session.parse, parse_authorization, Challenge.parse, parse_auth_params):
        with contextlib.suppress(ParseError):
            parse(value)
