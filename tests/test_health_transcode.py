"""A transcode worker that falls behind says so in the stream's health: consumer lag and latency.

A real ``TranscodeWorker`` (one process, PyAV) on an in-process bus gets a burst of raw
segments at once; while it works through them its ``TranscodeHealth`` samples carry the stream,
the backlog as ``consumer_lag`` (messages), and then each finished segment's transcode latency;
once it is done the lag is back to 0. The Prometheus source and the lag gauge say the same.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prometheus_client import REGISTRY

from camflow.bus import LocalBus
from camflow.events import TOPIC_RAW, TOPIC_READY, HealthSample, RawSegment, encode
from camflow.store import FileStore
from tests import defaults
from tests.transcode_clips import TIMESCALE, cut, make_clip
from transcode.health import TranscodeHealth
from transcode.ladder import parse_ladder
from transcode.service import GROUP, TranscodeWorker

EPOCH = "20261121T101500123Z"


async def test_a_worker_behind_reports_lag_then_latency(tmp_path: Path) -> None:
    segments = cut(make_clip(tmp_path / "clip.mp4", 8, "320x180", gop=30))
    assert len(segments) >= 4
    bus = LocalBus()
    store = FileStore(tmp_path / "store")
    await store.start()
    ready = await bus.subscribe([TOPIC_READY], "test-ready")
    worker = TranscodeWorker(
        bus, store, **defaults.transcoder(ladder=parse_ladder("source,144p"), processes=1, concurrency=1)
    )
    health = TranscodeHealth(worker)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.ready.wait(), 60)
        for s in segments:
            event = RawSegment(
                "cam1",
                EPOCH,
                s.seq,
                s.start,
                s.duration,
                TIMESCALE,
                "avc1.64000d",
                320,
                180,
                time.time(),
                s.data,
            )
            await bus.publish(TOPIC_RAW, f"cam1/{EPOCH}/{s.seq}", encode(event))
        behind: list[HealthSample] = []
        done = 0
        deadline = time.monotonic() + 120
        while done < len(segments) and time.monotonic() < deadline:
            for sample in await health.collect():
                if sample.consumer_lag:
                    behind.append(sample)
            if await ready.get(timeout=0.2) is not None:
                done += 1
        assert done == len(segments)
        assert behind, "no sample showed the backlog"
        assert all(s.stream == "cam1" and s.service == "transcode" for s in behind)
        assert max(s.consumer_lag or 0 for s in behind) >= 2
        final = await health.collect()
        assert [s.stream for s in final] == ["cam1"]
        assert final[0].consumer_lag == 0 and (final[0].transcode_latency or 0) > 0
        assert REGISTRY.get_sample_value("camflow_consumer_lag_messages", {"group": GROUP}) == 0
        counters = {name: value for name, labels, value in health.samples() if labels in ((), ("ok",))}
        assert counters["camflow_transcode_segments"] == len(segments)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await store.close()
