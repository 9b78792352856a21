"""The RTSP server's socket side: asyncio streams around the sans-IO session.

One task per connection reads bytes, feeds the ``MessageReader``, hands requests to the
``PublishSession`` and interleaved frames to the stream's ``Publisher``. A malformed
request gets ``400 Bad Request`` and its connection is closed; every other connection
keeps running. A new publisher of a stream that is already live replaces the old one
(the camera reconnected before its old TCP connection died), as mediamtx does by default.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from camflow.bus import Bus
from camflow.log import get_logger
from ingest.errors import ParseError
from ingest.publisher import Publisher
from ingest.rtp.h264 import H264Depacketizer
from ingest.rtsp.message import InterleavedFrame, MessageReader, Request, Response
from ingest.rtsp.session import AuthRequest, PublishSession, State

READ_SIZE = 64 * 1024
log = get_logger("ingest.rtsp")


@dataclass
class ServerStats:
    connections: int = 0
    bad_requests: int = 0
    unauthorized: int = 0
    sessions_timed_out: int = 0
    publishers_replaced: int = 0


class RtspServer:
    def __init__(
        self,
        bus: Bus,
        authorize: Callable[[AuthRequest], bool],
        *,
        host: str = "127.0.0.1",
        port: int = 8554,
        segment_target: float = 2.0,
        session_timeout: int = 60,
    ) -> None:
        self.bus = bus
        self.authorize = authorize
        self.host = host
        self.port = port
        self.segment_target = segment_target
        self.session_timeout = session_timeout
        self.stats = ServerStats()
        self.publishers: dict[str, Publisher] = {}
        self._owners: dict[str, asyncio.Task[None]] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._client, self.host, self.port, limit=READ_SIZE)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("rtsp_listening", host=self.host, port=self.port)
        return self.port

    async def stop(self) -> None:
        """Stop taking connections, end every session (flushing its segments)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        peer = writer.get_extra_info("peername")
        session = PublishSession(self.authorize, timeout=self.session_timeout)
        parser = MessageReader()
        publisher: Publisher | None = None
        end_reason = "connection closed"
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), self.session_timeout)
                except TimeoutError:
                    self.stats.sessions_timed_out += 1
                    end_reason = "session timeout"
                    break
                if not data:
                    break
                parser.feed(data)
                while True:
                    try:
                        item = parser.next_item()
                    except ParseError as exc:
                        self.stats.bad_requests += 1
                        log.warning("rtsp_bad_request", peer=str(peer), error=str(exc))
                        body = (str(exc) + "\r\n").encode()
                        writer.write(
                            bytes(
                                Response(
                                    400,
                                    "Bad Request",
                                    (("Content-Type", "text/plain"), ("Content-Length", str(len(body)))),
                                    body,
                                )
                            )
                        )
                        await writer.drain()
                        end_reason = "bad request"
                        return
                    if item is None:
                        break
                    if isinstance(item, InterleavedFrame):
                        if publisher is not None:
                            match = session.track_for_channel(item.channel)
                            if match is not None and not match[1] and match[0] is session.video_track:
                                publisher.on_rtp(item.payload)
                        continue
                    publisher = await self._request(session, item, writer, publisher)
                    if session.state is State.CLOSED:
                        end_reason = "teardown"
                        return
        except (ConnectionError, asyncio.IncompleteReadError):
            end_reason = "connection reset"
        except asyncio.CancelledError:
            end_reason = "server stopping"
            raise
        finally:
            if publisher is not None:
                await self._end(publisher, end_reason)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _request(
        self,
        session: PublishSession,
        request: Request,
        writer: asyncio.StreamWriter,
        publisher: Publisher | None,
    ) -> Publisher | None:
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
            self.stats.unauthorized += 1
            log.warning("rtsp_unauthorized", uri=request.uri.split("?")[0])
        if before is not State.RECORDING and session.state is State.RECORDING and publisher is None:
            publisher = await self._begin(session)  # RECORD after PAUSE resumes the same publisher
        writer.write(bytes(response))
        await writer.drain()
        return publisher

    async def _begin(self, session: PublishSession) -> Publisher:
        assert session.stream is not None
        video = session.video_track
        assert video is not None
        old = self.publishers.get(session.stream)
        if old is not None:
            self.stats.publishers_replaced += 1
            owner = self._owners.get(session.stream)
            log.info("publisher_replaced", stream_id=session.stream, old_epoch=old.epoch)
            if owner is not None and owner is not asyncio.current_task():
                owner.cancel()
        publisher = Publisher(
            self.bus,
            session.stream,
            H264Depacketizer(video.media.fmtp.get("sprop-parameter-sets")),
            segment_target=self.segment_target,
        )
        await publisher.start()
        self.publishers[session.stream] = publisher
        task = asyncio.current_task()
        assert task is not None
        self._owners[session.stream] = task
        return publisher

    async def _end(self, publisher: Publisher, reason: str) -> None:
        if self.publishers.get(publisher.stream) is publisher:
            del self.publishers[publisher.stream]
            self._owners.pop(publisher.stream, None)
        await asyncio.shield(publisher.close(reason))
