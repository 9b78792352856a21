"""Ingest spools through a bus outage, on a real Kafka of its own (scripts/kafka.sh, acted on by PID):
ffmpeg pushes RTSP into `camflow ingest --kafka`, the broker is frozen (a hung broker) or stopped
(gone), and every segment ingest cut must be on the raw topic, in order, with the stream's
``offline`` last; an ingest SIGKILLed with segments in its spool leaves them to the next ingest.

The Kafka here is started for this module on ports of its own (``SPOOL_KAFKA_PORT``, default 39092,
its controller +1) so that stopping it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from camflow.bus.kafka import KafkaBus
from camflow.events import TOPIC_RAW, TOPIC_STREAMS, StreamState, StreamStateKind, decode
from ingest.media.spool import SpoolRecord
from tests.process import CAMFLOW, camflow_service, free_port, make_clip
from tests.services import services_required

pytestmark = pytest.mark.integration
# The outage of the push test; the measurement of docs/ingest.md is the same test with
# SPOOL_PUSH_SECONDS=90 SPOOL_OUTAGE_SECONDS=60 and SPOOL_OUTAGE=freeze (SIGSTOP) or stop (gone, resumed).
PUSH_SECONDS = int(os.environ.get("SPOOL_PUSH_SECONDS", "40"))
OUTAGE_SECONDS = float(os.environ.get("SPOOL_OUTAGE_SECONDS", "15"))
OUTAGE = os.environ.get("SPOOL_OUTAGE", "freeze")  # or stop
BACK = {"freeze": "thaw", "stop": "resume"}
ROOT = Path(__file__).resolve().parents[1]
STREAM = "cam1"


@dataclass(frozen=True)
class OwnKafka:
    env: dict[str, str]
    bootstrap: str

    def script(self, *args: str) -> None:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "kafka.sh"), *args], env=self.env, check=True, timeout=300
        )


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnKafka]:
    port = int(os.environ.get("SPOOL_KAFKA_PORT", "39092"))
    run = os.environ.get("SPOOL_KAFKA_RUN") or str(tmp_path_factory.mktemp("kafka-run"))
    env = {
        **os.environ,
        "CAMFLOW_RUN": run,
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(port + 1),
        "KAFKA_BROKERS": "1",
    }
    own = OwnKafka(env, f"127.0.0.1:{port}")
    try:
        own.script("start")
    except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired) as exc:
        (pytest.fail if services_required() else pytest.skip)(f"scripts/kafka.sh start failed: {exc}")
    try:
        yield own
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "kafka.sh"), "thaw"], env=env, timeout=60)
        own.script("stop")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    seconds = PUSH_SECONDS
    return make_clip(
        tmp_path_factory.mktemp("clips") / f"clip{seconds}.mp4", seconds, size="320x240", rate=15, gop=15
    )


# --- what is on the topics ------------------------------------------------------------------


@dataclass(frozen=True)
class Arrived:
    segments: dict[int, int]  # seq -> earliest broker timestamp (ms) of its copies
    copies: int  # raw messages of the stream (duplicates of a retried publish included)
    states: list[tuple[int, StreamState]]  # (timestamp ms, state), as they arrived


def read_topics(bootstrap: str, prefix: str, expect_states: int, timeout: float = 60.0) -> Arrived:
    """Everything on the raw and streams topics under ``prefix`` (a real KafkaConsumer, no group),
    until the stream has ``expect_states`` states and nothing more arrives for 3 s."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        partitions = [
            TopicPartition(prefix + topic, p)
            for topic in (TOPIC_RAW, TOPIC_STREAMS)
            for p in sorted(consumer.partitions_for_topic(prefix + topic) or ())
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        segments: dict[int, int] = {}
        copies = 0
        states: list[tuple[int, StreamState]] = []
        deadline, quiet_since = time.monotonic() + timeout, time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    quiet_since = time.monotonic()
                    event = decode(r.value)
                    if isinstance(event, StreamState) and event.stream == STREAM:
                        states.append((r.timestamp, event))
                    elif r.topic == prefix + TOPIC_RAW and r.key.decode().startswith(f"{STREAM}/"):
                        seq = int(r.key.decode().rsplit("/", 1)[1])
                        copies += 1
                        segments[seq] = min(segments.get(seq, r.timestamp), r.timestamp)
            if len(states) >= expect_states and time.monotonic() - quiet_since > 3.0:
                break
        states.sort(key=lambda s: s[0])
        return Arrived(segments, copies, states)
    finally:
        consumer.close()


def assert_complete_and_in_order(arrived: Arrived, cut: int) -> None:
    """Segments 0..cut-1 all there, first copies in seq order, ``live`` before them, ``offline`` after."""
    assert sorted(arrived.segments) == list(range(cut)), f"missing: {set(range(cut)) - set(arrived.segments)}"
    stamps = [arrived.segments[seq] for seq in range(cut)]
    assert stamps == sorted(stamps), "segments reached the broker out of order"
    kinds = [s.state for _, s in arrived.states]
    assert kinds[0] is StreamStateKind.LIVE and kinds[-1] is StreamStateKind.OFFLINE, kinds
    assert arrived.states[0][0] <= stamps[0] and arrived.states[-1][0] >= stamps[-1]
    assert arrived.states[-1][1].last_seq == cut - 1


# --- camflow ingest and a camera --------------------------------------------------------------


def ingest_args(kafka: OwnKafka, data_dir: Path, prefix: str, rtsp_port: int) -> list[str]:
    return [
        "ingest",
        "--kafka",
        kafka.bootstrap,
        "--kafka-prefix",
        prefix,
        "--host",
        "127.0.0.1",
        "--rtsp-port",
        str(rtsp_port),
        "--http-port",
        str(free_port()),
        "--rtsp-udp-ports",
        "off",
        "--data-dir",
        str(data_dir),
        "--log-format",
        "json",
    ]


def camera(clip: Path, data_dir: Path, rtsp_port: int) -> subprocess.Popen[bytes]:
    token = subprocess.run(
        [*CAMFLOW, "token", "publish", STREAM, "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    url = f"rtsp://127.0.0.1:{rtsp_port}/{STREAM}?token={token}"
    return subprocess.Popen(
        ["ffmpeg", "-loglevel", "error", "-re", "-i", str(clip), "-c", "copy", "-f", "rtsp",
         "-rtsp_transport", "tcp", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def segments_cut(log: str) -> int:
    """What ingest says it cut, from its ``publish_ended`` line."""
    import json

    for line in log.splitlines():
        if '"publish_ended"' in line:
            return int(json.loads(line)["segments_cut"])
    raise AssertionError(f"no publish_ended in ingest's log:\n{log[-2000:]}")


def spooled_seqs(spool: Path) -> set[int]:
    """The raw segments waiting in the spool's files, by their keys."""
    seqs = set()
    for path in spool.glob("p-*/*.rec"):
        header = SpoolRecord.parse_header(path.read_bytes())
        if header.topic == TOPIC_RAW:
            seqs.add(int(header.key.rsplit("/", 1)[1]))
    return seqs


# --- the tests ---------------------------------------------------------------------------------


async def test_a_hung_broker_never_blocks_the_loop_and_published_means_acknowledged(kafka: OwnKafka) -> None:
    bus = KafkaBus(kafka.bootstrap, prefix=f"t{uuid.uuid4().hex[:8]}.", delivery_timeout=4.0)
    await bus.start()
    producer = bus._producer
    assert producer.config["acks"] == -1 and producer.config["enable_idempotence"]  # acks=all
    await bus.publish(TOPIC_STREAMS, "cam", b"before")
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    kafka.script("freeze")
    try:
        started = time.monotonic()
        with pytest.raises(Exception, match=r"(?i)timeout|expired|not acknowledged"):
            await bus.publish(TOPIC_STREAMS, "cam", b"while hung")  # not acknowledged: not published
        assert time.monotonic() - started < 4.0 + 5.0
        assert max(gaps) < 0.5, f"the event loop stalled {max(gaps):.2f} s"
    finally:
        kafka.script("thaw")
        tick.cancel()
    # Once the broker answers again, a publish goes through (the spool retries like this)
    deadline = time.monotonic() + 40.0
    while True:
        try:
            await bus.publish(TOPIC_STREAMS, "cam", b"after")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)
    await bus.close()


def test_a_bus_outage_during_a_push_loses_no_segment(kafka: OwnKafka, clip: Path, tmp_path: Path) -> None:
    prefix = f"f{uuid.uuid4().hex[:8]}."
    rtsp_port = free_port()
    args = ingest_args(kafka, tmp_path / "data", prefix, rtsp_port)
    with camflow_service(tmp_path, "ingest", args, {}) as ingest:
        cam = camera(clip, tmp_path / "data", rtsp_port)
        try:
            time.sleep(8)
            kafka.script(OUTAGE)  # by default 15 s of a hung broker in the middle of the push
            try:
                time.sleep(OUTAGE_SECONDS)
                spooled = list((tmp_path / "data" / "spool").glob("p-*/*.rec"))
                assert len(spooled) >= 5, "segments should wait in the spool while the broker is away"
            finally:
                kafka.script(BACK[OUTAGE])
            assert cam.wait(PUSH_SECONDS + 30) == 0, "the camera was disconnected"
        finally:
            if cam.poll() is None:
                cam.kill()
                cam.wait(10)
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(40)
    log = (tmp_path / "ingest.err").read_text()
    cut = segments_cut(log)
    assert cut >= PUSH_SECONDS // 2 - 2
    arrived = read_topics(kafka.bootstrap, prefix, expect_states=2)
    print(
        f"{OUTAGE} {OUTAGE_SECONDS:g} s in a {PUSH_SECONDS} s push: cut {cut} segments, on the raw topic "
        f"{len(arrived.segments)} ({arrived.copies - len(arrived.segments)} duplicates), states "
        f"{[s.state.value for _, s in arrived.states]}"
    )
    assert_complete_and_in_order(arrived, cut)


def test_a_killed_ingest_leaves_its_spool_to_the_next(kafka: OwnKafka, clip: Path, tmp_path: Path) -> None:
    prefix = f"k{uuid.uuid4().hex[:8]}."
    data = tmp_path / "data"
    rtsp_port = free_port()
    with camflow_service(tmp_path, "ingest", ingest_args(kafka, data, prefix, rtsp_port), {}) as first:
        cam = camera(clip, data, rtsp_port)
        try:
            time.sleep(6)
            kafka.script("stop")  # Kafka gone
            time.sleep(10)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            cam.kill()
            cam.wait(10)
    waiting = spooled_seqs(data / "spool")
    assert len(waiting) >= 3, "segments should have waited in the spool when ingest was killed"
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    args = ingest_args(kafka, data, prefix, free_port())
    with camflow_service(second_dir, "ingest", args, {}):
        kafka.script("resume")  # Kafka back on its data
        arrived = read_topics(kafka.bootstrap, prefix, expect_states=2, timeout=90)
    last = max(waiting)
    # everything spooled arrived, and before it everything delivered before the outage: no hole
    assert_complete_and_in_order(arrived, last + 1)
    assert "ingest ended without closing" in arrived.states[-1][1].reason
    log = (second_dir / "ingest.err").read_text()
    assert '"spool_adopted"' in log
