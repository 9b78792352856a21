"""The fast per-packet path of RTSP over TCP keeps every behaviour of the message parser path.

Interleaved frames that arrive between requests are routed straight from the transport
(``RtspConnection._received`` / ``_frames``), with the RTP fixed header read once for the
reception statistics and the depacketizer. These tests push a real H.264 clip through a real
``RtspServer`` socket in chunks cut at every kind of boundary (inside the ``$`` header, inside
the RTP header, inside a payload, several frames at once), with keep-alive requests between
frames, RTP packets the fast path hands to the general one (CSRCs, a header extension,
padding), frames on an unknown channel and an RTCP sender report, and check that every frame
sent comes out in the published fMP4 segments. A receiver report must come back to the camera
on the interleaved RTCP channel. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Mapping, Sequence

import pytest

import ingest.sources.rtsp.connection as connection_module
from camflow.events import TOPIC_RAW, RawSegment, decode
from camflow.mp4 import iter_boxes
from camflow.tokens import Action, TokenSigner
from ingest.loadgen import Recording, record_clip, sdp_for
from ingest.service import build_rtsp_server
from ingest.sources.rtp.packet import ReceiverReport, RtpExtension, RtpPacket, SenderReport
from ingest.sources.rtsp.message import InterleavedFrame, Request, Response, ResponseReader
from tests import defaults
from tests.process import make_clip

SSRC = 0x5EED0001


class SegmentSink:
    """A bus that keeps the raw segments ingest publishes."""

    def __init__(self) -> None:
        self.segments: list[RawSegment] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Mapping[str, bytes] | None = None
    ) -> None:
        if topic == TOPIC_RAW:
            event = decode(value)
            assert isinstance(event, RawSegment)
            self.segments.append(event)

    async def subscribe(self, topics: Sequence[str], group: str) -> object:
        raise NotImplementedError


def samples(fmp4: bytes) -> int:
    """Samples in every fragment of an fMP4 segment (trun sample counts)."""
    count = 0
    for kind, offset, size in iter_boxes(fmp4):
        if kind == b"moof":
            for traf, t_off, t_size in iter_boxes(fmp4, offset + 8, offset + size):
                if traf == b"traf":
                    for box, b_off, _ in iter_boxes(fmp4, t_off + 8, t_off + t_size):
                        if box == b"trun":
                            count += struct.unpack_from(">I", fmp4, b_off + 12)[0]
    return count


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    clip = make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", 3, size="320x240", gop=30)
    return record_clip(clip, max_payload_size=600)  # small payloads: many FU-A fragments


class Camera:
    """A minimal RTSP publisher over TCP interleaved (RTP on channel 0, RTCP on 1)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, url: str) -> None:
        self.reader, self.writer, self.url = reader, writer, url
        self.parser = ResponseReader()
        self.cseq = 0
        self.session = ""
        self.rtcp: list[bytes] = []

    async def ask(self, method: str, uri: str, *headers: tuple[str, str], body: bytes = b"") -> Response:
        self.cseq += 1
        head = (("CSeq", str(self.cseq)), *headers)
        if self.session:
            head += (("Session", self.session),)
        self.writer.write(bytes(Request(method, uri, head, body)))
        return await self.response()

    async def response(self) -> Response:
        for _ in range(200):
            for item in self.parser:
                if isinstance(item, InterleavedFrame):
                    self.rtcp.append(item.payload)
                    continue
                if item.header("Session"):
                    self.session = (item.header("Session") or "").split(";")[0]
                return item
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            assert data, "the server closed the connection"
            self.parser.feed(data)
        raise AssertionError("no response")

    async def record(self, recording: Recording) -> None:
        sdp = sdp_for(recording, "127.0.0.1")
        announced = await self.ask("ANNOUNCE", self.url, ("Content-Type", "application/sdp"), body=sdp)
        assert announced.status == 200
        transport = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record")
        assert (await self.ask("SETUP", f"{self.url}/streamid=0", transport)).status == 200
        assert (await self.ask("RECORD", self.url)).status == 200


def rtp_stream(recording: Recording) -> list[list[bytes]]:
    """Per frame, its RTP packets with our SSRC and consecutive sequence numbers."""
    frames, seq = [], 0
    for frame in recording.frames:
        packets = []
        for packet in frame.packets:
            data = bytearray(packet)
            struct.pack_into("!HI", data, 2, seq, int.from_bytes(packet[4:8], "big"))
            struct.pack_into("!I", data, 8, SSRC)
            seq = (seq + 1) & 0xFFFF
            packets.append(bytes(data))
        frames.append(packets)
    return frames


def with_everything(packet: bytes) -> bytes:
    """The same packet with two CSRCs, a header extension and 3 bytes of padding (the general path)."""
    parsed = RtpPacket.parse(packet)
    extended = RtpPacket(
        parsed.payload_type,
        parsed.sequence_number,
        parsed.timestamp,
        parsed.ssrc,
        parsed.payload,
        parsed.marker,
        csrc=(1, 2),
        extension=RtpExtension(0xBEDE, b"\x10\xaa\x00\x00"),
        padding=3,
    )
    return bytes(extended)


def chunks(data: bytes, sizes: Sequence[int]) -> list[bytes]:
    out, pos, i = [], 0, 0
    while pos < len(data):
        out.append(data[pos : pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    return out


async def serve() -> tuple[object, SegmentSink, TokenSigner]:
    sink = SegmentSink()
    signer = TokenSigner(b"k" * 32)
    server = build_rtsp_server(  # type: ignore[arg-type]
        sink,
        signer,
        host="127.0.0.1",
        port=0,
        **defaults.rtsp_server(udp_ports=None),
    )
    await server.start()
    return server, sink, signer


async def test_frames_cut_anywhere_and_mixed_with_requests_all_arrive(recording: Recording) -> None:
    server, sink, signer = await serve()
    try:
        token = signer.issue("perf", Action.PUBLISH, 600)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # type: ignore[attr-defined]
        camera = Camera(reader, writer, f"rtsp://127.0.0.1:{server.port}/perf?token={token}")  # type: ignore[attr-defined]
        await camera.record(recording)
        frames = rtp_stream(recording)
        sr = bytes(SenderReport(SSRC, (3_900_000_000 << 32), 0, 1, 1000))
        keepalives = 0
        for n, packets in enumerate(frames):
            if n % 7 == 3:
                packets = [with_everything(packets[0]), *packets[1:]]
            wire = b"".join(bytes(InterleavedFrame(0, p)) for p in packets)
            if n % 11 == 5:
                wire += bytes(InterleavedFrame(9, b"on a channel nobody set up"))
                wire += bytes(InterleavedFrame(1, sr))
            # every cut: 1..4 bytes (inside the $ header and the RTP header), mid-payload, many frames
            for piece in chunks(wire, (1, 3, 2, 17, 5, 700, 4, 1500, 9000)[n % 5 :]):
                writer.write(piece)
                await writer.drain()
            if n % 20 == 10:  # a keep-alive between frames: answered, and the frames after it still count
                keepalives += 1
                assert (await camera.ask("GET_PARAMETER", camera.url)).status == 200
        assert (await camera.ask("TEARDOWN", camera.url)).status == 200
        writer.close()
        for _ in range(500):  # the session ends and flushes its last segment (bounded: 10 s)
            if not server.publishers:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.02)
        assert keepalives >= 4
        ended = server.ended[-1]  # type: ignore[attr-defined]
        assert ended.stats.rtp_packets == sum(len(p) for p in frames)
        assert ended.stats.units == len(frames)
        assert ended.stats.sender_reports == len([n for n in range(len(frames)) if n % 11 == 5])
        assert ended.corrections()["packets_lost"] == 0 and ended.corrections()["fu_dropped"] == 0
        for _ in range(500):
            if sum(samples(s.data) for s in sink.segments) >= len(frames):
                break
            await asyncio.sleep(0.02)
        assert sum(samples(s.data) for s in sink.segments) == len(frames)
        assert [s.seq for s in sink.segments] == list(range(len(sink.segments)))
    finally:
        await server.stop()  # type: ignore[attr-defined]


async def test_receiver_reports_reach_a_tcp_camera(
    recording: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_module, "REPORT_INTERVAL", 0.5)
    server, _, signer = await serve()
    try:
        token = signer.issue("rr", Action.PUBLISH, 600)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # type: ignore[attr-defined]
        camera = Camera(reader, writer, f"rtsp://127.0.0.1:{server.port}/rr?token={token}")  # type: ignore[attr-defined]
        await camera.record(recording)
        frames = rtp_stream(recording)
        for packets in frames[:60]:
            writer.write(b"".join(bytes(InterleavedFrame(0, p)) for p in packets))
        await writer.drain()
        sent = sum(len(p) for p in frames[:60])
        highest = -1
        for _ in range(100):  # the sweeper sends one about every second here (bounded: 10 s)
            if highest == sent - 1:
                break
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.1)
            except TimeoutError:
                continue
            camera.parser.feed(data)
            for item in camera.parser:
                assert isinstance(item, InterleavedFrame) and item.channel == 1
                (block,) = ReceiverReport.parse(item.payload).blocks
                assert block.ssrc == SSRC and block.cumulative_lost == 0
                highest = block.highest_sequence
        assert highest == sent - 1, "no receiver report for every packet on the interleaved RTCP channel"
        writer.close()
    finally:
        await server.stop()  # type: ignore[attr-defined]
