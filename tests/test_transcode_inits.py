"""A live epoch's init sections are written again every INIT_REFRESH_SECONDS, so that the store's
lifecycle rule (expiry by age, a day past the retention at the least) never expires an init
section that a live playlist still names; between refreshes each is written once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from camflow.bus import LocalBus
from camflow.events import TOPIC_RAW, TOPIC_READY, RawSegment, encode
from camflow.store import FileStore
from packager.retention import LIFECYCLE_MARGIN_DAYS
from tests import defaults
from tests.transcode_clips import TIMESCALE, RawClipSegment, cut, make_clip
from transcode import service
from transcode.ladder import parse_ladder
from transcode.service import TranscodeWorker

EPOCH = "20261121T101500123Z"


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> list[RawClipSegment]:
    return cut(make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", 6, "320x180"))


class CountingStore(FileStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts: Counter[str] = Counter()

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.puts[key] += 1
        await super().put(key, data, content_type)


async def init_writes(segments: list[RawClipSegment], root: Path) -> Counter[str]:
    bus, store = LocalBus(), CountingStore(root)
    await store.start()
    out = await bus.subscribe([TOPIC_READY], "test")
    worker = TranscodeWorker(
        bus, store, **defaults.transcoder(ladder=parse_ladder("source,90p:100k"), processes=1, concurrency=1)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(worker.ready.wait(), 30)
    for seg in segments:
        event = RawSegment(
            stream="cam1",
            epoch=EPOCH,
            seq=seg.seq,
            start=seg.start,
            duration=seg.duration,
            timescale=TIMESCALE,
            codecs="avc1.64001e",
            width=320,
            height=180,
            wall_clock=time.time(),
            data=seg.data,
        )
        await bus.publish(TOPIC_RAW, f"cam1/{EPOCH}/{seg.seq}", encode(event))
        assert await out.get(timeout=60) is not None  # one at a time: each write sees the last
    stop.set()
    await asyncio.wait_for(task, 30)
    return Counter({k: n for k, n in store.puts.items() if k.endswith("/init.mp4")})


async def test_an_init_section_is_written_once_between_refreshes(
    segments: list[RawClipSegment], tmp_path: Path
) -> None:
    writes = await init_writes(segments, tmp_path)
    assert len(writes) == 2 and set(writes.values()) == {1}, writes


async def test_a_live_epoch_rewrites_its_init_sections_once_the_refresh_interval_passed(
    segments: list[RawClipSegment], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "INIT_REFRESH_SECONDS", 0.0)  # every segment is past the interval
    writes = await init_writes(segments, tmp_path)
    assert len(segments) >= 3 and set(writes.values()) == {len(segments)}, writes


def test_the_refresh_comes_well_before_the_lifecycle_rule_could_expire_an_init() -> None:
    shortest_rule = LIFECYCLE_MARGIN_DAYS * 86400  # a retention under a day still gets a 1-day rule + margin
    assert shortest_rule >= service.INIT_REFRESH_SECONDS * 4
