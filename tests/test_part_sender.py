"""Parts from the publisher: muxed like their segment, live only (never spooled), and dropped, counted and
logged once per interval when the bus cannot take them, while segments keep flowing."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import av
import pytest
from structlog.testing import capture_logs

from camflow.events import TOPIC_PARTS, TOPIC_RAW, TOPIC_STREAMS, RawPart, decode
from camflow.log import get_logger
from camflow.mp4 import split_init
from ingest.media.mux import SegmentMuxer, Vp8Muxer
from ingest.media.part_sender import CLOSE_SECONDS, PartSender
from ingest.media.publisher import Publisher
from ingest.media.segmenter import Segmenter
from ingest.media.spooled_bus import SpooledBus
from ingest.media.units import AccessUnit
from ingest.sources.whip.media import vp8_unit
from tests.test_mux_transcode import access_units, make_clip
from tests.test_parts_functional import timings
from tests.test_whip_media import encoded


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> list[AccessUnit]:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    make_clip(path)  # 6 s, 30 fps, B-frames, an IDR every 2 s
    return access_units(path)


class Bus:
    """Takes segments and states at once; parts as ``parts`` says: ``ok``, ``hang`` or ``fail``."""

    def __init__(self, parts: str) -> None:
        self.parts_mode = parts
        self.topics: list[str] = []
        self.parts: list[RawPart] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Mapping[str, bytes] | None = None
    ) -> None:
        if topic == TOPIC_PARTS:
            if self.parts_mode == "hang":
                await asyncio.Event().wait()
            if self.parts_mode == "fail":
                raise ConnectionError("broker down")
            if self.parts_mode == "slow":  # a round trip of 0.5 s, slower than a part, but acknowledged
                await asyncio.sleep(0.5)
            if self.parts_mode == "swallow":  # completes as it is cancelled (3.11's wait_for did this)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0.02)
            event = decode(value)
            assert isinstance(event, RawPart) and key == event.stream
            self.parts.append(event)
        self.topics.append(topic)

    async def subscribe(self, topics: Sequence[str], group: str) -> object:
        raise NotImplementedError


def test_parts_mux_like_their_segment(units: list[AccessUnit]) -> None:
    segmenter, muxer = Segmenter(target=2.0, part_target=0.2), SegmentMuxer()
    parts: dict[int, list[bytes]] = {}
    segments: dict[int, bytes] = {}
    for unit in units:
        done = segmenter.push(unit)
        for part in segmenter.take_parts():
            parts.setdefault(part.seq, []).append(muxer.mux(part))
        segments.update({s.seq: muxer.mux(s) for s in done})
    assert len(segments) == 2 and all(len(parts[seq]) == 10 for seq in segments)
    for seq, data in segments.items():
        whole = [t for p in parts[seq] for t in timings(p)["video"]]
        assert whole == timings(data)["video"]
        assert any(pts != dts for pts, dts, _, _ in whole)  # B-frames
        assert {split_init(p)[0] for p in parts[seq]} == {split_init(data)[0]}


async def run(bus: Bus, units: list[AccessUnit], publisher_bus: object = None) -> Publisher:
    publisher = Publisher(
        publisher_bus or bus,  # type: ignore[arg-type]
        "cam",
        codec="h264",
        segment_target=2.0,
        part_target=0.2,
        part_bus=bus if publisher_bus is not None else None,  # type: ignore[arg-type]
    )
    await publisher.start()
    for unit in units:
        started = time.monotonic()
        publisher.push_video(unit)
        assert time.monotonic() - started < 0.5  # the camera's path never waits for the bus
        await asyncio.sleep(0)
    await publisher.close("teardown")
    return publisher


async def test_parts_reach_the_bus_in_order(units: list[AccessUnit]) -> None:
    bus = Bus("ok")
    publisher = await run(bus, units)
    spans = [(p.seq, p.part) for p in bus.parts]
    assert spans == sorted(spans) and len(spans) == 30 and bus.parts[0].independent
    assert bus.topics.count(TOPIC_RAW) == 3 and publisher.corrections()["parts_dropped"] == 0


@pytest.mark.parametrize("mode", ["hang", "fail"])
async def test_a_bus_down_drops_parts_counted_and_logged_once(
    units: list[AccessUnit], mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ingest.media.part_sender.PUBLISH_TIMEOUT", 0.05)
    monkeypatch.setattr("ingest.media.part_sender.CLOSE_SECONDS", 0.2)
    bus = Bus(mode)
    with capture_logs() as logs:
        publisher = await run(bus, units)
    assert bus.topics.count(TOPIC_RAW) == 3  # segments unaffected
    assert bus.topics[0] == TOPIC_STREAMS and bus.topics[-1] == TOPIC_STREAMS
    assert publisher.parts is not None and publisher.parts.cut == 30 and publisher.parts.published == 0
    assert publisher.corrections()["parts_dropped"] == 30
    dropped = [entry for entry in logs if entry["event"] == "parts_dropped"]
    assert len(dropped) == 1 and dropped[0]["stream_id"] == "cam"  # once per interval, not per part


async def test_a_publish_that_swallows_the_cancel_does_not_hang_the_session_end() -> None:
    """A publish that completes as the sender is cancelled (the cancellation swallowed on its way, as
    3.11's wait_for did inside KafkaBus.publish) used to leave the sender waiting for parts forever,
    and the session's end (its last segment, its offline state) behind it: the playlists never
    ended (seen on Kafka in the suite). The sender's close is bounded whatever the publish does."""
    bus = Bus("swallow")
    sender = PartSender(bus, "cam", get_logger("test"))  # type: ignore[arg-type]
    sender.start()
    for part in range(3):
        sender.send(RawPart("cam", "20261203T100000000Z", 0, part * 18000, 18000, 90000, part, part == 0, 1.0,
                            "avc1.64001f", 320, 240, b"\0"))  # fmt: skip
    await asyncio.sleep(0.03)  # the sender is in a publish
    started = time.monotonic()
    async with asyncio.timeout(10):
        await sender.close()
    assert time.monotonic() - started < CLOSE_SECONDS + 1


async def test_a_round_trip_slower_than_a_part_drops_nothing() -> None:
    """A loaded machine's Kafka acknowledges a part in 0.5 s while the camera cuts one every 0.2 s: one
    publish at a time fell behind and dropped parts (seen in CI); several in flight keep up, in order."""
    bus = Bus("slow")
    sender = PartSender(bus, "cam", get_logger("test"))  # type: ignore[arg-type]
    sender.start()
    for part in range(15):
        sender.send(RawPart("cam", "20261203T100000000Z", part // 5, part % 5 * 18000, 18000, 90000, part % 5,
                            part % 5 == 0, 1.0, "avc1.64001f", 320, 240, b"\0"))  # fmt: skip
        await asyncio.sleep(0.2)
    await sender.close()
    assert sender.counters.parts_dropped == 0 and sender.published == 15
    assert [(p.seq, p.part) for p in bus.parts] == [(n // 5, n % 5) for n in range(15)]


async def test_parts_skip_the_spool(units: list[AccessUnit], tmp_path: Path) -> None:
    bus = Bus("ok")
    spooled = SpooledBus(bus, directory=tmp_path / "spool", max_bytes=1 << 30, fsync=False)  # type: ignore[arg-type]
    await spooled.start()
    try:
        publisher = Publisher(spooled, "cam", codec="h264", segment_target=2.0, part_target=0.2)
        assert publisher.parts is not None and publisher.parts.bus is bus  # type: ignore[comparison-overlap]
        off = Publisher(spooled, "cam2", codec="h264", segment_target=2.0)
        assert off.parts is None and off.segmenter.part_ticks is None
    finally:
        await spooled.close()


def test_vp8_parts_are_nut_like_their_segments() -> None:
    frames = encoded("libvpx", 75, gop=30)  # 2.5 s at 30 fps, a key frame every second
    segmenter, muxer = Segmenter(target=2.0, part_target=0.2), Vp8Muxer()
    parts, segments = [], []
    for i, data in enumerate(frames):
        segments += segmenter.push(vp8_unit(data, 1234 + i * 3000))
        parts += segmenter.take_parts()
    assert len(segments) == 1 and len([p for p in parts if p.seq == 0]) == 10
    for part in parts:
        with av.open(io.BytesIO(muxer.mux(part)), "r", format="nut") as container:
            pts = [p.pts for p in container.demux(video=0) if p.size]
        assert pts == [s.pts for s in part.samples]
