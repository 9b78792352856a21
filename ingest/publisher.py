"""One publish session's media path: RTP packets → access units → segments → the bus.

The camera is never blocked by a slow bus: cut segments wait in a bounded queue in front
of the bus; when it is full the oldest waiting segment is dropped, counted and logged
(the packager's gap handling covers the hole). When the session ends, the partial
segment in hand is flushed, the queue drains (bounded in time), and an ``offline`` state
naming the last published sequence number closes the epoch.

Over UDP a small jitter buffer (``ingest.rtp.jitter``) puts packets back in order first.
What the depacketizer, the jitter buffer and the segmenter corrected (lost, late, reordered
packets, parameter sets re-inserted, timestamp jumps, damaged segments) is logged at most
once per segment (``media_corrected``, the counts since the last one) and summed up in
``publish_ended``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from camflow.bus import Bus
from camflow.events import (
    TOPIC_RAW,
    TOPIC_STREAMS,
    RawSegment,
    StreamState,
    StreamStateKind,
    encode,
)
from camflow.keys import new_epoch
from camflow.log import get_logger
from ingest.audio import AudioConfig, AudioCounters, AudioDepacketizer, AudioUnit
from ingest.audio_path import AudioPath
from ingest.errors import ParseError
from ingest.mux import H264, SegmentMuxer
from ingest.rtp.base import AccessUnit, VideoDepacketizer
from ingest.rtp.jitter import JitterBuffer
from ingest.rtp.packet import RtpPacket
from ingest.segmenter import TIMELINE_ORIGIN, TIMESCALE, CutSegment, Segmenter

DEFAULT_QUEUE_SEGMENTS = 8
DRAIN_SECONDS = 15.0


@dataclass
class PublishStats:
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
        depacketizer: VideoDepacketizer,
        *,
        segment_target: float = 2.0,
        queue_segments: int = DEFAULT_QUEUE_SEGMENTS,
        epoch: str | None = None,
        codec: str = H264,
        jitter: JitterBuffer | None = None,
    ) -> None:
        self.bus = bus
        self.stream = stream
        self.epoch = epoch or new_epoch()
        self.depacketizer = depacketizer
        self.segmenter = Segmenter(segment_target)
        self.muxer = SegmentMuxer(codec)
        self.jitter = jitter  # UDP only: TCP cannot reorder
        self.audio: AudioPath | None = None  # set by attach_audio when the stream has audio
        # The per-packet path over TCP: depacketizers that take header fields skip building an RtpPacket.
        push_fields = getattr(depacketizer, "push_fields", None) if jitter is None else None
        self._push_fields: Callable[[int, int, bool, bytes], list[AccessUnit]] | None = push_fields
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
        # For the health feed, set once per session or per segment (never per packet):
        self.started_at = time.monotonic()
        self.last_segment: tuple[float, float, int] | None = None  # (monotonic cut time, seconds, IDRs)
        self.end_reason: str | None = None

    async def start(self) -> None:
        await self.bus.publish(
            TOPIC_STREAMS, self.stream, encode(self._state(StreamStateKind.LIVE, "record"))
        )
        self._task = asyncio.create_task(self._drain(), name=f"publish-{self.stream}")
        self.log.info("publish_started")

    def _state(self, kind: StreamStateKind, reason: str, last_seq: int | None = None) -> StreamState:
        return StreamState(self.stream, self.epoch, kind, reason, time.time(), last_seq)

    def on_rtp(self, data: bytes) -> None:
        """One RTP packet of the video track (sync: called from the connection's read loop)."""
        self.stats.rtp_packets += 1
        self.stats.rtp_bytes += len(data)
        try:
            packet = RtpPacket.parse(data)
        except ParseError:
            self.stats.rtp_invalid += 1
            return
        if self.jitter is None:
            self._depacketize(packet)
            return
        for ordered in self.jitter.push(packet, time.monotonic()):
            self._depacketize(ordered)

    def on_rtp_header(
        self, second: int, sequence_number: int, timestamp: int, ssrc: int, payload: bytes, size: int
    ) -> None:
        """``on_rtp`` for a packet whose fixed header (V=2, no CSRC, extension or padding) the caller read:
        ``second`` is its second byte (marker, payload type), ``size`` the whole packet's length."""
        stats = self.stats
        stats.rtp_packets += 1
        stats.rtp_bytes += size
        push = self._push_fields
        if push is None:
            packet = RtpPacket(second & 0x7F, sequence_number, timestamp, ssrc, payload, second > 0x7F)
            if self.jitter is None:
                self._depacketize(packet)
            else:
                for ordered in self.jitter.push(packet, time.monotonic()):
                    self._depacketize(ordered)
            return
        for unit in push(sequence_number, timestamp, second > 0x7F, payload):
            self._on_unit(unit)

    def _depacketize(self, packet: RtpPacket) -> None:
        for unit in self.depacketizer.push(packet):
            self._on_unit(unit)

    def on_unit(self, unit: AccessUnit) -> None:
        """One access unit (90 kHz pts) of a source that is not RTP: a pulled RTSP source (ingest.pull)."""
        self._on_unit(unit)

    def attach_audio(
        self,
        config: AudioConfig,
        depacketizer: AudioDepacketizer | None = None,
        jitter: JitterBuffer | None = None,
        *,
        counters: AudioCounters | None = None,
    ) -> None:
        """Give the stream an AAC audio track (see ``ingest.audio_path.AudioPath``); call before any audio.
        ``counters``: where a non-RTP source (a pulled camera's encoder) counts its audio corrections."""
        self.audio = AudioPath(
            config, self.segmenter, depacketizer=depacketizer, jitter=jitter, counters=counters
        )
        self.muxer.audio = config
        self.log.info(
            "audio_attached", codecs=config.codecs, rate=config.sample_rate, channels=config.channels
        )

    def on_audio_rtp(self, data: bytes) -> None:
        """One RTP packet of the audio track."""
        if self.audio is not None:
            for segment in self.audio.on_rtp(data):
                self._publish_segment(segment)

    def on_audio_unit(self, unit: AudioUnit) -> None:
        """One AAC access unit of a source that is not RTP (WHIP), pts in the config's sample rate."""
        if self.audio is not None:
            for segment in self.audio.on_unit(unit):
                self._publish_segment(segment)

    def on_audio_sender_report(self, ntp_unix: float, rtp_timestamp: int) -> None:
        if self.audio is not None:
            self.audio.on_sender_report(ntp_unix, rtp_timestamp)

    def on_sender_report(self, ntp_unix: float, rtp_timestamp: int) -> None:
        """An RTCP sender report of the video track: ``wall_clock`` follows the camera's clock from now on."""
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
        return ntp_unix + diff / self.depacketizer.clock_rate

    def _on_unit(self, unit: AccessUnit) -> None:
        self.stats.units += 1
        if self._wall_base is None and unit.is_idr:
            self._wall_base = (self._camera_time(unit.pts), unit.pts)
        if unit.is_idr and self.audio is not None:
            self.audio.on_video_idr(unit.pts)
        for segment in self.segmenter.push(unit):
            self._on_segment(segment)

    def _on_segment(self, segment: CutSegment) -> None:
        if self.audio is not None:  # held until its audio is in
            for ready in self.audio.segments(segment):
                self._publish_segment(ready)
            return
        self._publish_segment(segment)

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
                "segment_dropped", seq=dropped.seq, reason="bus too slow", queued=len(self._queue)
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
        """End of the session: flush the partial segment, drain, publish ``offline``."""
        if self._closing:
            return
        self.end_reason = reason
        if self.jitter is not None:
            for packet in self.jitter.flush():
                self._depacketize(packet)
        for unit in self.depacketizer.flush():
            self._on_unit(unit)
        for segment in self.segmenter.flush():
            self._on_segment(segment)
        if self.audio is not None:
            for segment in self.audio.flush():
                self._publish_segment(segment)
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), DRAIN_SECONDS)
            except TimeoutError:
                self._task.cancel()
                self.stats.segments_dropped += len(self._queue)
                self.log.error("drain_timeout", left=len(self._queue))
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
        """Every correction counter of the media path (depacketizer, jitter buffer, segmenter), by name."""
        out: dict[str, int] = {}
        jitter = self.jitter.counters if self.jitter is not None else None
        audio = (self.audio.counters, self.audio.track.counters) if self.audio is not None else ()
        video = getattr(self.depacketizer, "counters", None)
        for counters in (video, jitter, self.segmenter.counters, *audio):
            if counters is not None and dataclasses.is_dataclass(counters) and not isinstance(counters, type):
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
