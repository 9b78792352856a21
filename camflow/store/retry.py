"""Riding out a store outage: the transcoder's and the packager's store calls wait for the store.

A call that fails with ``StoreUnavailable`` (the store cannot be reached, times out, or answers
5xx or slow-down: ``camflow.store.s3``) is repeated with capped exponential backoff and jitter
(``POLICY``: 0.2 s doubling up to 5 s, plus up to 0.5 s at random; tenacity does the arithmetic)
for as long as the outage lasts. The calling task waits inside the call, so a consumer neither
moves on to later messages of its partition nor commits work whose writes did not land; a
transcoder's segment is not one attempt closer to the dead-letter topic. When one call lands
again, every call still waiting is woken to try at once: a transcoder's concurrent segments come
back together, well within the packager's reorder window.

When the service stops during an outage (``RetryingStore.stop_when``), the waiting calls raise
``StoreRetryStopped`` at once: nothing more is written and nothing committed; the bus delivers
that work again to whoever consumes it next.

Any other failure (``NotFound``, a request the store refuses) goes to the caller at once: a retry
would not change it.

``StoreOutage`` is one service's view of the store: up, or down since when. An outage is logged
when it starts (``store_unavailable``) and when it ends (``store_available``, with its duration);
the service reports it on the health feed, ``/readyz`` (``reason``) and Prometheus (``samples``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential, wait_random
from tenacity.wait import wait_base

from camflow.errors import NotFound, StoreRetryStopped, StoreUnavailable
from camflow.log import get_logger
from camflow.store.base import Store, StoreWrapper

T = TypeVar("T")
STILL_DOWN_LOG_SECONDS = 60.0  # while an outage lasts, a reminder in the log this often


@dataclass(frozen=True)
class RetryPolicy:
    """The pause before the n-th repeat: ``min(first * 2**(n-1), cap) + uniform(0, jitter)`` seconds."""

    first: float = 0.2
    cap: float = 5.0
    jitter: float = 0.5

    def wait(self) -> wait_base:
        return wait_exponential(multiplier=self.first, max=self.cap) + wait_random(0, self.jitter)

    @property
    def longest_pause(self) -> float:
        """How long after the store is back a waiting call may still sleep before its next try."""
        return self.cap + self.jitter


POLICY = RetryPolicy()


class StoreOutage:
    """Whether the store answers one service's calls: down from the first call that finds it
    unavailable until the next call that lands."""

    def __init__(self, service: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self._clock = clock
        self.since: float | None = None  # when (clock) the current outage started; None while up
        self.ended_at: float | None = None  # when (clock) the last outage ended
        self.error = ""  # the newest failure of the current outage
        self.outages = 0
        self.retries: dict[str, int] = {}  # store operation -> calls repeated
        self._reminded = 0.0
        self._back = asyncio.Event()
        self._back.set()
        self._log: Any = get_logger("store").bind(service=service)

    @property
    def up(self) -> bool:
        return self.since is None

    def seconds(self) -> float:
        """How long the current outage has lasted (0 while the store answers)."""
        return 0.0 if self.since is None else max(0.0, self._clock() - self.since)

    def reason(self) -> str:
        """Why the service cannot write now ("" while the store answers): a /readyz check."""
        if self.since is None:
            return ""
        return f"unavailable for {self.seconds():.0f} s: {self.error}"

    def failed(self, op: str, exc: BaseException | None) -> None:
        """A call of ``op`` found the store unavailable and will be repeated."""
        self.retries[op] = self.retries.get(op, 0) + 1
        self.error = str(exc)[:300]
        now = self._clock()
        if self.since is None:
            self.since = self._reminded = now
            self.outages += 1
            self._back.clear()
            self._log.warning("store_unavailable", op=op, error=self.error)
        elif now - self._reminded >= STILL_DOWN_LOG_SECONDS:
            self._reminded = now
            self._log.warning("store_still_unavailable", seconds=round(now - self.since, 1), error=self.error)

    def landed(self) -> None:
        """A call got its answer: an outage, if one was going on, is over."""
        if self.since is None:
            return
        self.ended_at = self._clock()
        seconds = self.ended_at - self.since
        self.since = None
        self._back.set()
        retries = sum(self.retries.values())
        self._log.info("store_available", outage_seconds=round(seconds, 3), retries=retries)

    async def back(self) -> None:
        """Return once no outage is going on."""
        await self._back.wait()

    def samples(self) -> Iterator[tuple[str, tuple[str, ...], float]]:
        """``camflow_store_*`` samples for ``camflow.metrics`` (a service's ``samples`` yields them)."""
        yield "camflow_store_up", (self.service,), 1.0 if self.up else 0.0
        yield "camflow_store_outage_seconds", (self.service,), round(self.seconds(), 3)
        yield "camflow_store_outages", (self.service,), float(self.outages)
        for op, count in sorted(self.retries.items()):
            yield "camflow_store_retries", (self.service, op), float(count)


class RetryingStore(StoreWrapper):
    """A Store whose calls wait out an outage of the store they wrap (see the module's docstring)."""

    def __init__(
        self,
        inner: Store,
        outage: StoreOutage,
        *,
        policy: RetryPolicy = POLICY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(inner)
        self.outage = outage
        self.policy = policy
        self._sleep = sleep
        self._stop: asyncio.Event | None = None

    async def start(self) -> None:
        await self._call("start", self.inner.start)

    def stop_when(self, stop: asyncio.Event) -> None:
        """From now on a call waiting for the store gives up (``StoreRetryStopped``) once ``stop`` is set."""
        self._stop = stop

    async def _call(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        def failed(state: RetryCallState) -> None:
            self.outage.failed(op, state.outcome.exception() if state.outcome else None)

        retrying = AsyncRetrying(  # one per call: tenacity keeps per-call state on the object
            retry=retry_if_exception_type(StoreUnavailable),
            wait=self.policy.wait(),
            sleep=self._pause,
            before_sleep=failed,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    result = await call()
        except NotFound:  # the store answered
            self.outage.landed()
            raise
        self.outage.landed()
        return result

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the store is back meanwhile; ``StoreRetryStopped`` at a stop."""
        if self._stopping():
            raise StoreRetryStopped(f"stopped while the store was unavailable ({self.outage.error})")
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._sleep(seconds)),
            asyncio.ensure_future(self.outage.back()),
        ]
        if self._stop is not None:
            waits.append(asyncio.ensure_future(self._stop.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        if self._stopping():
            raise StoreRetryStopped(f"stopped while the store was unavailable ({self.outage.error})")
