"""The master playlist of a stream that stays live is written again every MASTER_REFRESH_SECONDS,
unchanged, so the store's lifecycle rule (expiry by age) never expires it; in between, an unchanged
master is not written again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from camflow.keys import master_playlist_key
from packager import service
from packager.retention import LIFECYCLE_MARGIN_DAYS
from packager.service import Packager
from tests import defaults
from tests.test_packager import STREAM, RecordingBus, RecordingStore, Rig, ready

EPOCH = "20261121T101500123Z"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_unchanged_master_is_written_again_once_the_refresh_interval_passed(tmp_path: Path) -> None:
    bus, store, clock = RecordingBus(), RecordingStore(tmp_path), Clock()
    await store.start()
    packager = Packager(bus, store, **defaults.packager(offline_grace=0.0, dvr_window=0.0, clock=clock))
    stop = asyncio.Event()
    task = asyncio.create_task(packager.run(stop))
    await asyncio.wait_for(packager.ready.wait(), 2)
    rig, master = Rig(bus, store, packager), master_playlist_key(STREAM)

    def master_puts() -> int:
        return sum(key == master for key, _ in store.puts)

    try:
        for seq in range(3):  # the master is written with the first segment, then left alone
            await rig.send(ready(EPOCH, seq))
            await rig.settle()
        assert master_puts() == 1
        before = await rig.text(master)
        clock.now += service.MASTER_REFRESH_SECONDS
        await rig.send(ready(EPOCH, 3))
        await rig.settle()
        assert master_puts() == 2 and await rig.text(master) == before
        await rig.send(ready(EPOCH, 4))
        await rig.settle()
        assert master_puts() == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def test_the_refresh_comes_well_before_the_lifecycle_rule_could_expire_a_master() -> None:
    assert LIFECYCLE_MARGIN_DAYS * 86400 >= service.MASTER_REFRESH_SECONDS * 4
