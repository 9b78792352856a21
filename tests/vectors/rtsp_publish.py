"""Exact bytes real publishers send (from /work/shared/reference/rtsp-publish.md), lines ending in CRLF."""

from __future__ import annotations


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


# ffmpeg 5.1 (Debian): -c copy -f rtsp -rtsp_transport tcp rtsp://127.0.0.1:8554/cam1
FFMPEG_5_1_OPTIONS = _crlf(
    "OPTIONS rtsp://127.0.0.1:8554/cam1 RTSP/1.0\nCSeq: 1\nUser-Agent: Lavf59.27.100\n\n"
)
FFMPEG_5_1_SDP = _crlf(
    "v=0\n"
    "o=- 0 0 IN IP4 127.0.0.1\n"
    "s=No Name\n"
    "c=IN IP4 127.0.0.1\n"
    "t=0 0\n"
    "a=tool:libavformat LIBAVFORMAT_VERSION\n"
    "m=video 0 RTP/AVP 96\n"
    "b=AS:5415\n"
    "a=rtpmap:96 H264/90000\n"
    "a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z2QAKKzZQHgCJ+XARAAAAwAEAAADAPA8YMZY,aO+Pyw==;"
    " profile-level-id=640028\n"
    "a=control:streamid=0\n"
)
FFMPEG_5_1_ANNOUNCE = (
    _crlf(
        "ANNOUNCE rtsp://127.0.0.1:8554/cam1 RTSP/1.0\n"
        "Content-Type: application/sdp\n"
        "CSeq: 2\n"
        "User-Agent: Lavf59.27.100\n"
        "Content-Length: 313\n\n"
    )
    + FFMPEG_5_1_SDP
)
FFMPEG_5_1_SETUP = _crlf(
    "SETUP rtsp://127.0.0.1:8554/cam1/streamid=0 RTSP/1.0\n"
    "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record\n"
    "CSeq: 3\n"
    "User-Agent: Lavf59.27.100\n\n"
)
FFMPEG_5_1_RECORD = _crlf(
    "RECORD rtsp://127.0.0.1:8554/cam1 RTSP/1.0\n"
    "Range: npt=0.000-\n"
    "CSeq: 4\n"
    "User-Agent: Lavf59.27.100\n"
    "Session: 12345678\n\n"
)
FFMPEG_5_1_TEARDOWN = _crlf(
    "TEARDOWN rtsp://127.0.0.1:8554/cam1 RTSP/1.0\nCSeq: 5\nUser-Agent: Lavf59.27.100\nSession: 12345678\n\n"
)
FFMPEG_5_1_REQUESTS = (
    FFMPEG_5_1_OPTIONS,
    FFMPEG_5_1_ANNOUNCE,
    FFMPEG_5_1_SETUP,
    FFMPEG_5_1_RECORD,
    FFMPEG_5_1_TEARDOWN,
)
FFMPEG_5_1_SPROP = "Z2QAKKzZQHgCJ+XARAAAAwAEAAADAPA8YMZY,aO+Pyw=="

# GStreamer 1.22: rtspclientsink location=rtsp://127.0.0.1:8554/cam2 protocols=tcp
_GST_DATE = "Date: Sat, 21 Nov 2026 10:01:36 GMT\n"
GSTREAMER_1_22_OPTIONS = _crlf(
    "OPTIONS rtsp://127.0.0.1:8554/cam2 RTSP/1.0\nCSeq: 1\nUser-Agent: GStreamer/1.22.0\n" + _GST_DATE + "\n"
)
GSTREAMER_1_22_SDP = _crlf(
    "v=0\n"
    "o=- 1254041372 1 IN IP4 127.0.0.1\n"
    "s=Session streamed with GStreamer\n"
    "i=rtspclientsink\n"
    "t=0 0\n"
    "a=tool:GStreamer\n"
    "m=video 0 RTP/AVP 96\n"
    "c=IN IP4 0.0.0.0\n"
    "b=AS:2097\n"
    "a=rtpmap:96 H264/90000\n"
    "a=framerate:30\n"
    "a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z2QAFKyyAoP2AtQYGBqUAAADAAQAAAMA8jxQqSA=,aOvMsiw=;"
    "profile-level-id=640014;level-asymmetry-allowed=1\n"
    "a=control:stream=0\n"
    "a=ts-refclk:local\n"
    "a=mediaclk:sender\n"
    "a=ssrc:2741614968 cname:user3587011059@host-24fb3a9a\n"
)
GSTREAMER_1_22_ANNOUNCE = (
    _crlf(
        "ANNOUNCE rtsp://127.0.0.1:8554/cam2 RTSP/1.0\n"
        "CSeq: 2\n"
        "User-Agent: GStreamer/1.22.0\n"
        "Content-Type: application/sdp\n" + _GST_DATE + "Content-Length: 474\n\n"
    )
    + GSTREAMER_1_22_SDP
)
GSTREAMER_1_22_SETUP = _crlf(
    "SETUP rtsp://127.0.0.1:8554/cam2/stream=0 RTSP/1.0\n"
    "CSeq: 3\n"
    "User-Agent: GStreamer/1.22.0\n"
    "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=RECORD\n" + _GST_DATE + "\n"
)
GSTREAMER_1_22_RECORD = _crlf(
    "RECORD rtsp://127.0.0.1:8554/cam2 RTSP/1.0\n"
    "CSeq: 4\n"
    "User-Agent: GStreamer/1.22.0\n"
    "Session: 12345678\n" + _GST_DATE + "\n"
)
GSTREAMER_1_22_REQUESTS = (
    GSTREAMER_1_22_OPTIONS,
    GSTREAMER_1_22_ANNOUNCE,
    GSTREAMER_1_22_SETUP,
    GSTREAMER_1_22_RECORD,
)
# Without protocols=tcp, rtspclientsink defaults to UDP.
GSTREAMER_1_22_UDP_TRANSPORT = "RTP/AVP/UDP;unicast;client_port=46626-46627;mode=RECORD"
GSTREAMER_1_22_SPROP = "Z2QAFKyyAoP2AtQYGBqUAAADAAQAAAMA8jxQqSA=,aOvMsiw="
