"""Ingest's health samples and metrics, read from the counters the media path keeps anyway.

Every ``interval`` seconds ``IngestHealth.collect`` looks at each publish session (RTSP
publishers and pulled sources) and produces one ``HealthSample``: its state
(``connecting`` until the first segment, ``live``, ``stalled`` after no segment for twice
the target duration, ``offline`` once the session ended, with the reason), the bitrate and
frame rate since the previous look, GOP length, timestamp corrections, lost packets, the
age of its newest segment and the segments of the stream the spool dropped (full). A change
between ``live`` and ``stalled`` is also published as a
``StreamState`` on the compacted ``camflow.streams`` (``live`` and ``offline`` are published
there by the publisher itself).

WHIP sessions count as protocol ``whip``, pulled sources as ``pull``, RTSP over TLS as ``rtsps``.

``samples`` is a Prometheus source (``camflow.metrics.add_source``): the plain ints of every
session, live or ended, are summed when Prometheus scrapes; nothing is done per packet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from camflow.bus import Bus
from camflow.events import TOPIC_STREAMS, HealthSample, StreamState, StreamStateKind, encode
from camflow.health import publish_state
from camflow.log import get_logger
from camflow.metrics import Sample, instance_name
from ingest.media.publisher import Publisher
from ingest.sources.pull.client import PullClient
from ingest.sources.rtsp.server import RtspServer

RETIRE_AFTER = 60.0  # seconds an ended session's counters are still read live (its drain), then folded
KEEP_STATE = 600.0  # seconds an ended stream stays in camflow_stream_state
TIMESTAMP_KINDS = ("timestamp_jumps_forward", "timestamp_jumps_backward", "dropped_after_jump", "dts_nudged")
DEPACKETIZER_KINDS = (
    "packets_lost",
    "packets_late",
    "packets_invalid",
    "fu_dropped",
    "oversize_dropped",
    "units_damaged",
    "paci_dropped",
    "reordered",
    "late_dropped",
    "duplicates",
    "holes_skipped",
    "resyncs",
)
# The rest of what ingest fixes or drops on the way in (Prometheus: camflow_ingest_media_corrections).
MEDIA_KINDS = (
    "params_inserted",
    "pts_missing",
    "frames_invalid",
    "dropped_before_idr",
    "forced_cuts",
    "segments_damaged",
    "keyframe_requests",
    "audio_packets_lost",
    "audio_packets_late",
    "audio_packets_invalid",
    "audio_units_dropped",
    "audio_gaps_filled",
    "audio_restarts",
    "audio_late_dropped",
    "audio_overflow_dropped",
    "audio_silence_inserted",
    "opus_undecodable",
    "parts_dropped",
    "parts_unmuxable",
)
CORRECTION_KINDS = (*DEPACKETIZER_KINDS, *TIMESTAMP_KINDS, *MEDIA_KINDS)  # a health sample's ``corrections``
log = get_logger("ingest.health")


@dataclass
class _Session:
    publisher: Publisher
    protocol: str
    state: StreamStateKind = StreamStateKind.CONNECTING
    previous: tuple[float, int, int] | None = None  # (monotonic, rtp bytes, units) at the last look
    ended_at: float | None = None


@dataclass
class _Totals:
    """Counters of sessions that ended more than ``RETIRE_AFTER`` ago, by (metric, label)."""

    values: dict[tuple[str, str], float] = field(default_factory=dict)

    def add(self, name: str, label: str, value: float) -> None:
        self.values[(name, label)] = self.values.get((name, label), 0.0) + value


class IngestHealth:
    def __init__(
        self,
        bus: Bus,
        *,
        rtsp: RtspServer | None = None,
        whip: Callable[[], Iterable[Publisher]] | None = None,
        pull_clients: Callable[[], Iterable[PullClient]] | None = None,
        spool_dropped: Callable[[str], int] | None = None,
        whep: str = "",
        segment_target: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``spool_dropped(stream)``: segments of the stream the spool dropped (``SpooledBus``);
        ``whep``: the base URL this process serves WHEP at, in every live sample (edges redirect
        WHEP viewers of the stream there)."""
        self.bus = bus
        self.whep = whep
        self.spool_dropped = spool_dropped
        self.rtsp = rtsp
        self.whip = whip
        self.pull_clients = pull_clients
        self.target = segment_target
        self.instance = instance_name()
        self._clock = clock
        self._sessions: dict[int, _Session] = {}
        self._totals = _Totals()
        self._last_state: dict[str, tuple[StreamStateKind, float]] = {}  # stream -> (state, monotonic)

    def _active(self) -> Iterator[tuple[Publisher, str]]:
        if self.rtsp is not None:
            secure = self.rtsp.secure_publishers
            for publisher in list(self.rtsp.publishers.values()):
                yield publisher, "rtsps" if id(publisher) in secure else "rtsp"
        for client in self._pulls():
            if client.publisher is not None:
                yield client.publisher, "pull"
        if self.whip is not None:
            for publisher in self.whip():
                yield publisher, "whip"

    def _pulls(self) -> Iterable[PullClient]:
        """Every configured pull source, with a session (``publisher``) or between attempts."""
        return self.pull_clients() if self.pull_clients is not None else ()

    def _refresh(self, now: float) -> list[_Session]:
        """Track new sessions, mark ended ones; return the ones that ended since the last look."""
        active = {id(p): (p, proto) for p, proto in self._active()}
        for key, (publisher, protocol) in active.items():
            if key not in self._sessions:
                self._sessions[key] = _Session(publisher, protocol)
        if self.rtsp is not None:
            while self.rtsp.ended:
                publisher = self.rtsp.ended.popleft()
                self._sessions.setdefault(id(publisher), _Session(publisher, "rtsp"))
        ended = []
        for key, session in list(self._sessions.items()):
            if session.ended_at is None and key not in active:
                session.ended_at = now
                ended.append(session)
            elif session.ended_at is not None and now - session.ended_at > RETIRE_AFTER:
                for name, label, value in self._counters(session):
                    self._totals.add(name, label, value)
                del self._sessions[key]
        return ended

    async def collect(self) -> list[HealthSample]:
        now = self._clock()
        ended = self._refresh(now)
        samples = []
        for session in self._sessions.values():
            if session.ended_at is None:
                samples.append(await self._live_sample(session, now))
        for session in ended:
            samples.append(self._sample(session, now, StreamStateKind.OFFLINE, self._end_reason(session)))
            self._last_state[session.publisher.stream] = (StreamStateKind.OFFLINE, now)
        reported = {s.stream for s in samples}
        for client in self._pulls():
            if client.publisher is None and client.source.name not in reported:
                samples.append(self._pull_sample(client, now))
        for stream in [s for s, (_, at) in self._last_state.items() if now - at > KEEP_STATE]:
            if self._last_state[stream][0] is StreamStateKind.OFFLINE:
                del self._last_state[stream]
        return samples

    @staticmethod
    def _end_reason(session: _Session) -> str:
        return session.publisher.end_reason or "session ended"

    async def _live_sample(self, session: _Session, now: float) -> HealthSample:
        publisher = session.publisher
        last = publisher.last_segment
        since_segment = None if last is None else now - last[0]
        state, reason = publish_state(since_segment, now - publisher.started_at, self.target)
        before = session.state
        session.state = state
        self._last_state[publisher.stream] = (state, now)
        if (
            state is not before
            and StreamStateKind.STALLED in (state, before)
            and publisher.end_reason is None
        ):
            await self._publish_state(publisher, state, reason)
        return self._sample(session, now, state, reason)

    async def _publish_state(self, publisher: Publisher, state: StreamStateKind, reason: str) -> None:
        event = StreamState(publisher.stream, publisher.epoch, state, reason, time.time())
        try:
            await self.bus.publish(TOPIC_STREAMS, publisher.stream, encode(event))
        except Exception as exc:
            log.warning(
                "state_publish_failed", stream_id=publisher.stream, state=state.value, error=repr(exc)
            )
            return
        log.info(
            "stream_state",
            stream_id=publisher.stream,
            epoch=publisher.epoch,
            state=state.value,
            reason=reason,
        )

    def _sample(self, session: _Session, now: float, state: StreamStateKind, reason: str) -> HealthSample:
        publisher = session.publisher
        stats = publisher.stats
        bitrate = fps = None
        if session.previous is not None and state is not StreamStateKind.OFFLINE:
            then, nbytes, units = session.previous
            span = now - then
            if span > 0:
                bitrate = round((stats.rtp_bytes - nbytes) * 8 / span, 1)
                fps = round((stats.units - units) / span, 2)
        session.previous = (now, stats.rtp_bytes, stats.units)
        corrections = publisher.corrections()
        last = publisher.last_segment
        gop = None
        if last is not None and last[2] > 0:
            gop = round(last[1] / last[2], 3)
        return HealthSample(
            stream=publisher.stream,
            service="ingest",
            instance=self.instance,
            at=time.time(),
            state=state,
            reason=reason,
            epoch=publisher.epoch,
            bitrate=bitrate,
            fps=fps,
            gop_seconds=gop,
            timestamp_corrections=sum(corrections.get(k, 0) for k in TIMESTAMP_KINDS),
            packets_lost=corrections.get("packets_lost", 0),
            segment_age=None if last is None else round(now - last[0], 3),
            corrections={k: n for k in CORRECTION_KINDS if (n := corrections.get(k, 0))},
            spool_dropped=None if self.spool_dropped is None else self.spool_dropped(publisher.stream),
            whep=self.whep if state is not StreamStateKind.OFFLINE else "",
        )

    def _pull_sample(self, client: PullClient, now: float) -> HealthSample:
        """A pull source with no session: its first connection is under way (``connecting``), or
        it failed and waits for its next attempt (``offline``, with the error and the retry)."""
        stats = client.stats
        if stats.failures == 0:
            state, reason = (
                StreamStateKind.CONNECTING,
                f"pulling {client.source.shown} (attempt {stats.attempts})",
            )
        else:
            retry = (
                ", trying now"
                if stats.retry_at is None
                else f", next in {max(0.0, stats.retry_at - now):.1f} s"
            )
            state = StreamStateKind.OFFLINE
            reason = (
                f"pull failed {stats.failures} time(s), {stats.connects} connected: {stats.last_error}"
                f" (attempt {stats.attempts}{retry})"
            )
        return HealthSample(
            stream=client.source.name,
            service="ingest",
            instance=self.instance,
            at=time.time(),
            state=state,
            reason=reason[:300],
        )

    # --- Prometheus ------------------------------------------------------------------------------

    @staticmethod
    def _counters(session: _Session) -> Iterator[tuple[str, str, float]]:
        stats = session.publisher.stats
        proto = session.protocol
        yield "camflow_ingest_packets", proto, stats.rtp_packets
        yield "camflow_ingest_bytes", proto, stats.rtp_bytes
        yield "camflow_ingest_frames", proto, stats.units
        yield "camflow_ingest_segments", "published", stats.segments_published
        yield "camflow_ingest_segments", "dropped", stats.segments_dropped
        yield "camflow_ingest_segments", "unmuxable", stats.segments_unmuxable
        yield "camflow_ingest_segments", "publish_failed", stats.publish_errors
        yield "camflow_ingest_depacketizer_errors", "rtp_invalid", stats.rtp_invalid
        corrections = session.publisher.corrections()
        for kind in DEPACKETIZER_KINDS:
            if kind in corrections:
                yield "camflow_ingest_depacketizer_errors", kind, corrections[kind]
        for kind in TIMESTAMP_KINDS:
            if kind in corrections:
                yield "camflow_ingest_timestamp_corrections", kind, corrections[kind]
        for kind in MEDIA_KINDS:
            if kind in corrections:
                yield "camflow_ingest_media_corrections", kind, corrections[kind]

    def samples(self) -> Iterator[Sample]:
        """Every ingest metric now (a ``camflow.metrics`` source)."""
        now = self._clock()
        for (name, label), value in self._totals.values.items():
            yield name, (label,), value
        for proto in ("rtsp", "rtsps", "pull", "whip"):
            yield "camflow_ingest_sessions", (proto,), 0.0
        for client in self._pulls():
            name, stats = client.source.name, client.stats
            yield "camflow_ingest_pull_attempts", (name,), float(stats.attempts)
            yield "camflow_ingest_pull_failures", (name,), float(stats.failures)
            yield "camflow_ingest_pull_connected", (name,), 1.0 if client.publisher is not None else 0.0
        # What runs at this scrape, not at the last health tick: a session that ended (or began)
        # since then is not (or is) counted, however long the tick waits.
        active = {id(p): _Session(p, proto) for p, proto in self._active()}
        for session in {**self._sessions, **active}.values():
            for name, label, value in self._counters(session):
                yield name, (label,), float(value)
        for session in active.values():
            yield "camflow_ingest_sessions", (session.protocol,), 1.0
            last = session.publisher.last_segment
            if last is not None:
                yield (
                    "camflow_ingest_segment_age_seconds",
                    (session.publisher.stream,),
                    round(now - last[0], 3),
                )
        if self.rtsp is not None:
            yield "camflow_ingest_connections", (), float(self.rtsp.open_connections)
        for stream, (state, _) in self._last_state.items():
            for kind in StreamStateKind:
                yield "camflow_stream_state", (stream, kind.value), 1.0 if kind is state else 0.0
