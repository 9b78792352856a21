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
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from camflow.bus.base import Consumer
from camflow.log import configure_logging
from camflow.tokens import TokenSigner, load_secret
from ingest.service import build_rtsp_server


class SinkBus:
    """Counts and discards what ingest publishes (a Bus that nobody reads)."""

    def __init__(self) -> None:
        self.messages: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Mapping[str, bytes] | None = None
    ) -> None:
        self.messages[topic] += 1
        self.bytes[topic] += len(value)

    async def subscribe(self, topics: Sequence[str], group: str) -> Consumer:
        raise NotImplementedError("the bench sink has no consumers")


async def serve(port: int, data_dir: Path) -> None:
    bus = SinkBus()
    server = build_rtsp_server(bus, TokenSigner(load_secret(data_dir)), host="127.0.0.1", port=port)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop()
    print(json.dumps({"messages": bus.messages, "bytes": bus.bytes}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    configure_logging(args.log_level)
    asyncio.run(serve(args.port, args.data_dir))


if __name__ == "__main__":
    main()
