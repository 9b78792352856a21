"""Remux of a cut segment into a self-contained fMP4 (init section + one or more fragments)
with PyAV, without decoding a single frame of the segment.

PyAV copies codec parameters only from a stream it demuxed, so each publish session
opens a template once: the raw H.264 (``h264``) or H.265 (``hevc``) demuxer reading the
parameter sets and first IDR / IRAP picture (a few milliseconds, once per session or
parameter-set change). Every segment is then a plain remux of Annex B access units; the
mp4 muxer writes avcC / hvcC and length-prefixed NAL units itself. H.265 is written as
``hvc1`` (what HLS players require): the parameter sets live in the hvcC record, so the
copies in front of each IRAP picture that equal it are left out of the samples.

The muxer starts every file at zero; ``camflow.mp4.placed`` then sets ``tfdt`` to the
segment's first decode time, so the segments of one epoch line up end to end.

A stream with audio (``audio`` set to its AAC configuration) gets a second track, AAC-LC
(``mp4a.40.2``) in the timescale of its sample rate, holding the segment's audio samples; its
template is one ADTS frame read by PyAV's ``aac`` demuxer, and its ``tfdt`` is set to the first
audio sample's time on the same epoch timeline.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.container

from camflow.codecs import avc1, hvc1
from camflow.mp4 import MOVFLAGS, placed, shift_composition_offsets
from ingest.codecs import h264, h265
from ingest.codecs.aac import AudioConfig, silent_unit
from ingest.codecs.h264 import join_annexb
from ingest.codecs.vp8 import VP8, VP8_CODECS, ivf, vp8_size
from ingest.media.cuts import AudioSample, CutPart, CutSegment
from ingest.media.segmenter import TIMESCALE, audio_ticks

H264 = "h264"
HEVC = "hevc"
CODECS = (H264, HEVC)


@dataclass(frozen=True)
class VideoParams:
    codec: str  # "h264" or "hevc" (FFmpeg's names)
    parameter_sets: tuple[bytes, ...]  # SPS, PPS (H.264) or VPS, SPS, PPS (H.265)
    width: int
    height: int

    @property
    def codecs(self) -> str:
        """RFC 6381 codecs string from the SPS, e.g. ``avc1.640028`` or ``hvc1.1.6.L93.B0``."""
        if self.codec == HEVC:
            return hvc1(self.parameter_sets[1])
        return avc1(self.parameter_sets[0])

    @property
    def sps(self) -> bytes:
        return self.parameter_sets[0 if self.codec == H264 else 1]


def _kind(codec: str, nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F if codec == HEVC else nal[0] & 0x1F


class SegmentMuxer:
    """Turns cut segments of one publish session into fMP4 bytes."""

    def __init__(self, codec: str = H264) -> None:
        if codec not in CODECS:
            raise ValueError(f"video codec {codec!r}: expected one of {CODECS}")
        self.codec = codec
        self._kinds = h265.PARAMETER_SETS if codec == HEVC else (h264.NAL_SPS, h264.NAL_PPS)
        self._template: av.container.InputContainer | None = None
        self._params: VideoParams | None = None
        self.audio: AudioConfig | None = None  # set when the stream has an audio track
        self._audio_template: tuple[AudioConfig, av.container.InputContainer] | None = None

    @property
    def params(self) -> VideoParams | None:
        return self._params

    def close(self) -> None:
        if self._template is not None:
            self._template.close()
            self._template = None
        if self._audio_template is not None:
            self._audio_template[1].close()
            self._audio_template = None

    def _ensure_audio_template(
        self, config: AudioConfig, first: AudioSample | None
    ) -> av.container.InputContainer:
        if self._audio_template is not None and self._audio_template[0] == config:
            return self._audio_template[1]
        if self._audio_template is not None:
            self._audio_template[1].close()
        data = first.data if first is not None else silent_unit(config.sample_rate, config.channels)
        adts = b"".join(config.adts_header(len(data)) + data for _ in range(2))
        template = av.open(io.BytesIO(adts), "r", format="aac")
        self._audio_template = (config, template)
        return template

    def _is_key_picture(self, kind: int) -> bool:
        return h265.is_irap(kind) if self.codec == HEVC else kind == h264.NAL_IDR

    def _ensure_template(self, segment: CutSegment | CutPart) -> VideoParams:
        first = segment.samples[0]
        found = {_kind(self.codec, n): n for n in first.nalus if len(n) >= 2}
        if isinstance(segment, CutPart) and not first.is_idr and self._params is not None:
            return self._params  # a part inside a segment: its part 0 set the parameters
        if any(k not in found for k in self._kinds):
            names = "VPS/SPS/PPS" if self.codec == HEVC else "SPS/PPS"
            raise ValueError(f"segment {segment.seq} starts without {names} before its first picture")
        sets = tuple(found[k] for k in self._kinds)
        if self._params is not None and self._params.parameter_sets == sets:
            return self._params
        self.close()
        head = [*sets, *(n for n in first.nalus if self._is_key_picture(_kind(self.codec, n)))]
        template = av.open(io.BytesIO(join_annexb(head)), "r", format=self.codec)
        ctx = template.streams.video[0].codec_context
        self._template = template
        self._params = VideoParams(self.codec, sets, ctx.width, ctx.height)
        return self._params

    def _sample_nalus(self, nalus: tuple[bytes, ...], params: VideoParams) -> list[bytes]:
        if self.codec != HEVC:
            return list(nalus)
        return [n for n in nalus if n not in params.parameter_sets]

    def mux(self, segment: CutSegment | CutPart) -> bytes:
        """A cut segment, or a part of one (the same init section: same template, same tracks; a part
        of a stream with audio has the audio track even when its span holds no audio sample)."""
        params = self._ensure_template(segment)
        assert self._template is not None
        buf = io.BytesIO()
        time_base = Fraction(1, TIMESCALE)
        with av.open(buf, "w", format="mp4", options={"movflags": MOVFLAGS}) as out:
            stream = out.add_stream_from_template(self._template.streams.video[0])
            if self.codec == HEVC:
                stream.codec_context.codec_tag = "hvc1"
            stream.time_base = time_base
            packets = []
            for sample in segment.samples:
                packet = av.Packet(join_annexb(self._sample_nalus(sample.nalus, params)))
                packet.stream = stream
                packet.time_base = time_base
                packet.pts = sample.pts
                packet.dts = sample.dts
                packet.duration = sample.duration
                packet.is_keyframe = sample.is_idr
                packets.append(packet)
            audio = self._audio_packets(out, segment)
            for packet in packets + audio:
                out.mux(packet)
        first = segment.samples[0].dts
        if self._has_audio(segment):
            assert self.audio is not None
            rate = self.audio.sample_rate
            at = segment.audio[0].time if segment.audio else audio_ticks(segment.start, rate)
            init, media = placed(buf.getvalue(), {1: first, 2: at})
        else:
            init, media = placed(buf.getvalue(), first)
        if isinstance(segment, CutPart):
            # FFmpeg writes composition offsets relative to the file's first sample's: a part's must be
            # relative to its segment's first (the IDR's), as the segment's own are.
            lead = segment.samples[0].pts - segment.samples[0].dts
            media = shift_composition_offsets(media, 1, lead - segment.lead)
        return init + media

    def _has_audio(self, segment: CutSegment | CutPart) -> bool:
        return self.audio is not None and (bool(segment.audio) or isinstance(segment, CutPart))

    def _audio_packets(
        self, out: av.container.OutputContainer, segment: CutSegment | CutPart
    ) -> list[av.Packet[Any]]:
        """The segment's AAC as packets of a new audio stream of ``out``; none without audio (a part
        of a stream with audio gets the stream even without samples, so its init is the segments')."""
        audio = self.audio
        if audio is None or not self._has_audio(segment):
            return []
        template = self._ensure_audio_template(audio, segment.audio[0] if segment.audio else None)
        stream = out.add_stream_from_template(template.streams.audio[0])
        # The ADTS template carries no AudioSpecificConfig; without it the esds has no
        # DecoderSpecificInfo, which FFmpeg tolerates and browsers (MSE) refuse.
        stream.codec_context.extradata = AudioConfig.aac_lc(audio.sample_rate, audio.channels).asc
        time_base = Fraction(1, audio.sample_rate)
        stream.time_base = time_base
        packets = []
        for item in segment.audio:
            packet = av.Packet(item.data)
            packet.stream, packet.time_base = stream, time_base
            packet.pts = packet.dts = item.time
            packet.duration = item.duration
            packet.is_keyframe = True
            packets.append(packet)
        return packets


@dataclass(frozen=True)
class Vp8Params(VideoParams):
    @property
    def codecs(self) -> str:
        return VP8_CODECS


class Vp8Muxer(SegmentMuxer):
    """VP8 cut segments, with their AAC track when the session has audio, as NUT files.

    Not MP4: FFmpeg's MP4 muxer has no VP8. Not Matroska: FFmpeg's writes a fixed 1 ms timestamp
    scale, which rounds 90 kHz video and 1024-sample AAC frames (21.33 ms at 48 kHz), so the audio
    rendition would lose its sample-exact timeline. NUT (FFmpeg's own container) keeps each stream's
    time base: video 90 kHz, audio its sample rate, timestamps on the epoch timeline exactly as the
    segmenter cut them, which is what the transcoder's ``tfdt`` and ``end_pts`` rely on. VP8 has no
    B-frames, so decode time = presentation time. The VP8 stream's template is an IVF of the first
    key frame, read by FFmpeg's ``ivf`` demuxer (once per session or picture size).
    """

    def __init__(self) -> None:
        super().__init__(H264)
        self.codec = VP8
        self._vp8: Vp8Params | None = None
        self._vp8_template: av.container.InputContainer | None = None

    @property
    def params(self) -> VideoParams | None:
        return self._vp8

    def close(self) -> None:
        super().close()
        if self._vp8_template is not None:
            self._vp8_template.close()
            self._vp8_template = None

    def _ensure_vp8_template(self, keyframe: bytes) -> av.container.InputContainer:
        width, height = vp8_size(keyframe)
        if self._vp8 is not None and self._vp8_template is not None:
            if (self._vp8.width, self._vp8.height) == (width, height):
                return self._vp8_template
            self._vp8_template.close()
        self._vp8_template = av.open(io.BytesIO(ivf(width, height, [(0, keyframe)])), "r", format="ivf")
        self._vp8 = Vp8Params(VP8, (), width, height)
        return self._vp8_template

    def mux(self, segment: CutSegment | CutPart) -> bytes:
        first = segment.samples[0]
        if isinstance(segment, CutPart) and not first.is_idr and self._vp8_template is not None:
            template = self._vp8_template  # a part inside a segment: its part 0 (a key frame) set it
        else:
            template = self._ensure_vp8_template(first.nalus[0])
        buf = io.BytesIO()
        time_base = Fraction(1, TIMESCALE)
        with av.open(buf, "w", format="nut") as out:
            stream = out.add_stream_from_template(template.streams.video[0])
            stream.time_base = time_base
            packets = []
            for sample in segment.samples:
                packet = av.Packet(sample.nalus[0])
                packet.stream, packet.time_base = stream, time_base
                packet.pts = packet.dts = sample.pts
                packet.duration = sample.duration
                packet.is_keyframe = sample.is_idr
                packets.append(packet)
            for packet in packets + self._audio_packets(out, segment):
                out.mux(packet)
        return buf.getvalue()


def muxer_for(codec: str) -> SegmentMuxer:
    """The muxer of a video codec, chosen once when the media path is built: fMP4 for H.264 and H.265,
    NUT for VP8 (see ``Vp8Muxer``)."""
    if codec == VP8:
        return Vp8Muxer()
    return SegmentMuxer(codec)
