"""Raw parts and the raw segments they add up to, as ingest publishes them (self-contained fMP4,
90 kHz video, AAC in its sample rate, tfdt on the epoch timeline), cut from an ffmpeg-made
H.264 + AAC clip with PyAV: for the part worker's tests and measurements.

Each GOP is a segment; a segment's parts are runs of ``per_part`` pictures in decode order, part 0
on the IDR, and each AAC frame goes to the part whose span holds its start, so a segment's parts hold
exactly the segment's samples. This module holds no tests.
"""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from camflow.events import RawPart, RawSegment
from camflow.mp4 import MOVFLAGS, placed, shift_composition_offsets

TIMESCALE = 90_000
BASE = 1_234_567  # the epoch timeline does not start at zero
EPOCH = "20261203T101500123Z"


@dataclass(frozen=True)
class _Sample:
    pts: int
    dts: int
    duration: int
    key: bool
    data: bytes


@dataclass(frozen=True)
class ClipSegment:
    seq: int
    start: int
    duration: int
    data: bytes  # the raw segment
    parts: tuple[tuple[int, int, bool, bytes], ...]  # (start, duration, independent, data) per part

    @property
    def end(self) -> int:
        return self.start + self.duration

    def raw_segment(self, stream: str, codecs: str, wall_clock: float = 0.0) -> RawSegment:
        return RawSegment(
            stream=stream,
            epoch=EPOCH,
            seq=self.seq,
            start=self.start,
            duration=self.duration,
            timescale=TIMESCALE,
            codecs=codecs,
            width=0,
            height=0,
            wall_clock=wall_clock,
            data=self.data,
        )

    def raw_parts(
        self, stream: str, codecs: str, wall_clock: float = 0.0, *, last: bool = True
    ) -> list[RawPart]:
        """The segment's raw parts; ``last``: flag its final part, as ingest does."""
        return [
            RawPart(
                stream=stream,
                epoch=EPOCH,
                seq=self.seq,
                start=start,
                duration=duration,
                timescale=TIMESCALE,
                part=i,
                independent=independent,
                wall_clock=wall_clock + (start - self.start) / TIMESCALE,
                codecs=codecs,
                width=0,
                height=0,
                data=data,
                last=last and i == len(self.parts) - 1,
            )
            for i, (start, duration, independent, data) in enumerate(self.parts)
        ]


def make_clip(
    path: Path, seconds: float, size: str, bframes: int = 0, gop: int = 60, codec: str = "libx264"
) -> Path:
    """testsrc2 at 30 fps (``codec``, an IDR every ``gop`` pictures) and a 48 kHz AAC sine."""
    if not path.exists():
        extra = (
            ["-x265-params", f"bframes={bframes}:open-gop=0:log-level=error"] if codec == "libx265" else []
        )
        subprocess.run(
            [
                *("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30"),
                *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"),
                *("-t", str(seconds), "-c:v", codec, *extra, "-preset", "veryfast", "-pix_fmt", "yuv420p"),
                *("-bf", str(bframes), "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"),
                *("-c:a", "aac", "-b:a", "64k", str(path)),
            ],
            check=True,
            timeout=300,
        )
    return path


def cut(path: Path, per_part: int = 6) -> list[ClipSegment]:
    """One segment per GOP of the clip, each with its parts of ``per_part`` pictures."""
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        vscale = (video.time_base or Fraction(1, TIMESCALE)) * TIMESCALE
        pictures: list[_Sample] = []
        sounds: list[_Sample] = []
        for packet in container.demux(video, audio):
            if packet.dts is None or packet.pts is None:
                continue
            if packet.stream is video:
                pictures.append(
                    _Sample(
                        BASE + round(packet.pts * vscale),
                        BASE + round(packet.dts * vscale),
                        round((packet.duration or 0) * vscale),
                        packet.is_keyframe,
                        bytes(packet),
                    )
                )
            else:
                rate = audio.codec_context.sample_rate
                shift = BASE * rate // TIMESCALE  # the audio track's timeline starts where the video's does
                sounds.append(
                    _Sample(
                        packet.pts + shift, packet.pts + shift, packet.duration or 1024, True, bytes(packet)
                    )
                )
        gops: list[list[_Sample]] = []
        for sample in pictures:
            if sample.key or not gops:
                gops.append([])
            gops[-1].append(sample)
        rate = audio.codec_context.sample_rate
        runs = [[gop[i : i + per_part] for i in range(0, len(gop), per_part)] for gop in gops]
        spans = [(run[0].dts, run[-1].dts + run[-1].duration) for seg in runs for run in seg]
        owned: list[list[_Sample]] = [[] for _ in spans]
        for sound in sounds:  # the part whose span holds the frame's start (the first or last part beyond)
            at = sound.pts * TIMESCALE // rate
            index = next((i for i, (start, end) in enumerate(spans) if start <= at < end), None)
            owned[index if index is not None else (0 if at < spans[0][0] else len(spans) - 1)].append(sound)
        out: list[ClipSegment] = []
        k = 0
        for seq, seg in enumerate(runs):
            parts, every, seg_audio = [], [], []
            for i, run in enumerate(seg):
                start, end = spans[k]
                base = seg[0][0].pts - seg[0][0].dts
                parts.append((start, end - start, i == 0, _mux(video, audio, run, owned[k], base)))
                every.extend(run)
                seg_audio.extend(owned[k])
                k += 1
            first = seg[0][0].dts
            end = spans[k - 1][1]
            out.append(
                ClipSegment(seq, first, end - first, _mux(video, audio, every, seg_audio), tuple(parts))
            )
        return out


def _mux(
    video: Any, audio: Any, pictures: list[_Sample], sounds: list[_Sample], base: int | None = None
) -> bytes:
    """Init + one fragment of ``pictures`` and ``sounds``. ``base``: a part's composition offsets are
    stored relative to its segment's first picture's (as ingest writes them), where FFmpeg's muxer
    would start them from 0 at the part's own first picture."""
    buf = io.BytesIO()
    rate = audio.codec_context.sample_rate
    with av.open(buf, "w", format="mp4", options={"movflags": MOVFLAGS}) as out:
        vs = out.add_stream_from_template(video)
        vs.time_base = Fraction(1, TIMESCALE)
        packets = []
        for s in pictures:
            p = av.Packet(s.data)
            p.stream, p.time_base = vs, Fraction(1, TIMESCALE)
            p.pts, p.dts, p.duration, p.is_keyframe = s.pts, s.dts, s.duration, s.key
            packets.append(p)
        if sounds:
            aus = out.add_stream_from_template(audio)
            aus.time_base = Fraction(1, rate)
            for s in sounds:
                p = av.Packet(s.data)
                p.stream, p.time_base = aus, Fraction(1, rate)
                p.pts = p.dts = s.pts
                p.duration, p.is_keyframe = s.duration, True
                packets.append(p)
        for p in packets:
            out.mux(p)
    first = pictures[0].dts
    init, media = placed(buf.getvalue(), {1: first, 2: sounds[0].pts} if sounds else first)
    if base is not None and pictures[0].pts - pictures[0].dts != base:
        media = shift_composition_offsets(media, 1, pictures[0].pts - pictures[0].dts - base)
    return init + media
