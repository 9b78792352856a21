"""The dead-letter event the transcoder publishes: versioned, round-trips, payload untouched."""

from __future__ import annotations

import json

import pytest

from camflow.errors import EventDecodeError
from camflow.events import MAGIC, SegmentDead, decode, encode

DEAD = SegmentDead(
    stream="cam1",
    epoch="20261121T101500123Z",
    seq=7,
    reason="raw segment does not decode: Invalid data found when processing input",
    attempts=3,
    at=1_763_720_100.5,
    topic="camflow.segments.raw",
    partition=3,
    offset=41,
    raw=bytes(range(256)) * 3,
)


def test_segment_dead_round_trips_with_its_payload() -> None:
    data = encode(DEAD)
    assert data.startswith(MAGIC)
    assert decode(data) == DEAD
    assert data.endswith(DEAD.raw)


def test_segment_dead_header_names_type_and_version() -> None:
    data = encode(DEAD)
    length = int.from_bytes(data[4:8], "big")
    header = json.loads(data[8 : 8 + length])
    assert (header["type"], header["v"]) == ("segment-dead", 1)
    assert header["reason"] == DEAD.reason and header["attempts"] == 3


@pytest.mark.parametrize(("field", "value"), [("seq", "seven"), ("attempts", None), ("offset", [1])])
def test_segment_dead_with_a_bad_field_is_an_event_decode_error(field: str, value: object) -> None:
    data = encode(DEAD)
    length = int.from_bytes(data[4:8], "big")
    header = json.loads(data[8 : 8 + length])
    header[field] = value
    blob = json.dumps(header).encode()
    with pytest.raises(EventDecodeError, match="segment-dead v1 event has a bad field"):
        decode(MAGIC + len(blob).to_bytes(4, "big") + blob + DEAD.raw)


def test_unknown_segment_dead_version_is_refused() -> None:
    blob = json.dumps({"type": "segment-dead", "v": 2}).encode()
    with pytest.raises(EventDecodeError, match="version 2 is not one this reader accepts"):
        decode(MAGIC + len(blob).to_bytes(4, "big") + blob)
