"""The packager during a store outage (LocalBus, a FileStore that can be "down"): it waits, commits
nothing it did not write, and a segment held up in a transcoder by the outage is not made a gap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import m3u8
import pytest

from camflow.errors import NotFound
from camflow.events import TOPIC_READY, encode
from camflow.keys import media_playlist_key
from packager.service import Packager
from tests import defaults
from tests.test_packager import EPOCH_A, RecordingBus, ready, seg_uri
from tests.test_store_retry import FlakyStore

GAP_TIMEOUT = 0.3


class Rig:
    def __init__(self, bus: RecordingBus, store: FlakyStore, packager: Packager) -> None:
        self.bus, self.store, self.packager = bus, store, packager

    async def send(self, *seqs: int) -> None:
        for seq in seqs:
            await self.bus.publish(TOPIC_READY, "cam1", encode(ready(EPOCH_A, seq)))

    async def uris(self) -> list[str]:
        try:
            text = (await FlakyStore.get(self.store, media_playlist_key("cam1", "720p"))).decode()
        except (NotFound, Exception):
            return []
        return [s.uri for s in m3u8.loads(text).segments if not s.gap_tag]

    async def until(self, what: str, check: object, timeout: float = 10.0) -> None:
        for _ in range(int(timeout / 0.02)):
            if await check():  # type: ignore[operator]
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{what}: not within {timeout} s")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    bus, store = RecordingBus(), FlakyStore(tmp_path)
    await store.start()
    packager = Packager(
        bus, store, **defaults.packager(gap_timeout=GAP_TIMEOUT, offline_grace=0.0, dvr_window=0.0)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(packager.run(stop))
    await asyncio.wait_for(packager.ready.wait(), 2)
    yield Rig(bus, store, packager)
    store.down = False
    stop.set()
    await asyncio.wait_for(task, 5)


async def written(rig: Rig, n: int) -> bool:
    return len(await rig.uris()) == n


async def test_a_segment_held_up_by_the_outage_is_not_made_a_gap(rig: Rig) -> None:
    await rig.send(0)
    await rig.until("seq 0 written", lambda: written(rig, 1))
    rig.store.down = True
    await rig.send(2)  # seq 1 is in a transcoder that cannot write it while the store is down
    await rig.until("the packager meets the outage", lambda: _down(rig))
    await asyncio.sleep(4 * GAP_TIMEOUT)  # the gap timeout passes during the outage
    committed = len(rig.bus.consumer.committed)
    rig.store.down = False
    await rig.until("the store is back for the packager", lambda: _up(rig))
    await rig.send(1)  # the transcoder writes seq 1 now, well within a gap timeout plus its retry pause
    await rig.until("seq 1 and 2 written", lambda: written(rig, 3))
    assert await rig.uris() == [seg_uri(EPOCH_A, n) for n in range(3)]
    assert rig.packager.stats.gaps == 0 and rig.packager.stats.duplicates == 0
    assert committed == 1  # during the outage only seq 0 was committed
    assert rig.packager.store_outage.outages == 1


async def test_without_an_outage_the_gap_timeout_still_skips(rig: Rig) -> None:
    await rig.send(0, 2)
    await rig.until("the gap is declared", lambda: _gaps(rig))
    assert rig.packager.store_outage.outages == 0


async def _down(rig: Rig) -> bool:
    return not rig.packager.store_outage.up


async def _up(rig: Rig) -> bool:
    return rig.packager.store_outage.up


async def _gaps(rig: Rig) -> bool:
    return rig.packager.stats.gaps == 1
