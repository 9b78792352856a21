"""The transcode worker: raw segments in, renditions in the store, a ready event out.

Order per segment, for at-least-once made effectively-once: write every rendition's
objects (deterministic keys: a repeat overwrites identical bytes), then publish the
ready event, then commit the raw segment's offset. A crash anywhere repeats work and
never loses a segment. CPU work runs in a process pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import time
from dataclasses import dataclass

from camflow.bus import Bus, Consumer, Message
from camflow.errors import EventDecodeError
from camflow.events import TOPIC_RAW, TOPIC_READY, RawSegment, RenditionRef, SegmentReady, decode, encode
from camflow.keys import init_key, segment_key
from camflow.log import get_logger
from camflow.store import Store
from transcode.errors import BadSegment
from transcode.ladder import DEFAULT_LADDER, Rung
from transcode.renditions import RenditionMedia, transcode_segment

GROUP = "camflow-transcode"
log = get_logger("transcode")


@dataclass
class TranscodeStats:
    segments: int = 0
    failed: int = 0
    decode_errors: int = 0
    seconds: float = 0.0


class TranscodeWorker:
    def __init__(
        self,
        bus: Bus,
        store: Store,
        *,
        ladder: tuple[Rung, ...] = DEFAULT_LADDER,
        processes: int | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.bus = bus
        self.store = store
        self.ladder = ladder
        self.processes = processes or max(1, os.cpu_count() or 1)
        self.concurrency = concurrency or self.processes
        self.stats = TranscodeStats()
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._inits_written: set[str] = set()
        self.ready = asyncio.Event()  # set once subscribed (a LocalBus drops what comes before)

    async def run(self, stop: asyncio.Event) -> None:
        # "spawn": the parent runs threads (Kafka clients, executors) that a fork would copy mid-state.
        self._pool = concurrent.futures.ProcessPoolExecutor(
            self.processes, mp_context=multiprocessing.get_context("spawn")
        )
        consumer = await self.bus.subscribe([TOPIC_RAW], GROUP)
        self.ready.set()
        log.info("transcoder_started", processes=self.processes, ladder=[r.name for r in self.ladder])
        try:
            workers = [asyncio.create_task(self._loop(consumer, stop)) for _ in range(self.concurrency)]
            await asyncio.gather(*workers)
        finally:
            await consumer.close()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    async def _loop(self, consumer: Consumer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            message = await consumer.get(timeout=0.5)
            if message is None:
                continue
            await self._handle(message)
            await consumer.commit(message)

    async def _handle(self, message: Message) -> None:
        try:
            event = decode(message.value)
        except EventDecodeError as exc:
            self.stats.decode_errors += 1
            log.warning("raw_event_undecodable", error=str(exc), offset=message.offset)
            return
        if not isinstance(event, RawSegment):
            self.stats.decode_errors += 1
            log.warning("unexpected_event", type=type(event).__name__, topic=message.topic)
            return
        slog = log.bind(stream_id=event.stream, epoch=event.epoch, seq=event.seq)
        started = time.perf_counter()
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        try:
            renditions = await loop.run_in_executor(
                self._pool, transcode_segment, event.data, self.ladder, event.start + event.duration
            )
        except BadSegment as exc:
            # A corrupt segment is skipped (the packager's gap timeout covers the hole); the stream goes on.
            self.stats.failed += 1
            slog.warning("segment_failed", error=str(exc))
            return
        refs = await self._write(event, renditions)
        ready = SegmentReady(
            stream=event.stream,
            epoch=event.epoch,
            seq=event.seq,
            start=event.start,
            duration=event.duration,
            timescale=event.timescale,
            wall_clock=event.wall_clock,
            renditions=refs,
        )
        await self.bus.publish(TOPIC_READY, event.stream, encode(ready))
        elapsed = time.perf_counter() - started
        self.stats.segments += 1
        self.stats.seconds += elapsed
        slog.debug("segment_transcoded", seconds=round(elapsed, 3), renditions=[r.name for r in refs])

    async def _write(self, event: RawSegment, renditions: list[RenditionMedia]) -> tuple[RenditionRef, ...]:
        refs: list[RenditionRef] = []
        writes = []
        for media in renditions:
            ikey = init_key(event.stream, event.epoch, media.name)
            skey = segment_key(event.stream, event.epoch, media.name, event.seq)
            if ikey not in self._inits_written:
                writes.append(self.store.put(ikey, media.init, "video/mp4"))
            writes.append(self.store.put(skey, media.media, "video/iso.segment"))
            refs.append(
                RenditionRef(
                    name=media.name,
                    width=media.width,
                    height=media.height,
                    bandwidth=int(len(media.media) * 8 / max(event.duration_s, 1e-3)),
                    codecs=media.codecs,
                    init_key=ikey,
                    key=skey,
                    size=len(media.media),
                )
            )
        await asyncio.gather(*writes)
        self._inits_written.update(r.init_key for r in refs)
        if len(self._inits_written) > 10_000:
            self._inits_written.clear()
        return tuple(refs)
