"""The store retry policy (camflow.store.retry) on a fake clock, and what counts as an outage (S3)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import urllib3
from minio.error import S3Error, ServerError
from structlog.testing import capture_logs

from camflow.errors import NotFound, StoreRetryStopped, StoreUnavailable
from camflow.metrics import Readiness
from camflow.store import FileStore, ObjectInfo
from camflow.store.retry import POLICY, RetryingStore, RetryPolicy, StoreOutage
from camflow.store.s3 import is_unavailable


class FlakyStore(FileStore):
    """A FileStore whose calls fail with StoreUnavailable while ``down`` (or for the first ``fail`` calls)."""

    def __init__(self, root: Path, *, fail: int = 0) -> None:
        super().__init__(root)
        self.fail = fail
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down or self.calls <= self.fail:
            raise StoreUnavailable("store 127.0.0.1:9 unavailable: connection refused")

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._check()
        await super().put(key, data, content_type)

    async def get(self, key: str) -> bytes:
        self._check()
        return await super().get(key)

    async def head(self, key: str) -> ObjectInfo | None:
        self._check()
        return await super().head(key)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_an_outage_is_waited_out_with_capped_exponential_backoff(tmp_path: Path) -> None:
    clock = FakeClock()
    inner = FlakyStore(tmp_path, fail=9)
    with capture_logs() as logs:
        outage = StoreOutage("transcode", clock=clock)
        store = RetryingStore(inner, outage, sleep=clock.sleep)
        await store.put("streams/cam1/e/720p/00000001.m4s", b"media")
    assert await inner.get("streams/cam1/e/720p/00000001.m4s") == b"media"
    assert len(clock.sleeps) == 9
    for n, pause in enumerate(clock.sleeps):
        base = min(POLICY.first * 2**n, POLICY.cap)
        assert base <= pause <= base + POLICY.jitter, (n, pause)
    assert clock.sleeps[-1] <= POLICY.cap + POLICY.jitter  # capped
    assert outage.up and outage.outages == 1 and outage.retries == {"put": 9}
    events = [e for e in logs if e["event"].startswith("store_")]
    assert [e["event"] for e in events] == ["store_unavailable", "store_available"]
    assert events[0]["service"] == "transcode" and events[0]["op"] == "put"
    assert events[1]["outage_seconds"] == pytest.approx(sum(clock.sleeps), abs=1e-3)


async def test_the_outage_is_reported_while_it_lasts(tmp_path: Path) -> None:
    clock = FakeClock()
    outage = StoreOutage("package", clock=clock)
    readiness = Readiness()
    readiness.add("package", lambda: True)
    readiness.add("package store", outage.reason)
    assert outage.reason() == "" and readiness.reasons() == []
    outage.failed("put", StoreUnavailable("connection refused"))
    clock.now += 12.0
    assert not outage.up and outage.seconds() == 12.0
    assert readiness.reasons() == ["package store: unavailable for 12 s: connection refused"]
    samples = {(name, labels): value for name, labels, value in outage.samples()}
    assert samples[("camflow_store_up", ("package",))] == 0.0
    assert samples[("camflow_store_outage_seconds", ("package",))] == 12.0
    assert samples[("camflow_store_retries", ("package", "put"))] == 1.0
    outage.landed()
    samples = {(name, labels): value for name, labels, value in outage.samples()}
    assert samples[("camflow_store_up", ("package",))] == 1.0
    assert samples[("camflow_store_outage_seconds", ("package",))] == 0.0
    assert samples[("camflow_store_outages", ("package",))] == 1.0
    assert readiness.reasons() == []


async def test_other_failures_are_the_callers_at_once(tmp_path: Path) -> None:
    clock = FakeClock()
    store = RetryingStore(FileStore(tmp_path), StoreOutage("transcode", clock=clock), sleep=clock.sleep)
    with pytest.raises(NotFound):
        await store.get("streams/cam1/master.m3u8")
    with pytest.raises(Exception, match="is not a relative path"):
        await store.put("../escape", b"x")
    assert clock.sleeps == [] and store.outage.up and store.outage.retries == {}


async def test_a_stop_ends_the_wait_at_once_and_nothing_lands(tmp_path: Path) -> None:
    inner = FlakyStore(tmp_path)
    inner.down = True
    stop = asyncio.Event()
    store = RetryingStore(inner, StoreOutage("package"), policy=RetryPolicy(first=30.0, cap=60.0))
    store.stop_when(stop)
    call = asyncio.create_task(store.put("streams/cam1/720p.m3u8", b"#EXTM3U\n"))
    await asyncio.sleep(0.05)
    assert not call.done()  # waiting out the outage
    started = time.monotonic()
    stop.set()
    with pytest.raises(StoreRetryStopped):
        await asyncio.wait_for(call, 2.0)
    assert time.monotonic() - started < 0.5
    assert not (tmp_path / "streams/cam1/720p.m3u8").exists()


async def test_a_call_is_still_tried_once_after_a_stop(tmp_path: Path) -> None:
    stop = asyncio.Event()
    stop.set()
    store = RetryingStore(FileStore(tmp_path), StoreOutage("transcode"))
    store.stop_when(stop)
    await store.put("streams/cam1/e/720p/00000002.m4s", b"m")  # the store answers: the write lands
    assert (tmp_path / "streams/cam1/e/720p/00000002.m4s").read_bytes() == b"m"


async def test_waiting_calls_wake_together_when_one_lands(tmp_path: Path) -> None:
    inner = FlakyStore(tmp_path)
    inner.down = True
    outage = StoreOutage("transcode")
    store = RetryingStore(inner, outage, policy=RetryPolicy(first=30.0, cap=60.0, jitter=0.0))
    waiting = [asyncio.create_task(store.put(f"streams/cam1/e/720p/0000000{i}.m4s", b"m")) for i in (3, 4)]
    await asyncio.sleep(0.05)
    assert not outage.up and not any(t.done() for t in waiting)
    inner.down = False
    started = time.monotonic()
    # The first call after the outage lands (here a third writer's, without a pause) and wakes the others.
    await RetryingStore(inner, outage).put("streams/cam1/e/720p/00000005.m4s", b"m")
    await asyncio.wait_for(asyncio.gather(*waiting), 2.0)
    assert time.monotonic() - started < 1.0 and outage.up


def _s3_error(status: int, code: str) -> S3Error:
    return S3Error(SimpleNamespace(status=status), code, "m", "/b/k", "r", "h")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "unavailable"),
    [
        (urllib3.exceptions.NewConnectionError(None, "refused"), True),  # type: ignore[arg-type]
        (urllib3.exceptions.ReadTimeoutError(None, "/b/k", "read timed out"), True),  # type: ignore[arg-type]
        (ConnectionResetError("reset"), True),
        (ServerError("server failed with HTTP status code 502", 502), True),
        (_s3_error(503, "SlowDown"), True),
        (_s3_error(503, "XMinioServerNotInitialized"), True),
        (_s3_error(500, "InternalError"), True),
        (_s3_error(403, "AccessDenied"), False),
        (_s3_error(404, "NoSuchKey"), False),
        (ValueError("bad"), False),
    ],
)
def test_what_counts_as_the_store_being_unavailable(exc: BaseException, unavailable: bool) -> None:
    assert is_unavailable(exc) is unavailable
