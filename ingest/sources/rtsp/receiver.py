"""What sits between an RTSP connection's transport and its code: the receiving protocol, frame routes.

``FrameReceiver`` takes the transport's bytes first (no stream buffer, no task switch per read)
and hands them to the connection, which routes interleaved frames at once (``FrameRoute``, one
per channel) and leaves requests to its read loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

FrameRoute = Callable[[bytes, int, int, float], None]  # (data, payload start, payload end, arrival)
_Track = TypeVar("_Track")


def payload_route(handler: Callable[[_Track, bytes, float], None], track: _Track) -> FrameRoute:
    """A route that gives ``handler`` the frame's payload (a copy) for ``track``."""

    def route(data: bytes, start: int, stop: int, arrival: float) -> None:
        handler(track, data[start:stop], arrival)

    return route


class FrameReceiver(asyncio.Protocol):
    """Sits in front of asyncio's stream protocol on the connection's transport: bytes go to the
    connection first (no stream buffer, no task switch per read); the rest (write flow control, the
    end of the connection) still reaches the stream protocol, which the writer relies on."""

    def __init__(
        self,
        received: Callable[[bytes], None],
        lost: Callable[[Exception | None], None],
        inner: asyncio.BaseProtocol,
    ) -> None:
        self._received = received
        self._lost = lost
        self._inner = inner

    def data_received(self, data: bytes) -> None:
        self._received(data)

    def eof_received(self) -> bool | None:
        self._lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()
