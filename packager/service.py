"""The packager service: ready segments and stream states from the bus, playlists into the store.

One ``StreamPackager`` per stream holds that stream's playlists and reorder buffer (see
``packager.stream`` for the ordering, gap and end-of-stream policy). After each event
the service writes what changed, media playlists before the master, and then commits
every message whose effects are now written (``camflow.bus.CommitTracker``).

Write order per flush: recording index chunks (``camflow.recordings``) and their day summaries
(``packager.index``), then media (and DVR) playlists, then the master; then the commits. So an
object named by a playlist is always in the index, and a crash at any point only repeats work.

Restart and rebalance: the first event of a stream this process does not know yet
(at start, or when a rebalance hands it a partition) rebuilds the stream's state from
the playlists its previous owner wrote (``StreamPackager.restore``), and index chunks
are read before they are first rewritten; re-delivered events are then recognised as
duplicates (``stats.duplicates``) and nothing is missing or repeated. A partition taken
away and handed back within one process life is not detected (the bus reports no
assignments): that process's state of those streams would be stale.

Store outage: every store call waits for the store (``camflow.store.retry``), so the loop stays
on the event in hand, commits nothing past it and takes no later event until its writes land;
the playlists then go on from where they were. A stop during the outage ends the loop without
committing what was not written. While a stream waits for a missing segment, the packager looks
at the store every ``STORE_PROBE_SECONDS`` and before it declares a gap: a segment held up in a
transcoder by an outage is not declared a gap; its gap timeout starts again once the store is
back (plus the longest pause of the transcoder's retry policy).

Low latency (``part_target`` set): ``part-ready`` events (on ``camflow.segments.ready``, in one
order with the stream's segments) go to the stream's parts (``packager.lowlatency``). A flush
writes the changed playlists of a stream concurrently (media and DVR, then the master), then
publishes ``playlists-changed`` (``camflow.playlists``, key=stream) with where each live playlist
ends, so edges wake the players blocked on them; ``part_latency`` keeps the seconds from a
part-ready taken off the bus to that event. Part objects that left the live playlists are
deleted ``PART_LINGER_SECONDS`` later (a player that loaded the playlist before may still fetch
them); recorded segments are untouched (retention's business).

Regions (``region`` set, ``camflow.regions``): a ``RegionWatch`` task writes the region's heartbeat
and reads its peers'; a flush of a stream this region does not own (``packager.ownership``) writes
only what is under its epoch (media is the transcoder's, index chunks here) and leaves the stream's
playlists, day summaries and retention to the owner region.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from camflow.bus import Bus, CommitTracker, Consumer, Message, commit_or_log
from camflow.bus.base import Rebalancing
from camflow.bus.dead import DeadLetters
from camflow.bus.retry import Polls
from camflow.errors import EventDecodeError, NotFound, StoreRetryStopped
from camflow.events import (
    TOPIC_PLAYLISTS,
    TOPIC_READY,
    TOPIC_STREAMS,
    PartReady,
    PlaylistEnd,
    PlaylistsChanged,
    SegmentReady,
    StreamState,
    decode,
    encode,
)
from camflow.hls.errors import PlaylistError
from camflow.hls.master import parse_master, parse_master_audio
from camflow.keys import dvr_playlist_key, is_stream_name, master_playlist_key, media_playlist_key
from camflow.log import get_logger
from camflow.regions import RegionConfig, RegionWatch
from camflow.store import Store
from camflow.store.base import Browsable
from camflow.store.retry import POLICY, RetryingStore, StoreOutage
from packager.index import IndexWriter
from packager.ownership import Ownership
from packager.retention import Retention
from packager.stream import PackagerStats, StreamPackager

GROUP = "camflow-packager"
PLAYLIST_CONTENT_TYPE = "application/vnd.apple.mpegurl"
POLL_SECONDS = 0.5
# A master playlist changes only when renditions come or go, so a stream live for days would leave it
# unwritten for longer than the store's lifecycle rule keeps an object (expiry by age; a day past the
# retention at the least): it is written again, unchanged, once this long has passed since the last write.
MASTER_REFRESH_SECONDS = 3600.0
STORE_PROBE_SECONDS = 1.0  # while a stream waits for a missing segment, how often the store is looked at
PART_LINGER_SECONDS = 30.0  # a part object out of the live playlists is deleted this long after
PART_DELETES = 64  # part objects deleted at once (concurrently), per pass of the loop
STOP_DELETE_SECONDS = 5.0  # longest a stopping packager spends deleting the parts out of its playlists
LATENCIES_KEPT = 4096  # part-ready to playlists-changed times kept for the figures


class Packager:
    """Consumes ``camflow.segments.ready`` and ``camflow.streams`` as group ``camflow-packager``.

    ``ready`` is set once subscribed (a LocalBus drops what is published before that);
    ``stats`` counts what happened across every stream.
    """

    def __init__(
        self,
        bus: Bus,
        store: Store,
        *,
        live_window: float,
        target_duration: int,
        offline_grace: float,
        dvr_window: float,
        retain: float | None,
        retain_streams: dict[str, float],
        retention_interval: float,
        part_target: float | None,
        gap_timeout: float = 10.0,
        region: RegionConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self.store_outage = StoreOutage("package", clock=clock)
        self._store = RetryingStore(store, self.store_outage)
        self._live_window = live_window
        self._gap_timeout = gap_timeout
        self._target = target_duration
        self._grace = offline_grace
        self._dvr_window = dvr_window
        self._part_target = part_target
        self.part_linger = PART_LINGER_SECONDS
        self._unlisted: deque[tuple[float, str]] = deque()  # part keys to delete, oldest first
        self.part_latency: deque[float] = deque(maxlen=LATENCIES_KEPT)
        self.index = IndexWriter(self._store)
        self.regions = None if region is None else RegionWatch(self._store, region)
        self.ownership = Ownership(self.regions, clock)
        self.retention = Retention(self._store, retain=retain, per_stream=retain_streams or {})
        self._retention_interval = retention_interval
        self._next_sweep = 0.0
        self._probed_at = -math.inf
        self._clock = clock
        self.stats = PackagerStats()
        self.ready = asyncio.Event()
        self._streams: dict[str, StreamPackager] = {}
        self._tracker = CommitTracker()
        self.dead_letters = DeadLetters(bus, GROUP)
        self._generation = 0  # the consumer's assignment these streams belong to
        self._written: dict[str, str] = {}
        self._written_at: dict[str, float] = {}  # key -> when this packager last wrote it (clock)
        self._log: Any = get_logger("packager")
        # For the health feed (UNIX times): the wall-clock end of each stream's newest ready segment,
        # and when its playlists were last written.
        self.live_edge: dict[str, float] = {}
        self.playlists_written: dict[str, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        consumer = await self._bus.subscribe([TOPIC_READY, TOPIC_STREAMS], GROUP)
        self.consumer: Consumer | None = consumer  # the health feed asks it for the lag
        self._store.stop_when(stop)
        if self.retention.enabled:
            try:
                await self.retention.install_lifecycle()
            except Exception as exc:  # a store that refuses lifecycle rules still gets swept
                self._log.warning("lifecycle rule not installed", error=repr(exc))
        if self.regions is not None:
            beating = asyncio.create_task(self.regions.run(stop), name="packager-regions")
        self.ready.set()
        self._log.info(
            "packager started",
            live_window=self._live_window,
            gap_timeout=self._gap_timeout,
            target_duration=self._target,
            offline_grace=self._grace,
            dvr_window=self._dvr_window,
            part_target=self._part_target,
            region=None if self.regions is None else self.regions.config.name,
        )
        polls = Polls(consumer, self._log)  # a failed poll (the bus away) is repeated, never the end
        try:
            while not stop.is_set():
                msg = await polls.get(self._poll_timeout(), stop)
                self.stats.poll_errors = polls.errors
                self._check_assignment(consumer)
                if msg is not None:
                    await self._handle(consumer, msg)
                await self._tick(consumer)
                await self._sweep(consumer)
                await self._delete_parts()
        except StoreRetryStopped as exc:  # what did not land is not committed: delivered again
            self._log.warning("packager stopped during a store outage", error=str(exc))
        finally:
            if self.regions is not None:
                beating.cancel()
                await asyncio.gather(beating, return_exceptions=True)
            await self.index.close()
            await self._delete_parts_at_stop()
            await consumer.close()
            self._log.info("packager stopped", **asdict(self.stats))

    def _check_assignment(self, consumer: Consumer) -> None:
        """After a rebalance, forget every stream: another packager may have owned (and moved on)
        any of them meanwhile. Each is rebuilt from the store on its next event; what was held
        uncommitted here is delivered again to its owner, which skips what the store has."""
        if not isinstance(consumer, Rebalancing) or consumer.generation == self._generation:
            return
        if self._generation and self._streams:
            self.stats.rebalances += 1
            self._log.info("partitions reassigned; streams dropped", streams=len(self._streams))
        self._generation = consumer.generation
        self._streams.clear()
        self.index.clear()
        self.ownership.forget()
        self._written.clear()
        self._written_at.clear()
        self._tracker.clear()

    async def _handle(self, consumer: Consumer, msg: Message) -> None:
        taken = time.perf_counter()
        token = self._tracker.track(msg)
        try:
            event = decode(msg.value)
        except EventDecodeError as exc:
            self.stats.decode_errors += 1
            await self.dead_letters.undecodable(msg, exc)  # before the commit, retried until sent
            await self._commit(consumer, [token])
            return
        if not isinstance(event, SegmentReady | StreamState | PartReady) or not is_stream_name(event.stream):
            self.stats.rejected += 1
            await self.dead_letters.rejected(msg, f"a {event.TYPE} event of stream {event.stream!r}")
            await self._commit(consumer, [token])
            return
        self.ownership.saw(event)
        stream = self._streams.get(event.stream) or await self._open(event.stream)
        if isinstance(event, SegmentReady):
            end = event.wall_clock + event.duration_s
            self.live_edge[event.stream] = max(end, self.live_edge.get(event.stream, end))
            stream.on_segment(event, token, self._clock())
        elif isinstance(event, PartReady):
            end = event.wall_clock + event.duration_s
            self.live_edge[event.stream] = max(end, self.live_edge.get(event.stream, end))
            stream.on_part(event, token, self._clock())
        else:
            stream.on_state(event, token, self._clock())
        published = await self._flush(consumer, stream)
        if published is not None and isinstance(event, PartReady):
            self.part_latency.append(published - taken)

    @property
    def streams(self) -> dict[str, StreamPackager]:
        return self._streams

    def _new_stream(self, name: str) -> StreamPackager:
        return StreamPackager(
            name,
            live_window=self._live_window,
            gap_timeout=self._gap_timeout,
            stats=self.stats,
            target_duration=self._target,
            offline_grace=self._grace,
            dvr_window=self._dvr_window,
            part_target=self._part_target,
        )

    async def _open(self, name: str) -> StreamPackager:
        """A stream new to this process: state rebuilt from what its previous owner stored."""
        stream = self._streams[name] = self._new_stream(name)
        try:
            master = (await self._store.get(master_playlist_key(name))).decode()
        except NotFound:
            return stream
        media: dict[str, str] = {}
        dvr: dict[str, str] = {}
        try:
            for rendition in [*parse_master(master), *parse_master_audio(master)]:
                for key, into in (
                    (media_playlist_key(name, rendition), media),
                    (dvr_playlist_key(name, rendition), dvr),
                ):
                    try:
                        into[rendition] = text = (await self._store.get(key)).decode()
                    except NotFound:
                        continue
                    self._written[key] = text
            stream.restore(master, media, dvr, sealed=await self.ownership.elsewhere(name))
            self._written[master_playlist_key(name)] = master
        except (PlaylistError, UnicodeDecodeError) as exc:
            self._log.warning("stored playlists unreadable; starting afresh", stream_id=name, error=str(exc))
            stream = self._streams[name] = self._new_stream(name)
        return stream

    async def _sweep(self, consumer: Consumer) -> None:
        """Retention for the streams this process owns, every ``retention_interval`` seconds:
        those it has seen, and those in the store whose events would come here (a camera gone
        before this process started), opened from the store for what their playlists name."""
        if not self.retention.enabled or self._clock() < self._next_sweep:
            return
        self._next_sweep = self._clock() + self._retention_interval
        if isinstance(self._store, Browsable):
            try:
                stored = await self._store.children("streams/")
            except StoreRetryStopped:
                raise
            except Exception as exc:
                self.retention.stats.errors += 1
                self._log.warning("stream folders not listed", error=repr(exc))
                stored = []
            for name in stored:
                mine = not isinstance(consumer, Rebalancing) or consumer.owns(TOPIC_READY, name)
                if name not in self._streams and is_stream_name(name) and mine:
                    await self._open(name)
        for name, stream in list(self._streams.items()):
            try:
                if not await self.ownership.sweeps(name):
                    continue
                await self.retention.sweep(name, stream.named(), self.index)
            except StoreRetryStopped:
                raise
            except Exception as exc:
                self.retention.stats.errors += 1
                self._log.warning("retention sweep failed", stream_id=name, error=repr(exc))

    async def _tick(self, consumer: Consumer) -> None:
        await self._probe_store()
        now = self._clock()
        for stream in self._streams.values():
            deadline = stream.deadline()
            if deadline is not None and deadline <= now:
                stream.tick(now)
                await self._flush(consumer, stream)

    async def _probe_store(self) -> None:
        """While a stream waits for a missing segment: is the store there? (A call that waits out an
        outage, as any other.) After an outage the missing segments' gap timeouts start again."""
        now = self._clock()
        waiting = [s for s in self._streams.values() if s.waiting_for_gap()]
        due = any((d := s.deadline()) is not None and d <= now for s in waiting)  # a gap, unless...
        if not waiting or (now - self._probed_at < STORE_PROBE_SECONDS and not due):
            return
        await self._store.head(master_playlist_key(waiting[0].stream))
        self._probed_at = self._clock()
        if self.store_outage.ended_at is not None:
            for stream in waiting:
                stream.restart_gap_clock(self.store_outage.ended_at + POLICY.longest_pause)

    def _poll_timeout(self) -> float:
        deadlines = [d for s in self._streams.values() if (d := s.deadline()) is not None]
        if not deadlines:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(0.0, min(deadlines) - self._clock()))

    async def _flush(self, consumer: Consumer, stream: StreamPackager) -> float | None:
        """Write what changed; when a ``playlists-changed`` went out, then (``time.perf_counter``)."""
        out = stream.take_output(self._clock())
        owned = await self.ownership.owns(stream.stream)
        await self.index.append(stream.stream, out.index, summarise=owned)
        if not owned:  # another region's now: what is under this epoch only (the index chunks)
            await self._commit(consumer, out.done)
            return None
        master = master_playlist_key(stream.stream)
        changed = [(k, t) for k, t in out.writes if k != master and self._written.get(k) != t]
        if changed:  # the renditions' playlists at once, then the master that names them
            await asyncio.gather(*(self._put_playlist(k, t) for k, t in changed))
            self.playlists_written[stream.stream] = time.time()
        text = next((t for k, t in out.writes if k == master), None)
        if text is not None and self._written.get(master) != text:
            await self._put_playlist(master, text)
            self.playlists_written[stream.stream] = time.time()
        last = self._written_at.get(master, -math.inf)
        if (current := self._written.get(master)) and self._clock() - last >= MASTER_REFRESH_SECONDS:
            await self._put_playlist(master, current)
        self._unlisted.extend(out.unlisted)
        published = None
        if (
            out.ends
            and any("/dvr/" not in k for k, _ in changed)
            and await self._publish_ends(stream.stream, out.ends)
        ):
            published = time.perf_counter()
        await self._commit(consumer, out.done)
        return published

    async def _publish_ends(self, stream: str, ends: tuple[PlaylistEnd, ...]) -> bool:
        event = PlaylistsChanged(stream, ends, time.time())
        try:
            await self._bus.publish(TOPIC_PLAYLISTS, stream, encode(event))
        except StoreRetryStopped:
            raise
        except Exception as exc:  # the playlists are written: edges see them on their next reload
            self.stats.publish_errors += 1
            if self.stats.publish_errors == 1 or self.stats.publish_errors % 100 == 0:
                self._log.warning("playlists-changed not published", stream_id=stream, error=repr(exc))
            return False
        return True

    async def _delete_parts(self) -> None:
        """Part objects out of every live playlist for ``part_linger`` seconds (at most ``PART_DELETES``)."""
        due = self._clock() - self.part_linger
        keys: list[str] = []
        while self._unlisted and self._unlisted[0][0] <= due and len(keys) < PART_DELETES:
            keys.append(self._unlisted.popleft()[1])
        if keys:
            await asyncio.gather(*(self._store.delete(k) for k in keys))
            self.stats.parts_deleted += len(keys)

    async def _delete_parts_at_stop(self) -> None:
        """Stopping: the parts already out of the playlists go now, not ``part_linger`` later (the
        queue is in memory, so what is left in it would stay in the store until its epoch is
        cleaned up). Bounded: a store that does not answer within ``STOP_DELETE_SECONDS`` keeps them."""
        keys = [key for _, key in self._unlisted]
        self._unlisted.clear()
        if not keys:
            return
        try:
            async with asyncio.timeout(STOP_DELETE_SECONDS):
                for i in range(0, len(keys), PART_DELETES):
                    await asyncio.gather(*(self._store.delete(k) for k in keys[i : i + PART_DELETES]))
                    self.stats.parts_deleted += len(keys[i : i + PART_DELETES])
        except Exception as exc:  # stopping: what is left waits for the epoch clean-up
            self._log.warning("parts not deleted at stop", left=len(keys), error=repr(exc))

    async def _put_playlist(self, key: str, text: str) -> None:
        await self._store.put(key, text.encode(), PLAYLIST_CONTENT_TYPE)
        self._written[key] = text
        self._written_at[key] = self._clock()

    async def _commit(self, consumer: Consumer, tokens: Iterable[int]) -> None:
        latest: dict[tuple[str, int], Message] = {}
        for token in tokens:
            msg = self._tracker.done(token)
            if msg is not None:
                latest[(msg.topic, msg.partition)] = msg
        for msg in latest.values():
            if not await commit_or_log(consumer, msg, self._log):
                self.stats.commit_errors += 1
