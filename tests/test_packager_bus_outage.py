"""The packager during a bus outage: a poll that raises (kafka-python does, while the brokers are
away or just back) is polled again after a pause, counted in ``poll_errors``; it does not end the
service, and what arrives after it is packaged as usual."""

from __future__ import annotations

import asyncio
from pathlib import Path

import m3u8

from camflow.errors import NotFound
from camflow.events import TOPIC_READY, encode
from camflow.keys import media_playlist_key
from camflow.store import FileStore
from packager.service import Packager
from tests import defaults
from tests.test_packager import EPOCH_A, ready, seg_uri
from tests.test_transcode_bus_outage import DownBus
from tests.waits import until


async def test_a_poll_that_fails_is_polled_again(tmp_path: Path) -> None:
    bus, store = DownBus(), FileStore(tmp_path)
    await store.start()
    bus.poll_failures = 2  # the packager's first two polls raise
    packager = Packager(bus, store, **defaults.packager(offline_grace=0.0, dvr_window=0.0))
    stop = asyncio.Event()
    task = asyncio.create_task(packager.run(stop))

    async def listed() -> list[str]:
        try:
            text = (await store.get(media_playlist_key("cam1", "720p"))).decode()
        except NotFound:
            return []
        return [s.uri for s in m3u8.loads(text).segments]

    try:
        await asyncio.wait_for(packager.ready.wait(), 5)
        await until("both failed polls", lambda: bus.poll_failures == 0, timeout=10)
        for seq in range(2):
            await bus.publish(TOPIC_READY, "cam1", encode(ready(EPOCH_A, seq)))
        for _ in range(500):
            if len(await listed()) == 2 or task.done():
                break
            await asyncio.sleep(0.02)
        assert not task.done(), task.exception() if task.done() else None
        assert await listed() == [seg_uri(EPOCH_A, n) for n in range(2)]
        assert packager.stats.poll_errors == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
