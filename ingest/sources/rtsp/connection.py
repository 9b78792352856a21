"""One camera's RTSP connection: the socket side of a ``PublishSession``.

It reads requests and interleaved frames from the TCP connection, routes RTP (interleaved or from the
track's UDP ports) to its track's depacketizer (``RtpVideoTrack``, ``RtpAudioTrack``), whose units go
to the stream's media path (``Publisher``), RTCP sender reports to the media path's timing, and both
to reception statistics, and sends RTCP receiver reports back. The server's sweeper calls ``tick``
about once a second: RTP/RTCP counts as session activity there, and a connection that announced
nothing within the handshake timeout, or whose session went silent for its timeout, is aborted; so
is one that, after its handshake, began a request or interleaved frame and completed nothing
within the request timeout (bytes trickled into it count as activity, but not as progress).
Ending a connection, however it ends, flushes the depacketizers and the publisher's partial segment
and publishes the stream's ``offline`` state.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import struct
from typing import cast

from camflow.limits import Refusal
from camflow.log import get_logger
from ingest.errors import ParseError
from ingest.media.publisher import Publisher
from ingest.sources.rtp.audio import RtpAudioTrack, audio_depacketizer_for
from ingest.sources.rtp.jitter import JitterBuffer
from ingest.sources.rtp.packet import RTCP_SR, RtcpPacket, SenderReport
from ingest.sources.rtp.track import RtpVideoTrack
from ingest.sources.rtsp.host import ConnectionHost
from ingest.sources.rtsp.message import InterleavedFrame, MessageReader, Request, Response
from ingest.sources.rtsp.receiver import FrameReceiver, FrameRoute, payload_route
from ingest.sources.rtsp.rtcp import REPORT_INTERVAL, ReceptionStats, receiver_report
from ingest.sources.rtsp.session import PublishSession, State, Track
from ingest.sources.rtsp.tracks import depacketizer_for, video_codec
from ingest.sources.rtsp.udp import UdpTrackLink

READ_SIZE = 64 * 1024
PENDING_MAX = 256 * 1024  # bytes waiting for run() before reading pauses
_unpack_header = struct.Struct("!BBHII").unpack_from
log = get_logger("ingest.sources.rtsp")


class RtspConnection:
    def __init__(
        self,
        server: ConnectionHost,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        secure: bool = False,
    ) -> None:
        """``secure``: an RTSPS connection (inside TLS): RTP only interleaved in it, never over UDP."""
        self.server = server
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.camera_host = str(peer[0]) if isinstance(peer, tuple) else ""
        self.session = PublishSession(
            server.authorize,
            timeout=server.session_timeout,
            challenges=server.challenges,
            udp=self if server.udp_pool is not None and not secure else None,
            peer=self.camera_host,
            secure=secure,
        )
        self.secure = secure
        self.parser = MessageReader()
        self.publisher: Publisher | None = None
        self.video_in: RtpVideoTrack | None = None  # the RTP tracks feeding the publisher, while it lives
        self.audio_in: RtpAudioTrack | None = None
        self.opened = self.loop.time()
        self.activity = 0  # reads and datagrams; compared by ``tick``
        self._seen_activity = 0
        self.completed = 0  # reads that completed an item (a request, an interleaved frame)
        self._partial: tuple[float, int] | None = None  # an item begun: (seen at, completed then)
        self.end_reason: str | None = None
        self.links: dict[int, UdpTrackLink] = {}
        self.reception: dict[int, ReceptionStats] = {}
        self._channels: dict[int, tuple[Track, bool]] = {}
        self._routes: dict[int, FrameRoute] = {}  # interleaved channel -> what takes its frames
        self._video: Track | None = None  # the session's video track, once set up
        self._carry = b""  # the first part of an interleaved frame, read between messages
        self._pending = bytearray()  # bytes for run(): a request, and what came after it
        self._busy = False  # run() is handling requests: bytes go to it, in order
        self._paused = False
        self._closed: Exception | bool | None = None  # end of the stream (an exception: reset)
        self._wake = asyncio.Event()
        self._transport = cast(asyncio.Transport, writer.transport)
        self._ssrc = secrets.randbits(32)
        self._next_report = self.opened + REPORT_INTERVAL
        self.rtcp_invalid = 0
        self.receiver_reports = 0

    @property
    def announced(self) -> bool:
        return self.session.state is not State.INIT

    # --- the read loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Requests (and whatever follows them) are handled here; interleaved frames that arrive between
        requests are routed straight from the transport's ``data_received`` (``_received``)."""
        try:
            transport = self._transport
            inner = transport.get_protocol()
            early = bytes(getattr(self.reader, "_buffer", b""))  # read before this task started
            transport.set_protocol(FrameReceiver(self._received, self._lost, inner))
            transport.resume_reading()  # in case the stream reader had paused it (a no-op otherwise)
            if early:
                self._received(early)
            while True:
                if not self._pending:
                    self._busy = bool(self.parser.buffered)
                    if self._closed is not None:
                        if isinstance(self._closed, Exception):
                            raise ConnectionResetError(str(self._closed))
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                self._busy = True
                data = bytes(self._pending)
                self._pending.clear()
                if self._paused:
                    self._paused = False
                    if not transport.is_closing():
                        transport.resume_reading()
                self.parser.feed(data)
                if not await self._consume(self.loop.time()):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            self.end_reason = self.end_reason or "connection reset"
        except asyncio.CancelledError:
            self.end_reason = self.end_reason or "server stopping"
            raise
        finally:
            await self.close()

    def _received(self, data: bytes) -> None:
        """Bytes from the transport. Between requests, the interleaved frames are routed here at once;
        anything else (and everything after it, until the parser is drained) waits for ``run``."""
        self.activity += 1
        if not self._busy and not self._pending:
            if self._carry:
                data = self._carry + data
                self._carry = b""
            pos = self._frames(data, self.loop.time())
            if pos:
                self.completed += 1
            if pos == len(data):
                return
            if data[pos] == 0x24:  # the first part of a frame
                self._carry = data[pos:]
                return
            data = data[pos:]  # a request (or bytes the parser refuses)
        self._pending += data
        self._wake.set()
        if len(self._pending) > PENDING_MAX and not self._paused:
            self._paused = True  # run() is behind (e.g. waiting on a write): stop reading until it catches up
            self._transport.pause_reading()

    def _lost(self, exc: Exception | None) -> None:
        if self._closed is None:
            self._closed = exc if exc is not None else True
        self._wake.set()

    def _frames(self, data: bytes, arrival: float) -> int:
        """Route the complete interleaved frames at the start of ``data``; where the first other item begins.

        The per-packet path: no frame objects and no copies but the payload's, one route per channel.
        """
        routes = self._routes
        end = len(data)
        pos = 0
        while pos + 4 <= end and data[pos] == 0x24:
            stop = pos + 4 + (data[pos + 2] << 8 | data[pos + 3])
            if stop > end:
                break
            route = routes.get(data[pos + 1])
            if route is not None:
                route(data, pos + 4, stop, arrival)
            pos = stop
        return pos

    async def _consume(self, arrival: float) -> bool:
        """Handle every complete item in the parser; False when the connection must end."""
        while True:
            try:
                item = self.parser.next_item()
            except ParseError as exc:
                self.server.stats.bad_requests += 1
                log.warning("rtsp_bad_request", peer=self.peer, error=str(exc), stream_id=self.session.stream)
                body = (str(exc) + "\r\n").encode()
                headers = (("Content-Type", "text/plain"), ("Content-Length", str(len(body))))
                self.writer.write(bytes(Response(400, "Bad Request", headers, body)))
                await self.writer.drain()
                self.end_reason = "bad request"
                return False
            if item is None:
                return True
            self.completed += 1
            if isinstance(item, InterleavedFrame):
                route = self._routes.get(item.channel)
                if route is not None:
                    route(item.payload, 0, len(item.payload), arrival)
                continue
            await self._request(item)
            if self.session.state is State.CLOSED:
                self.end_reason = "teardown"
                return False

    async def _request(self, request: Request) -> None:
        session = self.session
        before = session.state
        response = session.handle(request)
        log.debug(
            "rtsp_request",
            method=request.method,
            cseq=request.cseq,
            status=response.status,
            state=session.state.value,
            stream_id=session.stream,
        )
        if response.status == 401:
            self.server.stats.unauthorized += 1
            log.warning("rtsp_unauthorized", peer=self.peer, uri=request.uri.split("?")[0])
        elif response.status >= 400:
            log.info(
                "rtsp_refused",
                peer=self.peer,
                method=request.method,
                status=response.status,
                reason=response.body.decode(errors="replace").strip(),
                stream_id=session.stream,
            )
        if request.method.upper() == "SETUP" and response.status == 200:
            self._index_tracks()
        if before is not State.RECORDING and session.state is State.RECORDING and self.publisher is None:
            await self._begin_publish()  # RECORD after PAUSE keeps the publisher
        self.writer.write(bytes(response))
        await self.writer.drain()

    def _index_tracks(self) -> None:
        """After each SETUP: reception statistics per track, and a route per interleaved channel."""
        self._channels = {}
        self._routes = {}
        self._video = video = self.session.video_track
        for track in self.session.tracks:
            if track.is_setup and track.index not in self.reception:
                rate = track.media.rtpmap.clock_rate if track.media.rtpmap else 90000
                self.reception[track.index] = ReceptionStats(rate or 90000)
            if track.rtp_channel is not None:
                self._channels[track.rtp_channel] = (track, False)
                self._channels[track.rtp_channel + 1] = (track, True)
                if track is video:
                    self._routes[track.rtp_channel] = self._video_rtp_route(self.reception[track.index])
                else:
                    self._routes[track.rtp_channel] = payload_route(self._on_rtp, track)
                self._routes[track.rtp_channel + 1] = payload_route(self._on_rtcp, track)

    def _video_rtp_route(self, stats: ReceptionStats) -> FrameRoute:
        """The video track's RTP: the fixed header read once, for reception statistics and the publisher."""
        on_header = stats.on_header
        track = self.session.video_track
        assert track is not None

        def route(data: bytes, start: int, stop: int, arrival: float) -> None:
            if stop - start < 12 or data[start] != 0x80:  # CSRCs, an extension, padding, or not RTP/2
                self._on_rtp(track, data[start:stop], arrival)
                return
            _, second, seq, timestamp, ssrc = _unpack_header(data, start)
            on_header(seq, timestamp, ssrc, arrival)
            video_in = self.video_in
            if video_in is not None:
                video_in.on_rtp_header(second, seq, timestamp, ssrc, data[start + 12 : stop], stop - start)

        return route

    async def _begin_publish(self) -> None:
        """RECORD: the stream's media path, fed by the video track's depacketizer (and jitter buffer)."""
        video = self.session.video_track
        assert self.session.stream is not None and video is not None
        depacketizer = depacketizer_for(video)
        jitter = JitterBuffer() if video.server_ports is not None else None  # UDP can reorder
        counters = (depacketizer.counters,) if jitter is None else (depacketizer.counters, jitter.counters)
        publisher = await self.server.begin_publisher(
            self, self.session.stream, codec=video_codec(video), counters=counters, secure=self.secure
        )
        self.video_in = RtpVideoTrack(depacketizer, publisher.push_video, publisher.stats, jitter=jitter)
        self.publisher = publisher
        self._attach_audio(publisher)

    def _attach_audio(self, publisher: Publisher) -> None:
        """Give the publisher the session's AAC or G.711 track; a bad fmtp leaves the stream video only."""
        track = self.session.audio_track
        if track is None or track.audio_format is None:
            return
        encoding, rate, channels = track.audio_format
        try:
            depacketizer = audio_depacketizer_for(encoding, rate, channels, track.media.fmtp)
        except ParseError as exc:
            log.warning("audio_ignored", stream_id=publisher.stream, encoding=encoding, error=str(exc))
            return
        jitter = JitterBuffer() if track.server_ports is not None else None  # UDP can reorder
        publisher.attach_audio(
            depacketizer.config, clock_rate=depacketizer.clock_rate, counters=depacketizer.counters
        )
        self.audio_in = RtpAudioTrack(depacketizer, publisher.push_audio, jitter=jitter)

    # --- UdpBinder: the session asks for a track's server ports ------------------------------

    def bind(self, track: Track) -> tuple[int, int] | None:
        pool = self.server.udp_pool
        assert pool is not None and track.client_ports is not None
        sockets = pool.bind_pair()
        if sockets is None:
            log.warning("rtsp_udp_ports_exhausted", ports=str(pool), stream_id=self.session.stream)
            return None
        old = self.links.pop(track.index, None)
        if old is not None:
            old.close()
        link = UdpTrackLink(
            sockets,
            self.camera_host,
            track.client_ports,
            lambda data, arrival: self._on_udp_rtp(track, data, arrival),
            lambda data, arrival: self._on_udp_rtcp(track, data, arrival),
            self.server.udp_stats,
        )
        link.start(self.loop)
        self.links[track.index] = link
        return link.server_ports

    def _on_udp_rtp(self, track: Track, data: bytes, arrival: float) -> None:
        self.activity += 1
        self._on_rtp(track, data, arrival)

    def _on_udp_rtcp(self, track: Track, data: bytes, arrival: float) -> None:
        self.activity += 1
        self._on_rtcp(track, data, arrival)

    # --- media ----------------------------------------------------------------------------------

    def _on_rtp(self, track: Track, data: bytes, arrival: float) -> None:
        stats = self.reception.get(track.index)
        if stats is not None:
            stats.on_rtp(data, arrival)
        if self.video_in is not None and track is self._video:
            self.video_in.on_rtp(data)
        elif self.audio_in is not None and track is self.session.audio_track:
            self.audio_in.on_rtp(data)

    def _on_rtcp(self, track: Track, data: bytes, arrival: float) -> None:
        try:
            packets = RtcpPacket.parse_compound(data)
        except ParseError as exc:
            self.rtcp_invalid += 1
            log.debug("rtcp_invalid", error=str(exc), stream_id=self.session.stream)
            return
        for packet in packets:
            if packet.packet_type != RTCP_SR:
                continue
            try:
                report = SenderReport.parse(data)
            except ParseError:
                self.rtcp_invalid += 1
                return
            stats = self.reception.get(track.index)
            if stats is not None:
                stats.on_sender_report(report, arrival)
            if self.publisher is not None and track is self.session.video_track:
                self.publisher.sender_report(report.unix_time, report.rtp_timestamp)
            elif self.publisher is not None and track is self.session.audio_track:
                self.publisher.audio_sender_report(report.unix_time, report.rtp_timestamp)
            return

    def _send_reports(self, now: float) -> None:
        self._next_report = now + REPORT_INTERVAL
        if self.session.state is not State.RECORDING:
            return
        for track in self.session.tracks:
            stats = self.reception.get(track.index)
            block = stats.report_block(now) if stats is not None else None
            if block is None:
                continue
            data = receiver_report(self._ssrc, f"camflow@{self.server.host}", [block])
            link = self.links.get(track.index)
            if link is not None:
                link.send_rtcp(data)
            elif track.rtp_channel is not None and not self.writer.is_closing():
                self.writer.write(bytes(InterleavedFrame(track.rtp_channel + 1, data)))
            else:
                continue
            self.receiver_reports += 1

    # --- liveness -------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Called by the server's sweeper: activity, deadlines, receiver reports."""
        if self.end_reason is not None:
            return
        if self.activity != self._seen_activity:
            self._seen_activity = self.activity
            self.session.touch()
        if not self.announced:
            if now - self.opened > self.server.handshake_timeout:
                self.server.stats.handshake_timeouts += 1
                self.server.refused(Refusal.HANDSHAKE_TIMEOUT, self.camera_host)
                self.abort(f"no ANNOUNCE within {self.server.handshake_timeout:g} s")
        elif self._request_late(now):
            self.server.refused(Refusal.HEAD_TIMEOUT, self.camera_host)
            self.abort(f"a request or frame begun was not whole within {self.server.request_timeout:g} s")
        elif self.session.expired():
            self.server.stats.sessions_timed_out += 1
            self.abort(f"session timeout ({self.session.timeout} s without a request or packet)")
        elif now >= self._next_report:
            self._send_reports(now)

    def _request_late(self, now: float) -> bool:
        """Whether an item (request, interleaved frame) has been partly received, with nothing completed
        since, for longer than the request timeout."""
        timeout = self.server.request_timeout
        if timeout is None:
            return False
        if not (self._carry or self._pending or self.parser.buffered):
            self._partial = None
            return False
        if self._partial is None or self._partial[1] != self.completed:
            self._partial = (now, self.completed)
            return False
        return now - self._partial[0] > timeout

    def abort(self, reason: str) -> None:
        """End the connection now (the read loop sees end of file and cleans up)."""
        if self.end_reason is None:
            self.end_reason = reason
        transport = self.writer.transport
        if not transport.is_closing():
            transport.abort()

    async def close(self) -> None:
        reason = self.end_reason or "connection closed"
        self.end_reason = reason
        for link in self.links.values():
            link.close()
        self.links.clear()
        if self.publisher is not None:
            publisher, self.publisher = self.publisher, None
            for track in (self.video_in, self.audio_in):  # their tails go in before the last segment is cut
                if track is not None:
                    track.flush()
            self.video_in = self.audio_in = None
            log.info(
                "rtsp_session_ended",
                stream_id=publisher.stream,
                reason=reason,
                peer=self.peer,
                transport="udp" if any(t.server_ports for t in self.session.tracks) else "tcp",
                lost=sum(s.lost for s in self.reception.values()),
                late=sum(s.late for s in self.reception.values()),
                sender_reports=sum(s.sender_reports for s in self.reception.values()),
                receiver_reports=self.receiver_reports,
                rtcp_invalid=self.rtcp_invalid,
            )
            await self.server.end_publisher(publisher, reason)
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
