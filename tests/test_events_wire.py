"""Every event type's wire form, byte for byte, against vectors captured from the encoder.

The vectors in ``tests/vectors/events/wire.json`` were written by the hand-written encoder
that ``camflow/events.py`` had before its field lists were derived from the dataclasses: a
change of the wire form (order, names, numbers) fails here. Regenerate them only with a new
event version: ``python -m tests.test_events_wire``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from camflow.events import (
    Event,
    HealthSample,
    RawSegment,
    RenditionRef,
    SegmentDead,
    SegmentReady,
    StreamState,
    StreamStateKind,
    decode,
    encode,
)

VECTORS = Path(__file__).parent / "vectors" / "events" / "wire.json"

VIDEO = RenditionRef(
    "720p", 1280, 720, 2_500_000, "avc1.64001f", "s/e/720p/init.mp4", "s/e/720p/7.m4s", 812_345
)
AUDIO = RenditionRef(
    "audio", 0, 0, 128_000, "mp4a.40.2", "s/e/a/init.mp4", "s/e/a/7.m4s", 32_000, 0.0, "audio", 2, 48_000
)

SAMPLES: dict[str, Event] = {
    "raw-segment": RawSegment(
        "cam1", "e1", 7, 630_000, 180_000, 90_000, "avc1.64001f", 1280, 720, 1_700_000_000.25, b"\x00moof\xff"
    ),
    "raw-segment-flags": RawSegment(
        "cam-2", "e2", 0, 0, 1, 1000, "hvc1.1.6.L93.B0", 640, 360, 0.0, b"", damaged=True, discontinuity=True
    ),
    "segment-ready": SegmentReady(
        "cam1",
        "e1",
        7,
        630_000,
        180_000,
        90_000,
        1_700_000_000.5,
        (
            RenditionRef("source", 1920, 1080, 6_000_000, "avc1.640028", "i", "k", 1, 29.97),
            VIDEO,
            AUDIO,
        ),
    ),
    "segment-ready-flags": SegmentReady("cam1", "e1", 8, 0, 1, 1, 0.0, (), damaged=True, discontinuity=False),
    "stream-state": StreamState("cam1", "e1", StreamStateKind.OFFLINE, "camera left", 1_700_000_001.0, 41),
    "stream-state-unknown-seq": StreamState("cam1", "e1", StreamStateKind.LIVE, "", 12.5),
    "segment-dead": SegmentDead(
        "cam1",
        "e1",
        9,
        "decoder: bad NAL \u00e9",
        3,
        1_700_000_002.0,
        "camflow.segments.raw",
        4,
        123_456,
        b"CFE1\x00",
    ),
    "health-sample": HealthSample(
        "cam1",
        "ingest",
        "host/42",
        1_700_000_003.0,
        StreamStateKind.STALLED,
        "no packets",
        "e1",
        bitrate=2.5e6,
        fps=29.97,
        gop_seconds=2.0,
        timestamp_corrections=3,
        packets_lost=0,
        segment_age=1.25,
        viewers=None,
        corrections={"dts_nudged": 3, "params_inserted": 15},
        spool_dropped=4,
    ),
    "health-sample-sparse": HealthSample("cam1", "edge", "host/1", 5.0, viewers=12),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_event_type_encodes_to_the_captured_bytes(name: str) -> None:
    captured = json.loads(VECTORS.read_text())
    assert encode(SAMPLES[name]) == bytes.fromhex(captured[name])


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_captured_bytes_decode_to_the_sample(name: str) -> None:
    captured = json.loads(VECTORS.read_text())
    assert decode(bytes.fromhex(captured[name])) == SAMPLES[name]


def test_the_vectors_cover_every_event_type() -> None:
    assert {type(e) for e in SAMPLES.values()} == {
        RawSegment,
        SegmentReady,
        StreamState,
        SegmentDead,
        HealthSample,
    }
    assert set(json.loads(VECTORS.read_text())) == set(SAMPLES)


if __name__ == "__main__":
    VECTORS.write_text(json.dumps({k: encode(v).hex() for k, v in sorted(SAMPLES.items())}, indent=1) + "\n")
    sys.exit(0)
