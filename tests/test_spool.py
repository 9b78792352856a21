"""The ingest spool: record files, the index's order and bound, delivery through an outage, recovery
of a spool left behind, and torn or damaged files (ingest/media/spool*.py, spooled_bus.py)."""

from __future__ import annotations

import asyncio
import json
import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from camflow.bus import LocalBus, Message
from camflow.bus.base import Consumer
from camflow.cli.settings import spool_settings
from camflow.errors import ConfigError
from camflow.events import (
    MAGIC,
    TOPIC_HEALTH,
    TOPIC_RAW,
    TOPIC_STREAMS,
    HealthSample,
    StreamState,
    StreamStateKind,
    decode,
    encode,
)
from ingest.media.spool import (
    Admission,
    Entry,
    EntryState,
    RecordHeader,
    RecordKind,
    SpoolCorrupt,
    SpoolIndex,
    SpoolRecord,
)
from ingest.media.spool_dir import QUARANTINE, SpoolDirectory
from ingest.media.spooled_bus import SpooledBus
from tests import defaults

GROUP = "test"
TOPICS = (TOPIC_RAW, TOPIC_STREAMS, TOPIC_HEALTH)


def header(lane: str, kind: RecordKind = RecordKind.SEGMENT, topic: str = TOPIC_RAW) -> RecordHeader:
    return SpoolRecord.make(lane, topic, "k", b"x", kind=kind, created=1.0).header


def admit(
    index: SpoolIndex, lane: str, size: int, kind: RecordKind = RecordKind.SEGMENT, topic: str = TOPIC_RAW
) -> Admission:
    admission = index.admit(header(lane, kind, topic), size, "home", lambda n: f"{n}.rec")
    if admission.entry is not None:
        index.stored(admission.entry)
    return admission


def added(index: SpoolIndex, lane: str, size: int) -> Entry:
    entry = admit(index, lane, size).entry
    assert entry is not None
    return entry


# --- records -------------------------------------------------------------------------------


def test_record_round_trip_with_headers() -> None:
    record = SpoolRecord.make(
        "cam1",
        TOPIC_RAW,
        "cam1/e/3",
        b"\x00fmp4",
        kind=RecordKind.SEGMENT,
        created=5.5,
        headers={"h": b"\xff"},
    )
    back = SpoolRecord.decode(record.encode())
    assert back == record


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda b: b[:10], "shorter than|does not match"),
        (lambda b: b[:-1], "body of 4 of 5 bytes"),
        (lambda b: b[:-1] + b"?", "body of 5 of 5 bytes does not match"),
        (lambda b: b"XXXX" + b[4:], "expected b'CFSP'"),
        (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], "header of .* does not match its CRC"),
    ],
)
def test_torn_or_damaged_record_is_spool_corrupt(damage: Callable[[bytes], bytes], match: str) -> None:
    data = SpoolRecord.make(
        "cam1", TOPIC_RAW, "cam1/e/3", b"fmp4!", kind=RecordKind.SEGMENT, created=1.0
    ).encode()
    with pytest.raises(SpoolCorrupt, match=match):
        SpoolRecord.decode(damage(data))


# --- the index -----------------------------------------------------------------------------


def test_lanes_deliver_in_order_one_at_a_time() -> None:
    index = SpoolIndex(1000)
    a1, b1, a2 = (added(index, lane, 10) for lane in ("a", "b", "a"))
    assert index.next("a") is a1 and index.next("b") is b1
    index.sending(a1)
    assert index.next("a") is None  # one in flight per lane
    index.unsent(a1)
    assert index.next("a") is a1  # a failed publish keeps its turn
    index.sending(a1)
    index.delivered(a1)
    assert index.next("a") is a2
    assert index.bytes == 20 and len(index) == 2


def test_a_record_being_written_holds_its_lane() -> None:
    index = SpoolIndex(1000)
    first = index.admit(header("a"), 10, "h", str).entry
    assert first is not None
    added(index, "a", 10)
    assert index.next("a") is None  # the first is not on disk yet: nothing overtakes it
    index.stored(first)
    assert index.next("a") is first


def test_full_spool_drops_the_oldest_waiting_segment_counted_per_stream() -> None:
    index = SpoolIndex(100)
    old = [added(index, lane, 30) for lane in ("a", "b", "a")]
    index.sending(old[0])  # in flight: never dropped
    state = admit(index, "b", 5, RecordKind.EVENT, TOPIC_STREAMS).entry
    admission = admit(index, "c", 30)
    assert admission.dropped == [old[1]]  # the oldest waiting segment, of stream b
    assert index.dropped == {"b": 1}
    admission = admit(index, "c", 30)
    assert admission.dropped == [old[2]] and index.dropped == {"a": 1, "b": 1}
    assert state is not None and state.state is EntryState.WAITING  # states are never dropped
    assert index.bytes <= 100


def test_a_segment_that_cannot_fit_is_dropped_itself_an_event_is_taken() -> None:
    index = SpoolIndex(50)
    index.sending(added(index, "a", 40))
    admission = admit(index, "b", 20)
    assert admission.entry is None and index.dropped == {"b": 1}
    assert admit(index, "b", 20, RecordKind.EVENT, TOPIC_STREAMS).entry is not None  # over the bound


def test_a_health_sample_replaces_the_waiting_one_of_its_stream() -> None:
    index = SpoolIndex(1000)
    first = admit(index, "a", 10, RecordKind.LATEST, TOPIC_HEALTH).entry
    segment = added(index, "a", 10)
    admission = admit(index, "a", 10, RecordKind.LATEST, TOPIC_HEALTH)
    assert admission.replaced == [first] and index.next("a") is segment
    assert admit(index, "b", 10, RecordKind.LATEST, TOPIC_HEALTH).replaced == []


# --- delivery ------------------------------------------------------------------------------


class OutageBus(LocalBus):
    """A LocalBus that refuses every publish while ``down`` (a broker gone), counting the refusals."""

    def __init__(self) -> None:
        super().__init__(queue_size=10_000)
        self.down = False
        self.refused = 0

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Mapping[str, bytes] | None = None
    ) -> None:
        if self.down:
            self.refused += 1
            raise ConnectionError("broker unreachable")
        await super().publish(topic, key, value, headers)


async def received(consumer: Consumer, count: int, timeout: float = 10.0) -> list[Message]:
    out: list[Message] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(out) < count and asyncio.get_running_loop().time() < deadline:
        message = await consumer.get(0.1)
        if message is not None:
            out.append(message)
    return out


async def spool_on_outage_bus(root: Path, max_bytes: int = 1 << 20) -> tuple[OutageBus, Consumer, SpooledBus]:
    """An OutageBus (up), a consumer of every topic ingest publishes, and a started spool in front."""
    bus = OutageBus()
    consumer = await bus.subscribe(TOPICS, GROUP)
    spooled = SpooledBus(bus, directory=root, max_bytes=max_bytes, retry_max=0.2)
    await spooled.start()
    return bus, consumer, spooled


def state(stream: str, kind: StreamStateKind, last: int | None = None) -> bytes:
    return encode(StreamState(stream, "e1", kind, "test", 1.0, last))


async def push_session(spooled: SpooledBus, stream: str, segments: int) -> None:
    await spooled.publish(TOPIC_STREAMS, stream, state(stream, StreamStateKind.LIVE))
    for seq in range(segments):
        await spooled.publish(TOPIC_RAW, f"{stream}/e1/{seq}", f"{stream}-{seq}".encode())
    await spooled.publish(TOPIC_STREAMS, stream, state(stream, StreamStateKind.OFFLINE, segments - 1))


def order(messages: list[Message], stream: str) -> list[str]:
    """A stream's messages as they arrived: ``live``, ``0``, ``1``, ..., ``offline``."""
    out = []
    for m in messages:
        if m.key.partition("/")[0] != stream:
            continue
        if m.topic == TOPIC_STREAMS:
            event = decode(m.value)
            assert isinstance(event, StreamState)
            out.append(event.state.value)
        else:
            out.append(m.key.rpartition("/")[2])
    return out


async def test_an_outage_delivers_everything_in_order_per_stream_once_the_bus_is_back(tmp_path: Path) -> None:
    bus, consumer, spooled = await spool_on_outage_bus(tmp_path)
    bus.down = True
    await asyncio.gather(push_session(spooled, "a", 5), push_session(spooled, "b", 3))
    await asyncio.sleep(0.5)
    assert bus.refused >= 2 and len(spooled.index) == 12  # everything waits on disk
    assert len(list(spooled._own.path.glob("*.rec"))) == 12  # type: ignore[union-attr]
    bus.down = False
    messages = await received(consumer, 12)
    assert order(messages, "a") == ["live", "0", "1", "2", "3", "4", "offline"]
    assert order(messages, "b") == ["live", "0", "1", "2", "offline"]
    assert await spooled.drain(2.0)
    await spooled.close()
    assert not any(tmp_path.iterdir())  # delivered and removed, directory too


async def test_a_full_spool_drops_oldest_segments_and_keeps_the_states(tmp_path: Path) -> None:
    record = len(
        SpoolRecord.make("a", TOPIC_RAW, "a/e1/0", b"a-0", kind=RecordKind.SEGMENT, created=0).encode()
    )
    bus, consumer, spooled = await spool_on_outage_bus(tmp_path, 6 * record)
    bus.down = True
    await push_session(spooled, "a", 10)
    assert spooled.spool_dropped("a") >= 4
    assert ("camflow_ingest_spool_dropped", ("a",), float(spooled.spool_dropped("a"))) in list(
        spooled.samples()
    )
    bus.down = False
    messages = await received(consumer, 12 - spooled.spool_dropped("a"))
    arrived = order(messages, "a")
    assert arrived[0] == "live" and arrived[-1] == "offline"
    segments = arrived[1:-1]
    assert segments == [str(s) for s in range(10 - len(segments), 10)]  # the newest kept, in order
    assert len(segments) + spooled.spool_dropped("a") == 10
    await spooled.close()


async def test_a_spool_left_behind_is_adopted_delivered_and_its_open_epoch_closed(tmp_path: Path) -> None:
    bus = OutageBus()
    bus.down = True
    first = SpooledBus(bus, directory=tmp_path, max_bytes=1 << 20, retry_max=0.2)
    await first.start()
    await first.publish(TOPIC_STREAMS, "a", state("a", StreamStateKind.LIVE))
    for seq in range(3):
        await first.publish(TOPIC_RAW, f"a/e1/{seq}", b"seg")
    await first.close()  # as a killed process would leave it: records on disk, no offline
    (left,) = tmp_path.iterdir()
    (left / "000000000099.tmp").write_bytes(b"half a write")

    bus.down = False
    consumer = await bus.subscribe(TOPICS, GROUP)
    second = SpooledBus(bus, directory=tmp_path, max_bytes=1 << 20, retry_max=0.2, adopt_interval=0.1)
    await second.start()
    messages = await received(consumer, 5)
    assert order(messages, "a") == ["live", "0", "1", "2", "offline"]
    offline = decode(messages[-1].value)
    assert isinstance(offline, StreamState) and offline.last_seq == 2 and "ingest ended" in offline.reason
    assert await second.drain(2.0)
    for _ in range(50):  # delivered: the adopted directory goes, while this spool runs on
        if not left.exists():
            break
        await asyncio.sleep(0.05)
    assert not left.exists()
    await second.close()


async def test_the_spool_of_a_live_process_is_not_adopted(tmp_path: Path) -> None:
    owner = SpoolDirectory.create(tmp_path)
    record = SpoolRecord.make("a", TOPIC_RAW, "a/e1/0", b"seg", kind=RecordKind.SEGMENT, created=1.0)
    owner.write("000000000001.rec", record.encode())
    assert SpoolDirectory.adopt(owner.path) is None  # the lock is held
    bus = OutageBus()
    other = SpooledBus(bus, directory=tmp_path, max_bytes=1 << 20)
    await other.start()
    assert len(other.index) == 0
    await other.close()
    owner.close(remove_if_empty=True)
    adopted = SpoolDirectory.adopt(owner.path)  # its owner gone, the lock is free
    assert adopted is not None and [n for n, _, _ in adopted.recover(tmp_path).records] == [
        "000000000001.rec"
    ]
    adopted.close(remove_if_empty=False)


async def test_torn_and_damaged_files_are_quarantined_counted_and_never_crash(tmp_path: Path) -> None:
    bus = OutageBus()
    bus.down = True
    first = SpooledBus(bus, directory=tmp_path, max_bytes=1 << 20, retry_max=0.2)
    await first.start()
    for seq in range(4):
        await first.publish(TOPIC_RAW, f"a/e1/{seq}", b"segment-bytes")
    await first.close()
    (left,) = tmp_path.iterdir()
    files = sorted(left.glob("*.rec"))
    files[0].write_bytes(files[0].read_bytes()[:-3])  # torn: shorter than its header says
    files[1].write_bytes(b"\x00" * 40)  # garbage
    damaged = bytearray(files[2].read_bytes())
    damaged[-1] ^= 0xFF  # the body does not match its CRC: found when it is read for delivery
    files[2].write_bytes(bytes(damaged))

    bus.down = False
    consumer = await bus.subscribe(TOPICS, GROUP)
    second = SpooledBus(bus, directory=tmp_path, max_bytes=1 << 20, retry_max=0.2)
    await second.start()
    messages = await received(consumer, 2, timeout=3.0)  # segment 3 and the closing offline
    assert order(messages, "a") == ["3", "offline"]
    assert second.quarantined == 3
    assert ("camflow_ingest_spool_quarantined", (), 3.0) in list(second.samples())
    assert len(list((tmp_path / QUARANTINE).iterdir())) == 3
    await second.close()


async def test_a_health_sample_waiting_in_the_spool_is_replaced_by_the_newer(tmp_path: Path) -> None:
    bus, consumer, spooled = await spool_on_outage_bus(tmp_path)
    bus.down = True
    for at, kind in (
        (1.0, StreamStateKind.LIVE),
        (2.0, StreamStateKind.LIVE),
        (3.0, StreamStateKind.OFFLINE),
    ):
        await spooled.publish(TOPIC_HEALTH, "a", encode(HealthSample("a", "ingest", "h/1", at, kind)))
    await asyncio.sleep(0.3)
    bus.down = False
    messages = await received(consumer, 3, timeout=2.0)
    samples = [decode(m.value) for m in messages]
    # the first may have been in flight when the outage began; the newest always arrives, last
    assert isinstance(samples[-1], HealthSample) and samples[-1].state is StreamStateKind.OFFLINE
    assert len(samples) <= 2
    await spooled.close()


def test_spool_files_are_written_whole_or_not_at_all(tmp_path: Path) -> None:
    home = SpoolDirectory.create(tmp_path)
    data = SpoolRecord.make("a", TOPIC_RAW, "a/e/1", os.urandom(1000), kind=RecordKind.SEGMENT, created=1.0)
    home.write("000000000001.rec", data.encode())
    assert [p.name for p in home.path.iterdir() if p.name != "lock"] == ["000000000001.rec"]
    assert home.read("000000000001.rec") == data
    home.close(remove_if_empty=False)


# --- flags -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "ingest"])
def test_spool_flags_default_under_the_data_dir_and_take_sizes(command: str) -> None:
    args = defaults.parsed(command, "--kafka", "127.0.0.1:9", "--data-dir", "/srv/camflow")
    assert spool_settings(args) == {"directory": Path("/srv/camflow/spool"), "max_bytes": 2 << 30}
    args = defaults.parsed(
        command, "--kafka", "k:9", "--spool-dir", "/var/spool/x", "--spool-max-bytes", "500M"
    )
    assert spool_settings(args) == {"directory": Path("/var/spool/x"), "max_bytes": 500 << 20}
    assert defaults.parsed(command, "--spool-max-bytes", "1048576").spool_max_bytes == 1 << 20


@pytest.mark.parametrize("bad", ["0", "-1G", "2X", "lots", ""])
def test_a_bad_spool_size_is_refused_with_the_expected_form(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        defaults.parsed("ingest", f"--spool-max-bytes={bad}")
    assert "expected a size like 2G, 500M" in capsys.readouterr().err


def test_an_unwritable_spool_dir_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    spooled = SpooledBus(LocalBus(), directory=tmp_path / "file" / "spool", max_bytes=1 << 20)
    with pytest.raises(ConfigError, match="expected a writable --spool-dir"):
        asyncio.run(spooled.start())


def test_health_sample_v2_reads_spool_dropped_as_none() -> None:
    sample = HealthSample("cam1", "ingest", "h/1", 1.5, spool_dropped=3)
    back = decode(encode(sample))
    assert isinstance(back, HealthSample) and back.spool_dropped == 3
    v2 = {**sample.to_json(), "type": "health-sample", "v": 2}
    del v2["spool_dropped"]
    blob = json.dumps(v2).encode()
    old = decode(MAGIC + struct.pack(">I", len(blob)) + blob)
    assert isinstance(old, HealthSample) and old.spool_dropped is None
