"""One publish session's media path: codec-neutral units → segments → the bus.

Every source (``ingest.sources``: RTSP push, WHIP, RTSP pull) turns its protocol into video access
units (``push_video``), AAC units (``push_audio``) and sender-report timing (``sender_report``,
``audio_sender_report``), and hands them here; the media path knows nothing of RTP, RTSP or WebRTC.
The muxer (fMP4, or NUT for VP8) is chosen from the codec when the path is built.

The camera is never blocked by the bus: in a service, ``bus`` is ingest's spool
(``ingest.media.spooled_bus``), whose ``publish`` returns once the message is on disk and which
delivers it when the bus takes it. Cut segments wait in a small bounded queue in front of it;
should the spool's disk fall behind, the oldest waiting segment is dropped, counted and logged
(the packager's gap handling covers the hole). When the session ends, the partial segment in
hand is flushed, the queue drains (bounded in time), and an ``offline`` state naming the last
published sequence number closes the epoch.

What the source (its ``counters``: an RTP depacketizer's and jitter buffer's, a pulled source's
assembler's, ...) and the segmenter corrected (lost, late, reordered packets, parameter sets
re-inserted, timestamp jumps, damaged segments) is logged at most once per segment
(``media_corrected``, the counts since the last one) and summed up in ``publish_ended``.

Low-latency HLS (``part_target``): the segmenter also cuts parts inside each segment; each goes,
with its audio (waited for at most ``AudioPath.part_hold``: a timer lets it go then), through the
same muxer and then, live only, to the bus behind the spool (``ingest.media.part_sender``), before
the segment it belongs to is even complete.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from camflow.bus import Bus
from camflow.events import (
    TOPIC_RAW,
    TOPIC_STREAMS,
    RawPart,
    RawSegment,
    StreamState,
    StreamStateKind,
    encode,
)
from camflow.keys import new_epoch
from camflow.log import get_logger
from ingest.codecs.aac import AudioConfig, AudioCounters, AudioUnit
from ingest.media.audio_path import AudioPath, Cut
from ingest.media.cuts import CutPart, CutSegment
from ingest.media.live import LiveFeed, LiveFeeds
from ingest.media.live_audio import AacToOpus
from ingest.media.mux import muxer_for
from ingest.media.part_sender import PartSender
from ingest.media.segmenter import TIMELINE_ORIGIN, TIMESCALE, Segmenter
from ingest.media.spooled_bus import SpooledBus
from ingest.media.units import VIDEO_CLOCK_RATE, AccessUnit

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

DEFAULT_QUEUE_SEGMENTS = 8
DRAIN_SECONDS = 15.0


@dataclass
class PublishStats:
    """What the session received and published. The source counts what arrived (``rtp_*``: packets and
    bytes of its video, whatever its protocol, for the health feed's bitrate); the media path the rest."""

    rtp_packets: int = 0
    rtp_bytes: int = 0
    rtp_invalid: int = 0
    units: int = 0
    segments_cut: int = 0
    segments_published: int = 0
    segments_dropped: int = 0
    segments_unmuxable: int = 0
    publish_errors: int = 0
    sender_reports: int = 0


class Publisher:
    def __init__(
        self,
        bus: Bus,
        stream: str,
        *,
        codec: str,
        segment_target: float,
        queue_segments: int = DEFAULT_QUEUE_SEGMENTS,
        epoch: str | None = None,
        counters: Sequence[DataclassInstance] = (),
        part_target: float | None = None,
        part_bus: Bus | None = None,
        live: LiveFeeds | None = None,
    ) -> None:
        """``codec``: ``h264``, ``hevc`` or ``vp8``; ``counters``: the source's correction counters
        (dataclasses of counts, read into ``corrections``); ``part_target``: seconds of the parts cut
        inside each segment (low-latency HLS; None: none), published live on ``part_bus`` (default:
        ``bus``, or the bus behind it when ``bus`` is ingest's spool: parts are never spooled); ``live``:
        the process's live feeds (``ingest.media.live``), which get every video unit as it arrives."""
        self.bus = bus
        self.stream = stream
        self.epoch = epoch or new_epoch()
        self.segmenter = Segmenter(target=segment_target, part_target=part_target)
        self.codec = codec
        self.muxer = muxer_for(codec)
        self.audio: AudioPath | None = None  # set by attach_audio when the stream has audio
        self._source_counters = tuple(counters)
        self._corrections_logged: dict[str, int] = {}
        self.stats = PublishStats()
        self.log = get_logger("ingest", stream_id=stream, epoch=self.epoch)
        self._queue: deque[RawSegment] = deque()
        self._queue_max = queue_segments
        self._wake = asyncio.Event()
        self._closing = False
        self._last_published = -1
        self._wall_base: tuple[float, int] | None = None  # (UNIX time, pts) of the first unit
        self._sender_report: tuple[float, int] | None = None  # (camera UNIX time, RTP timestamp), RTCP SR
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._audio_timer: asyncio.TimerHandle | None = None  # releases held parts and segments (``due``)
        self._audio_due: float | None = None
        self.parts: PartSender | None = None
        if part_target is not None:
            unspooled = bus.bus if isinstance(bus, SpooledBus) else bus  # parts are never spooled
            self.parts = PartSender(part_bus or unspooled, stream, self.log)
        # For the health feed, set once per session or per segment (never per packet):
        self.started_at = time.monotonic()
        self.last_segment: tuple[float, float, int] | None = None  # (monotonic cut time, seconds, IDRs)
        self.end_reason: str | None = None
        self._live = live
        self.live_feed: LiveFeed | None = None  # set by start when there are live feeds
        self._live_generation = 0
        self.opus_native = False  # the source sends its Opus with push_opus (WHIP): AAC is not re-encoded
        self._opus: AacToOpus | None = None  # the stream's AAC as Opus, while it has WebRTC viewers
        self._audio_config: AudioConfig | None = None

    async def start(self) -> None:
        await self.bus.publish(
            TOPIC_STREAMS, self.stream, encode(self._state(StreamStateKind.LIVE, "record"))
        )
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._drain(), name=f"publish-{self.stream}")
        if self._live is not None:
            self.live_feed, self._live_generation = self._live.publishing(self.stream, self.codec)
        if self.parts is not None:
            self.parts.start()
        self.log.info("publish_started")

    def _state(self, kind: StreamStateKind, reason: str, last_seq: int | None = None) -> StreamState:
        return StreamState(self.stream, self.epoch, kind, reason, time.time(), last_seq)

    def attach_audio(
        self, config: AudioConfig, *, clock_rate: int | None = None, counters: AudioCounters | None = None
    ) -> None:
        """Give the stream an AAC audio track (see ``ingest.media.audio_path.AudioPath``); call before any
        audio. ``clock_rate``: the clock of the audio sender reports' timestamps (an RTP track's; default
        the sample rate); ``counters``: where the source counts its audio corrections."""
        self.audio = AudioPath(config, self.segmenter, clock_rate=clock_rate, counters=counters)
        self._audio_config = config
        self.muxer.audio = config
        self.log.info(
            "audio_attached", codecs=config.codecs, rate=config.sample_rate, channels=config.channels
        )

    def push_video(self, unit: AccessUnit) -> None:
        """One video access unit, pts on the 90 kHz video clock (sync: called on the source's path)."""
        self.stats.units += 1
        if self.live_feed is not None:
            self.live_feed.push(unit, self._live_generation)
        if self._wall_base is None and unit.is_idr:
            self._wall_base = (self._camera_time(unit.pts), unit.pts)
        if unit.is_idr and self.audio is not None:
            self.audio.on_video_idr(unit.pts)
        segments = self.segmenter.push(unit)
        self._on_cuts(segments)

    def push_audio(self, unit: AudioUnit) -> None:
        """One AAC access unit, pts in the audio config's sample rate."""
        feed = self.live_feed
        if feed is not None and feed.viewers and not self.opus_native and self._audio_config is not None:
            if self._opus is None:
                self._opus = AacToOpus(self._audio_config)
            for data, pts in self._opus.push(unit):
                feed.push_opus(data, pts, self._live_generation)
        if self.audio is not None:
            for cut in self.audio.on_unit(unit):
                self._publish(cut)
            self._schedule_audio()

    def push_opus(self, data: bytes, pts: int) -> None:
        """The source's own Opus packet (``pts`` on 48 kHz), for WebRTC viewers as it is (WHIP)."""
        self.opus_native = True
        if self.live_feed is not None:
            self.live_feed.push_opus(data, pts, self._live_generation)

    def audio_sender_report(self, ntp_unix: float, rtp_timestamp: int) -> None:
        """The audio track's clock against wall-clock time (an RTCP sender report, or the source's own)."""
        if self.audio is not None:
            self.audio.on_sender_report(ntp_unix, rtp_timestamp)

    def sender_report(self, ntp_unix: float, rtp_timestamp: int) -> None:
        """The video clock against the camera's wall clock (an RTCP sender report of the video track, or
        the source's own): ``wall_clock`` follows the camera's clock from now on."""
        self.stats.sender_reports += 1
        if self.audio is not None:
            self.audio.on_video_sender_report(ntp_unix, rtp_timestamp)
        self._sender_report = (ntp_unix, rtp_timestamp & 0xFFFFFFFF)
        if self._wall_base is not None:
            self._wall_base = (self._camera_time(self._wall_base[1]), self._wall_base[1])

    def _camera_time(self, pts: int) -> float:
        """UNIX time of ``pts`` by the camera's last sender report, else by arrival (now)."""
        if self._sender_report is None:
            return time.time()
        ntp_unix, rtp_timestamp = self._sender_report
        diff = (pts - rtp_timestamp) & 0xFFFFFFFF
        if diff >= 1 << 31:
            diff -= 1 << 32
        return ntp_unix + diff / VIDEO_CLOCK_RATE

    def _on_cuts(self, segments: list[CutSegment]) -> None:
        """What the segmenter cut: its parts first (a segment's parts come before it), then segments."""
        for part in self.segmenter.take_parts():
            if self.audio is not None:  # held until its audio is in
                for cut in self.audio.parts(part):
                    self._publish(cut)
            else:
                self._publish_part(part)
        for segment in segments:
            if self.audio is not None:
                for cut in self.audio.segments(segment):
                    self._publish(cut)
            else:
                self._publish_segment(segment)
        self._schedule_audio()

    def _schedule_audio(self) -> None:
        """Arm the timer that lets held parts (and segments) go when their audio is late
        (``AudioPath.due``)."""
        due = None if self.audio is None or self._loop is None or self._closing else self.audio.due()
        if due == self._audio_due:
            return
        if self._audio_timer is not None:
            self._audio_timer.cancel()
            self._audio_timer = None
        self._audio_due = due
        if due is not None and self._loop is not None:
            self._audio_timer = self._loop.call_later(max(0.0, due - time.monotonic()), self._audio_timeout)

    def _audio_timeout(self) -> None:
        self._audio_timer = self._audio_due = None
        if self.audio is not None and not self._closing:
            for cut in self.audio.release():
                self._publish(cut)
        self._schedule_audio()

    def _publish(self, cut: Cut) -> None:
        if isinstance(cut, CutPart):
            self._publish_part(cut)
        else:
            self._publish_segment(cut)

    def _publish_part(self, part: CutPart) -> None:
        if self.parts is None or self._wall_base is None:
            return
        params = self.parts.mux(self.muxer, part)
        if params is None:
            return
        data, codecs, width, height = params
        event = RawPart(
            stream=self.stream,
            epoch=self.epoch,
            seq=part.seq,
            start=part.start,
            duration=part.duration,
            timescale=TIMESCALE,
            part=part.part,
            independent=part.independent,
            wall_clock=self._wall_base[0] + (part.start - TIMELINE_ORIGIN) / TIMESCALE,
            codecs=codecs,
            width=width,
            height=height,
            data=data,
            discontinuity=part.discontinuity,
            last=part.last,
        )
        self.parts.send(event)

    def _publish_segment(self, segment: CutSegment) -> None:
        self.stats.segments_cut += 1
        idrs = sum(1 for sample in segment.samples if sample.is_idr)
        self.last_segment = (time.monotonic(), segment.duration / TIMESCALE, idrs)
        try:
            data = self.muxer.mux(segment)
        except Exception as exc:
            self.stats.segments_unmuxable += 1
            self.log.warning("segment_unmuxable", seq=segment.seq, error=str(exc))
            return
        params = self.muxer.params
        assert params is not None and self._wall_base is not None
        wall = self._wall_base[0] + (segment.start - TIMELINE_ORIGIN) / TIMESCALE
        event = RawSegment(
            stream=self.stream,
            epoch=self.epoch,
            seq=segment.seq,
            start=segment.start,
            duration=segment.duration,
            timescale=TIMESCALE,
            codecs=params.codecs,
            width=params.width,
            height=params.height,
            wall_clock=wall,
            data=data,
            damaged=segment.damaged,
            discontinuity=segment.discontinuity,
        )
        self._log_corrections(segment.seq)
        if len(self._queue) >= self._queue_max:
            dropped = self._queue.popleft()
            self.stats.segments_dropped += 1
            self.log.warning(
                "segment_dropped", seq=dropped.seq, reason="spool (or bus) too slow", queued=len(self._queue)
            )
        self._queue.append(event)
        self._wake.set()

    async def _drain(self) -> None:
        while True:
            while self._queue:
                event = self._queue.popleft()
                try:
                    await self.bus.publish(
                        TOPIC_RAW, f"{event.stream}/{event.epoch}/{event.seq}", encode(event)
                    )
                except Exception as exc:
                    self.stats.publish_errors += 1
                    self.log.error("segment_publish_failed", seq=event.seq, error=str(exc))
                    continue
                self.stats.segments_published += 1
                self._last_published = max(self._last_published, event.seq)
            if self._closing:
                return
            self._wake.clear()
            await self._wake.wait()

    async def close(self, reason: str) -> None:
        """End of the session: flush the partial segment, drain, publish ``offline``. The source hands
        over what it still holds (its depacketizers' tails) before."""
        if self._closing:
            return
        self.end_reason = reason
        if self._live is not None and self.live_feed is not None:
            self._live.ended(self.live_feed, self._live_generation)
        self._on_cuts(self.segmenter.flush())
        if self.audio is not None:
            for cut in self.audio.flush():
                self._publish(cut)
        self._closing = True
        self._schedule_audio()  # disarms the timer
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), DRAIN_SECONDS)
            except TimeoutError:
                self._task.cancel()
                self.stats.segments_dropped += len(self._queue)
                self.log.error("drain_timeout", left=len(self._queue))
        if self.parts is not None:
            await self.parts.close()
        self.muxer.close()
        last = self.segmenter.next_seq - 1
        try:
            await self.bus.publish(
                TOPIC_STREAMS, self.stream, encode(self._state(StreamStateKind.OFFLINE, reason, last))
            )
        except Exception as exc:
            self.log.error("state_publish_failed", error=str(exc))
        self.log.info("publish_ended", reason=reason, last_seq=last, **vars(self.stats), **self.corrections())

    def corrections(self) -> dict[str, int]:
        """Every correction counter of the media path (the source's, the segmenter's, audio's), by name."""
        out: dict[str, int] = {}
        audio = (self.audio.counters, self.audio.track.counters) if self.audio is not None else ()
        part = (self.parts.counters,) if self.parts is not None else ()
        for counters in (*self._source_counters, self.segmenter.counters, *audio, *part):
            out.update({k: v for k, v in dataclasses.asdict(counters).items() if isinstance(v, int)})
        return out

    def _log_corrections(self, seq: int) -> None:
        """At most one log line per segment: what was corrected since the previous line."""
        now = self.corrections()
        changed = {k: v - self._corrections_logged.get(k, 0) for k, v in now.items()}
        changed = {k: v for k, v in changed.items() if v}
        if changed:
            self._corrections_logged = now
            self.log.info("media_corrected", seq=seq, **changed)
