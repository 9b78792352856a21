"""Event versions are major.minor: a reader takes its own major at any minor (unknown fields
ignored, missing ones defaulted) and older majors through UPGRADES; a newer major is refused
with an EventVersionError. The newer events are hand-built as a newer release would write them
(``tests.newer_events``)."""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any

import pytest

from camflow.errors import EventDecodeError, EventVersionError
from camflow.events import (
    EVENT_TYPES,
    MAGIC,
    RESERVED,
    RenditionRef,
    SegmentReady,
    StreamStateKind,
    decode,
    encode,
)
from tests.newer_events import (
    RawSegmentNextMajor,
    RawSegmentNextMinor,
    RenditionNextMinor,
    SegmentReadyNextMinor,
    StreamStateNextMinor,
    as_today,
)

SPAN: dict[str, Any] = {
    "stream": "cam-1",
    "epoch": "20261203T093000000Z",
    "seq": 3,
    "start": 0,
    "duration": 180_000,
    "timescale": 90_000,
}
RAW_NEXT = RawSegmentNextMinor(
    **SPAN, codecs="avc1.64001f", width=1280, height=720, wall_clock=1.5e9, data=b"\x00moof", lens="tele"
)


def header(data: bytes) -> dict[str, Any]:
    (length,) = struct.unpack_from(">I", data, 4)
    out: dict[str, Any] = json.loads(data[8 : 8 + length])
    return out


def framed(h: dict[str, Any], payload: bytes = b"") -> bytes:
    blob = json.dumps(h).encode()
    return MAGIC + struct.pack(">I", len(blob)) + blob + payload


def test_a_newer_minor_raw_segment_reads_as_today_with_its_new_field_ignored() -> None:
    data = encode(RAW_NEXT)
    assert (header(data)["v"], header(data)["minor"], header(data)["lens"]) == (3, 1, "tele")
    assert decode(data) == as_today(RAW_NEXT)
    assert type(decode(data)).__name__ == "RawSegment"


def test_a_newer_minor_segment_ready_ignores_new_fields_inside_renditions_too() -> None:
    ref = RenditionNextMinor("360p", 640, 360, 800_000, "avc1.4d401e", "i", "k", 9, 25.0, hdr=True)
    event = SegmentReadyNextMinor(**SPAN, wall_clock=1.5e9, renditions=(ref,), origin="edge-box")
    data = encode(event)
    assert header(data)["renditions"][0]["hdr"] is True
    plain = RenditionRef(**{f.name: getattr(ref, f.name) for f in dataclasses.fields(RenditionRef)})
    assert decode(data) == SegmentReady(**SPAN, wall_clock=1.5e9, renditions=(plain,))


def test_a_newer_minor_stream_state_reads_as_today() -> None:
    event = StreamStateNextMinor("cam-1", "e1", StreamStateKind.OFFLINE, "left", 2.0, 7, site="north")
    assert decode(encode(event)).last_seq == 7  # type: ignore[union-attr]


def test_a_minor_0_event_is_written_without_minor_as_before_minors_existed() -> None:
    data = encode(as_today(RAW_NEXT))
    assert "minor" not in header(data)
    assert decode(framed({**header(data), "minor": 0}, b"\x00moof")) == as_today(RAW_NEXT)


def test_a_newer_major_is_an_event_version_error() -> None:
    data = encode(RawSegmentNextMajor(**{**dataclasses.asdict(RAW_NEXT)}))
    with pytest.raises(EventVersionError, match="raw-segment' version 4 is not one this reader accepts"):
        decode(data)


def test_a_type_from_a_newer_release_is_an_event_version_error() -> None:
    with pytest.raises(EventVersionError, match="'camera-moved' version 1"):
        decode(framed({"type": "camera-moved", "v": 1, "stream": "cam-1"}))


@pytest.mark.parametrize("minor", [-1, "1", 1.5, True, None, [1]])
def test_a_minor_that_is_not_a_whole_number_is_malformed_not_a_version(minor: object) -> None:
    with pytest.raises(EventDecodeError, match="minor version") as err:
        decode(framed({**header(encode(RAW_NEXT)), "minor": minor}, b"x"))
    assert not isinstance(err.value, EventVersionError)


@pytest.mark.parametrize("version", ["3", True, None, 3.0])
def test_a_version_that_is_not_an_integer_is_malformed_not_a_version(version: object) -> None:
    with pytest.raises(EventDecodeError, match="is not one this reader accepts") as err:
        decode(framed({**header(encode(RAW_NEXT)), "v": version}, b"x"))
    assert not isinstance(err.value, EventVersionError)


def test_no_event_field_takes_a_name_of_the_header_itself() -> None:
    for cls in EVENT_TYPES.values():
        assert not {f.name for f in dataclasses.fields(cls)} & set(RESERVED), cls.TYPE


def test_an_older_major_at_any_minor_is_upgraded_with_its_unknown_fields_ignored() -> None:
    v2 = {
        k: v for k, v in header(encode(as_today(RAW_NEXT))).items() if k not in ("damaged", "discontinuity")
    }
    event = decode(framed({**v2, "v": 2, "minor": 7, "lens": "tele"}, b"\x00moof"))
    assert event == as_today(RAW_NEXT)
