"""One WHIP publish session: an aiortc peer connection whose encoded video feeds a ``Publisher``.

Lifecycle: ``answer(offer)`` → (ICE, DTLS, media) → ``close(reason)``. The session ends, its partial
segment flushed and its stream marked ``offline`` (``Publisher.close``), when the resource is
DELETEd, the peer sends RTCP BYE, ICE or DTLS fails, the connection is not up within
``connect_timeout``, or no video frame came for ``media_timeout`` seconds. A watchdog task (one per
session, one wake-up a second) checks the timeouts, requests keyframes and logs ``whip_health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from camflow.bus import Bus
from camflow.log import get_logger
from ingest.codecs.vp8 import VP8
from ingest.errors import ParseError
from ingest.media.live import LiveFeeds
from ingest.media.mux import H264
from ingest.media.publisher import Publisher
from ingest.media.units import VIDEO_CLOCK_RATE
from ingest.sources.whip.audio import OpusToAac
from ingest.sources.whip.errors import WhipError
from ingest.sources.whip.ice import IcePolicy, announce, check_candidates
from ingest.sources.whip.media import WhipCounters, WhipStats, h264_unit, tap, vp8_unit

VIDEO_CODECS = {"H264": H264, "VP8": VP8}
PREFERENCE = ("H264", "VP8")  # H.264 first: it is segmented as is, VP8 has to be transcoded


async def take_offer(pc: RTCPeerConnection, offer: str) -> None:
    """``offer`` as ``pc``'s remote description (WHIP's and WHEP's alike); WhipError(400) on a body
    that is not an SDP offer or one aiortc cannot take."""
    lines = offer.strip().splitlines()
    if lines[:1] != ["v=0"] or not any(line.startswith("m=") for line in lines):
        raise WhipError(400, "bad_sdp", f"body starts {offer[:40]!r}: expected an SDP offer (v=0 ... m=...)")
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    except Exception as exc:  # aiortc raises ValueError, OperationError, ... on offers it cannot take
        raise WhipError(400, "bad_sdp", f"SDP offer refused: {exc or type(exc).__name__}") from None


@dataclass(frozen=True)
class SessionLimits:
    """Defaults where the flags are defined (``--segment-duration``, ``--webrtc-timeout``)."""

    segment_target: float
    connect_timeout: float  # offer answered → ICE and DTLS connected
    media_timeout: float  # connected: seconds without a video frame
    health_interval: float = 5.0
    part_target: float | None = None  # seconds of the low-latency parts (--part-duration); None: none


def _prefer(codecs: list[RTCRtpCodecParameters]) -> list[RTCRtpCodecParameters]:
    def rank(codec: RTCRtpCodecParameters) -> int:
        name = codec.mimeType.split("/")[-1].upper()
        return PREFERENCE.index(name) if name in PREFERENCE else len(PREFERENCE)

    return sorted(codecs, key=rank)


class WhipSession:
    def __init__(
        self,
        bus: Bus,
        stream: str,
        policy: IcePolicy,
        limits: SessionLimits,
        on_closed: Callable[[WhipSession], None],
        live: LiveFeeds | None = None,
    ) -> None:
        self.bus = bus
        self.live = live
        self.stream = stream
        self.id = secrets.token_hex(12)
        self.policy = policy
        self.limits = limits
        self.answer_sdp = ""
        self.closed = False
        self.reason: str | None = None
        self.device: str | None = None  # the device whose credential opened it, if one did
        self.counters = WhipCounters()
        self.stats = WhipStats()
        self.publisher: Publisher | None = None
        self.audio: OpusToAac | None = None
        self.codec: str | None = None
        self.log = get_logger("ingest", stream_id=stream, session=self.id)
        self._on_closed = on_closed
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._receiver: Any = None
        self._created = time.monotonic()
        self._connected_at: float | None = None
        self._last_frame = self._created
        self._last_idr: int | None = None
        self._last_request: int | None = None  # media time of the last keyframe request
        self._interval = [0, 0]  # frames, bytes since the last health line
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._pc.on("connectionstatechange", self._on_state)

    # --- negotiation ---------------------------------------------------------------

    async def answer(self, offer: str) -> str:
        """The SDP answer to ``offer``, the media path ready; WhipError(400) on an offer we cannot take."""
        await take_offer(self._pc, offer)
        video = [t for t in self._pc.getTransceivers() if t.kind == "video" and t._codecs]
        if not video:
            raise WhipError(
                400, "no_video", "SDP offer has no video with a codec in common: expected H264 or VP8"
            )
        first = video[0]
        first._codecs = _prefer(first._codecs)
        name = first._codecs[0].mimeType.split("/")[-1].upper()
        if name not in VIDEO_CODECS:
            raise WhipError(400, "no_video", f"SDP offer's video codec {name!r}: expected H264 or VP8")
        self.codec = VIDEO_CODECS[name]
        for extra in video[1:]:
            extra.direction = "inactive"  # one video track per stream
        self._receiver = first.receiver
        tap(self._receiver, self._on_frame, self._on_end)
        opus = [t for t in self._pc.getTransceivers() if t.kind == "audio" and t._codecs]
        for audio in opus[:1]:
            tap(audio.receiver, self._on_audio, lambda: None)
        for extra in opus[1:]:
            extra.direction = "inactive"
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        check_candidates(self._pc.localDescription.sdp, self.policy)
        self.publisher = Publisher(
            self.bus,
            self.stream,
            codec=self.codec,
            segment_target=self.limits.segment_target,
            counters=(self.counters,),
            part_target=self.limits.part_target,
            live=self.live,
        )
        if opus and opus[0]._codecs[0].mimeType.lower() == "audio/opus":
            self.audio = OpusToAac(opus[0]._codecs[0].channels or 2)
            self.publisher.attach_audio(self.audio.encoder.config)
        await self.publisher.start()
        if self.publisher.live_feed is not None:  # a WHEP viewer without a cached IDR asks for one
            self.publisher.live_feed.request_keyframe = self.request_keyframe
        self._watchdog = asyncio.create_task(self._watch(), name=f"whip-{self.stream}")
        self.answer_sdp = announce(self._pc.localDescription.sdp, self.policy)
        self.log.info("whip_session_started", codec=self.codec)
        return self.answer_sdp

    # --- media ---------------------------------------------------------------------

    def _on_frame(self, codec: str, data: bytes, timestamp: int) -> None:
        counters = self.counters
        self.stats.frames += 1
        self.stats.bytes += len(data)
        self._interval[0] += 1
        self._interval[1] += len(data)
        self._last_frame = time.monotonic()
        if self.publisher is None or self.closed:
            return
        self.publisher.stats.rtp_bytes += len(data)  # the health sample's bitrate (payload bytes)
        try:
            if VIDEO_CODECS.get(codec) != self.codec:
                raise ParseError(f"frame of codec {codec!r}: expected the negotiated {self.codec!r}")
            unit = h264_unit(data, timestamp) if self.codec == H264 else vp8_unit(data, timestamp)
        except ParseError as exc:
            counters.frames_invalid += 1
            self.log.debug("whip_frame_invalid", error=str(exc))
            return
        if unit.is_idr:
            self.stats.keyframes += 1
            self._last_idr = unit.pts
        else:
            self._request_keyframe_if_due(unit.pts)
        self.publisher.push_video(unit)

    def _on_audio(self, codec: str, data: bytes, timestamp: int) -> None:
        """Opus frames → AAC units → the publisher."""
        self.stats.audio_frames += 1
        if self.audio is None or self.publisher is None or self.closed or codec != "OPUS":
            return
        self.publisher.push_opus(data, timestamp)  # WebRTC viewers get it as it came
        for unit in self.audio.push(data, timestamp):
            self.publisher.push_audio(unit)

    def _request_keyframe_if_due(self, pts: int) -> None:
        """A PLI when the segment in hand needs an IDR: none for the target duration (1 s before the 1st)."""
        wait = (
            VIDEO_CLOCK_RATE
            if self._last_idr is None
            else round(self.limits.segment_target * VIDEO_CLOCK_RATE)
        )
        since_idr = pts - (self._last_idr if self._last_idr is not None else -wait)
        since_request = pts - self._last_request if self._last_request is not None else wait
        if since_idr >= wait and since_request >= wait:
            self._last_request = pts
            self.request_keyframe()

    def request_keyframe(self) -> None:
        if self._receiver is None:
            return
        # The media SSRC: not the RTX one (Chromium probes bandwidth with RTX padding from the start).
        rtx = getattr(self._receiver, "_RTCRtpReceiver__rtx_ssrc", {})
        sources = [s.source for s in self._receiver.getSynchronizationSources() if s.source not in rtx]
        if not sources:
            return
        self.counters.keyframe_requests += 1
        self._spawn(self._receiver._send_rtcp_pli(sources[0]))

    def _on_end(self) -> None:
        if not self.closed:
            self._spawn(self.close("bye"))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- health and timeouts -------------------------------------------------------

    async def _on_state(self) -> None:
        state = self._pc.connectionState
        if state == "connected" and self._connected_at is None:
            self._connected_at = time.monotonic()
            self._last_frame = self._connected_at
            self.log.info("whip_connected", seconds=round(self._connected_at - self._created, 3))
        elif state == "failed" and not self.closed:
            ice = self._pc.iceConnectionState
            self._spawn(self.close("dtls_failed" if ice in ("connected", "completed") else "ice_failed"))

    async def _watch(self) -> None:
        last_health = time.monotonic()
        while not self.closed:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if self._connected_at is None and now - self._created > self.limits.connect_timeout:
                self._spawn(self.close("connect_timeout"))
                return
            if self._connected_at is not None and now - self._last_frame > self.limits.media_timeout:
                self._spawn(self.close("media_timeout"))
                return
            if now - last_health >= self.limits.health_interval:
                await self._log_health(now - last_health)
                last_health = now

    async def _log_health(self, seconds: float) -> None:
        frames, size = self._interval
        self._interval = [0, 0]
        lost, jitter = 0, 0.0
        if self._receiver is not None:
            for stats in (await self._receiver.getStats()).values():
                if getattr(stats, "type", "") == "inbound-rtp":
                    lost, jitter = int(stats.packetsLost), float(stats.jitter)
        self.counters.packets_lost = max(0, lost)
        self.log.info(
            "whip_health",
            packets_lost=lost,
            jitter_ms=round(jitter * 1000 / VIDEO_CLOCK_RATE, 1),
            bitrate_kbps=round(size * 8 / seconds / 1000, 1),
            fps=round(frames / seconds, 1),
        )

    # --- end -----------------------------------------------------------------------

    async def close(self, reason: str) -> None:
        """End the session (idempotent): close the peer connection, flush, mark the stream offline."""
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        self._on_closed(self)
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        with contextlib.suppress(Exception):
            await self._pc.close()
        if self.publisher is not None:
            for unit in self.audio.flush() if self.audio is not None else []:
                self.publisher.push_audio(unit)
            await self.publisher.close(reason)
        self.log.info(
            "whip_session_ended",
            reason=reason,
            seconds=round(time.monotonic() - self._created, 3),
            **vars(self.stats),
            **vars(self.counters),
            **(vars(self.audio.counters) if self.audio is not None else {}),
        )
