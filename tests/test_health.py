"""The health contract: the sample event, the stall rule, the LocalBus follower and lag, /metrics."""

from __future__ import annotations

import asyncio
import json
import struct

import aiohttp
import pytest

from camflow.bus import LocalBus, consumer_lag
from camflow.errors import EventDecodeError
from camflow.events import MAGIC, TOPIC_HEALTH, HealthSample, StreamStateKind, decode, encode
from camflow.health import HealthBoard, HealthReporter, follow_health, publish_state
from camflow.metrics import MeteredStore, MetricsServer, Readiness, add_source, remove_source, render
from camflow.store import FileStore


def test_health_sample_round_trips_on_the_wire() -> None:
    sample = HealthSample(
        "cam1",
        "ingest",
        "h/1",
        1.5,
        StreamStateKind.STALLED,
        "no segment",
        "E1",
        bitrate=1000.0,
        fps=25.0,
        gop_seconds=2.0,
        timestamp_corrections=1,
        packets_lost=3,
        segment_age=4.5,
    )
    assert decode(encode(sample)) == sample
    bare = HealthSample("cam1", "edge", "h/2", 2.0, viewers=4)
    assert decode(encode(bare)) == bare


def test_health_sample_carries_corrections_by_kind_and_v1_reads_as_none() -> None:
    sample = HealthSample("cam1", "ingest", "h/1", 1.5, corrections={"reordered": 2, "params_inserted": 9})
    back = decode(encode(sample))
    assert isinstance(back, HealthSample) and back.corrections == {"params_inserted": 9, "reordered": 2}
    v1 = {
        **HealthSample("cam1", "ingest", "h/1", 1.5, packets_lost=3).to_json(),
        "type": "health-sample",
        "v": 1,
    }
    del v1["corrections"]
    blob = json.dumps(v1).encode()
    old = decode(MAGIC + struct.pack(">I", len(blob)) + blob)
    assert isinstance(old, HealthSample) and old.corrections is None and old.packets_lost == 3


@pytest.mark.parametrize("bad", [["params_inserted"], {"reordered": -1}, {"reordered": "2"}, {"x": True}])
def test_health_sample_with_bad_corrections_is_refused(bad: object) -> None:
    header = {**HealthSample("cam1", "ingest", "h/2", 2.0).to_json(), "type": "health-sample", "v": 2}
    blob = json.dumps({**header, "corrections": bad}).encode()
    with pytest.raises(EventDecodeError, match=r"corrections .*: expected an object of counts"):
        decode(MAGIC + struct.pack(">I", len(blob)) + blob)


def test_health_sample_with_a_bad_figure_is_refused() -> None:
    header = {**HealthSample("cam1", "edge", "h/2", 2.0).to_json(), "type": "health-sample", "v": 1}
    blob = json.dumps({**header, "viewers": "many"}).encode()
    with pytest.raises(EventDecodeError, match="viewers 'many': expected a number"):
        decode(MAGIC + struct.pack(">I", len(blob)) + blob)


def test_stall_rule() -> None:
    assert publish_state(None, 1.0, 2.0)[0] is StreamStateKind.CONNECTING
    assert publish_state(None, 7.0, 2.0)[0] is StreamStateKind.STALLED
    assert publish_state(3.9, 60.0, 2.0)[0] is StreamStateKind.LIVE
    state, reason = publish_state(4.1, 60.0, 2.0)
    assert state is StreamStateKind.STALLED and "4.1 s" in reason


async def test_reporter_feeds_a_follower_and_a_slow_follower_drops_its_oldest() -> None:
    bus = LocalBus()
    board = HealthBoard()
    stop = asyncio.Event()
    follower = asyncio.create_task(follow_health(bus, board.add, stop))
    await asyncio.sleep(0.05)

    async def collect() -> list[HealthSample]:
        return [HealthSample("cam1", "ingest", "h/1", 1.0, StreamStateKind.LIVE, "ok")]

    reporter = HealthReporter(bus, "ingest", collect, interval=0.05)
    reporter.start()
    for _ in range(100):
        if board.merged("cam1") is not None:
            break
        await asyncio.sleep(0.02)
    await reporter.stop()
    stop.set()
    await follower
    merged = board.merged("cam1")
    assert merged is not None and merged["state"] == "live" and reporter.published >= 1

    slow = await bus.follow([TOPIC_HEALTH])
    for i in range(1100):  # more than the follower's queue: the publisher is never held up
        await bus.publish(TOPIC_HEALTH, "cam1", encode(HealthSample("cam1", "edge", "h", float(i))))
    first = await slow.get(timeout=0.1)
    assert first is not None and isinstance(decode(first.value), HealthSample)
    assert decode(first.value).at == 1100 - 1024  # type: ignore[union-attr]
    await slow.close()


async def test_local_consumer_lag_is_its_queue_depth() -> None:
    bus = LocalBus()
    consumer = await bus.subscribe(["t"], "g")
    for i in range(5):
        await bus.publish("t", "k", bytes([i]))
    assert await consumer_lag(consumer) == 5
    await consumer.get()
    assert await consumer_lag(consumer) == 4
    assert await consumer_lag(object()) is None


async def test_metrics_server_serves_metrics_health_and_readiness(tmp_path: object) -> None:
    ready = {"ok": False}
    readiness = Readiness()
    readiness.add("bus", lambda: ready["ok"])

    def source() -> list[tuple[str, tuple[str, ...], float]]:
        return [("camflow_ingest_frames", ("rtsp",), 7.0), ("camflow_ingest_frames", ("rtsp",), 5.0)]

    add_source(source)
    server = MetricsServer(readiness, host="127.0.0.1", port=0)
    port = await server.start()
    store = MeteredStore(FileStore(tmp_path / "store"))  # type: ignore[operator]
    await store.start()
    await store.put("a/b", b"x")
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            async with http.get(base + "/healthz") as r:
                assert r.status == 200 and (await r.json())["status"] == "ok"
            async with http.get(base + "/readyz") as r:
                assert r.status == 503 and "bus: not yet" in (await r.json())["reasons"]
            ready["ok"] = True
            async with http.get(base + "/readyz") as r:
                assert r.status == 200
            readiness.draining = True
            async with http.get(base + "/readyz") as r:
                assert r.status == 503
            async with http.get(base + "/metrics") as r:
                text = await r.text()
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        assert 'camflow_ingest_frames_total{protocol="rtsp"} 12.0' in text  # summed per label set
        assert 'camflow_store_operation_seconds_count{op="put"}' in text
        assert await store.children(
            "a/"
        ) == [] and 'camflow_store_operation_seconds_count{op="children"}' in (
            render()[0].decode()
        )  # an optional store method is reached through the wrapper, timed
    finally:
        remove_source(source)
        await server.stop()
        await store.close()
    assert b"camflow_ingest_frames_total" not in render()[0]


async def test_kafka_follower_waits_for_its_topic_and_reports_lag() -> None:
    """On the real Kafka: a follower opened before the topics exist gets what is published once they
    do; a group member's lag is end offsets minus its position."""
    import uuid

    from camflow.bus.kafka import KafkaBus
    from tests import services

    kafka = services.require("kafka")
    prefix = f"hu{uuid.uuid4().hex[:10]}."
    reader_bus = KafkaBus(kafka, prefix=prefix)
    follower = await reader_bus.follow([TOPIC_HEALTH], since=10.0)
    bus = KafkaBus(kafka, prefix=prefix)
    await bus.start()  # creates the topics
    try:
        consumer = await bus.subscribe(["camflow.segments.ready"], "lag-test")
        sample = HealthSample("cam1", "ingest", "h/1", 1.0, StreamStateKind.LIVE, "ok")
        got = None
        for _ in range(60):
            await bus.publish(TOPIC_HEALTH, "cam1", encode(sample))
            message = await follower.get(timeout=1.0)
            if message is not None:
                got = decode(message.value)
                break
        assert got == sample
        for i in range(3):
            await bus.publish("camflow.segments.ready", "cam1", bytes([i]))
        lag = None
        for _ in range(30):  # the member needs its assignment first
            await consumer.get(timeout=0.5)  # takes one (or none, before the assignment)
            lag = await consumer_lag(consumer)
            if lag is not None and lag >= 1:
                break
        assert lag is not None and 1 <= lag <= 3
    finally:
        await follower.close()
        await bus.close()


def test_board_sums_viewers_over_edge_instances_and_drops_stale_ones() -> None:
    """Each edge instance (pod) publishes its own viewers: the board sums the newest figure of each,
    while the figure is fresh; a later sample of one instance replaces its earlier one."""
    now = 1000.0
    board = HealthBoard(clock=lambda: now)
    board.add(HealthSample("cam1", "ingest", "ingest-0/1", now - 1, StreamStateKind.LIVE, "ok"))
    assert board.merged("cam1")["viewers"] is None  # type: ignore[index]  # nobody measures it
    board.add(HealthSample("cam1", "edge", "edge-a/7", now - 4, viewers=3))
    board.add(HealthSample("cam1", "edge", "edge-a/7", now - 2, viewers=5))  # same edge, newer
    board.add(HealthSample("cam1", "edge", "edge-a/7", now - 9, viewers=50))  # same edge, older: ignored
    board.add(HealthSample("cam1", "edge", "edge-b/7", now - 1, viewers=2))
    merged = board.merged("cam1")
    assert merged is not None and merged["viewers"] == 7 and merged["state"] == "live"
    board.add(HealthSample("cam1", "edge", "edge-c/9", now - 31, viewers=40))  # a killed pod's last word
    assert board.merged("cam1")["viewers"] == 7  # type: ignore[index]
    board.add(HealthSample("cam1", "edge", "edge-b/7", now, viewers=0))  # its viewers left
    assert board.merged("cam1")["viewers"] == 5  # type: ignore[index]
    later = HealthBoard(clock=lambda: now + 60)
    later.add(HealthSample("cam1", "edge", "edge-a/7", now, viewers=5))
    assert later.merged("cam1")["viewers"] == 0  # type: ignore[index]  # known, but nobody watching now
