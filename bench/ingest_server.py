"""The ingest service as `camflow ingest` builds it, with a minimal in-process sink instead of Kafka.

``python -m bench.ingest_server --port P --data-dir D``: prints ``ready`` once listening; on
SIGTERM stops the server (every session flushes its last segment) and prints one JSON line
with what the sink received. The sink counts and discards: the bench measures ingest
(RTSP, RTP, H.264 depacketizing, segmenting, fMP4 remux, event encoding), not a Kafka
producer nor a Kafka broker sharing the same two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from camflow.bus.base import Consumer
from camflow.events import TOPIC_RAW, RawSegment, decode
from camflow.log import configure_logging
from camflow.mp4 import iter_boxes
from camflow.tokens import TokenSigner, load_keys
from ingest.service import build_rtsp_server
from tests import defaults


class SinkBus:
    """Counts and discards what ingest publishes (a Bus that nobody reads); with ``count_frames``, also
    the video samples in each stream's published segments (the ``trun`` sample counts of the fMP4)."""

    def __init__(self, count_frames: bool = False) -> None:
        self.messages: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.frames: Counter[str] = Counter()
        self._count_frames = count_frames

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Mapping[str, bytes] | None = None
    ) -> None:
        self.messages[topic] += 1
        self.bytes[topic] += len(value)
        if self._count_frames and topic == TOPIC_RAW:
            event = decode(value)
            assert isinstance(event, RawSegment)
            self.frames[event.stream] += video_samples(event.data)

    async def subscribe(self, topics: Sequence[str], group: str) -> Consumer:
        raise NotImplementedError("the bench sink has no consumers")


def video_samples(fmp4: bytes) -> int:
    """Samples of track 1 in every fragment (moof/traf/trun sample_count) of an fMP4 file."""
    count = 0
    for kind, offset, size in iter_boxes(fmp4):
        if kind != b"moof":
            continue
        for traf, t_off, t_size in iter_boxes(fmp4, offset + 8, offset + size):
            if traf != b"traf":
                continue
            track = 0
            for box, b_off, _ in iter_boxes(fmp4, t_off + 8, t_off + t_size):
                if box == b"tfhd":
                    track = struct.unpack_from(">I", fmp4, b_off + 12)[0]
                elif box == b"trun" and track == 1:
                    count += struct.unpack_from(">I", fmp4, b_off + 12)[0]
    return count


async def serve(port: int, data_dir: Path) -> None:
    bus = SinkBus(count_frames=True)
    server = build_rtsp_server(
        bus,
        TokenSigner(load_keys(data_dir)),
        host="127.0.0.1",
        port=port,
        **defaults.rtsp_server(udp_ports=None),
    )
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop()
    print(json.dumps({"messages": bus.messages, "bytes": bus.bytes, "frames": bus.frames}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    configure_logging(args.log_level)
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve(args.port, args.data_dir))


if __name__ == "__main__":
    main()
