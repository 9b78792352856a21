"""Load generator: replays one recorded H.264 RTP stream to N concurrent RTSP publish sessions.

One asyncio process, one TCP connection per session: ANNOUNCE (SDP with the stream's
``sprop-parameter-sets``), SETUP (RTP/AVP/TCP interleaved, ``mode=record``), RECORD, then
the recording's RTP packets as interleaved frames, paced in real time by their send times
(decode order; the recording loops, timestamps and sequence numbers carrying on), then
TEARDOWN. Sessions start streaming together once every one of them is recording (or failed).
Each session has its own SSRC and its own stream name ``{prefix}{i:03d}``.

The recording is made once from a clip (PyAV demux, ``H264Packetizer``) and can be saved
and replayed (``--save-rtp`` / ``--rtp``): a file of records ``!IH`` (send time in 90 kHz
ticks from the start, packet length) followed by the RTP packet.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from camflow.errors import ConfigError
from ingest.codecs.h264 import NAL_PPS, NAL_SPS
from ingest.media.units import AccessUnit
from ingest.sources.pull.assembler import UnitAssembler
from ingest.sources.rtp.h264 import H264Packetizer
from ingest.sources.rtsp.message import InterleavedFrame, Request, Response, ResponseReader
from ingest.sources.rtsp.url import RtspUrl

MAX_STREAMS = 1000
MAX_DURATION = 3600.0
RESPONSE_TIMEOUT = 10.0
RECORD_HEADER = struct.Struct("!IH")
TICKS = 90_000


@dataclass(frozen=True)
class Frame:
    """The RTP packets of one access unit, sent together at ``send`` (90 kHz ticks from the start)."""

    send: int
    packets: tuple[bytes, ...]


@dataclass(frozen=True)
class Recording:
    frames: tuple[Frame, ...]
    sps: bytes
    pps: bytes
    duration: int  # ticks: one loop of the recording, timestamps advance by this much per loop

    @property
    def packets(self) -> int:
        return sum(len(f.packets) for f in self.frames)

    @property
    def bitrate(self) -> float:
        size = sum(len(p) for f in self.frames for p in f.packets)
        return size * 8 * TICKS / self.duration

    def save(self, path: Path) -> None:
        with path.open("wb") as out:
            for frame in self.frames:
                for packet in frame.packets:
                    out.write(RECORD_HEADER.pack(frame.send, len(packet)) + packet)

    @classmethod
    def load(cls, path: Path) -> Recording:
        data = path.read_bytes()
        pos = 0
        groups: dict[tuple[int, int], list[bytes]] = {}
        while pos < len(data):
            if pos + RECORD_HEADER.size > len(data):
                raise ConfigError(f"RTP recording {path}: truncated record at byte {pos}")
            send, size = RECORD_HEADER.unpack_from(data, pos)
            packet = data[pos + RECORD_HEADER.size : pos + RECORD_HEADER.size + size]
            if len(packet) != size or size < 12:
                raise ConfigError(f"RTP recording {path}: bad packet of {size} bytes at byte {pos}")
            groups.setdefault((send, int.from_bytes(packet[4:8], "big")), []).append(packet)
            pos += RECORD_HEADER.size + size
        if not groups:
            raise ConfigError(f"RTP recording {path}: no packets, expected records of !IH + RTP packet")
        sps = pps = b""
        for packets in groups.values():
            for packet in packets:
                nal = packet[12:]
                if nal and nal[0] & 0x1F == NAL_SPS:
                    sps = nal
                elif nal and nal[0] & 0x1F == NAL_PPS:
                    pps = nal
        ordered = sorted(groups.items(), key=lambda item: item[0][0])
        frames = tuple(Frame(send, tuple(packets)) for (send, _), packets in ordered)
        step = frames[1].send - frames[0].send if len(frames) > 1 else TICKS // 30
        return cls(frames, sps, pps, frames[-1].send + step)


def record_clip(path: Path, max_payload_size: int = 1400) -> Recording:
    """An H.264 clip (any container PyAV reads) to RTP packets, sent in decode order at their decode times."""
    packetizer = H264Packetizer(max_payload_size=max_payload_size)
    frames: list[Frame] = []
    units: list[tuple[int, AccessUnit]] = []
    with av.open(str(path)) as container:
        if not container.streams.video or container.streams.video[0].codec_context.name != "h264":
            raise ConfigError(f"clip {path}: expected an H.264 video stream")
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, TICKS)
        assembler = UnitAssembler(stream.codec_context.extradata, time_base)
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            unit = assembler.push(bytes(packet), packet.pts, packet.dts)
            if unit is not None:
                dts = packet.dts if packet.dts is not None else packet.pts or 0
                units.append((int(dts * time_base * TICKS), unit))
    if not units:
        raise ConfigError(f"clip {path}: no video frames")
    first_dts = units[0][0]
    base_pts = min(u.pts for _, u in units)
    sps = pps = b""
    for dts, unit in units:
        for nal in unit.nalus:
            if nal[0] & 0x1F == NAL_SPS:
                sps = nal
            elif nal[0] & 0x1F == NAL_PPS:
                pps = nal
        shifted = AccessUnit(pts=unit.pts - base_pts + TICKS, nalus=unit.nalus, is_idr=unit.is_idr)
        frames.append(Frame(dts - first_dts, tuple(bytes(p) for p in packetizer.packetize(shifted))))
    step = frames[1].send - frames[0].send if len(frames) > 1 else TICKS // 30
    if not sps or not pps:
        raise ConfigError(f"clip {path}: no SPS/PPS found")
    return Recording(tuple(frames), sps, pps, frames[-1].send + step)


def check_target(url: str, allow_remote: bool) -> RtspUrl:
    try:
        parsed = RtspUrl.parse(url)
    except Exception as exc:
        raise ConfigError(f"--url {url!r}: {exc}") from None
    if allow_remote:
        return parsed
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parsed.host, None)}
    except OSError as exc:
        raise ConfigError(f"--url host {parsed.host!r}: {exc}") from None
    if not all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses):
        raise ConfigError(f"--url host {parsed.host!r} is not loopback: pass --allow-remote to load it")
    return parsed


@dataclass
class SessionResult:
    stream: str
    packets: int = 0
    frames: int = 0
    bytes: int = 0
    max_lag: float = 0.0  # seconds a frame went out after its due time
    error: str = ""


@dataclass
class LoadPlan:
    host: str
    port: int
    recording: Recording
    streams: int
    duration: float
    prefix: str = "load"
    token: Callable[[str], str] | None = None  # stream name -> publish token
    results: list[SessionResult] = field(default_factory=list)


def sdp_for(recording: Recording, host: str) -> bytes:
    sprop = ",".join(base64.b64encode(n).decode() for n in (recording.sps, recording.pps))
    lines = [
        "v=0",
        f"o=- 0 0 IN IP4 {host}",
        "s=camflow loadgen",
        f"c=IN IP4 {host}",
        "t=0 0",
        "m=video 0 RTP/AVP 96",
        "a=rtpmap:96 H264/90000",
        f"a=fmtp:96 packetization-mode=1; sprop-parameter-sets={sprop}",
        "a=control:streamid=0",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


class _Publish:
    def __init__(self, plan: LoadPlan, index: int) -> None:
        self.plan = plan
        self.result = SessionResult(f"{plan.prefix}{index:03d}")
        self.ssrc = 0x4C470000 + index
        self.cseq = 0
        self.session = ""
        query = f"?token={plan.token(self.result.stream)}" if plan.token else ""
        self.url = f"rtsp://{plan.host}:{plan.port}/{self.result.stream}{query}"
        self.reader = ResponseReader()

    async def run(self, start: _Start, spread: float) -> SessionResult:
        writer = None
        try:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.plan.host, self.plan.port), RESPONSE_TIMEOUT
                )
            except TimeoutError:
                raise TimeoutError(f"connect: not within {RESPONSE_TIMEOUT} s") from None
            sdp = sdp_for(self.plan.recording, self.plan.host)
            await self._ask(reader, writer, "ANNOUNCE", self.url, (("Content-Type", "application/sdp"),), sdp)
            transport = "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"
            await self._ask(reader, writer, "SETUP", f"{self.url}/streamid=0", (("Transport", transport),))
            await self._ask(reader, writer, "RECORD", self.url, (("Range", "npt=0.000-"),))
            drain = asyncio.create_task(self._discard(reader, writer))
            try:
                start_at = await start.ready()
                await self._send(writer, start_at + spread)
            finally:
                drain.cancel()
            await self._ask(reader, writer, "TEARDOWN", self.url)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            self.result.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except _Refused as exc:
            self.result.error = str(exc)
        finally:
            start.leave()
            if writer is not None:
                writer.close()
        return self.result

    async def _ask(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        uri: str,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
    ) -> Response:
        self.cseq += 1
        head = (("CSeq", str(self.cseq)), ("User-Agent", "camflow-loadgen"), *headers)
        if self.session:
            head += (("Session", self.session),)
        writer.write(bytes(Request(method, uri, head, body)))
        await writer.drain()
        deadline = time.monotonic() + RESPONSE_TIMEOUT
        while True:
            for item in self.reader:
                if isinstance(item, InterleavedFrame):
                    continue  # RTCP from the server
                if item.status != 200:
                    raise _Refused(f"{method}: {item.status} {item.reason}")
                session = item.header("Session")
                if session:
                    self.session = session.split(";")[0].strip()
                return item
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{method}: no response within {RESPONSE_TIMEOUT} s")
            try:
                data = await asyncio.wait_for(reader.read(65536), left)
            except TimeoutError:
                raise TimeoutError(f"{method}: no response within {RESPONSE_TIMEOUT} s") from None
            if not data:
                raise ConnectionError(f"{method}: server closed the connection")
            self.reader.feed(data)

    async def _discard(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(65536):  # RTCP during RECORD; TEARDOWN's answer is read after
                pass
        writer.transport.abort()  # the server closed the connection: sending stops at the next frame

    async def _send(self, writer: asyncio.StreamWriter, start_at: float) -> None:
        loop = asyncio.get_running_loop()
        rec = self.plan.recording
        end = start_at + self.plan.duration
        seq = 0
        loop_index = 0
        result = self.result
        while True:
            offset = loop_index * rec.duration
            for frame in rec.frames:
                due = start_at + (offset + frame.send) / TICKS
                if due >= end:
                    return
                now = loop.time()
                if due > now:
                    await asyncio.sleep(due - now)
                if writer.transport.is_closing():
                    raise ConnectionError("the server closed the connection")
                else:
                    result.max_lag = max(result.max_lag, now - due)
                chunks = []
                for packet in frame.packets:
                    data = bytearray(packet)
                    timestamp = (int.from_bytes(packet[4:8], "big") + offset) & 0xFFFFFFFF
                    struct.pack_into("!HII", data, 2, seq, timestamp, self.ssrc)
                    seq = (seq + 1) & 0xFFFF
                    chunks.append(struct.pack("!BBH", 0x24, 0, len(data)))
                    chunks.append(bytes(data))
                blob = b"".join(chunks)
                writer.write(blob)
                result.packets += len(frame.packets)
                result.frames += 1
                result.bytes += len(blob)
                if writer.transport.get_write_buffer_size() > 1 << 20:
                    await writer.drain()
            loop_index += 1


class _Refused(Exception):
    """The server answered a request with an error status."""


class _Start:
    """Every session streams from one common start, once every session is recording (or has failed),
    so that lateness measures the streaming, not the time the server took to answer N handshakes."""

    def __init__(self, sessions: int) -> None:
        self._waiting = sessions
        self._at: float | None = None
        self._event = asyncio.Event()

    async def ready(self) -> float:
        self.leave()
        await self._event.wait()
        assert self._at is not None
        return self._at

    def leave(self) -> None:
        if self._event.is_set():
            return
        self._waiting -= 1
        if self._waiting <= 0:
            self._at = asyncio.get_running_loop().time() + 0.2
            self._event.set()


async def run_load(plan: LoadPlan) -> list[SessionResult]:
    """Every session of ``plan`` at once: all connect and hand-shake, then all stream from one common start
    (spread over 100 ms) for ``duration`` seconds; lateness counts from that start."""
    if not 1 <= plan.streams <= MAX_STREAMS:
        raise ConfigError(f"--streams {plan.streams}: expected 1..{MAX_STREAMS}")
    if not 0 < plan.duration <= MAX_DURATION:
        raise ConfigError(f"--duration {plan.duration}: expected 0 < seconds <= {MAX_DURATION}")
    start = _Start(plan.streams)
    sessions = [_Publish(plan, i) for i in range(plan.streams)]
    plan.results = list(
        await asyncio.gather(*(s.run(start, i * 0.1 / plan.streams) for i, s in enumerate(sessions)))
    )
    return plan.results


def report(results: list[SessionResult]) -> str:
    lines = [f"{'stream':<12} {'packets':>9} {'frames':>7} {'MB':>8} {'max lag s':>9}  error"]
    for r in results:
        lines.append(
            f"{r.stream:<12} {r.packets:>9} {r.frames:>7} {r.bytes / 1e6:>8.2f} {r.max_lag:>9.3f}  {r.error}"
        )
    failed = sum(1 for r in results if r.error)
    lines.append(f"{len(results)} sessions, {failed} failed, {sum(r.packets for r in results)} packets sent")
    return "\n".join(lines)
