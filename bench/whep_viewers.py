"""COUNT aiortc WHEP viewers of one stream in this process, counting the frames they receive (bench_whep).

    python -m bench.whep_viewers WHEP_URL TOKEN COUNT       # then "go" and "stop" lines on stdin

Each viewer offers recvonly video from 127.0.0.1 and connects with aiortc (ICE, DTLS, SRTP), but
reads the RTP packets it decrypts itself instead of handing them to aiortc's receiver: their
sequence numbers, timestamps and marker bits, with no parsing, jitter buffer, NACK or decoding
(the bench measures the server: aiortc's full receiver costs about what its sender does, and
the viewers would saturate their core first). Between ``go`` and ``stop`` every viewer counts
its frames (RTP timestamps), its packets missing (sequence gaps) and its frames missing
(timestamp gaps, 30 fps: 3000 ticks a frame). Prints ``ready N`` when N viewers receive media
(bounded: 60 s), and one JSON line after ``stop``; every viewer DELETEs its session. Holds no tests.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import time
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcdtlstransport import RTCDtlsTransport
from yarl import URL

from ingest.sources.whip.ice import IcePolicy, install

TICKS_PER_FRAME = 3000  # 90 kHz at 30 fps
CONNECT_S = 60.0
HEADER = struct.Struct("!BBHI")


class Counter:
    """What one viewer's transport received (decrypted RTP, read in place)."""

    def __init__(self) -> None:
        self.packets = self.frames = self.missing_packets = self.missing_frames = 0
        self.last_seq: int | None = None
        self.last_ts: int | None = None

    def packet(self, data: bytes) -> None:
        if len(data) < HEADER.size:
            return
        _, _, seq, ts = HEADER.unpack_from(data)
        self.packets += 1
        if self.last_seq is not None:
            gap = (seq - self.last_seq) & 0xFFFF
            if gap == 0 or gap >= 0x8000:  # a duplicate or an older (reordered) packet
                return
            self.missing_packets += gap - 1
        self.last_seq = seq
        if ts != self.last_ts:
            self.frames += 1
            if self.last_ts is not None:
                delta = (ts - self.last_ts) & 0xFFFFFFFF
                if delta < 5 * 90_000:  # a jump (the camera's clip looping) is not a loss
                    self.missing_frames += max(0, round(delta / TICKS_PER_FRAME) - 1)
            self.last_ts = ts


async def _count_rtp(self: RTCDtlsTransport, data: bytes, arrival_time_ms: int) -> None:
    counter = getattr(self, "bench_counter", None)
    if counter is not None:
        counter.packet(data)


class Viewer:
    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.counter = Counter()
        self.session = ""

    async def start(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        transport = self.pc.getTransceivers()[0].receiver.transport
        transport.bench_counter = self.counter  # type: ignore[attr-defined]
        headers = {"Content-Type": "application/sdp"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with http.post(url, data=self.pc.localDescription.sdp, headers=headers) as resp:
            answer = await resp.text()
            if resp.status != 201:
                raise RuntimeError(f"WHEP POST {resp.status}: {answer[:200]}")
            self.session = str(resp.url.join(URL(resp.headers["Location"])))
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def stop(self, http: aiohttp.ClientSession) -> None:
        if self.session:
            try:
                async with http.delete(self.session) as resp:
                    await resp.read()
            except aiohttp.ClientError:
                pass
        await self.pc.close()


async def _line(reader: asyncio.StreamReader) -> str:
    return (await reader.readline()).decode().strip()


async def main(url: str, token: str, count: int) -> dict[str, Any]:
    install(IcePolicy(("127.0.0.1",)))
    RTCDtlsTransport._handle_rtp_data = _count_rtp  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    viewers = [Viewer() for _ in range(count)]
    errors: list[str] = []
    window = 0.0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        try:
            deadline = time.monotonic() + CONNECT_S
            for v in viewers:  # one after the other: a burst of offers would measure the burst
                try:
                    await asyncio.wait_for(v.start(http, url, token), max(1.0, deadline - time.monotonic()))
                except Exception as exc:
                    errors.append(repr(exc)[:200])
            while time.monotonic() < deadline and any(v.counter.packets == 0 for v in viewers if v.session):
                await asyncio.sleep(0.2)
            print(f"ready {sum(1 for v in viewers if v.counter.packets > 0)}", flush=True)
            if await _line(stdin) == "go":
                before = [
                    (v.counter.frames, v.counter.missing_packets, v.counter.missing_frames) for v in viewers
                ]
                started = time.monotonic()
                await _line(stdin)  # "stop" (or EOF)
                window = time.monotonic() - started
                after = [
                    (v.counter.frames, v.counter.missing_packets, v.counter.missing_frames) for v in viewers
                ]
            else:
                before = after = [(0, 0, 0)] * count
        finally:
            await asyncio.gather(*(v.stop(http) for v in viewers), return_exceptions=True)
    return {
        "window_s": round(window, 2),
        "frames": [a[0] - b[0] for a, b in zip(after, before, strict=True)],
        "missing_packets": [a[1] - b[1] for a, b in zip(after, before, strict=True)],
        "missing": [a[2] - b[2] for a, b in zip(after, before, strict=True)],
        "errors": errors,
    }


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    print(json.dumps(result), flush=True)
