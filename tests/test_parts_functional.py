"""Low-latency parts from a real camera: ffmpeg pushes H.264 (libx264 with B-frames, and with
``-tune zerolatency``: none) and AAC over RTSP into the ingest service, embedded (LocalBus) and on
Kafka behind ingest's spool. Each raw part and raw segment is demuxed with PyAV: a segment's parts, in
order, hold exactly its samples (pts, dts, duration, bytes; video and audio), tile its span, start on
its IDR, stay within the part target, share its init section, and only the final one is ``last``.
The median publishing latency (part end, by the camera's clock, to the part on the bus) is printed,
not asserted tightly.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import pytest
from kafka import KafkaConsumer

from camflow.bus import Bus
from camflow.bus.kafka import KafkaBus
from camflow.bus.local import LocalBus
from camflow.events import TOPIC_PARTS, TOPIC_RAW, RawPart, RawSegment, decode
from camflow.mp4 import composition_offsets, split_init
from camflow.tokens import Action, TokenSigner
from ingest.media.audio_path import AudioPath
from ingest.media.cuts import CutPart
from ingest.media.part_sender import PartSender
from ingest.media.publisher import Publisher
from ingest.media.segmenter import Segmenter
from ingest.media.spooled_bus import SpooledBus
from ingest.media.units import AccessUnit
from ingest.service import build_rtsp_server
from tests import defaults, services

pytestmark = pytest.mark.integration
SECONDS = 7
RATE = 25
X264 = {
    "bframes": [],  # the default preset: 3 B-frames, b-adapt, 40 frames of lookahead (1.6 s of encoder delay)
    "zerolatency": ["-tune", "zerolatency"],  # no B-frames, no lookahead
    # B-frames without the lookahead: the latency ingest adds with B-frames, without x264's own delay
    "bframes-short": [
        "-x264-params",
        "bframes=3:b-adapt=0:rc-lookahead=0:mbtree=0:sync-lookahead=0",
        "-threads",
        "1",
    ],
}

Timing = tuple[int | None, int | None, int, bytes]


@dataclass
class Received:
    parts: list[tuple[RawPart, float]] = field(default_factory=list)  # (part, UNIX time on arrival)
    segments: list[RawSegment] = field(default_factory=list)


def ffmpeg_cmd(url: str, x264: Sequence[str]) -> list[str]:
    """A camera: live 320x240 H.264 at 25 fps (1 s GOP: a second IDR inside each 2 s segment) and AAC."""
    return [
        *("ffmpeg", "-loglevel", "error", "-re", "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={RATE}"),
        *("-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"),
        *("-t", str(SECONDS), "-c:v", "libx264", *x264, "-g", str(RATE), "-pix_fmt", "yuv420p"),
        *("-c:a", "aac", "-b:a", "64k", "-ar", "48000", "-ac", "1"),
        *("-f", "rtsp", "-rtsp_transport", "tcp", url),
    ]


async def push(url: str, x264: Sequence[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *ffmpeg_cmd(url, x264), stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), SECONDS + 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()


def timings(data: bytes) -> dict[str, list[Timing]]:
    """Every sample of an fMP4, per track kind: (pts, dts, duration, bytes) in the track's timescale.

    PyAV (FFmpeg's demuxer) gives dts, duration and bytes. Video pts are tfdt-based dts plus the
    ``trun``'s composition offset as written, which is what a browser (MSE) presents: FFmpeg's demuxer
    moves a file's offsets so that the smallest is 0, which would hide a part shifted against its
    segment."""
    out: dict[str, list[Timing]] = {"video": [], "audio": []}
    with av.open(io.BytesIO(data), "r", format="mp4") as container:
        for packet in container.demux():
            if packet.size:
                out[packet.stream.type].append((packet.pts, packet.dts, packet.duration or 0, bytes(packet)))
    offsets = composition_offsets(data, 1)
    assert len(offsets) == len(out["video"])
    out["video"] = [
        ((dts or 0) + cts, dts, d, b) for (_, dts, d, b), cts in zip(out["video"], offsets, strict=True)
    ]
    return out


def check_parts(received: Received, part_target: float) -> list[float]:
    """The part contract against the segments; returns each part's publishing latency (seconds)."""
    target = round(part_target * 90_000)
    segments = {s.seq: s for s in received.segments}
    assert len(segments) >= 3, sorted(segments)
    by_seq: dict[int, list[RawPart]] = {}
    for part, _ in received.parts:
        by_seq.setdefault(part.seq, []).append(part)
    independent_later = 0
    for seq, segment in segments.items():
        parts = by_seq[seq]
        assert [p.part for p in parts] == list(range(len(parts))), seq
        assert [p.last for p in parts] == [False] * (len(parts) - 1) + [True], seq  # incl. the session's end
        assert parts[0].start == segment.start and parts[0].independent
        for a, b in itertools.pairwise(parts):
            assert a.start + a.duration == b.start
        assert parts[-1].start + parts[-1].duration == segment.start + segment.duration
        seg_init, _ = split_init(segment.data)
        whole: dict[str, list[Timing]] = {"video": [], "audio": []}
        for p in parts:
            assert (p.epoch, p.timescale, p.codecs, p.width, p.height) == (
                segment.epoch,
                segment.timescale,
                segment.codecs,
                segment.width,
                segment.height,
            )
            assert split_init(p.data)[0] == seg_init  # same muxer, same init section
            found = timings(p.data)
            assert found["video"], (seq, p.part)
            for kind in whole:
                whole[kind] += found[kind]
            assert p.independent == first_is_keyframe(p.data), (seq, p.part)
            independent_later += p.independent and p.part > 0
            assert p.duration <= target, (seq, p.part, p.duration)
            if p is not parts[-1] and not p.independent:
                assert p.duration >= 0.85 * target, (seq, p.part, p.duration)
        # The key invariant: the parts in order hold exactly the segment's samples, times included.
        expected = timings(segment.data)
        for kind, samples in expected.items():
            diff = next(
                (i for i, (a, b) in enumerate(zip(whole[kind], samples, strict=False)) if a != b), None
            )
            assert whole[kind] == samples, (
                seq,
                kind,
                len(whole[kind]),
                len(samples),
                diff,
                describe(whole, expected, kind, diff),
            )
        assert whole["audio"], seq
    assert independent_later >= 1  # the IDR in the middle of each 2 s segment starts a part
    return [arrived - (p.wall_clock + p.duration / p.timescale) for p, arrived in received.parts]


def describe(
    got: dict[str, list[Timing]], expected: dict[str, list[Timing]], kind: str, at: int | None
) -> str:
    lo = max(0, (at or 0) - 2)
    near = [[t[:3] for t in timed[kind][lo : lo + 5]] for timed in (got, expected)]
    return f"parts {near[0]} segment {near[1]}"


def first_is_keyframe(data: bytes) -> bool:
    with av.open(io.BytesIO(data), "r", format="mp4") as container:
        for packet in container.demux(video=0):
            return bool(packet.is_keyframe)
    return False


async def collect(bus: Bus, stop: asyncio.Event, received: Received) -> None:
    parts = await bus.subscribe([TOPIC_PARTS], "test-parts")
    raw = await bus.subscribe([TOPIC_RAW], "test-raw")
    while not stop.is_set():
        for consumer in (parts, raw):
            message = await consumer.get(timeout=0.01)
            if message is None:
                continue
            event = decode(message.value)
            if isinstance(event, RawPart):
                received.parts.append((event, time.time()))
            elif isinstance(event, RawSegment):
                received.segments.append(event)


async def ingest_session(
    bus: Bus, x264: Sequence[str], part_target: float | None, reader: Bus | None
) -> Received:
    """A camera's session into the RTSP ingest service on ``bus``; what ``reader`` (if any) received."""
    signer = TokenSigner(b"k" * 32)
    server = build_rtsp_server(
        bus, signer, host="127.0.0.1", port=0, **defaults.rtsp_server(udp_ports=None, part_target=part_target)
    )
    received, stop = Received(), asyncio.Event()
    collector = asyncio.create_task(collect(reader, stop, received) if reader else stop.wait())
    await asyncio.sleep(0.1)
    await server.start()
    try:
        token = signer.issue("llcam", Action.PUBLISH, 600)
        await push(f"rtsp://127.0.0.1:{server.port}/llcam?token={token}", x264)
        await asyncio.sleep(0.5)
    finally:
        await server.stop()
    await asyncio.sleep(0.5)
    stop.set()
    await collector
    return received


@pytest.mark.parametrize("encoder", ["bframes", "zerolatency", "bframes-short"])
async def test_parts_hold_the_segments_samples_embedded(encoder: str) -> None:
    bus = LocalBus()
    await bus.start()
    try:
        received = await ingest_session(bus, X264[encoder], 0.2, bus)
    finally:
        await bus.close()
    latencies = check_parts(received, 0.2)
    median = statistics.median(latencies) * 1000
    print(f"\n{encoder}: {len(received.parts)} parts, publishing latency median {median:.0f} ms")


async def test_no_low_latency_cuts_no_part() -> None:
    bus = LocalBus()
    await bus.start()
    try:
        received = await ingest_session(bus, X264["zerolatency"], None, bus)
    finally:
        await bus.close()
    assert received.segments and not received.parts


def read_kafka(prefix: str, bootstrap: str, stop: threading.Event, out: Received) -> None:
    """kafka-python reading the raw-part and raw-segment topics from their start, noting when each part
    arrived."""
    topics = (prefix + TOPIC_PARTS, prefix + TOPIC_RAW)
    consumer = KafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    try:
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=50).values():
                for record in records:
                    event = decode(record.value)
                    if isinstance(event, RawPart):
                        assert record.topic == topics[0] and record.key == event.stream.encode()
                        out.parts.append((event, time.time()))
                    elif isinstance(event, RawSegment):
                        out.segments.append(event)
    finally:
        consumer.close()


@pytest.mark.parametrize("encoder", ["bframes", "zerolatency"])
async def test_parts_on_kafka_skip_the_spool(tmp_path: Path, encoder: str) -> None:
    bootstrap = services.require("kafka")
    prefix = f"t{uuid.uuid4().hex[:8]}."
    kafka = KafkaBus(bootstrap, client_id="camflow-test", prefix=prefix)
    await kafka.start()
    spooled = SpooledBus(kafka, directory=tmp_path / "spool", max_bytes=1 << 30)
    await spooled.start()
    stop, received = threading.Event(), Received()
    reader = threading.Thread(target=read_kafka, args=(prefix, bootstrap, stop, received))
    reader.start()
    try:
        await asyncio.sleep(2.0)  # the reader has its partitions before the first part
        await ingest_session(spooled, X264[encoder], 0.2, None)
        assert await spooled.drain(30)  # segments (and states) through the spool
        deadline = time.monotonic() + 30
        while len(received.segments) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.to_thread(reader.join, 30)
        await spooled.close()
        await kafka.close()
    latencies = check_parts(received, 0.2)  # in order as published: one partition per stream
    median = statistics.median(latencies) * 1000
    print(f"\nkafka {encoder}: {len(received.parts)} parts, publishing latency median {median:.0f} ms")
    assert statistics.median(latencies) < 3.0


async def test_a_part_waits_for_its_audio_at_most_the_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per part, on the camera's path: from the arrival of the frame that completes it (no B-frames: the
    frame after its last) to the part queued for the bus. ffmpeg's RTP muxer sends AAC in packets of
    several frames, so the audio of a part's end is often late (by less than a part): the part waits
    for it at most the hold (50 ms at 0.2 s parts), then leaves with what arrived."""
    arrived: dict[int, float] = {}  # timeline pts of a video unit -> when it reached the publisher
    cut: dict[tuple[int, int], float] = {}  # (seq, part) -> when the segmenter cut it
    sent: dict[tuple[int, int], tuple[float, RawPart]] = {}
    push_video, take_parts, send = Publisher.push_video, Segmenter.take_parts, PartSender.send

    def timed_push(self: Publisher, unit: AccessUnit) -> None:
        at = time.monotonic()
        push_video(self, unit)
        if self.segmenter.base is not None:
            arrived[self.segmenter.to_timeline(unit.pts)] = at

    def timed_take(self: Segmenter) -> list[CutPart]:
        parts = take_parts(self)
        for part in parts:
            cut[(part.seq, part.part)] = time.monotonic()
        return parts

    def timed_send(self: PartSender, event: RawPart) -> None:
        sent[(event.seq, event.part)] = (time.monotonic(), event)
        send(self, event)

    monkeypatch.setattr(Publisher, "push_video", timed_push)
    monkeypatch.setattr(Segmenter, "take_parts", timed_take)
    monkeypatch.setattr(PartSender, "send", timed_send)
    bus = LocalBus()
    await bus.start()
    try:
        received = await ingest_session(bus, X264["zerolatency"], 0.2, bus)
    finally:
        await bus.close()
    check_parts(received, 0.2)  # the contract holds
    waits, since_last = [], []
    # not the stream's first part (it waits for the stream's first audio), nor the session's end
    for key, (at, event) in sorted(sent.items())[1:-1]:
        waits.append(at - cut[key])
        ends = [t for t in arrived if event.start <= t < event.start + event.duration]
        since_last.append(at - arrived[max(ends)])
    waits.sort()
    p50, p95 = statistics.median(waits), waits[int(0.95 * len(waits))]
    print(
        f"\nparts {len(waits)}: cut -> queued p50 {p50 * 1000:.1f} ms p95 {p95 * 1000:.1f} ms "
        f"max {waits[-1] * 1000:.1f} ms; last frame -> queued p50 "
        f"{statistics.median(since_last) * 1000:.1f} ms (a frame is 40 ms)"
    )
    hold = min(AudioPath.PART_HOLD_SECONDS, 0.2 / 4)
    assert hold == pytest.approx(0.05)
    assert sum(w > 0.02 for w in waits) >= 3, waits  # audio was late for some parts: they were held
    assert p95 <= hold + 0.015 and waits[-1] <= hold + 0.1, waits
