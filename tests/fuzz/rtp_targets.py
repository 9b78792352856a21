"""Fuzz targets of RTP: packets and RTCP, every depacketizer through its track, and the codec headers.

A depacketizer's input is records (``tests.fuzz.harness.records``): the first byte says UDP (bit 0
set: a jitter buffer reorders first) or TCP, the first record is the track's configuration as the
SDP gives it, every next one an RTP packet, fed as the connection feeds them.
"""

from __future__ import annotations

import contextlib
import functools
from fractions import Fraction

import av

from ingest.codecs.aac import AudioConfig
from ingest.codecs.h264 import Sps, split_annexb
from ingest.codecs.h265 import nal_type as h265_nal_type
from ingest.codecs.vp8 import vp8_size
from ingest.errors import ParseError
from ingest.media.publisher import PublishStats
from ingest.media.units import AccessUnit
from ingest.sources.rtp.aac import parse_stream_mux_config
from ingest.sources.rtp.audio import RtpAudioTrack, audio_depacketizer_for
from ingest.sources.rtp.h264 import H264Depacketizer, H264Packetizer
from ingest.sources.rtp.h265 import H265Depacketizer
from ingest.sources.rtp.jitter import JitterBuffer
from ingest.sources.rtp.packet import ReceiverReport, ReportBlock, RtcpPacket, RtpPacket, SenderReport
from ingest.sources.rtp.track import RtpVideoTrack
from ingest.sources.rtsp.sdp import RtpMap, SessionDescription, parse_fmtp_params
from tests.fuzz.harness import Sink, framed, records, target
from tests.vectors import audio_rtp
from tests.vectors.pcap import udp_payloads
from tests.vectors.rtsp_publish import FFMPEG_5_1_SPROP, GSTREAMER_1_22_SPROP

H265_CAMERA = audio_rtp.HERE.parent / "h265_rtp_camera" / "camera.pcap"
MAX_LEN = 16384
RTP_WORDS = (b"\x80\x60", b"\x80\xe0", b"\x7c\x85", b"\x7c\x45", b"\x62\x01\x93", b"\x18", b"\x00\x10")


def _budget(packets: list[bytes], limit: int = MAX_LEN - 512) -> list[bytes]:
    """The first packets whose records fit in ``limit`` bytes."""
    out, size = [], 0
    for p in packets:
        size += 2 + len(p)
        if size > limit:
            break
        out.append(p)
    return out


@functools.cache
def _h264_units() -> list[AccessUnit]:
    """Three frames of a 64x64 picture, encoded by libx264 (an IDR with SPS and PPS, then P frames)."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width = codec.height = 64
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, 90000)
    codec.options = {"bframes": "0", "g": "2"}
    units = []
    for i in range(3):
        frame = av.VideoFrame(64, 64, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(i * 40 + 16) % 256]) * plane.buffer_size)
        frame.pts = i * 3000
        for packet in [*codec.encode(frame), *(codec.encode(None) if i == 2 else [])]:
            nalus = tuple(split_annexb(bytes(packet)))
            units.append(AccessUnit(pts=i * 3000, nalus=nalus, is_idr=any(n[0] & 0x1F == 5 for n in nalus)))
    return units


def _h264_seeds() -> list[bytes]:
    packetizer = H264Packetizer(max_payload_size=120)
    packets = [bytes(p) for unit in _h264_units() for p in packetizer.packetize(unit)]
    config = f"packetization-mode=1; sprop-parameter-sets={FFMPEG_5_1_SPROP}".encode()
    return [b"\x00" + framed([config, *_budget(packets)]), b"\x01" + framed([b"", *_budget(packets)])]


def _h265_seeds() -> list[bytes]:
    packets = _budget(udp_payloads(H265_CAMERA)[:60])
    return [b"\x00" + framed([b"", *packets]), b"\x01" + framed([b"sprop-max-don-diff=0", *packets])]


def _video(data: bytes, h265: bool) -> None:
    parts = records(data[1:])
    fmtp = parse_fmtp_params(next(parts, b"").decode("utf-8", "replace"))
    try:  # as ingest.sources.rtsp.tracks.depacketizer_for: bad parameter sets in the SDP are ignored
        depacketizer = H265Depacketizer(fmtp) if h265 else H264Depacketizer(fmtp.get("sprop-parameter-sets"))
    except ParseError:
        depacketizer = H265Depacketizer() if h265 else H264Depacketizer()
    udp = bool(data[:1]) and data[0] & 1
    track = RtpVideoTrack(depacketizer, Sink(), PublishStats(), jitter=JitterBuffer() if udp else None)
    for packet in parts:
        if not udp and len(packet) >= 12 and packet[0] == 0x80:  # the connection's per-packet path
            seq, timestamp, ssrc = (int.from_bytes(packet[a:b], "big") for a, b in ((2, 4), (4, 8), (8, 12)))
            track.on_rtp_header(packet[1], seq, timestamp, ssrc, packet[12:], len(packet))
        else:
            track.on_rtp(packet)
    track.flush()


@target("rtp-h264", allowed=(), seeds=_h264_seeds, dictionary=RTP_WORDS, max_len=MAX_LEN)
def rtp_h264(data: bytes) -> None:
    """H.264 over RTP (RFC 6184): single NAL units, STAP-A, FU-A, sprop-parameter-sets, losses and
    reordering, through ``RtpVideoTrack`` over TCP or UDP (jitter buffer). Nothing may raise."""
    _video(data, h265=False)


@target("rtp-h265", allowed=(), seeds=_h265_seeds, dictionary=RTP_WORDS, max_len=MAX_LEN)
def rtp_h265(data: bytes) -> None:
    """H.265 over RTP (RFC 7798) from a real camera's capture: single NAL units, AP, FU, PACI, DONL,
    sprop-vps/sps/pps, through ``RtpVideoTrack``. Nothing may raise."""
    _video(data, h265=True)


def _audio_seed(name: str, count: int = 12) -> list[bytes]:
    media = SessionDescription.parse((audio_rtp.HERE / f"{name}.sdp").read_bytes()).media[0]
    rtpmap = media.attribute("rtpmap") or f"{media.formats[0]} PCMU/8000"
    fmtp = (media.attribute("fmtp") or "").partition(" ")[2]
    config = f"{rtpmap}\n{fmtp}".encode()
    packets = _budget([bytes(p) for p in audio_rtp.packets(name)][:count], 6000)
    return [b"\x00" + framed([config, *packets]), b"\x01" + framed([config, *packets[::-1]])]


def _audio(data: bytes) -> None:
    parts = records(data[1:])
    rtpmap_text, _, fmtp_text = next(parts, b"").decode("utf-8", "replace").partition("\n")
    try:
        rtpmap = RtpMap.parse(rtpmap_text)
        depacketizer = audio_depacketizer_for(
            rtpmap.encoding_name, rtpmap.clock_rate, rtpmap.channels, parse_fmtp_params(fmtp_text)
        )
    except ParseError:
        return  # the connection ignores the track
    udp = bool(data[:1]) and data[0] & 1
    track = RtpAudioTrack(depacketizer, Sink(), jitter=JitterBuffer() if udp else None)
    for packet in parts:
        track.on_rtp(packet)
    track.flush()


AUDIO_WORDS = (b"MPEG4-GENERIC/", b"MP4A-LATM/", b"PCMU/", b"PCMA/", b"sizelength=", b"config=", b"mode=")


@target(
    "rtp-aac",
    allowed=(),
    seeds=lambda: _audio_seed("aac") + _audio_seed("aac_fragmented"),
    dictionary=AUDIO_WORDS,
    max_len=8192,
)
def rtp_aac(data: bytes) -> None:
    """AAC over RTP (RFC 3640 mpeg4-generic): the fmtp (config, sizelength, indexlength...), AU headers,
    several AUs per packet, fragmented AUs, through ``RtpAudioTrack``. Nothing may raise past the fmtp."""
    _audio(data)


@target("rtp-latm", allowed=(), seeds=lambda: _audio_seed("latm"), dictionary=AUDIO_WORDS, max_len=8192)
def rtp_latm(data: bytes) -> None:
    """AAC over RTP as MP4A-LATM (RFC 6416, cpresent=0): StreamMuxConfig, AudioMuxElements over
    several packets, through ``RtpAudioTrack``. Nothing may raise past the fmtp."""
    _audio(data)


@target(
    "rtp-g711",
    allowed=(),
    seeds=lambda: _audio_seed("pcmu", 4) + _audio_seed("pcma", 4),
    dictionary=AUDIO_WORDS,
    max_len=2048,
)
def rtp_g711(data: bytes) -> None:
    """G.711 over RTP (PCMU, PCMA; any clock rate and 1-2 channels), decoded and encoded to AAC
    (``G711ToAac``) through ``RtpAudioTrack``. Nothing may raise past the rtpmap."""
    _audio(data)


def _packet_seeds() -> list[bytes]:
    simple = bytes(RtpPacket(96, 1, 2, 3, b"\x65\x88"))
    full = bytes(RtpPacket(97, 65535, 2**32 - 1, 7, b"x" * 5, True, (1, 2), None, 4))
    sr = bytes(SenderReport(1, 2**63, 3, 4, 5))
    rr = bytes(ReceiverReport(1, (ReportBlock(2, 3, -4, 5, 6, 7, 8),)))
    return [simple, full, sr + rr, rr]


@target("rtp-packet", allowed=(ParseError,), seeds=_packet_seeds, max_len=2048)
def rtp_packet(data: bytes) -> None:
    """An RTP packet (CSRCs, header extension, padding) and its bytes again; the same bytes as a
    compound RTCP packet, its sender report and receiver report."""
    try:
        packet = RtpPacket.parse(data)
    except ParseError:
        pass
    else:
        again = RtpPacket.parse(bytes(packet))
        assert again == packet, f"{packet} -> {again}"
    with contextlib.suppress(ParseError):
        RtcpPacket.parse_compound(data)
    with contextlib.suppress(ParseError):
        SenderReport.parse(data)
    ReceiverReport.parse(data)


@functools.cache
def _vp8_keyframe() -> bytes:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width = codec.height = 64
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, 90000)
    frame = av.VideoFrame(64, 64, "yuv420p")
    frame.pts = 0
    packets = [*codec.encode(frame), *codec.encode(None)]
    return bytes(packets[0])[:64]


def _codec_seeds() -> list[bytes]:
    import base64

    sps = [base64.b64decode(s.split(",")[0]) for s in (FFMPEG_5_1_SPROP, GSTREAMER_1_22_SPROP)]
    x264_sps = next(n for n in _h264_units()[0].nalus if n[0] & 0x1F == 7)
    return [
        *sps,
        x264_sps,
        bytes.fromhex("121056E500"),  # mpeg4-generic config of tests/vectors/audio_rtp/aac.sdp
        bytes.fromhex("40002420adca00"),  # LATM StreamMuxConfig of latm.sdp
        _vp8_keyframe(),
        b"\x00\x00\x00\x01" + x264_sps + b"\x00\x00\x01\x68\xee",
    ]


@target("codec-headers", allowed=(), seeds=_codec_seeds, max_len=512)
def codec_headers(data: bytes) -> None:
    """The codec headers ingest reads: an H.264 SPS (``Sps.parse``), Annex B, an AAC
    AudioSpecificConfig, a LATM StreamMuxConfig (hex, as in the fmtp), a VP8 key frame header, an
    H.265 NAL header. Each may refuse the bytes with ParseError, nothing else."""
    parsers = (
        Sps.parse,
        split_annexb,
        AudioConfig.parse,
        lambda d: parse_stream_mux_config(d.hex()),
        vp8_size,
        h265_nal_type,
    )
    for parse in parsers:
        with contextlib.suppress(ParseError):
            parse(data)
