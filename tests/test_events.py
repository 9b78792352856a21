from __future__ import annotations

import contextlib
import dataclasses
import json
import struct
import time
import types
import typing
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from camflow.errors import EventDecodeError
from camflow.events import (
    ACCEPTED,
    EVENT_TYPES,
    MAGIC,
    MAX_HEADER_BYTES,
    UPGRADES,
    Event,
    RawSegment,
    RenditionRef,
    SegmentReady,
    StreamState,
    StreamStateKind,
    decode,
    encode,
)

FUZZ = settings(database=None, max_examples=500)

# A payload that looks like a frame, JSON and an MP4 box: the reader must not look inside it.
TRICKY_PAYLOAD = MAGIC + struct.pack(">I", 2) + b'{}{"type":"x"}\x00\x00\x00\x18ftypcmfc\xff\xfe\x00' * 50

RAW = RawSegment(
    stream="cam-1",
    epoch="20261121T101500123Z",
    seq=7,
    start=90_000,
    duration=180_000,
    timescale=90_000,
    codecs="avc1.64001f",
    width=1280,
    height=720,
    wall_clock=1_795_256_100.25,
    data=TRICKY_PAYLOAD,
)
REF = RenditionRef(
    name="360p",
    width=640,
    height=360,
    bandwidth=800_000,
    codecs="avc1.4d401e",
    init_key="streams/cam-1/20261121T101500123Z/360p/init.mp4",
    key="streams/cam-1/20261121T101500123Z/360p/00000007.m4s",
    size=200_000,
)
READY = SegmentReady(
    stream="cam-1",
    epoch="20261121T101500123Z",
    seq=7,
    start=90_000,
    duration=180_000,
    timescale=90_000,
    wall_clock=1_795_256_100.25,
    renditions=(REF, RenditionRef(**{**REF.to_json(), "name": "source", "width": 1280, "height": 720})),
)
STATE = StreamState(
    stream="cam-1",
    epoch="20261121T101500123Z",
    state=StreamStateKind.OFFLINE,
    reason="teardown",
    at=1_795_256_200.5,
    last_seq=41,
)


def frame(header: Any, payload: bytes = b"") -> bytes:
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    return MAGIC + struct.pack(">I", len(blob)) + blob + payload


def header_of(data: bytes) -> dict[str, Any]:
    (length,) = struct.unpack_from(">I", data, 4)
    header: dict[str, Any] = json.loads(data[8 : 8 + length])
    return header


@pytest.mark.parametrize("event", [RAW, READY, STATE], ids=["raw-segment", "segment-ready", "stream-state"])
def test_round_trip(event: RawSegment | SegmentReady | StreamState) -> None:
    assert decode(encode(event)) == event


def test_raw_segment_payload_travels_untouched() -> None:
    data = encode(RAW)
    assert data.endswith(TRICKY_PAYLOAD)
    assert decode(data).data == TRICKY_PAYLOAD  # type: ignore[union-attr]


def test_raw_segment_with_every_byte_value_and_empty_payload() -> None:
    for payload in (bytes(range(256)) * 4, b""):
        event = RawSegment(**{**RAW.__dict__, "data": payload})
        assert decode(encode(event)) == event


def test_stream_state_with_unknown_last_seq_round_trips() -> None:
    event = StreamState(**{**STATE.__dict__, "state": StreamStateKind.LIVE, "last_seq": None})
    assert decode(encode(event)) == event


def test_current_version_is_written() -> None:
    assert header_of(encode(RAW))["v"] == 3
    assert header_of(encode(READY))["v"] == 4  # v4: audio renditions
    assert header_of(encode(STATE))["type"] == "stream-state"


# Version-1 headers as a reader from before each field existed wrote them, built by hand.
V1_RAW = {k: v for k, v in header_of(encode(RAW)).items() if k != "wall_clock"} | {"v": 1}
V1_READY = {k: v for k, v in header_of(encode(READY)).items() if k != "wall_clock"} | {"v": 1}
V1_STATE = {k: v for k, v in header_of(encode(STATE)).items() if k != "last_seq"} | {"v": 1}


def test_v1_raw_segment_is_upgraded_with_the_time_received() -> None:
    before = time.time()
    event = decode(frame(V1_RAW, TRICKY_PAYLOAD))
    assert isinstance(event, RawSegment)
    assert before <= event.wall_clock <= time.time()
    assert event == RawSegment(**{**RAW.__dict__, "wall_clock": event.wall_clock})


def test_v1_segment_ready_is_upgraded_with_the_time_received() -> None:
    before = time.time()
    event = decode(frame(V1_READY))
    assert isinstance(event, SegmentReady)
    assert before <= event.wall_clock <= time.time()
    assert event.renditions == READY.renditions
    assert (event.stream, event.seq, event.start, event.duration) == (READY.stream, 7, 90_000, 180_000)


def test_v3_flags_round_trip() -> None:
    raw = RawSegment(**{**RAW.__dict__, "damaged": True, "discontinuity": True})
    ready = SegmentReady(**{**READY.__dict__, "damaged": True, "discontinuity": False})
    assert decode(encode(raw)) == raw and decode(encode(ready)) == ready
    assert header_of(encode(raw))["discontinuity"] is True


# Version-2 headers: no damaged / discontinuity flags.
V3_FLAGS = ("damaged", "discontinuity")
V2_RAW = {k: v for k, v in header_of(encode(RAW)).items() if k not in V3_FLAGS} | {"v": 2}
V2_READY = {k: v for k, v in header_of(encode(READY)).items() if k not in V3_FLAGS} | {"v": 2}


def test_v2_segments_are_read_as_undamaged_and_continuous() -> None:
    assert decode(frame(V2_RAW, TRICKY_PAYLOAD)) == RAW
    assert decode(frame(V2_READY)) == READY
    v1 = decode(frame({k: v for k, v in V2_RAW.items() if k != "wall_clock"} | {"v": 1}))
    assert isinstance(v1, RawSegment) and not v1.damaged and not v1.discontinuity


@pytest.mark.parametrize("value", [1, "true", None])
def test_v3_flag_must_be_a_boolean(value: object) -> None:
    with pytest.raises(EventDecodeError, match=r"discontinuity .*expected true or false"):
        decode(frame({**header_of(encode(READY)), "discontinuity": value}))


def test_v1_stream_state_is_upgraded_with_unknown_last_seq() -> None:
    assert decode(frame(V1_STATE)) == StreamState(**{**STATE.__dict__, "last_seq": None})


BAD_FRAMES = {
    "empty": (b"", "shorter than its 8-byte frame"),
    "truncated frame header": (MAGIC + b"\x00\x00", "shorter than its 8-byte frame"),
    "bad magic": (b"CFE2" + encode(STATE)[4:], "expected b'CFE1'"),
    "header length past the end": (encode(STATE)[:-3], "exceeds the"),
    "header length over the limit": (MAGIC + struct.pack(">I", MAX_HEADER_BYTES + 1), "exceeds the"),
    "header not JSON": (frame(b"{not json"), "not JSON"),
    "header not UTF-8": (frame(b'{"type":"\xff"}'), "not JSON"),
    "header nested too deep": (frame(b"[" * 100_000 + b"]" * 100_000), "not JSON"),
    "header is a list": (frame([1, 2]), "is a list, expected an object"),
    "header is a string": (frame("raw-segment"), "is a str, expected an object"),
    "unknown type": (frame({**V1_STATE, "type": "stream-gone"}), "'stream-gone' version 1 is not one"),
    "unknown version": (frame({**V1_STATE, "v": 3}), "version 3 is not one"),
    "version 0": (frame({**V1_STATE, "v": 0}), "version 0 is not one"),
    "version as a string": (frame({**V1_STATE, "v": "2"}), "version '2' is not one"),
    "version true": (frame({**V1_STATE, "v": True}), "version True is not one"),
    "type unhashable": (frame({**V1_STATE, "type": ["stream-state"]}), "is not one this reader accepts"),
    "no type": (frame({"v": 2}), "type None version 2"),
    "missing field": (frame({k: v for k, v in V1_RAW.items() if k != "seq"}), "KeyError('seq')"),
    "field of the wrong type": (frame({**V1_RAW, "seq": "seven"}), "'seven'"),
    "unknown state": (frame({**V1_STATE, "state": "exploded"}), "'exploded'"),
    "infinite seq": (frame({**V1_RAW, "seq": float("inf")}), "OverflowError"),
    "huge wall clock": (frame({**header_of(encode(RAW)), "wall_clock": 10**400}), "bad field"),
    "rendition not an object": (frame({**V1_READY, "renditions": ["360p"]}), "bad field"),
    "rendition missing size": (
        frame({**V1_READY, "renditions": [{k: v for k, v in REF.to_json().items() if k != "size"}]}),
        "KeyError('size')",
    ),
}


@pytest.mark.parametrize(("data", "message"), BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_bad_frames_raise_event_decode_error(data: bytes, message: str) -> None:
    with pytest.raises(EventDecodeError) as err:
        decode(data)
    assert message in str(err.value)


@FUZZ
@given(st.binary(max_size=512))
def test_decode_arbitrary_bytes_raises_only_event_decode_error(data: bytes) -> None:
    with contextlib.suppress(EventDecodeError):
        decode(data)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(
    st.sampled_from([V1_RAW, V1_READY, V1_STATE, header_of(encode(RAW)), header_of(encode(READY))]),
    st.sampled_from(["type", "v", "stream", "seq", "wall_clock", "renditions", "state", "at", "last_seq"]),
    JSON,
)
def test_decode_frames_with_one_field_replaced_raises_only_event_decode_error(
    header: dict[str, Any], name: str, value: Any
) -> None:
    with contextlib.suppress(EventDecodeError):
        decode(frame({**header, name: value}, b"payload"))


# --- every event type, derived from its fields -------------------------------------------

FINITE = st.floats(allow_nan=False)  # NaN is never equal to itself; infinities round-trip
COUNTS = st.dictionaries(st.text(max_size=8), st.integers(min_value=0), max_size=4)


def strategy_for(hint: Any) -> st.SearchStrategy[Any]:
    """Any value of the type ``hint``, as the events' fields use them."""
    if hint is float:
        return FINITE
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return st.builds(
            hint,
            **{
                f.name: COUNTS | st.none() if f.name == "corrections" else strategy_for(hints[f.name])
                for f in dataclasses.fields(hint)
            },
        )
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy_for(a) for a in args))
    return st.from_type(hint)


@pytest.mark.parametrize("cls", sorted(EVENT_TYPES.values(), key=lambda c: c.TYPE), ids=lambda c: c.TYPE)
@settings(database=None, max_examples=200)
@given(data=st.data())
def test_every_event_round_trips(cls: type[Event], data: st.DataObject) -> None:
    event = data.draw(strategy_for(cls))
    assert decode(encode(event)) == event


def test_every_accepted_version_upgrades_to_the_current_one() -> None:
    for kind, version in ACCEPTED:
        cls = EVENT_TYPES[kind]
        assert 1 <= version <= cls.VERSION
        assert all((kind, v) in UPGRADES for v in range(version, cls.VERSION)), (kind, version)
    assert all(version < EVENT_TYPES[kind].VERSION for kind, version in UPGRADES)


def test_a_field_added_with_a_default_is_read_as_the_default_when_absent() -> None:
    header = header_of(encode(READY))
    header["renditions"] = [{k: v for k, v in r.items() if k != "frame_rate"} for r in header["renditions"]]
    assert decode(frame(header)) == READY


def test_low_latency_events_round_trip() -> None:
    from camflow.events import PartReady, PlaylistEnd, PlaylistsChanged, RawPart, RenditionRef

    epoch = "20261203T100000000Z"
    ref = RenditionRef(
        "source",
        1280,
        720,
        2_000_000,
        "avc1.64001f",
        f"streams/a/{epoch}/source/init.mp4",
        f"streams/a/{epoch}/source/00000001.002.m4s",
        1234,
    )
    events = [
        RawPart("a", epoch, 1, 180000, 18000, 90000, 2, False, 1.0, "avc1.64001f", 1280, 720, b"\0moof"),
        PartReady("a", epoch, 1, 180000, 18000, 90000, 2, True, 1.0, (ref,), discontinuity=True),
        PlaylistsChanged("a", (PlaylistEnd("source", 12, 3), PlaylistEnd("audio", 12, -1)), 1.5),
    ]
    for event in events:
        assert decode(encode(event)) == event


def test_part_keys_sit_beside_their_segment() -> None:
    from camflow.keys import part_key, segment_key

    epoch = "20261203T100000000Z"
    assert part_key("a", epoch, "source", 7, 3) == f"streams/a/{epoch}/source/00000007.003.m4s"
    assert (
        part_key("a", epoch, "source", 7, 3).rsplit("/", 1)[0]
        == segment_key("a", epoch, "source", 7).rsplit("/", 1)[0]
    )
    with pytest.raises(ValueError):
        part_key("a", epoch, "source", 7, 1000)
