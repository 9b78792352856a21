"""Fuzz targets of RTSP ingest: a publisher's whole dialogue, SDP, and the header and URL parsers."""

from __future__ import annotations

import contextlib

from ingest.errors import ParseError
from ingest.media.publisher import PublishStats
from ingest.sources.rtp.audio import RtpAudioTrack, audio_depacketizer_for
from ingest.sources.rtp.jitter import JitterBuffer
from ingest.sources.rtp.packet import SenderReport
from ingest.sources.rtp.track import RtpVideoTrack
from ingest.sources.rtsp.auth import parse_schemes
from ingest.sources.rtsp.headers import (
    Challenge,
    Session,
    Transport,
    parse_auth_params,
    parse_authorization,
)
from ingest.sources.rtsp.message import InterleavedFrame, MessageReader, Request
from ingest.sources.rtsp.sdp import RtpMap, SessionDescription, parse_fmtp_params
from ingest.sources.rtsp.session import AuthRequest, PublishSession, State, Track
from ingest.sources.rtsp.tracks import depacketizer_for
from ingest.sources.rtsp.url import RtspUrl, split_setup_url
from tests.fuzz.harness import Sink, chunks, target
from tests.vectors import rtsp_auth, rtsp_publish
from tests.vectors.audio_rtp import HERE as AUDIO_VECTORS

RTSP_WORDS = (
    b"RTSP/1.0",
    b"\r\n",
    b"\r\n\r\n",
    b"CSeq: ",
    b"Content-Length: ",
    b"Transport: ",
    b"Session: ",
    b"Authorization: ",
    b"ANNOUNCE ",
    b"SETUP ",
    b"RECORD ",
    b"TEARDOWN ",
    b"rtsp://",
    b"RTP/AVP/TCP;unicast;interleaved=",
    b"RTP/AVP;unicast;client_port=",
    b";mode=record",
    b"$\x00",
    b"$\x02",
)
SDP_WORDS = (
    b"v=0\r\n",
    b"o=- 0 0 IN IP4 127.0.0.1\r\n",
    b"s=x\r\n",
    b"m=video 0 RTP/AVP 96\r\n",
    b"m=audio 0 RTP/AVP 97\r\n",
    b"a=rtpmap:",
    b"a=fmtp:",
    b"a=control:",
    b"H264/90000",
    b"H265/90000",
    b"MPEG4-GENERIC/44100/2",
    b"MP4A-LATM/44100/2",
    b"PCMU/8000",
    b"sprop-parameter-sets=",
    b"sprop-max-don-diff=",
    b"config=",
    b"sizelength=",
    b"cpresent=0",
)


class _Ports:
    """The UdpBinder of the fuzzed session: every track gets ports."""

    def bind(self, track: Track) -> tuple[int, int] | None:
        return (40000 + 2 * track.index, 40001 + 2 * track.index)


def _authorize(request: AuthRequest) -> bool:
    if request.digest is not None:
        return request.digest.verify(rtsp_auth.PASSWORD, request.method)
    return True


class _Publish:
    """What ``ingest.sources.rtsp.connection`` does with a publisher's bytes, without sockets: the
    reader's requests to the session, then (at RECORD) the depacketizers its tracks announce, fed by
    the interleaved frames of their channels."""

    def __init__(self) -> None:
        self.session = PublishSession(_authorize, session_id="12345678", udp=_Ports())
        self.sink = Sink()
        self.video: RtpVideoTrack | None = None
        self.audio: RtpAudioTrack | None = None

    def request(self, request: Request) -> None:
        bytes(self.session.handle(request))
        if self.session.state is State.RECORDING and self.video is None:
            self._begin()

    def _begin(self) -> None:
        video = self.session.video_track
        assert video is not None  # RECORD is refused without one
        jitter = JitterBuffer() if video.server_ports is not None else None
        self.video = RtpVideoTrack(depacketizer_for(video), self.sink, PublishStats(), jitter=jitter)
        track = self.session.audio_track
        if track is None or track.audio_format is None:
            return
        try:
            depacketizer = audio_depacketizer_for(*track.audio_format, track.media.fmtp)
        except ParseError:
            return  # the connection logs it and goes on video only
        self.audio = RtpAudioTrack(depacketizer, self.sink)

    def frame(self, frame: InterleavedFrame) -> None:
        found = self.session.track_for_channel(frame.channel)
        if found is None or self.video is None:
            return
        track, rtcp = found
        if rtcp:
            with contextlib.suppress(ParseError):
                SenderReport.parse(frame.payload)
        elif track is self.session.video_track:
            self.video.on_rtp(frame.payload)
        elif self.audio is not None:
            self.audio.on_rtp(frame.payload)

    def end(self) -> None:
        if self.video is not None:
            self.video.flush()
        if self.audio is not None:
            self.audio.flush()


def _dialogue(requests: tuple[bytes, ...], frames: list[bytes]) -> bytes:
    return b"\x35" + b"".join(requests[:-1]) + b"".join(frames) + requests[-1]


def _rtp(channel: int, payload: bytes, seq: int, marker: bool = True) -> bytes:
    header = bytes([0x80, 0x60 | (0x80 if marker else 0)]) + seq.to_bytes(2, "big") + bytes(8)
    return bytes(InterleavedFrame(channel, header + payload))


def _publish_seeds() -> list[bytes]:
    idr = bytes([0x65, 0x88, 0x84]) + bytes(range(40))
    fu = [bytes([0x7C, 0x85]) + bytes(30), bytes([0x7C, 0x05]) + bytes(30), bytes([0x7C, 0x45]) + bytes(9)]
    frames = [_rtp(0, idr, 1)] + [_rtp(0, p, 2 + i, i == 2) for i, p in enumerate(fu)]
    frames.append(bytes(InterleavedFrame(1, bytes(SenderReport(1, 1 << 32, 0, 1, 1)))))
    audio_sdp = (AUDIO_VECTORS / "aac.sdp").read_bytes().replace(b"\n", b"\r\n").split(b"m=audio")[1]
    with_audio = rtsp_publish.FFMPEG_5_1_SDP + b"m=audio" + audio_sdp + b"a=control:streamid=1\r\n"
    announce = rtsp_publish.FFMPEG_5_1_ANNOUNCE.split(b"\r\n\r\n")[0].replace(
        b"Content-Length: 313", f"Content-Length: {len(with_audio)}".encode()
    )
    setup_audio = (
        rtsp_publish.FFMPEG_5_1_SETUP.replace(b"streamid=0", b"streamid=1")
        .replace(b"interleaved=0-1", b"interleaved=2-3")
        .replace(b"CSeq:", b"Session: 12345678\r\nCSeq:")
    )
    aac = bytes([0x00, 0x10, 0x00, 0x40]) + bytes(8)
    ffmpeg = rtsp_publish.FFMPEG_5_1_REQUESTS
    digest = rtsp_auth.FFMPEG_5_1_DIGEST
    authorized = tuple(
        r.replace(b"CSeq:", f"Authorization: {digest[m][1]}\r\nCSeq:".encode())
        if (m := r.split(b" ")[0].decode()) in digest
        else r
        for r in ffmpeg
    )
    udp = rtsp_publish.GSTREAMER_1_22_SETUP.replace(
        b"RTP/AVP/TCP;unicast;interleaved=0-1;mode=RECORD", rtsp_publish.GSTREAMER_1_22_UDP_TRANSPORT.encode()
    )
    return [
        _dialogue(ffmpeg, frames),
        _dialogue((*rtsp_publish.GSTREAMER_1_22_REQUESTS, rtsp_publish.FFMPEG_5_1_TEARDOWN), frames),
        _dialogue(authorized, frames),
        _dialogue(
            (ffmpeg[0], announce + b"\r\n\r\n" + with_audio, ffmpeg[2], setup_audio, *ffmpeg[3:]),
            [*frames, _rtp(2, aac, 1)],
        ),
        b"\x07"
        + b"".join(rtsp_publish.GSTREAMER_1_22_REQUESTS[:2])
        + udp
        + rtsp_publish.GSTREAMER_1_22_RECORD,
    ]


@target(
    "rtsp-publish",
    allowed=(ParseError,),
    seeds=_publish_seeds,
    dictionary=RTSP_WORDS + SDP_WORDS,
    max_len=8192,
)
def rtsp_publish_dialogue(data: bytes) -> None:
    """A publisher's connection: RTSP requests (message reader, headers, SDP, URLs, Digest / Basic
    credentials) through the publish session, then its interleaved RTP and RTCP through the announced
    depacketizers (H.264, H.265, AAC, LATM, G.711). A ParseError of the reader ends the connection."""
    publish = _Publish()
    reader = MessageReader()
    try:
        for piece in chunks(data):
            reader.feed(piece)
            for item in reader:
                if isinstance(item, InterleavedFrame):
                    publish.frame(item)
                else:
                    publish.request(item)
                if publish.session.state is State.CLOSED:
                    return
    finally:
        publish.end()


def _sdp_seeds() -> list[bytes]:
    audio = [(AUDIO_VECTORS / f"{name}.sdp").read_bytes() for name in ("aac", "latm", "pcmu", "pcma")]
    return [rtsp_publish.FFMPEG_5_1_SDP, rtsp_publish.GSTREAMER_1_22_SDP, *audio]


@target("sdp", allowed=(ParseError,), seeds=_sdp_seeds, dictionary=SDP_WORDS)
def sdp(data: bytes) -> None:
    """An SDP (ANNOUNCE's body): the session, each medium's rtpmap and fmtp, and the depacketizer each
    announced track gets (its parameter sets, AAC config, LATM StreamMuxConfig), as RECORD builds them."""
    description = SessionDescription.parse(data)
    bytes(description)
    for index, media in enumerate(description.media):
        track = Track(index, media, media.control or "")
        media.payload_type  # noqa: B018 (a property that parses)
        if track.is_video:
            depacketizer_for(track)
        elif track.audio_format is not None:
            with contextlib.suppress(ParseError):  # the track is ignored; the next ones are still read
                audio_depacketizer_for(*track.audio_format, media.fmtp)


HEADER_SEEDS = (
    "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record",
    rtsp_publish.GSTREAMER_1_22_UDP_TRANSPORT,
    "12345678;timeout=60",
    rtsp_auth.FFMPEG_5_1_DIGEST["SETUP"][1],
    rtsp_auth.GSTREAMER_1_22_DIGEST["ANNOUNCE"][1],
    rtsp_auth.FFMPEG_5_1_BASIC,
    'Digest realm="camflow", nonce="6b0177f3.29811c8c", algorithm="MD5", qop="auth"',
    "rtsp://cam1:pw@127.0.0.1:8554/cam1?token=abc/streamid=0",
    "rtsp://[::1]:554/site/cam1/stream=0?token=T",
    "96 H264/90000",
    "97 MPEG4-GENERIC/44100/2",
    "packetization-mode=1; sprop-parameter-sets=Z2QAKA==,aO+Pyw==; profile-level-id=640028",
    "digest,basic",
)


def _each(text: str) -> None:
    """Every header, URL and attribute parser of RTSP ingest on one value; each may refuse it."""
    parsers = (
        Transport.parse,
        Session.parse,
        parse_authorization,
        parse_auth_params,
        Challenge.parse,
        RtspUrl.parse,
        RtpMap.parse,
        parse_fmtp_params,
        parse_schemes,
        lambda t: split_setup_url(t, "cam1", ("streamid=0", "stream=0", "rtsp://127.0.0.1/cam1/trackID=1")),
    )
    for parse in parsers:
        try:
            value = parse(text)
        except ParseError:
            continue
        str(value)


@target(
    "rtsp-headers",
    allowed=(),
    seeds=lambda: [s.encode() for s in HEADER_SEEDS],
    dictionary=(*RTSP_WORDS, b"interleaved=", b"client_port=", b"nonce=", b'"', b"Digest ", b"Basic "),
)
def rtsp_headers(data: bytes) -> None:
    """Transport, Session, Authorization and WWW-Authenticate values, RTSP URLs (and SETUP URLs), rtpmap,
    fmtp and the --rtsp-auth schemes: each parser on the same text, each refusing it with ParseError."""
    _each(data.decode("utf-8", "replace"))
