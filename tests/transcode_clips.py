"""Raw segments as ingest publishes them (self-contained fMP4, 90 kHz, tfdt on the epoch
timeline, one GOP each), cut from a clip with PyAV: for the transcoder's tests and bench.

This module holds no tests.
"""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from camflow.mp4 import MOVFLAGS, placed

TIMESCALE = 90_000
BASE = 1_234_567  # the epoch timeline does not start at zero


@dataclass(frozen=True)
class RawClipSegment:
    seq: int
    start: int  # first presentation time, 90 kHz
    duration: int
    data: bytes

    @property
    def end(self) -> int:
        return self.start + self.duration


def make_clip(path: Path, seconds: float, size: str, codec: str = "libx264", gop: int = 60) -> Path:
    """testsrc2 at 30 fps with B-frames and an IDR every ``gop`` frames (libx264 or libx265)."""
    if not path.exists():
        params = (
            ["-x265-params", f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:log-level=error"]
            if codec == "libx265"
            else []
        )
        subprocess.run(
            [
                *("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30"),
                *("-t", str(seconds), "-c:v", codec, "-preset", "veryfast", "-pix_fmt", "yuv420p"),
                *("-g", str(gop), "-keyint_min", str(gop), *params, str(path)),
            ],
            check=True,
            timeout=300,
        )
    return path


def cut(path: Path) -> list[RawClipSegment]:
    """One raw segment per GOP of the clip."""
    out: list[RawClipSegment] = []
    with av.open(str(path)) as container:
        src = container.streams.video[0]
        assert src.time_base is not None
        scale = src.time_base * TIMESCALE
        gops: list[list[av.Packet[Any]]] = []
        for packet in container.demux(src):
            if packet.dts is None:
                continue
            if packet.is_keyframe or not gops:
                gops.append([])
            gops[-1].append(packet)
        starts = [BASE + round(min(p.pts or 0 for p in g) * scale) for g in gops]
        for seq, gop in enumerate(gops):
            buf = io.BytesIO()
            with av.open(buf, "w", format="mp4", options={"movflags": MOVFLAGS}) as dst:
                stream = dst.add_stream_from_template(src)
                stream.time_base = Fraction(1, TIMESCALE)
                for p in gop:
                    assert p.pts is not None and p.dts is not None
                    p.pts, p.dts = BASE + round(p.pts * scale), BASE + round(p.dts * scale)
                    p.duration = round((p.duration or 0) * scale)
                    p.time_base = Fraction(1, TIMESCALE)
                    p.stream = stream
                    dst.mux(p)
            init, media = placed(buf.getvalue(), gop[0].dts or 0)  # rewritten to the 90 kHz timeline above
            end = starts[seq + 1] if seq + 1 < len(gops) else starts[seq] + sum(p.duration or 0 for p in gop)
            out.append(RawClipSegment(seq, starts[seq], end - starts[seq], init + media))
    return out
