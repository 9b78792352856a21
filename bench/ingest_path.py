"""The ingest packet path alone, in one process: RTSP interleaved bytes in, fMP4 segments out.

``python -m bench.ingest_path [--streams 4] [--loops 3] [--profile]``: starts the ingest RTSP
server (as ``camflow ingest`` builds it, with the bench's counting sink) in this process,
publishes the bench's recorded 720p30 2 Mb/s stream on ``--streams`` TCP sessions as fast
as the server takes it (no pacing), and prints the CPU this process spent per stream-second
of media, and whether every frame sent arrived as an access unit. The client side only
writes precomputed bytes, so the figure is ingest's cost plus a small constant; use it to
compare changes of the per-packet path, and ``python -m bench ingest`` for the real figure.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing
import os
import pstats
import struct
import time

from bench import cache_dir
from bench.ingest_server import SinkBus
from camflow.log import configure_logging
from camflow.tokens import Action, TokenSigner
from ingest.loadgen import TICKS, Recording, sdp_for
from ingest.media.publisher import Publisher
from ingest.service import build_rtsp_server
from ingest.sources.rtp.track import RtpVideoTrack
from ingest.sources.rtsp.connection import RtspConnection
from ingest.sources.rtsp.message import Request, Response, ResponseReader
from ingest.sources.rtsp.rtcp import ReceptionStats
from ingest.sources.rtsp.session import PublishSession
from ingest.sources.rtsp.tracks import depacketizer_for, video_codec
from tests import defaults


def interleaved(rec: Recording, loops: int, ssrc: int) -> list[bytes]:
    """``loops`` replays of ``rec``: per access unit, its RTP packets as interleaved frames on channel 0."""
    out = []
    seq = 0
    for loop_index in range(loops):
        offset = loop_index * rec.duration
        for frame in rec.frames:
            chunks = []
            for packet in frame.packets:
                data = bytearray(packet)
                timestamp = (int.from_bytes(packet[4:8], "big") + offset) & 0xFFFFFFFF
                struct.pack_into("!HII", data, 2, seq, timestamp, ssrc)
                seq = (seq + 1) & 0xFFFF
                chunks.append(struct.pack("!BBH", 0x24, 0, len(data)) + bytes(data))
            out.append(b"".join(chunks))
    return out


async def _ask(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parser: ResponseReader, request: Request
) -> Response:
    writer.write(bytes(request))
    await writer.drain()
    for _ in range(1000):
        for item in parser:
            if isinstance(item, Response):
                if item.status != 200:
                    raise RuntimeError(f"{request.method}: {item.status} {item.reason}")
                return item
        data = await asyncio.wait_for(reader.read(65536), 10)
        if not data:
            raise ConnectionError(f"{request.method}: connection closed")
        parser.feed(data)
    raise RuntimeError(f"{request.method}: no response")


async def publish(
    port: int, name: str, token: str, rec: Recording, frames: list[bytes], speed: float
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    parser = ResponseReader()
    url = f"rtsp://127.0.0.1:{port}/{name}?token={token}"
    sdp = sdp_for(rec, "127.0.0.1")
    cseq = iter(range(1, 100))

    def req(method: str, uri: str, *headers: tuple[str, str], body: bytes = b"") -> Request:
        return Request(method, uri, (("CSeq", str(next(cseq))), *headers), body)

    await _ask(reader, writer, parser, req("ANNOUNCE", url, ("Content-Type", "application/sdp"), body=sdp))
    transport = "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"
    answer = await _ask(reader, writer, parser, req("SETUP", f"{url}/streamid=0", ("Transport", transport)))
    session = (answer.header("Session") or "").split(";")[0]
    await _ask(reader, writer, parser, req("RECORD", url, ("Session", session)))
    loop = asyncio.get_running_loop()
    start, interval = loop.time(), rec.duration / len(rec.frames) / TICKS / speed if speed else 0.0
    for i, frame in enumerate(frames):  # one write per access unit, as a camera (and the load generator) does
        writer.write(frame)
        await writer.drain()
        await asyncio.sleep(max(0.0, start + i * interval - loop.time()))
    await _ask(reader, writer, parser, req("TEARDOWN", url, ("Session", session)))
    writer.close()


async def _clients(port: int, tokens: list[str], loops: int, speed: float) -> None:
    rec = Recording.load(cache_dir() / "bench-720p30-2mbps.rtp")
    blobs = [interleaved(rec, loops, 0x1000 + i) for i in range(len(tokens))]
    names = [f"p{i}" for i in range(len(tokens))]
    n = len(names)
    await asyncio.gather(*map(publish, [port] * n, names, tokens, [rec] * n, blobs, [speed] * n))


def client_process(port: int, tokens: list[str], loops: int, speed: float) -> None:
    """The publishers, in their own process (on core 1 when there are two)."""
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {1})
    asyncio.run(_clients(port, tokens, loops, speed))


async def measure(streams: int, loops: int, speed: float, profile: bool) -> None:
    rec = Recording.load(cache_dir() / "bench-720p30-2mbps.rtp")
    signer = TokenSigner(b"x" * 32)
    bus = SinkBus(count_frames=True)
    server = build_rtsp_server(
        bus,
        signer,
        host="127.0.0.1",
        port=0,
        **defaults.rtsp_server(udp_ports=None),
    )
    port = await server.start()
    units: list[int] = []
    end_publisher = server.end_publisher

    async def counting_end(publisher: Publisher, reason: str) -> None:
        await end_publisher(publisher, reason)
        units.append(publisher.stats.units)

    server.end_publisher = counting_end  # type: ignore[method-assign]
    tokens = [signer.issue(f"p{i}", Action.PUBLISH, 600) for i in range(streams)]
    spawn = multiprocessing.get_context("spawn")
    client = spawn.Process(target=client_process, args=(port, tokens, loops, speed))
    prof = cProfile.Profile() if profile else None
    client.start()
    started, wall, times = time.process_time(), time.monotonic(), os.times()
    if prof is not None:
        prof.enable()
    for _ in range(12000):  # every session torn down (bounded: 120 s)
        if len(units) == streams or (not client.is_alive() and client.exitcode):
            break
        await asyncio.sleep(0.01)
    if prof is not None:
        prof.disable()
    cpu, wall = time.process_time() - started, time.monotonic() - wall
    user, system = os.times().user - times.user, os.times().system - times.system
    await server.stop()
    client.join(10)
    media = streams * loops * rec.duration / TICKS
    sent = streams * loops * len(rec.frames)
    print(
        f"{streams} streams x {loops * rec.duration / TICKS:.0f} s: ingest {cpu * 1000 / media:.3f} ms CPU "
        f"per stream-second ({user:.2f} s user + {system:.2f} s system, {wall:.2f} s wall); "
        f"frames sent {sent}, "
        f"received {sum(units)}, in published segments {sum(bus.frames.values())}"
    )
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


def offline(loops: int, repeats: int) -> None:
    """The connection's frame path without sockets or an event loop: the recording's interleaved bytes,
    one access unit per "read", through ``RtspConnection._frames`` into a real ``Publisher``."""
    rec = Recording.load(cache_dir() / "bench-720p30-2mbps.rtp")
    frames = interleaved(rec, loops, 0x1000)
    results = []
    for _ in range(repeats):
        conn = RtspConnection.__new__(RtspConnection)
        conn.session = PublishSession(lambda request: True)
        url = "rtsp://127.0.0.1/p0"
        sdp = sdp_for(rec, "127.0.0.1")
        headers = (("CSeq", "1"), ("Content-Type", "application/sdp"))
        conn.session.handle(Request("ANNOUNCE", url, headers, sdp))
        transport = "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"
        conn.session.handle(Request("SETUP", f"{url}/streamid=0", (("CSeq", "2"), ("Transport", transport))))
        video = conn.session.video_track
        assert video is not None
        depacketizer = depacketizer_for(video)
        conn.publisher = publisher = Publisher(
            SinkBus(),
            "p0",
            codec=video_codec(video),
            segment_target=defaults.SEGMENT_TARGET,
            queue_segments=1000,
            counters=(depacketizer.counters,),
        )
        conn.video_in = RtpVideoTrack(depacketizer, publisher.push_video, publisher.stats)
        conn._routes = {0: conn._video_rtp_route(ReceptionStats(90000))}
        started = time.process_time()
        for i, frame in enumerate(frames):
            conn._frames(frame, i / 30)
        results.append(time.process_time() - started)
        assert conn.publisher.stats.units == len(frames), conn.publisher.stats
    media = loops * rec.duration / TICKS
    best = min(results) * 1000 / media
    print(f"offline frame path: {best:.3f} ms CPU per stream-second (min of {repeats})")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_path")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--loops", type=int, default=3)
    parser.add_argument("--speed", type=float, default=4.0, help="x real time per stream; 0: unpaced")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--offline", type=int, default=0, help="repeats of the socket-less frame path")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    configure_logging("info")
    if args.offline:
        offline(args.loops, args.offline)
        return
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {0})
    if not 1 <= args.streams <= 100 or not 1 <= args.loops <= 20:
        raise SystemExit("--streams 1..100, --loops 1..20")
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(measure(args.streams, args.loops, args.speed, args.profile))


if __name__ == "__main__":
    main()
