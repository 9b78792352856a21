"""The ordered part worker: raw parts in (``camflow.parts.raw``, group ``camflow-transcode-parts``),
every low-latency rendition's part object in the store, a ``part-ready`` out (``camflow.segments.ready``,
keyed by stream, beside the segments' ready events, so the packager sees one order per stream).

Parts are keyed by stream, so one member owns a stream's parts and gets them in order. Per part, in
two groups: its copies and audio (``transcode.part_encoder.StreamParts.begin``: stream copies, a
few ms), then its encoded rungs (``finish``, encoding in the stream's thread while the copies are
written and announced). Per group: each rendition's object at ``camflow.keys.part_key`` and its
init section at ``init_key`` when the store does not hold it yet (byte for byte the segment
workers' init of that rendition and epoch: one ``EXT-X-MAP`` serves a rendition's parts and
segments), then a ``PartReady`` naming that group (none for an empty one: rungs skipped). So the
source's part is announced without waiting for the rungs' encode; per rendition the parts still
come in order. Then the commit (``CommitTracker``: streams sharing a partition finish out of order).

CPU: each stream has its own lane, a task and ONE thread (``ThreadPoolExecutor(1)``) that holds
the stream's decoder and encoders: its parts are encoded in order, off the event loop, and
streams run side by side (PyAV releases the GIL while FFmpeg decodes, scales, encodes). Not the
segment workers' process pool: a stream's encoder state must stay with it from one part to the
next, and a part's few pictures would cost more to ship to another process than to encode.

An idle stream's lane (no part for ``idle_seconds``) closes its encoders and its thread. A stream
moved to another member (a rebalance) loses its lane; the new owner starts encoding at the next
independent part (``StreamParts``). A part delivered again (committed late, then a rebalance) is
recognised and committed without work. A part that does not read or transcode is counted, logged
once per stream per ``LOG_EVERY`` seconds, put on the dead-letter topic (``camflow.bus.dead``, as a
``segment-dead`` naming the part) and committed: parts are live only, no attempt is repeated.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from camflow.bus import Bus, CommitTracker, Consumer, Message, commit_or_log
from camflow.bus.base import Rebalancing
from camflow.bus.dead import DeadLetters
from camflow.bus.retry import Polls
from camflow.errors import EventDecodeError, StoreRetryStopped
from camflow.events import (
    TOPIC_PARTS,
    TOPIC_READY,
    PartReady,
    RawPart,
    SegmentDead,
    decode,
    encode,
)
from camflow.keys import init_key, part_key
from camflow.log import get_logger
from camflow.metrics import Sample
from camflow.store import Store
from camflow.store.retry import RetryingStore, StoreOutage
from transcode.encoder import RenditionMedia
from transcode.ladder import Rung
from transcode.part_encoder import StreamParts
from transcode.stats import LATENCY_SAMPLES, percentile

GROUP = "camflow-transcode-parts"
IDLE_SECONDS = 10.0  # a stream without a part this long closes its encoders and thread
LOG_EVERY = 10.0  # seconds between part_stats log events, and between bad-part logs of one stream
QUEUE_DEPTH = 32  # parts waiting per stream (~6 s at 200 ms): the consumer waits beyond that
log = get_logger("transcode.parts")


@dataclass
class PartStats:
    """``part_seconds``: part consumed → its last part-ready published (every rendition out);
    ``first_seconds``: → its first (the copies and audio)."""

    parts: int = 0
    duplicates: int = 0
    rungs_skipped: int = 0  # rung objects not made: waiting for an independent part
    tail_dropped: int = 0  # pictures a B-frame source's decoder held at a segment's end (its last part lost)
    bad_parts: int = 0
    decode_errors: int = 0
    commit_errors: int = 0
    publish_failures: int = (
        0  # part-ready events the bus refused (the part is skipped, as ingest drops parts)
    )
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    first: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    # where a part's time goes: waiting in its lane, making its copies and audio, encoding its rungs
    # (beside the copies' writes), each group's store writes and publish
    stages: dict[str, deque[float]] = field(
        default_factory=lambda: {
            k: deque(maxlen=LATENCY_SAMPLES) for k in ("wait", "media", "encode", "write", "publish")
        }
    )

    def snapshot(self) -> dict[str, Any]:
        recent = list(self.latencies)
        return {
            "parts": self.parts,
            "duplicates": self.duplicates,
            "rungs_skipped": self.rungs_skipped,
            "tail_dropped": self.tail_dropped,
            "bad_parts": self.bad_parts,
            "decode_errors": self.decode_errors,
            "commit_errors": self.commit_errors,
            "publish_failures": self.publish_failures,
            "part_p50_seconds": round(percentile(recent, 50), 4),
            "part_p95_seconds": round(percentile(recent, 95), 4),
            "first_p50_seconds": round(percentile(list(self.first), 50), 4),
            "first_p95_seconds": round(percentile(list(self.first), 95), 4),
            **{f"{k}_p50_seconds": round(percentile(list(v), 50), 4) for k, v in self.stages.items()},
        }


@dataclass
class _Lane:
    """One stream's ordered queue, task and thread."""

    state: StreamParts
    queue: asyncio.Queue[tuple[Message, RawPart, int, float]]
    executor: concurrent.futures.ThreadPoolExecutor
    task: asyncio.Task[None] | None = None
    seen: float = 0.0  # monotonic time of its newest part
    logged: float = -LOG_EVERY  # when a bad part of it was last logged


class PartWorker:
    def __init__(
        self, bus: Bus, store: Store, *, ladder: tuple[Rung, ...], idle_seconds: float = IDLE_SECONDS
    ):
        self.bus = bus
        self.store_outage = StoreOutage("transcode-parts")
        self.store = RetryingStore(store, self.store_outage)
        self.ladder = ladder
        self.idle_seconds = idle_seconds
        self.stats = PartStats()
        self.dead_letters = DeadLetters(bus, GROUP)
        self.ready = asyncio.Event()
        self._lanes: dict[str, _Lane] = {}
        self._inits: set[str] = set()  # init keys known to be in the store
        self._commits = CommitTracker()
        self._to_commit: dict[tuple[str, int], Message] = {}  # partition -> its message to commit next
        self._consumer: Consumer | None = None
        self._generation = 0

    @property
    def consumer(self) -> Consumer | None:
        return self._consumer

    def samples(self) -> Iterator[Sample]:
        """The part worker's counters (a ``camflow.metrics`` source)."""
        stats = self.stats
        yield "camflow_transcode_parts", ("ok",), float(stats.parts)
        yield "camflow_transcode_parts", ("duplicate",), float(stats.duplicates)
        yield "camflow_transcode_parts", ("bad",), float(stats.bad_parts)
        yield "camflow_transcode_part_rungs_skipped", (), float(stats.rungs_skipped)
        yield from self.store_outage.samples()

    async def run(self, stop: asyncio.Event) -> None:
        self.store.stop_when(stop)
        consumer = await self.bus.subscribe([TOPIC_PARTS], GROUP)
        self._consumer = consumer
        self.ready.set()
        log.info("part_worker_started", ladder=[r.name for r in self.ladder])
        last = self.stats.snapshot()
        reported = time.monotonic()
        polls = Polls(consumer, log)  # a failed poll (the bus away) is repeated, never the worker's end
        try:
            while not stop.is_set():
                message = await polls.get(0.5, stop)
                now = time.monotonic()
                if message is not None:
                    self._rebalanced(consumer)
                    await self._dispatch(consumer, message, now, stop)
                await self._close_idle(now)
                await self._commit(consumer)
                if now - reported >= LOG_EVERY:
                    reported = now
                    if (snapshot := self.stats.snapshot()) != last:
                        log.info("part_stats", **snapshot)
                        last = snapshot
        finally:
            for stream in list(self._lanes):
                await self._close_lane(stream, finish=True)
            await self._commit(consumer)
            await consumer.close()
            log.info("part_worker_stopped", **self.stats.snapshot())

    def _rebalanced(self, consumer: Consumer) -> None:
        """After a new assignment: the streams gone to other members lose their lanes (their new
        owner starts at an independent part); what was in hand is delivered again."""
        if not isinstance(consumer, Rebalancing) or consumer.generation == self._generation:
            return
        self._generation = consumer.generation
        self._commits.clear()
        self._to_commit.clear()
        for stream in [s for s in self._lanes if not consumer.owns(TOPIC_PARTS, s)]:
            lane = self._lanes.pop(stream)
            if lane.task is not None:
                lane.task.cancel()
            lane.executor.submit(lane.state.close)
            lane.executor.shutdown(wait=False)

    async def _dispatch(self, consumer: Consumer, message: Message, now: float, stop: asyncio.Event) -> None:
        token = self._commits.track(message)
        try:
            event = decode(message.value)
        except EventDecodeError as exc:
            self.stats.decode_errors += 1
            await self.dead_letters.undecodable(message, exc)
            await self._done(consumer, token)
            return
        if not isinstance(event, RawPart):
            self.stats.decode_errors += 1
            await self.dead_letters.rejected(message, f"a {event.TYPE} event on {message.topic}")
            await self._done(consumer, token)
            return
        lane = self._lanes.get(event.stream)
        if lane is None:
            executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"parts-{event.stream}")
            lane = _Lane(StreamParts(event.stream, self.ladder), asyncio.Queue(QUEUE_DEPTH), executor)
            lane.task = asyncio.create_task(self._lane(consumer, lane), name=f"parts-{event.stream}")
            self._lanes[event.stream] = lane
        lane.seen = now
        await self._enqueue(lane, (message, event, token, time.perf_counter()), stop)

    @staticmethod
    async def _enqueue(lane: _Lane, item: tuple[Message, RawPart, int, float], stop: asyncio.Event) -> None:
        """Hand a part to its lane, waiting while the lane is full (a store outage holds it up) until
        there is room, the worker stops, or the lane has ended (it stops that way during an outage):
        then the part is left uncommitted, for the group."""
        if not lane.queue.full():
            lane.queue.put_nowait(item)
            return
        put = asyncio.ensure_future(lane.queue.put(item))
        stopping = asyncio.ensure_future(stop.wait())
        ends = {put, stopping} | ({lane.task} if lane.task is not None else set())
        try:
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not put.done():
                put.cancel()

    async def _lane(self, consumer: Consumer, lane: _Lane) -> None:
        while True:
            message, event, token, consumed = await lane.queue.get()
            self.stats.stages["wait"].append(time.perf_counter() - consumed)
            try:
                await self._part(lane, event, consumed)
            except StoreRetryStopped:
                return  # stopping during a store outage: left uncommitted, for the group
            except Exception as exc:  # BadSegment, or anything FFmpeg raised: never the worker's end
                await self._bad(lane, message, event, exc)
            await self._done(consumer, token)
            lane.queue.task_done()

    async def _part(self, lane: _Lane, event: RawPart, consumed: float) -> None:
        """The part's copies (and audio) announced as soon as they are written, its encoded rungs
        once they are: two ``part-ready`` events, the rungs encoding while the copies are written."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        media = await loop.run_in_executor(lane.executor, lane.state.begin, event)
        self.stats.stages["media"].append(time.perf_counter() - started)
        if media.duplicate:
            self.stats.duplicates += 1
            return
        self.stats.rungs_skipped += media.rungs_skipped
        self.stats.tail_dropped += media.tail_dropped
        encoding = loop.run_in_executor(lane.executor, self._timed_finish, lane.state)
        try:
            announced = await self._announce(lane, event, media.renditions)
        except BaseException:
            encoding.cancel()  # the thread finishes it; nobody waits for it
            raise
        if announced:
            self.stats.first.append(time.perf_counter() - consumed)
        rungs = await encoding
        if await self._announce(lane, event, rungs):
            announced = True
        if announced:
            self.stats.parts += 1
            self.stats.latencies.append(time.perf_counter() - consumed)

    def _timed_finish(self, state: StreamParts) -> tuple[RenditionMedia, ...]:
        started = time.perf_counter()
        rungs = state.finish()
        if rungs:  # a part whose rungs were skipped would count as an encode of no time
            self.stats.stages["encode"].append(time.perf_counter() - started)
        return rungs

    async def _announce(self, lane: _Lane, event: RawPart, renditions: tuple[RenditionMedia, ...]) -> bool:
        """Write ``renditions`` of the part and publish their ``part-ready``: whether it went out (the
        bus may refuse it: a live part is not worth a stall, it is counted and skipped)."""
        if not renditions:
            return False
        try:
            await self._publish(event, renditions)
        except StoreRetryStopped:
            raise
        except Exception as exc:
            self.stats.publish_failures += 1
            now = time.monotonic()
            if now - lane.logged >= LOG_EVERY:
                lane.logged = now
                log.warning("part_ready_not_published", stream_id=event.stream, error=repr(exc))
            return False
        return True

    async def _publish(self, event: RawPart, renditions: tuple[RenditionMedia, ...]) -> None:
        writes, refs, inits = [], [], []
        for rendition in renditions:
            ikey = init_key(event.stream, event.epoch, rendition.name)
            pkey = part_key(event.stream, event.epoch, rendition.name, event.seq, event.part)
            if ikey not in self._inits and await self.store.head(ikey) is None:
                writes.append(self.store.put(ikey, rendition.init, "video/mp4"))
            inits.append(ikey)
            writes.append(self.store.put(pkey, rendition.media, "video/iso.segment"))
            refs.append(rendition.ref(ikey, pkey, event.duration / event.timescale))
        started = time.perf_counter()
        await asyncio.gather(*writes)
        self.stats.stages["write"].append(time.perf_counter() - started)
        self._inits.update(inits)
        if len(self._inits) > 10_000:
            self._inits.clear()
        ready = PartReady(
            stream=event.stream,
            epoch=event.epoch,
            seq=event.seq,
            start=event.start,
            duration=event.duration,
            timescale=event.timescale,
            part=event.part,
            independent=event.independent,
            wall_clock=event.wall_clock,
            renditions=tuple(refs),
            discontinuity=event.discontinuity,
        )
        started = time.perf_counter()
        await self.bus.publish(TOPIC_READY, event.stream, encode(ready))
        self.stats.stages["publish"].append(time.perf_counter() - started)

    async def _bad(self, lane: _Lane, message: Message, event: RawPart, exc: Exception) -> None:
        self.stats.bad_parts += 1
        reason = f"part {event.part} of segment {event.seq}: {exc}"
        now = time.monotonic()
        if now - lane.logged >= LOG_EVERY:  # once per stream per interval, never per part
            lane.logged = now
            log.warning(
                "part_failed",
                stream_id=event.stream,
                epoch=event.epoch,
                error=reason,
                bad_parts=self.stats.bad_parts,
            )
        dead = SegmentDead(
            stream=event.stream,
            epoch=event.epoch,
            seq=event.seq,
            reason=reason,
            attempts=1,
            at=time.time(),
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            raw=message.value,
        )
        await self.dead_letters.segment(message, dead)

    async def _done(self, consumer: Consumer, token: int) -> None:
        """The part's effects are written: its offset (with what precedes it) is committed by the main
        loop between polls (``_commit``), never by the lane, which would wait behind the poll."""
        del consumer
        commit = self._commits.done(token)
        if commit is not None:
            self._to_commit[(commit.topic, commit.partition)] = commit

    async def _commit(self, consumer: Consumer) -> None:
        pending, self._to_commit = self._to_commit, {}
        for commit in pending.values():
            if not await commit_or_log(consumer, commit, log):
                self.stats.commit_errors += 1

    async def _close_idle(self, now: float) -> None:
        for stream in [s for s, lane in self._lanes.items() if now - lane.seen > self.idle_seconds]:
            lane = self._lanes[stream]
            if lane.queue.empty():
                await self._close_lane(stream, finish=True)

    async def _close_lane(self, stream: str, *, finish: bool) -> None:
        """Close a stream's encoders and thread, once the parts it holds are done (``finish``)."""
        lane = self._lanes.pop(stream)
        if finish and lane.task is not None and not lane.task.done():
            # Bounded; and the lane may end first (stopped during a store outage: the rest is left).
            joined = asyncio.ensure_future(lane.queue.join())
            await asyncio.wait({joined, lane.task}, timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
            joined.cancel()
        if lane.task is not None:
            lane.task.cancel()
            await asyncio.wait({lane.task})  # its end, whatever it raised; our own cancel still propagates
        await asyncio.get_running_loop().run_in_executor(lane.executor, lane.state.close)
        lane.executor.shutdown(wait=False)
