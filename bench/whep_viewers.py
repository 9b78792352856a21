"""COUNT aiortc WHEP viewers of one stream in this process, counting the frames they receive (bench_whep).

    python -m bench.whep_viewers WHEP_URL TOKEN COUNT       # then "go" and "stop" lines on stdin

Each viewer offers recvonly video from 127.0.0.1 and counts the frames its jitter buffer completes,
without decoding them (the H.264 decoder is replaced by one that hands the encoded frame on: the
bench measures the server, not this process's decoder). Between ``go`` and ``stop`` every viewer
counts its frames and the frames missing between them, from the RTP timestamps (30 fps: 3000 ticks a
frame); a gap means a frame lost on the way (or dropped by the server). Prints ``ready N`` when N
viewers connected (bounded: 60 s), and one JSON line after ``stop``; every viewer DELETEs its session.
Holds no tests.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, rtcrtpreceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError

from ingest.sources.whip.ice import IcePolicy, install

TICKS_PER_FRAME = 3000  # 90 kHz at 30 fps
CONNECT_S = 60.0


class _PassThrough:
    """A "decoder" that hands the encoded frame on: the track yields JitterFrames."""

    def decode(self, encoded_frame: JitterFrame) -> list[JitterFrame]:
        return [encoded_frame]


class Viewer:
    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.session = ""
        self.counting = False
        self.frames = self.missing = self.total = 0
        self.last_ts: int | None = None
        self.status = 0
        self.before = 0  # frames before the window (the IDR burst and the live ones after it)

    async def start(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with http.post(url, data=self.pc.localDescription.sdp, headers=headers) as resp:
            self.status = resp.status
            answer = await resp.text()
            if resp.status != 201:
                raise RuntimeError(f"WHEP POST {resp.status}: {answer[:200]}")
            self.session = str(resp.url.join(aiohttp.client.URL(resp.headers["Location"])))
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def count(self) -> None:
        track = next(t.receiver.track for t in self.pc.getTransceivers() if t.kind == "video")
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.total += 1
            ts = int(getattr(frame, "timestamp", 0))
            if self.counting:
                self.frames += 1
                if self.last_ts is not None:
                    delta = ts - self.last_ts
                    if 0 < delta < 5 * 90_000:  # a jump (the camera's clip looping) is not a loss
                        self.missing += max(0, round(delta / TICKS_PER_FRAME) - 1)
            self.last_ts = ts

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
    rtcrtpreceiver.get_decoder = lambda codec: _PassThrough()  # type: ignore[assignment,return-value]
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    viewers = [Viewer() for _ in range(count)]
    errors: list[str] = []
    tasks: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        try:
            deadline = time.monotonic() + CONNECT_S
            for v in viewers:  # one after the other: a burst of offers would measure the burst
                try:
                    await asyncio.wait_for(v.start(http, url, token), max(1.0, deadline - time.monotonic()))
                    tasks.append(asyncio.create_task(v.count()))
                except Exception as exc:
                    errors.append(repr(exc)[:200])
            while time.monotonic() < deadline and any(v.total == 0 for v in viewers if v.session):
                await asyncio.sleep(0.2)
            print(f"ready {sum(1 for v in viewers if v.total > 0)}", flush=True)
            if await _line(stdin) == "go":
                for v in viewers:
                    v.counting, v.last_ts, v.before = True, None, v.total
                started = time.monotonic()
                await _line(stdin)  # "stop" (or EOF)
                window = time.monotonic() - started
                for v in viewers:
                    v.counting = False
            else:
                window = 0.0
        finally:
            await asyncio.gather(*(v.stop(http) for v in viewers), return_exceptions=True)
            for t in tasks:
                t.cancel()
    return {
        "window_s": round(window, 2),
        "frames": [v.frames for v in viewers],
        "missing": [v.missing for v in viewers],
        "before": [v.before for v in viewers],
        "errors": errors,
    }


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    print(json.dumps(result), flush=True)
