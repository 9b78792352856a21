"""One WHEP playback session: an aiortc peer connection that sends a stream's live H.264 as it arrived.

The viewer's units come from the stream's live feed (``ingest.media.live``): the cached GOP first
(so the picture shows at once), then every unit as the source hands it to the media path. Nothing is
decoded or encoded: ``LiveVideoTrack`` returns each unit as an ``av.Packet`` (Annex B, 90 kHz
``pts``), which aiortc's H.264 packetizer (``H264Encoder.pack``) splits into RTP (STAP-A, FU-A).
aiortc answers the viewer's NACKs from its send history. A viewer's PLI (or FIR) is passed on to the
source when it can be asked (a WHIP publisher), at most once a second per stream. Audio goes as Opus
(``LiveAudioTrack``): a WHIP publisher's as it came, an AAC stream's encoded once per stream
(``ingest.media.live_audio``), once the viewer's video has started.

Lifecycle: ``answer(offer)`` → (ICE, DTLS, media) → ``close(reason)``: DELETE, ICE or DTLS failure,
no connection within ``connect_timeout``, or no unit for ``media_timeout`` seconds once connected
(the publisher ended and no new one came).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from camflow.log import get_logger
from ingest.media.live import LiveFeed, LiveFeeds, LiveViewer
from ingest.media.units import VIDEO_CLOCK_RATE
from ingest.sources.whip.errors import WhipError
from ingest.sources.whip.ice import IcePolicy, announce, check_candidates
from ingest.sources.whip.session import take_offer

TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
OPUS_TIME_BASE = Fraction(1, 48_000)
KEYFRAME_REQUEST_INTERVAL = 1.0  # seconds between the source's keyframe requests for one stream


@dataclass(frozen=True)
class WhepLimits:
    connect_timeout: float  # offer answered → ICE and DTLS connected
    media_timeout: float  # connected: seconds without a unit to send


class LiveVideoTrack(MediaStreamTrack):
    """A viewer's queue as an aiortc video track of pre-encoded frames."""

    kind = "video"

    def __init__(self, viewer: LiveViewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.last_unit = time.monotonic()
        self._ready = asyncio.Event()
        viewer.on_ready = self._ready.set

    async def recv(self) -> av.Packet[Any]:
        while True:
            self._ready.clear()
            item = self.viewer.take()
            if item is not None:
                frame, stamp = item
                packet = av.Packet(frame.data)
                packet.pts = stamp
                packet.time_base = TIME_BASE
                self.last_unit = time.monotonic()
                return packet
            if self.viewer.ended or self.readyState != "live":
                raise MediaStreamError
            await self._ready.wait()

    def stop(self) -> None:
        super().stop()
        self._ready.set()


class LiveAudioTrack(MediaStreamTrack):
    """A viewer's Opus packets as an aiortc audio track of pre-encoded frames (none: it waits)."""

    kind = "audio"

    def __init__(self, viewer: LiveViewer) -> None:
        super().__init__()
        self.viewer = viewer
        self._ready = asyncio.Event()
        viewer.on_audio = self._ready.set

    async def recv(self) -> av.Packet[Any]:
        while True:
            self._ready.clear()
            item = self.viewer.take_audio()
            if item is not None:
                data, stamp = item
                packet = av.Packet(data)
                packet.pts = stamp
                packet.time_base = OPUS_TIME_BASE
                return packet
            if self.viewer.ended or self.readyState != "live":
                raise MediaStreamError
            await self._ready.wait()

    def stop(self) -> None:
        super().stop()
        self._ready.set()


def _opus_only(codecs: list[RTCRtpCodecParameters]) -> list[RTCRtpCodecParameters]:
    return [c for c in codecs if c.mimeType.lower() == "audio/opus"]


def _h264_only(codecs: list[RTCRtpCodecParameters]) -> list[RTCRtpCodecParameters]:
    """The offer's H.264 (packetization mode 1: aiortc's packetizer sends FU-A and STAP-A) and the RTX
    that goes with it; Constrained Baseline first."""
    h264 = [
        c
        for c in codecs
        if c.mimeType.lower() == "video/h264" and str(c.parameters.get("packetization-mode", "0")) == "1"
    ]
    h264.sort(key=lambda c: str(c.parameters.get("profile-level-id", "")).lower() != "42e01f")
    kept = {c.payloadType for c in h264}
    rtx = [c for c in codecs if c.mimeType.lower() == "video/rtx" and c.parameters.get("apt") in kept]
    return h264 + rtx


class WhepSession:
    def __init__(
        self,
        feeds: LiveFeeds,
        feed: LiveFeed,
        policy: IcePolicy,
        limits: WhepLimits,
        on_closed: Callable[[WhepSession], None],
        client: str = "",
    ) -> None:
        self.feeds = feeds
        self.feed = feed
        self.stream = feed.stream
        self.id = secrets.token_hex(12)
        self.policy = policy
        self.limits = limits
        self.client = client
        self.closed = False
        self.reason: str | None = None
        self.viewer: LiveViewer | None = None
        self.log = get_logger("ingest", stream_id=self.stream, session=self.id)
        self._on_closed = on_closed
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._track: LiveVideoTrack | None = None
        self._created = time.monotonic()
        self._connected_at: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._pc.on("connectionstatechange", self._on_state)

    async def answer(self, offer: str) -> str:
        """The SDP answer to ``offer``; WhipError(400) on an offer that cannot receive the stream's H.264."""
        await take_offer(self._pc, offer)
        transceivers = self._pc.getTransceivers()
        video = [t for t in transceivers if t.kind == "video" and _h264_only(t._codecs)]
        if not video:
            raise WhipError(
                400,
                "no_video",
                "SDP offer has no video that can receive H.264 (packetization-mode=1): the stream's codec",
            )
        first = video[0]
        first._codecs = _h264_only(first._codecs)
        opus = [t for t in transceivers if t.kind == "audio" and _opus_only(t._codecs)][:1]
        for other in transceivers:
            if other is not first and other not in opus:
                other.direction = "inactive"  # one video and one audio track
        self.viewer = self.feed.subscribe()
        self._track = LiveVideoTrack(self.viewer)
        first.sender.replaceTrack(self._track)
        first.direction = "sendonly"
        first.sender._send_keyframe = self._keyframe_wanted  # type: ignore[method-assign]  # its PLI / FIR
        for audio in opus:  # Opus as the source sent it (WHIP), or the stream's AAC encoded once
            audio._codecs = _opus_only(audio._codecs)
            audio.sender.replaceTrack(LiveAudioTrack(self.viewer))
            audio.direction = "sendonly"
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        check_candidates(self._pc.localDescription.sdp, self.policy)
        self._watchdog = asyncio.create_task(self._watch(), name=f"whep-{self.stream}-{self.id}")
        self.log.info("whep_session_started", cached=self.feed.cached, client=self.client)
        return announce(self._pc.localDescription.sdp, self.policy)

    def _keyframe_wanted(self) -> None:
        self.feed.want_keyframe(time.monotonic(), KEYFRAME_REQUEST_INTERVAL)

    async def _on_state(self) -> None:
        state = self._pc.connectionState
        if state == "connected" and self._connected_at is None:
            self._connected_at = time.monotonic()
            if self._track is not None:
                self._track.last_unit = self._connected_at
            self.log.info("whep_connected", seconds=round(self._connected_at - self._created, 3))
        elif state == "failed" and not self.closed:
            ice = self._pc.iceConnectionState
            self._spawn(self.close("dtls_failed" if ice in ("connected", "completed") else "ice_failed"))

    async def _watch(self) -> None:
        while not self.closed:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if self._connected_at is None and now - self._created > self.limits.connect_timeout:
                self._spawn(self.close("connect_timeout"))
                return
            idle = now - self._track.last_unit if self._track is not None else 0.0
            if self._connected_at is not None and idle > self.limits.media_timeout:
                self._spawn(self.close("media_timeout"))
                return

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, reason: str) -> None:
        """End the session (idempotent): leave the feed, close the peer connection."""
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        self._on_closed(self)
        if self._watchdog is not None and self._watchdog is not asyncio.current_task():
            self._watchdog.cancel()
        if self.viewer is not None:
            self.viewer.close()
        self.feeds.forget(self.feed)
        with contextlib.suppress(Exception):
            await self._pc.close()
        counters = vars(self.viewer.counters) if self.viewer is not None else {}
        self.log.info(
            "whep_session_ended",
            reason=reason,
            seconds=round(time.monotonic() - self._created, 3),
            **counters,
        )
