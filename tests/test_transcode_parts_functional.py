"""The part worker of a real `camflow transcode` on the real Kafka and MinIO, and its latency.

- Raw parts published on ``camflow.parts.raw`` come back as part-ready events on
  ``camflow.segments.ready``; the part objects fetched from MinIO, after their init section, decode
  (PyAV, ffprobe) with each part at its own time, and a segment's parts add up to its pictures.
  The raw segments sent after them make the segment workers write their init sections over the
  part worker's: byte for byte the same, for the source copy, the audio copy and an encoded rung.
  The part worker's commits cover every part. With ``--no-low-latency`` it does not run.
- ``test_part_latency`` measures part consumed → part-ready published at the camera's pace
  (200 ms parts of 720p30), for the copies alone (``source`` + ``audio``) and with a 360p rung,
  embedded (LocalBus + file store) and on Kafka + MinIO; it prints the figures
  (docs/low-latency.md, "Transcode: part workers").
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import time
import uuid
from pathlib import Path

import av
import pytest

from camflow.bus import Bus, LocalBus
from camflow.bus.kafka import KafkaBus
from camflow.events import TOPIC_PARTS, TOPIC_RAW, TOPIC_READY, PartReady, SegmentReady, decode, encode
from camflow.mp4 import base_media_decode_times
from camflow.store import FileStore, Store
from camflow.store.s3 import S3Location, S3Store
from tests import services
from tests.kafka_groups import committed
from tests.part_clips import TIMESCALE, ClipSegment, cut, make_clip
from tests.process import camflow_run
from tests.process import camflow_service as service
from transcode.ladder import parse_ladder
from transcode.parts import GROUP, PartWorker
from transcode.stats import percentile

pytestmark = pytest.mark.integration


def backends() -> tuple[str, str, str]:
    """(kafka bootstrap, unique topic prefix, unique S3 URL)."""
    kafka, s3 = services.require("kafka"), services.require("s3")
    run_id = uuid.uuid4().hex[:10]
    return kafka, f"t{run_id}.", f"{s3.rstrip('/')}/{run_id}"


async def collect(bus: Bus, want: int, kinds: tuple[type, ...], timeout: float = 120) -> list[object]:
    consumer = await bus.subscribe([TOPIC_READY], f"test-{uuid.uuid4().hex[:6]}")
    got: list[object] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < want and time.monotonic() < deadline:
            message = await consumer.get(timeout=1.0)
            if message is not None:
                event = decode(message.value)
                if isinstance(event, kinds):
                    got.append(event)
    finally:
        await consumer.close()
    return got


def ffprobe(data: bytes, tmp: Path) -> dict[str, object]:
    path = tmp / f"probe-{uuid.uuid4().hex[:6]}.mp4"
    path.write_bytes(data)
    out = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-show_entries", "format=start_time,duration", "-count_frames"),
            *("-show_entries", "stream=nb_read_frames,codec_name", "-of", "json", str(path)),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_parts_through_kafka_and_minio(tmp_path: Path) -> None:
    kafka, prefix, s3 = backends()
    segs = cut(make_clip(tmp_path / "clip.mp4", 6, "640x360"))
    parts = [p for seg in segs for p in seg.raw_parts("cam1", "avc1.64001e", time.time())]
    args = ["transcode", "--kafka", kafka, "--kafka-prefix", prefix, "--s3", s3, "--processes", "1"]
    args += ["--ladder", "source,180p:200k", "--log-level", "debug"]

    async def scenario() -> tuple[
        list[object], list[object], dict[str, bytes], dict[str, bytes], dict[str, bytes]
    ]:
        bus, store = KafkaBus(kafka, prefix=prefix), S3Store(S3Location.parse(s3))
        await bus.start()
        await store.start()
        try:
            # a part's copies and audio in one part-ready, its rung in a second
            reader = asyncio.create_task(collect(bus, 2 * len(parts), (PartReady,)))
            await asyncio.sleep(3)  # the reader's group joined: it reads from the start anyway
            for part in parts:
                await bus.publish(TOPIC_PARTS, part.stream, encode(part))
            ready = await reader
            assert len(ready) == 2 * len(parts), ready
            first = [r for e in ready[:2] if isinstance(e, PartReady) for r in e.renditions]
            inits = {r.name: await store.get(r.init_key) for r in first}
            objects = {}
            for event in ready:
                assert isinstance(event, PartReady)
                for ref in event.renditions:
                    objects[ref.key] = await store.get(ref.key)
            # The segments, after: the segment workers write their init sections over the parts'.
            reader = asyncio.create_task(collect(bus, len(segs), (SegmentReady,)))
            await asyncio.sleep(3)
            for seg in segs:
                await bus.publish(
                    TOPIC_RAW, "cam1", encode(seg.raw_segment("cam1", "avc1.64001e", time.time()))
                )
            done = await reader
            assert len(done) == len(segs), done
            after = {r.name: await store.get(r.init_key) for r in first}
            return ready, done, inits, after, objects
        finally:
            await store.close()
            await bus.close()

    with service(tmp_path, "transcode", args, {}) as proc:
        ready, _, inits, after, objects = asyncio.run(scenario())
        deadline = time.monotonic() + 30
        while (
            committed(kafka, prefix + GROUP, prefix + TOPIC_PARTS) < len(parts)
            and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        assert committed(kafka, prefix + GROUP, prefix + TOPIC_PARTS) == len(parts)
        assert proc.poll() is None
    assert sorted(inits) == ["180p", "audio", "source"]
    for name in inits:  # one EXT-X-MAP for a rendition's parts and segments
        assert inits[name] == after[name], name
    events = [e for e in ready if isinstance(e, PartReady)]
    assert [(e.seq, e.part) for e in events] == [(p.seq, p.part) for p in parts for _ in range(2)]
    assert [[r.name for r in e.renditions] for e in events] == [["source", "audio"], ["180p"]] * len(parts)
    seg = segs[1]
    for name in ("source", "180p", "audio"):
        refs = [r for e in events if e.seq == seg.seq for r in e.renditions if r.name == name]
        assert len(refs) == len(seg.parts)
        media = [objects[r.key] for r in refs]
        probe = ffprobe(inits[name] + b"".join(media), tmp_path)
        fmt, streams = probe["format"], probe["streams"]
        assert isinstance(fmt, dict) and isinstance(streams, list)
        assert abs(float(fmt["start_time"]) - seg.start / TIMESCALE) < 0.05, (name, fmt)
        # an fMP4's duration, to ffprobe, runs from the timeline's zero to its last sample's end
        assert abs(float(fmt["duration"]) - seg.end / TIMESCALE) < 0.1, (name, fmt)
        if name != "audio":
            assert int(streams[0]["nb_read_frames"]) == 60, (name, streams)
            # each part at its own time on the epoch's timeline
            assert [base_media_decode_times(m)[0] for m in media] == [p[0] for p in seg.parts]
            with av.open(io.BytesIO(inits[name] + media[0]), "r", format="mp4") as container:
                assert next(container.demux(video=0)).is_keyframe  # part 0 is independent
    log = (tmp_path / "transcode.err").read_text()
    assert '"event": "part_worker_started"' in log


def test_no_low_latency_runs_no_part_worker(tmp_path: Path) -> None:
    kafka, prefix, s3 = backends()
    args = ["transcode", "--kafka", kafka, "--kafka-prefix", prefix, "--s3", s3, "--processes", "1"]
    with service(tmp_path, "transcode", [*args, "--no-low-latency"], {}):
        pass
    log = (tmp_path / "transcode.err").read_text()
    assert '"event": "transcoder_started"' in log and "part_worker_started" not in log


@pytest.mark.parametrize("extra", [[], ["--no-low-latency"]])
def test_camflow_run_embeds_the_part_worker(tmp_path: Path, extra: list[str]) -> None:
    with camflow_run(tmp_path, ["--processes", "1", *extra]) as cf:
        deadline = time.monotonic() + 30
        while '"event": "transcoder_started"' not in cf.log and time.monotonic() < deadline:
            time.sleep(0.2)
    assert '"event": "transcoder_started"' in cf.log
    assert ("part_worker_started" in cf.log) == (not extra)


# --- latency -----------------------------------------------------------------------------------


async def paced(
    bus: Bus, store: Store, segs: list[ClipSegment], ladder: str
) -> tuple[list[float], list[float]]:
    """Parts published at the camera's pace; the worker's consumed → part-ready seconds of each: to
    its last part-ready (every rendition out), and to its first (the copies and audio)."""
    await store.start()
    worker = PartWorker(bus, store, ladder=parse_ladder(ladder))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(worker.ready.wait(), 60)
    parts = [p for seg in segs for p in seg.raw_parts("cam1", "avc1.64001f", time.time())]
    warm = len(segs[0].parts)  # the first segment: the group's assignment, the encoders' start
    try:
        for i, part in enumerate(parts):
            started = time.monotonic()
            await bus.publish(TOPIC_PARTS, part.stream, encode(part))
            if i == warm - 1:
                deadline = time.monotonic() + 60
                while worker.stats.parts < warm and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                worker.stats.latencies.clear()
                worker.stats.first.clear()
                continue
            await asyncio.sleep(max(0.0, part.duration / TIMESCALE - (time.monotonic() - started)))
        deadline = time.monotonic() + 60
        while worker.stats.parts < len(parts) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert worker.stats.parts == len(parts)
        print(where_of(bus), ladder, worker.stats.snapshot())
        return list(worker.stats.latencies), list(worker.stats.first)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await store.close()


def where_of(bus: Bus) -> str:
    return "embedded" if isinstance(bus, LocalBus) else "kafka+minio"


def test_part_latency(tmp_path: Path) -> None:
    kafka, prefix, s3 = backends()
    segs = cut(make_clip(tmp_path / "clip720.mp4", 16, "1280x720"))
    figures: dict[str, tuple[float, float, float, float]] = {}

    async def measure(where: str, ladder: str) -> None:
        if where == "embedded":
            bus: Bus = LocalBus()
            store: Store = FileStore(tmp_path / f"store-{ladder}")
        else:
            bus = KafkaBus(kafka, prefix=f"{prefix}{ladder.replace(',', '-')}.")
            store = S3Store(S3Location.parse(s3))
        await bus.start()
        try:
            seconds, first = await paced(bus, store, segs, ladder)
        finally:
            await bus.close()
        figures[f"{where} {ladder}"] = (
            percentile(seconds, 50),
            percentile(seconds, 95),
            percentile(first, 50),
            percentile(first, 95),
        )

    for where in ("embedded", "kafka+minio"):
        for ladder in ("source", "source,360p"):
            asyncio.run(measure(where, ladder))
    print("\npart consumed -> its last part-ready published (p50, p95 s), -> its first (the copies):")
    for name, (p50, p95, first50, first95) in figures.items():
        print(f"  {name:28s} {p50:.4f} {p95:.4f}   {first50:.4f} {first95:.4f}")
    for where in ("embedded", "kafka+minio"):  # the copies: well inside LL-HLS's 1-1.5 s budget
        assert figures[f"{where} source"][0] < 1.0, figures
        # the copies' part-ready does not wait for the rung's encode
        assert figures[f"{where} source,360p"][2] < figures[f"{where} source,360p"][0], figures
