from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
import warnings
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from camflow.bus import LocalBus, Message
from camflow.errors import ConfigError
from camflow.events import TOPIC_DEAD, TOPIC_HEALTH, TOPIC_RAW, TOPIC_READY
from tests import services
from tests.process import CAMFLOW

with warnings.catch_warnings():
    # kafka-python 3.0 loads its protocol schemas with importlib.resources.open_text, deprecated in 3.11;
    # the warning is attributed to importlib, so pyproject's "DeprecationWarning:kafka.*" filter misses it.
    warnings.filterwarnings("ignore", "open_text is deprecated", DeprecationWarning)
    from camflow.bus.kafka import TOPICS, KafkaBus, KafkaConsumerAdapter, _Generations, topic_shortfalls

# --- LocalBus -------------------------------------------------------------------------------------


async def drain(consumer: object, timeout: float = 0.01) -> list[Message]:
    out: list[Message] = []
    for _ in range(1000):
        message = await consumer.get(timeout)  # type: ignore[attr-defined]
        if message is None:
            return out
        out.append(message)
    raise AssertionError("consumer never ran dry")


async def test_local_group_members_compete() -> None:
    bus = LocalBus()
    a = await bus.subscribe([TOPIC_RAW], "transcode")
    b = await bus.subscribe([TOPIC_RAW], "transcode")
    for i in range(10):
        await bus.publish(TOPIC_RAW, "cam", str(i).encode())
    got_a = [m.value for m in (await a.get(0.1), await a.get(0.1), await a.get(0.1)) if m]
    got_b = [m.value for m in await drain(b)]
    assert len(got_a) == 3
    assert sorted(got_a + got_b, key=int) == [str(i).encode() for i in range(10)]
    assert await a.get(0.01) is None


async def test_local_two_groups_each_get_every_message() -> None:
    bus = LocalBus()
    transcode = await bus.subscribe([TOPIC_RAW], "transcode")
    archive = await bus.subscribe([TOPIC_RAW, TOPIC_READY], "archive")
    await bus.publish(TOPIC_RAW, "cam", b"raw-0", {"h": b"1"})
    await bus.publish(TOPIC_READY, "cam", b"ready-0")
    await bus.publish(TOPIC_RAW, "cam", b"raw-1")
    assert [m.value for m in await drain(transcode)] == [b"raw-0", b"raw-1"]
    got = await drain(archive)
    assert [(m.topic, m.value, m.offset) for m in got] == [
        (TOPIC_RAW, b"raw-0", 0),
        (TOPIC_READY, b"ready-0", 0),
        (TOPIC_RAW, b"raw-1", 1),
    ]
    assert got[0].headers == {"h": b"1"} and got[0].key == "cam"


async def test_local_full_queue_makes_publish_wait() -> None:
    bus = LocalBus(queue_size=2)
    consumer = await bus.subscribe([TOPIC_RAW], "slow")
    await bus.publish(TOPIC_RAW, "cam", b"0")
    await bus.publish(TOPIC_RAW, "cam", b"1")
    blocked = asyncio.create_task(bus.publish(TOPIC_RAW, "cam", b"2"))
    done, _ = await asyncio.wait({blocked}, timeout=0.05)
    assert not done, "publish into a full queue returned instead of waiting"
    first = await consumer.get(0.1)
    assert first is not None and first.value == b"0"
    await asyncio.wait_for(blocked, timeout=1.0)
    assert [m.value for m in await drain(consumer)] == [b"1", b"2"]


async def test_local_publish_without_group_is_counted_and_dropped() -> None:
    bus = LocalBus()
    await bus.publish(TOPIC_RAW, "cam", b"lost")
    await bus.publish(TOPIC_RAW, "cam", b"lost too")
    consumer = await bus.subscribe([TOPIC_RAW], "late")
    await bus.publish(TOPIC_RAW, "cam", b"kept")
    assert bus.dropped_unsubscribed == {TOPIC_RAW: 2}
    got = await drain(consumer)
    assert [(m.value, m.offset) for m in got] == [(b"kept", 2)]


async def test_local_get_times_out_with_none() -> None:
    consumer = await LocalBus().subscribe([TOPIC_RAW], "idle")
    started = time.monotonic()
    assert await consumer.get(0.05) is None
    assert 0.04 <= time.monotonic() - started < 1.0


async def test_local_closed_consumer_gets_none() -> None:
    bus = LocalBus()
    consumer = await bus.subscribe([TOPIC_RAW], "g")
    await bus.publish(TOPIC_RAW, "cam", b"x")
    await consumer.close()
    assert await consumer.get(0.01) is None


# --- KafkaBus (real broker) -----------------------------------------------------------------------

RECEIVE_SECONDS = 60.0  # first poll of a new group waits for the group join and assignment


@pytest.fixture
async def kafka() -> AsyncIterator[KafkaBus]:
    bootstrap = services.require("kafka")
    bus = KafkaBus(bootstrap, client_id="camflow-test", prefix=f"t{uuid.uuid4().hex}.")
    await bus.start()
    try:
        yield bus
    finally:
        await bus.close()


async def receive(consumer: KafkaConsumerAdapter, seconds: float = RECEIVE_SECONDS) -> Message:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = await consumer.get(timeout=0.5)
        if message is not None:
            return message
    raise AssertionError(f"no message within {seconds} s")


async def nothing_within(consumer: KafkaConsumerAdapter, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = await consumer.get(timeout=0.5)
        assert message is None, f"unexpected redelivery at offset {message.offset}"


async def test_kafka_round_trip_of_a_large_value_with_headers(kafka: KafkaBus) -> None:
    value = os.urandom(5 * 1024 * 1024)
    consumer = await kafka.subscribe([TOPIC_RAW], "big")
    await kafka.publish(TOPIC_RAW, "cam-1", value, {"content-type": b"video/mp4", "bin": b"\x00\xff"})
    message = await receive(consumer)
    assert message.topic == TOPIC_RAW and message.key == "cam-1"
    assert message.headers == {"content-type": b"video/mp4", "bin": b"\x00\xff"}
    assert len(message.value) == len(value) and message.value == value


async def test_kafka_uncommitted_message_is_redelivered_to_the_group(kafka: KafkaBus) -> None:
    await kafka.publish(TOPIC_READY, "cam-1", b"segment-1")
    first = await kafka.subscribe([TOPIC_READY], "packager")
    message = await receive(first)
    assert message.value == b"segment-1"
    await first.close()  # crashed before commit

    second = await kafka.subscribe([TOPIC_READY], "packager")
    again = await receive(second)
    assert (again.value, again.partition, again.offset) == (b"segment-1", message.partition, message.offset)
    await second.commit(again)
    await second.close()

    third = await kafka.subscribe([TOPIC_READY], "packager")
    await kafka.publish(TOPIC_READY, "cam-1", b"segment-2")
    assert (await receive(third)).value == b"segment-2"  # not segment-1: its offset was committed
    await nothing_within(third, 1.0)


async def test_kafka_two_groups_each_get_the_message(kafka: KafkaBus) -> None:
    transcode = await kafka.subscribe([TOPIC_RAW], "transcode")
    archive = await kafka.subscribe([TOPIC_RAW], "archive")
    await kafka.publish(TOPIC_RAW, "cam-1", b"one")
    got = await asyncio.gather(receive(transcode), receive(archive))
    assert [m.value for m in got] == [b"one", b"one"]


async def test_kafka_publish_before_start_is_refused() -> None:
    with pytest.raises(RuntimeError, match="before start"):
        await KafkaBus("127.0.0.1:9").publish(TOPIC_RAW, "cam", b"x")


# --- topic replication (--kafka-replication) ------------------------------------------------------


def test_partition_counts_never_block_the_rebalance_listener() -> None:
    """kafka-python 3 runs the listener on its network thread, where partitions_for_topic raises
    when the topic's metadata is not cached (a packager crashed on it in CI). The listener takes
    what the cache has; the poll thread reads the rest once the poll returns."""

    class Cluster:
        def partitions_for_topic(self, topic: str) -> set[int] | None:
            return set(range(8)) if topic.endswith(TOPIC_READY) else None

    class Consumer:
        _cluster = Cluster()
        on_network_thread = True

        def partitions_for_topic(self, topic: str) -> set[int]:
            if self.on_network_thread:
                raise RuntimeError("Cannot block on net.run() from the IO thread itself")
            return set(range(4))

    class TP:
        def __init__(self, topic: str, partition: int) -> None:
            self.topic, self.partition = topic, partition

    adapter = KafkaConsumerAdapter("127.0.0.1:9", [TOPIC_READY, TOPIC_HEALTH], "g", prefix="p.")
    consumer = adapter._consumer = Consumer()
    _Generations(adapter).on_partitions_assigned([TP("p." + TOPIC_READY, 1), TP("p." + TOPIC_HEALTH, 0)])
    assert adapter.generation == 1 and adapter.partitions == {TOPIC_READY: 8} and adapter.recount
    consumer.on_network_thread = False
    adapter._count_partitions()
    assert adapter.partitions == {TOPIC_READY: 8, TOPIC_HEALTH: 4} and not adapter.recount
    assert adapter.owns(TOPIC_READY, "cam-a")  # murmur2("cam-a") % 8 == 1


def test_topic_requests_carry_the_replication_factor() -> None:
    from camflow.bus.kafka import TOPICS, topic_requests

    wanted = topic_requests("p.", 3, existing={"p." + TOPIC_READY})
    assert sorted(t.name for t in wanted) == sorted("p." + name for name in TOPICS if name != TOPIC_READY)
    assert {t.replication_factor for t in wanted} == {3}
    assert {t.name: t.num_partitions for t in wanted}["p." + TOPIC_RAW] == TOPICS[TOPIC_RAW][0]
    # acks=all waits for 2 of the 3 replicas: one broker may be down, no write lands on one alone
    assert {t.topic_configs["min.insync.replicas"] for t in wanted} == {"2"}
    isr = {n: topic_requests("p.", n, set())[0].topic_configs["min.insync.replicas"] for n in (1, 2, 3, 5)}
    assert isr == {1: "1", 2: "1", 3: "2", 5: "2"}
    with pytest.raises(ConfigError, match="replication factor 0: expected 1 or more"):
        KafkaBus("127.0.0.1:9", replication=0)


def test_kafka_replication_flag_and_env(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from camflow.cli.args import build_parser

    assert build_parser().parse_args(["package", "--kafka-replication", "3"]).kafka_replication == 3
    assert build_parser().parse_args(["edge"]).kafka_replication == 1
    monkeypatch.setenv("CAMFLOW_KAFKA_REPLICATION", "2")
    assert build_parser().parse_args(["transcode"]).kafka_replication == 2
    for bad in (["ingest", "--kafka-replication", "0"], ["run", "--kafka-replication", "two"]):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(bad)
        assert exited.value.code == 2
        assert "expected a whole number of brokers >= 1" in capsys.readouterr().err


def test_topic_shortfalls_name_fewer_replicas_and_partitions() -> None:
    def topic(name: str, partitions: int, replicas: int) -> dict[str, object]:
        return {"name": name, "partitions": [{"replica_nodes": list(range(replicas))}] * partitions}

    described = [
        topic("p." + TOPIC_READY, 8, 1),
        topic("p." + TOPIC_HEALTH, 2, 3),
        topic("p." + TOPIC_RAW, 8, 3),
        topic("p.not-ours", 1, 1),
        {"name": "p." + TOPIC_DEAD, "partitions": []},  # not described yet
    ]
    problems = topic_shortfalls("p.", 3, described)
    assert problems == [
        f"topic 'p.{TOPIC_READY}' has 1 replica(s) per partition, 3 asked (raise it with "
        "kafka-reassign-partitions.sh, or delete the topic to have it recreated)",
        f"topic 'p.{TOPIC_HEALTH}' has 2 partitions, camflow creates 4",
    ]
    assert topic_shortfalls("p.", 1, [topic("p." + TOPIC_READY, 8, 1)]) == []


async def test_kafka_replication_beyond_the_brokers_is_a_clear_error_and_1_works() -> None:
    """The test broker is a single node: factor 2 cannot be met. Asked for it, the bus says so at
    once (no topic is created); a service started with it exits 2 with the reason; factor 1 works."""
    from kafka.admin import KafkaAdminClient

    bootstrap = services.require("kafka")
    prefix = f"t{uuid.uuid4().hex}."
    bus = KafkaBus(bootstrap, client_id="camflow-test", prefix=prefix, replication=2)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"replication factor 2: .*only 1 broker.* --kafka-replication"):
        await bus.start()
    assert time.monotonic() - started < 20
    await bus.close()

    cli = subprocess.run(
        [*CAMFLOW, "package", "--kafka", bootstrap, "--kafka-prefix", prefix, "--kafka-replication", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 2, cli.stderr[-2000:]
    assert "replication factor 2" in cli.stderr and "Traceback" not in cli.stderr, cli.stderr[-2000:]

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="camflow-test-admin")
    try:
        assert not [t for t in admin.list_topics() if t.startswith(prefix)]
        bus = KafkaBus(bootstrap, client_id="camflow-test", prefix=prefix, replication=1)
        await bus.start()
        try:
            consumer = await bus.subscribe([TOPIC_READY], "replication")
            await bus.publish(TOPIC_READY, "cam-1", b"one")
            assert (await receive(consumer)).value == b"one"
            await consumer.close()
        finally:
            await bus.close()
        described = admin.describe_topics([prefix + TOPIC_READY])
        replicas = {len(p["replica_nodes"]) for t in described for p in t["partitions"]}
        assert replicas == {1}, described
        # The topics exist now: a bus asking for 2 replicas creates nothing, runs, and says what
        # the existing topics lack instead of keeping silent about it.
        bus = KafkaBus(bootstrap, client_id="camflow-test", prefix=prefix, replication=2)
        with capture_logs() as logs:
            await bus.start()
        await bus.close()
        short = [e["problem"] for e in logs if e["event"] == "kafka_topic_shortfall"]
        assert len(short) == len(TOPICS), logs
        assert f"topic '{prefix}{TOPIC_READY}' has 1 replica(s) per partition, 2 asked" in " ".join(short)
    finally:
        admin.close()
