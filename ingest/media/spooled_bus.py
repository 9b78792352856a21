"""Ingest's bus: every publish goes to the on-disk spool first, and the spool delivers to the real bus.

``SpooledBus`` is a ``Bus`` (so every source's publisher, the health reporter and the state changes
use it unchanged): ``publish`` returns once the message is a record on disk in this process's spool
directory (``ingest.media.spool_dir``), which takes a few milliseconds whatever the bus does; a
camera is never held up by Kafka. Delivery runs beside it, one lane per stream (the key up to its
first ``/``: raw segments are keyed ``stream/epoch/seq``, states and health samples ``stream``):
each lane publishes one record at a time, in the order spooled, and retries a failed publish with
capped exponential backoff (tenacity) until it is acknowledged (Kafka: ``acks=all``), so a stream's
messages reach the bus in order (``live``, segments..., ``offline``) however long the outage.

The spool is bounded (``max_bytes``): only when a new record does not fit is the oldest waiting
segment of any stream dropped, counted per stream (``dropped``, ``camflow_ingest_spool_dropped``,
the ingest health sample's ``spool_dropped``) and logged (``spool_segment_dropped``, with the
reason). At start, and every ``adopt_interval`` seconds, the spools of ingest processes that ended
(crashed, killed, or stopped with records left) under the same root are adopted and delivered; an
epoch they leave open (a ``live`` or segments without its ``offline``) is closed with an
``offline`` state naming its last spooled segment.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from camflow.bus import Bus, Consumer
from camflow.errors import CamflowError, ConfigError, EventDecodeError
from camflow.events import (
    TOPIC_HEALTH,
    TOPIC_RAW,
    TOPIC_STREAMS,
    StreamState,
    StreamStateKind,
    decode,
    encode,
)
from camflow.log import get_logger
from camflow.metrics import Sample, instance_name
from ingest.media.spool import Entry, RecordKind, SpoolCorrupt, SpoolIndex, SpoolRecord
from ingest.media.spool_dir import SpoolDirectory, orphan_candidates, record_name

RETRY_FIRST = 0.2  # seconds before the first retry of a failed publish
RETRY_MAX = 5.0  # the cap of the backoff between retries
ADOPT_INTERVAL = 10.0  # seconds between looks for spools of ended processes
WRITE_THREADS = 4
BUS_START_WAIT = 5.0  # seconds `camflow ingest` waits for the bus at start before taking cameras anyway
log = get_logger("ingest.spool")


def lane_of(key: str) -> str:
    """The stream a message of ingest belongs to: its key up to the first ``/``."""
    return key.partition("/")[0]


def kind_of(topic: str) -> RecordKind:
    if topic == TOPIC_RAW:
        return RecordKind.SEGMENT
    if topic == TOPIC_HEALTH:
        return RecordKind.LATEST
    return RecordKind.EVENT


class SpooledBus:
    """``bus`` behind the spool under ``directory``. ``owns_bus``: this spool starts and closes
    ``bus`` (``camflow ingest``, whose only use of the bus is delivery): ingest then starts and
    takes cameras while the bus is down, and delivery begins once the bus has started."""

    def __init__(
        self,
        bus: Bus,
        *,
        directory: Path,
        max_bytes: int,
        owns_bus: bool = False,
        fsync: bool = True,
        retry_max: float = RETRY_MAX,
        adopt_interval: float = ADOPT_INTERVAL,
    ) -> None:
        self.bus = bus
        self.root = directory
        self.index = SpoolIndex(max_bytes)
        self.owns_bus = owns_bus
        self.retry_max = retry_max
        self.adopt_interval = adopt_interval
        self.delivered = 0
        self.publish_failures = 0
        self.quarantined = 0
        self._fsync = fsync
        self._own: SpoolDirectory | None = None
        self._homes: dict[str, SpoolDirectory] = {}
        # File I/O off the event loop. Writes go side by side (fsyncs of several files overlap; a
        # lane still delivers in the order spooled: a record waits for the one before it to be on
        # disk); removes and quarantines only ever touch records already written.
        self._writer = concurrent.futures.ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="spool-write")
        self._reader = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="spool-read")
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._bus_ready = asyncio.Event()
        self._running = False

    # --- the Bus protocol ------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        create = functools.partial(SpoolDirectory.create, self.root, fsync=self._fsync)
        try:
            self._own = await loop.run_in_executor(self._writer, create)
        except OSError as exc:
            raise ConfigError(
                f"spool directory {str(self.root)!r}: {exc.strerror or exc}; expected a writable "
                "--spool-dir (default DATA_DIR/spool)"
            ) from None
        self._homes[self._own.name] = self._own
        self._running = True
        await self._adopt()
        log.info("spool_started", directory=str(self._own.path), max_bytes=self.index.max_bytes)
        if self.owns_bus:
            await self._begin_bus()
        else:
            self._bus_ready.set()
        self._tasks.append(asyncio.create_task(self._adopt_loop(), name="spool-adopt"))
        for lane in self.index.lanes():
            self._kick(lane)

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Mapping[str, bytes] | None = None
    ) -> None:
        """Spool the message (durably, on disk) and return; it is delivered in its lane's order."""
        if self._own is None or not self._running:
            raise RuntimeError("SpooledBus.publish before start() or after close()")
        own = self._own
        lane = lane_of(key)
        record = SpoolRecord.make(
            lane, topic, key, value, kind=kind_of(topic), created=time.time(), headers=headers
        )
        admission = self.index.admit(record.header, record.size(), own.name, record_name)
        for entry in admission.dropped:
            self._dropped(entry.lane, entry.header.key)
            self._remove(entry)
        for entry in admission.replaced:
            self._remove(entry)
        if admission.entry is None:
            self._dropped(lane, key)
            return
        entry = admission.entry
        try:
            # a health sample is telemetry a newer one replaces: no fsync (a torn one is quarantined)
            durable = entry.header.kind is not RecordKind.LATEST
            write = functools.partial(own.write_record, entry.name, record, durable=durable)
            await asyncio.get_running_loop().run_in_executor(self._writer, write)
        except BaseException:
            self.index.forget(entry)
            raise
        self.index.stored(entry)
        self._kick(lane)

    async def subscribe(self, topics: Sequence[str], group: str) -> Consumer:
        return await self.bus.subscribe(topics, group)

    async def close(self) -> None:
        """Stop delivering (what is left stays on disk for the next start, or another ingest on the
        same root), release the spool, and close the bus when this spool owns it."""
        self._running = False
        tasks = [*self._tasks, *self._senders.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        left = len(self.index)
        await asyncio.to_thread(self._writer.shutdown, True)
        self._reader.shutdown(wait=True)
        for home in self._homes.values():
            home.close(remove_if_empty=True)
        self._homes.clear()
        log.info("spool_closed", left=left, delivered=self.delivered, bytes=self.index.bytes)
        if self.owns_bus:
            await self.bus.close()

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every record to be delivered; whether they were."""
        deadline = time.monotonic() + timeout
        while len(self.index) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return not len(self.index)

    # --- what the health feed and Prometheus read -------------------------------------------

    def spool_dropped(self, stream: str) -> int:
        """Segments of ``stream`` this spool dropped because it was full."""
        return self.index.dropped.get(stream, 0)

    def samples(self) -> Iterator[Sample]:
        """The spool's metrics now (a ``camflow.metrics`` source)."""
        yield "camflow_ingest_spool_bytes", (), float(self.index.bytes)
        yield "camflow_ingest_spool_max_bytes", (), float(self.index.max_bytes)
        yield "camflow_ingest_spool_records", (), float(len(self.index))
        oldest = self.index.oldest()
        yield "camflow_ingest_spool_oldest_seconds", (), 0.0 if oldest is None else time.time() - oldest
        yield "camflow_ingest_spool_delivered", (), float(self.delivered)
        yield "camflow_ingest_spool_publish_failures", (), float(self.publish_failures)
        yield "camflow_ingest_spool_quarantined", (), float(self.quarantined)
        for stream, count in self.index.dropped.items():
            yield "camflow_ingest_spool_dropped", (stream,), float(count)

    # --- delivery ---------------------------------------------------------------------------

    def _kick(self, lane: str) -> None:
        """Start delivering ``lane`` unless it is already (its sender picks up what is added)."""
        if self._running and lane not in self._senders and self.index.next(lane) is not None:
            self._senders[lane] = asyncio.create_task(self._deliver(lane), name=f"spool-{lane}")

    async def _deliver(self, lane: str) -> None:
        try:
            await self._bus_ready.wait()
            while (entry := self.index.next(lane)) is not None:
                self.index.sending(entry)
                try:
                    record = await self._read(entry)
                    if record is not None:
                        await self._publish(record)
                except BaseException:
                    self.index.unsent(entry)
                    raise
                if record is not None:
                    self.index.delivered(entry)
                    self.delivered += 1
                    self._remove(entry)
        except Exception as exc:  # a bug: the lane is taken up again by the next look (_adopt_loop)
            log.error("spool_lane_failed", stream_id=lane, error=repr(exc), exc_info=True)
        finally:
            self._senders.pop(lane, None)

    async def _read(self, entry: Entry) -> SpoolRecord | None:
        """The record of ``entry``; None when it does not check (then quarantined, counted, logged)."""
        loop = asyncio.get_running_loop()
        home = self._homes[entry.home]
        try:
            return await loop.run_in_executor(self._reader, home.read, entry.name)
        except (SpoolCorrupt, OSError) as exc:
            self.index.forget(entry)
            self.quarantined += 1
            await loop.run_in_executor(self._writer, home.quarantine, self.root, entry.name, str(exc))
            return None

    async def _publish(self, record: SpoolRecord) -> None:
        h = record.header
        async for attempt in AsyncRetrying(
            wait=wait_exponential_jitter(multiplier=RETRY_FIRST, max=self.retry_max, jitter=RETRY_FIRST),
            retry=retry_if_exception_type(Exception),
            before_sleep=self._publish_failed,
            reraise=True,
        ):
            with attempt:
                await self.bus.publish(h.topic, h.key, record.body, dict(h.headers) or None)
        # (no stop condition: a record is retried until the bus takes it, or the spool closes)

    def _publish_failed(self, state: RetryCallState) -> None:
        self.publish_failures += 1
        n = state.attempt_number
        if n & (n - 1) == 0:  # attempts 1, 2, 4, 8, ...: not one line per retry
            error = state.outcome.exception() if state.outcome is not None else None
            log.warning(
                "spool_publish_failed",
                attempt=n,
                error=repr(error),
                retry_in=round(state.upcoming_sleep, 2),
                records=len(self.index),
                bytes=self.index.bytes,
            )

    def _dropped(self, lane: str, key: str) -> None:
        log.warning(
            "spool_segment_dropped",
            stream_id=lane,
            key=key,
            reason=f"spool full: {self.index.bytes} of {self.index.max_bytes} bytes waiting for the bus",
            dropped=self.index.dropped.get(lane, 0),
        )

    def _remove(self, entry: Entry) -> None:
        home = self._homes.get(entry.home)
        if home is not None:
            self._writer.submit(home.remove, entry.name)

    async def _begin_bus(self) -> None:
        """Start the bus; when it is not up within ``BUS_START_WAIT`` seconds, go on spooling and
        let the start (then its retries) finish in the background. A ConfigError by then is raised."""
        first = asyncio.create_task(self.bus.start(), name="spool-bus-start")
        try:
            await asyncio.wait_for(asyncio.shield(first), BUS_START_WAIT)
        except ConfigError:
            raise
        except Exception as exc:
            log.warning("bus_unavailable_at_start", error=repr(exc), spooling=str(self.root))
            self._tasks.append(asyncio.create_task(self._start_bus(first), name="spool-bus-start"))
        else:
            self._bus_ready.set()

    async def _start_bus(self, first: asyncio.Task[None] | None) -> None:
        async for attempt in AsyncRetrying(
            wait=wait_exponential_jitter(multiplier=1.0, max=self.retry_max),
            retry=retry_if_exception_type(Exception),
            before_sleep=lambda state: log.warning(
                "bus_start_failed",
                attempt=state.attempt_number,
                error=repr(state.outcome and state.outcome.exception()),
            ),
        ):
            with attempt:
                starting, first = first or asyncio.ensure_future(self.bus.start()), None
                await starting
        log.info("bus_started", waiting_records=len(self.index))
        self._bus_ready.set()

    # --- adopting the spools of ended processes ---------------------------------------------

    async def _adopt_loop(self) -> None:
        while True:
            await asyncio.sleep(self.adopt_interval)
            try:
                await self._adopt()
            except Exception as exc:  # a bad directory must not end delivery
                log.error("spool_adopt_failed", error=repr(exc))
            for lane in self.index.lanes():  # and any lane whose sender ended on a bug
                self._kick(lane)
            await self._release_delivered()

    async def _release_delivered(self) -> None:
        """Remove (and unlock) the adopted directories whose records have all been delivered."""
        held = {entry.home for entry in self.index.entries()}
        for name, home in list(self._homes.items()):
            if home is not self._own and name not in held:
                del self._homes[name]
                close = functools.partial(home.close, remove_if_empty=True)
                await asyncio.get_running_loop().run_in_executor(self._writer, close)
                log.info("spool_adopted_delivered", directory=str(home.path))

    async def _adopt(self) -> None:
        loop = asyncio.get_running_loop()
        for path in orphan_candidates(self.root, set(self._homes)):
            home = await loop.run_in_executor(
                self._writer, functools.partial(SpoolDirectory.adopt, path, fsync=self._fsync)
            )
            if home is None:
                continue
            found = await loop.run_in_executor(self._writer, home.recover, self.root)
            self.quarantined += found.quarantined
            self._homes[home.name] = home
            entries = [self.index.recovered(h, size, home.name, name) for name, h, size in found.records]
            log.info(
                "spool_adopted",
                directory=str(home.path),
                records=len(entries),
                bytes=sum(e.size for e in entries),
                quarantined=found.quarantined,
                partial=found.partial,
            )
            if not entries:
                self._homes.pop(home.name)
                await loop.run_in_executor(self._writer, functools.partial(home.close, remove_if_empty=True))
                continue
            await self._close_open_epochs(home, entries)
            for lane in {e.lane for e in entries}:
                self._kick(lane)

    async def _close_open_epochs(self, home: SpoolDirectory, entries: list[Entry]) -> None:
        """Spool an ``offline`` for every epoch the adopted records open but do not close."""
        loop = asyncio.get_running_loop()
        open_epochs: dict[tuple[str, str], int | None] = {}  # (stream, epoch) -> last seq spooled
        closed: set[tuple[str, str]] = set()
        for entry in entries:
            h = entry.header
            if h.topic == TOPIC_RAW:
                stream, epoch, seq = _raw_key(h.key)
                if epoch:
                    last = open_epochs.get((stream, epoch))
                    open_epochs[(stream, epoch)] = seq if last is None or seq is None else max(last, seq)
            elif h.topic == TOPIC_STREAMS:
                state = await self._read_state(loop, home, entry)
                if state is None:
                    continue
                if state.state is StreamStateKind.OFFLINE:
                    closed.add((state.stream, state.epoch))
                else:
                    open_epochs.setdefault((state.stream, state.epoch), None)
        for (stream, epoch), last in open_epochs.items():
            if (stream, epoch) in closed:
                continue
            reason = f"ingest ended without closing the session; its spool was delivered by {instance_name()}"
            state = StreamState(stream, epoch, StreamStateKind.OFFLINE, reason, time.time(), last)
            await self.publish(TOPIC_STREAMS, stream, encode(state))
            log.warning("spool_epoch_closed", stream_id=stream, epoch=epoch, last_seq=last)

    @staticmethod
    async def _read_state(
        loop: asyncio.AbstractEventLoop, home: SpoolDirectory, entry: Entry
    ) -> StreamState | None:
        try:
            record = await loop.run_in_executor(None, home.read, entry.name)
            event = decode(record.body)
        except (SpoolCorrupt, OSError, EventDecodeError, CamflowError):
            return None  # delivery will quarantine (or the consumer dead-letter) it
        return event if isinstance(event, StreamState) else None


def _raw_key(key: str) -> tuple[str, str, int | None]:
    stream, _, rest = key.partition("/")
    epoch, _, seq = rest.partition("/")
    return stream, epoch, int(seq) if seq.isascii() and seq.isdigit() else None
