"""An announced RTSP track's media: the video depacketizer of its payload format and its codec name."""

from __future__ import annotations

from camflow.log import get_logger
from ingest.errors import ParseError
from ingest.media.mux import H264, HEVC
from ingest.sources.rtp.base import VideoDepacketizer
from ingest.sources.rtp.h264 import H264Depacketizer
from ingest.sources.rtp.h265 import H265Depacketizer
from ingest.sources.rtsp.session import Track

log = get_logger("ingest.rtsp")


def video_codec(track: Track) -> str:
    """The codec (the media path's name) of an announced video track: ``hevc`` for H265, else ``h264``."""
    return HEVC if track.encoding == "H265" else H264


def depacketizer_for(track: Track) -> VideoDepacketizer:
    """The depacketizer of an announced video track's payload format (H264 or H265).

    Malformed parameter sets in the SDP are logged and ignored: the camera may still send
    them in-band.
    """
    fmtp = track.media.fmtp
    try:
        if track.encoding == "H265":
            return H265Depacketizer(fmtp)
        return H264Depacketizer(fmtp.get("sprop-parameter-sets"))
    except ParseError as exc:
        log.warning("sdp_parameter_sets_ignored", encoding=track.encoding, error=str(exc))
        return H265Depacketizer() if track.encoding == "H265" else H264Depacketizer()
