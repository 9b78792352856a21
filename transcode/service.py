"""The transcode worker: raw segments in, renditions and a thumbnail in the store, a ready
event out.

Order per segment, for at-least-once made effectively-once: write every rendition's
objects and the thumbnail (deterministic keys: a repeat overwrites identical objects),
then publish the ready event, then commit the raw segment's offset once every earlier
offset of its partition is done too. A crash anywhere repeats work and never loses a
segment. CPU work runs in a process pool sized to the cores, never on the event loop.

A segment that fails (corrupt input, a crashed pool process) is tried ``max_attempts``
times, then published to the dead-letter topic with the reason and committed: the stream
goes on and the packager marks the hole as a gap. A message that is not a raw segment this
worker reads (a newer major, a corrupt value) goes to the dead-letter topic as it came, and
is committed only once it is there (``camflow.bus.dead``).

A store outage is not the segment's failure: its writes wait for the store
(``camflow.store.retry``), however long it takes, and count no attempt; its offset is not
committed meanwhile. A stop during the outage leaves the segment uncommitted, for the group.

Nor is a bus outage (Kafka stopped, or back but without the topic's metadata yet): the ready
event is published again until acknowledged (``camflow.bus.retry``), the offset uncommitted
meanwhile; a poll that fails is repeated after a pause. Neither ends the worker; a stop while the
ready event waits leaves the segment uncommitted, for the group (its writes are idempotent).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import os
import time
from concurrent.futures.process import BrokenProcessPool

from camflow.bus import Bus, CommitTracker, Consumer, Message, commit_or_log
from camflow.bus.dead import DeadLetters
from camflow.bus.retry import Polls, publish_until_acknowledged
from camflow.errors import BusRetryStopped, EventDecodeError, StoreRetryStopped
from camflow.events import (
    TOPIC_RAW,
    TOPIC_READY,
    RawSegment,
    RenditionRef,
    SegmentDead,
    SegmentReady,
    decode,
    encode,
)
from camflow.keys import init_key, latest_thumbnail_key, segment_key, thumbnail_key
from camflow.log import get_logger
from camflow.metrics import TRANSCODE_SECONDS, TRANSCODE_SEGMENT_SECONDS
from camflow.store import Store
from camflow.store.retry import RetryingStore, StoreOutage
from transcode.errors import TranscodeError
from transcode.ladder import Rung
from transcode.pool import new_pool
from transcode.renditions import TranscodedSegment, transcode_segment, warm
from transcode.stats import TranscodeStats

GROUP = "camflow-transcode"
RETRY_DELAY = 0.5  # seconds, times the attempt number
STATS_EVERY = 10.0  # seconds between transcode_stats log events (only those where a figure changed)
# An epoch's init section is written once, but a camera can stay live on one epoch for longer than
# the store's lifecycle rule keeps an object (it expires by age; packager.retention installs it,
# a day past the retention at the least): every hour a live epoch's init is written again, so its
# age never passes the rule while a playlist names it.
INIT_REFRESH_SECONDS = 3600.0
log = get_logger("transcode")


class TranscodeWorker:
    def __init__(
        self,
        bus: Bus,
        store: Store,
        *,
        ladder: tuple[Rung, ...],
        processes: int | None,  # None: one per core
        threads: int,  # 1 measured best: 1.10x the CLI per CPU-second vs 0.91x with codec threads
        max_attempts: int,
        concurrency: int | None = None,
    ) -> None:
        self.bus = bus
        self.store_outage = StoreOutage("transcode")
        self.store = RetryingStore(store, self.store_outage)
        self.ladder = ladder
        self.processes = processes or max(1, os.cpu_count() or 1)
        self.concurrency = concurrency or self.processes
        self.threads = threads
        self.max_attempts = max(1, max_attempts)
        self.stats = TranscodeStats()
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._inits_written: dict[str, float] = {}  # init key -> when this worker last wrote it (monotonic)
        self._latest_thumb: dict[str, tuple[str, int]] = {}
        self._commits = CommitTracker()
        self.dead_letters = DeadLetters(bus, GROUP)
        self._consumer: Consumer | None = None
        # stream -> (seconds its newest finished segment took, None before the first; when last seen)
        self.recent: dict[str, tuple[float | None, float]] = {}
        self.ready = asyncio.Event()  # set once subscribed (a LocalBus drops what comes before)
        self._stop = asyncio.Event()  # run's: ends a ready event's wait for the bus

    @property
    def consumer(self) -> Consumer | None:
        """The raw topic's consumer once subscribed (the health feed asks it for the lag)."""
        return self._consumer

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return new_pool(self.processes)

    async def run(self, stop: asyncio.Event) -> None:
        self._pool = self._new_pool()
        self._stop = stop
        self.store.stop_when(stop)
        await self._warm()
        consumer = await self.bus.subscribe([TOPIC_RAW], GROUP)
        self._consumer = consumer
        self.ready.set()
        log.info(
            "transcoder_started",
            processes=self.processes,
            concurrency=self.concurrency,
            threads=self.threads,
            ladder=[r.name for r in self.ladder],
        )
        reporter = asyncio.create_task(self._report(stop))
        try:
            polls = Polls(consumer, log)  # a failed poll (the bus away) is repeated, never the end
            workers = [
                asyncio.create_task(self._loop(consumer, polls, stop)) for _ in range(self.concurrency)
            ]
            await asyncio.gather(*workers)
        finally:
            reporter.cancel()
            await consumer.close()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            log.info("transcoder_stopped", **self.stats.snapshot())

    async def _report(self, stop: asyncio.Event) -> None:
        """``transcode_stats`` every ``STATS_EVERY`` seconds while the figures change; an idle worker
        says nothing (its figures are on /metrics and the health feed)."""
        last = self.stats.snapshot()
        while not stop.is_set():
            await asyncio.sleep(STATS_EVERY)
            now = self.stats.snapshot()
            if now != last:
                log.info("transcode_stats", **now)
                last = now

    async def _loop(self, consumer: Consumer, polls: Polls, stop: asyncio.Event) -> None:
        while not stop.is_set():
            message = await polls.get(0.5, stop)
            self.stats.poll_errors = polls.errors
            if message is None:
                continue
            token = self._commits.track(message)
            self.stats.in_flight += 1
            try:
                await self._handle(message)
            except (StoreRetryStopped, BusRetryStopped) as exc:  # not landed: not committed, for the group
                log.warning(
                    "segment_left_at_stop", partition=message.partition, offset=message.offset, error=str(exc)
                )
                return
            finally:
                self.stats.in_flight -= 1
            commit = self._commits.done(token)
            if commit is not None and not await commit_or_log(consumer, commit, log):
                self.stats.commit_errors += 1

    async def _handle(self, message: Message) -> None:
        try:
            event = decode(message.value)
        except EventDecodeError as exc:
            self.stats.decode_errors += 1
            await self.dead_letters.undecodable(message, exc)  # before the commit, retried until sent
            return
        if not isinstance(event, RawSegment):
            self.stats.decode_errors += 1
            await self.dead_letters.rejected(message, f"a {event.TYPE} event on {message.topic}")
            return
        slog = log.bind(stream_id=event.stream, epoch=event.epoch, seq=event.seq)
        slog.debug("segment_started", partition=message.partition, offset=message.offset)
        started = time.perf_counter()
        if event.stream not in self.recent and len(self.recent) >= 10_000:
            self.recent.clear()
        self.recent[event.stream] = (self.recent.get(event.stream, (None, 0.0))[0], time.time())
        self.stats.observe_lag(max(0.0, time.time() - event.wall_clock - event.duration_s))
        result: TranscodedSegment | None = None
        reason = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                result = await self._transcode(event)
                break
            except TranscodeError as exc:
                reason = str(exc)
            except BrokenProcessPool as exc:  # a pool process died (a decoder crash, the OOM killer)
                reason = f"transcode process died: {exc!r}"
                self._restart_pool()
            self.stats.failed_attempts += 1
            slog.warning("segment_attempt_failed", attempt=attempt, of=self.max_attempts, error=reason)
            if attempt < self.max_attempts:
                await asyncio.sleep(RETRY_DELAY * attempt)
        if result is None:
            await self._dead_letter(message, event, reason)
            return
        refs = await self._write(event, result)
        ready = SegmentReady(
            stream=event.stream,
            epoch=event.epoch,
            seq=event.seq,
            start=event.start,
            duration=event.duration,
            timescale=event.timescale,
            wall_clock=event.wall_clock,
            renditions=refs,
            damaged=event.damaged,
            discontinuity=event.discontinuity,
        )
        # Retried until acknowledged (a bus outage is not the segment's failure); the offset waits.
        self.stats.publish_retries += await publish_until_acknowledged(
            self.bus, TOPIC_READY, event.stream, encode(ready), stop=self._stop, log=slog
        )
        elapsed = time.perf_counter() - started
        self.stats.segments += 1
        self.stats.media_seconds += event.duration_s
        self.stats.latencies.append(elapsed)
        TRANSCODE_SEGMENT_SECONDS.observe(elapsed)
        for media in result.renditions:
            TRANSCODE_SECONDS.labels(media.name).observe(media.seconds)
        self.recent[event.stream] = (elapsed, time.time())
        slog.debug("segment_transcoded", seconds=round(elapsed, 3), renditions=[r.name for r in refs])

    async def _transcode(self, event: RawSegment) -> TranscodedSegment:
        assert self._pool is not None
        return await asyncio.get_running_loop().run_in_executor(
            self._pool,
            transcode_segment,
            event.data,
            self.ladder,
            event.start + event.duration,
            self.threads,
        )

    async def _warm(self) -> None:
        """Start every pool process and import the codecs now, not on the first segment."""
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, warm, 0.2) for _ in range(self.processes)))

    def _restart_pool(self) -> None:
        old, self._pool = self._pool, self._new_pool()
        self.stats.pool_restarts += 1
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)

    async def _dead_letter(self, message: Message, event: RawSegment, reason: str) -> None:
        dead = SegmentDead(
            stream=event.stream,
            epoch=event.epoch,
            seq=event.seq,
            reason=reason,
            attempts=self.max_attempts,
            at=time.time(),
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            raw=message.value,
        )
        await self.dead_letters.segment(message, dead)
        self.stats.dead_lettered += 1
        log.error(
            "segment_dead_lettered",
            stream_id=event.stream,
            epoch=event.epoch,
            seq=event.seq,
            attempts=self.max_attempts,
            reason=reason,
        )

    async def _write(self, event: RawSegment, result: TranscodedSegment) -> tuple[RenditionRef, ...]:
        refs: list[RenditionRef] = []
        writes = [
            self.store.put(
                thumbnail_key(event.stream, event.epoch, event.seq), result.thumbnail, "image/jpeg"
            )
        ]
        now = time.monotonic()
        inits: list[str] = []
        for media in result.renditions:
            ikey = init_key(event.stream, event.epoch, media.name)
            skey = segment_key(event.stream, event.epoch, media.name, event.seq)
            if now - self._inits_written.get(ikey, -math.inf) >= INIT_REFRESH_SECONDS:
                writes.append(self.store.put(ikey, media.init, "video/mp4"))
                inits.append(ikey)
            writes.append(self.store.put(skey, media.media, "video/iso.segment"))
            refs.append(media.ref(ikey, skey, event.duration_s))
        await asyncio.gather(*writes)
        # The stream's latest picture: only forward (segments finish out of order across tasks).
        latest = self._latest_thumb.get(event.stream)
        if latest is None or (event.epoch, event.seq) > latest:
            self._latest_thumb[event.stream] = (event.epoch, event.seq)
            await self.store.put(latest_thumbnail_key(event.stream), result.thumbnail, "image/jpeg")
        self._inits_written.update(dict.fromkeys(inits, now))
        if len(self._inits_written) > 10_000:
            self._inits_written.clear()
        if len(self._latest_thumb) > 10_000:
            self._latest_thumb.clear()
        return tuple(refs)
