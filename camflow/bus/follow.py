"""Reading a topic outside any consumer group (``Following``): readers that commit nothing, such as the
health feed and the edge's ``camflow.playlists`` follower.

- ``follow_events``: every event of one type read from the topics handed on, until ``stop``;
  undecodable messages go to ``on_skip`` (a ``Skips``' ``note``: counted and logged) and are skipped.
- ``keep_following``: run such a feed until ``stop``; when it fails (the bus unreachable), log it
  (at a power-of-two count of failures) and start it again after a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from camflow.bus.base import Bus, Following, Message
from camflow.errors import EventDecodeError
from camflow.events import decode
from camflow.log import get_logger

log = get_logger("camflow.bus.follow")
E = TypeVar("E")


async def follow_events(
    bus: Bus,
    topics: Sequence[str],
    kind: type[E],
    on_event: Callable[[E], None],
    stop: asyncio.Event,
    *,
    on_skip: Callable[[Message, EventDecodeError], None],
    since: float = 0.0,
    on_open: Callable[[bool], None] | None = None,
) -> None:
    """Call ``on_event`` with every ``kind`` event on ``topics`` (from ``since`` seconds back where
    the bus keeps them) until ``stop`` is set. ``on_open(True)`` once the topics are being read,
    ``on_open(False)`` when they no longer are. TypeError when the bus cannot follow."""
    if not isinstance(bus, Following):
        raise TypeError(f"{type(bus).__name__} cannot follow a topic outside a consumer group")
    reader = await bus.follow(topics, since)
    if on_open is not None:
        on_open(True)
    try:
        while not stop.is_set():
            message = await reader.get(timeout=0.5)
            if message is None:
                continue
            try:
                event = decode(message.value)
            except EventDecodeError as exc:
                on_skip(message, exc)
                continue
            if isinstance(event, kind):
                on_event(event)
    finally:
        if on_open is not None:
            on_open(False)
        await reader.close()


async def keep_following(
    feed: Callable[[], Awaitable[None]], stop: asyncio.Event, *, name: str, retry_seconds: float
) -> None:
    """Run ``feed`` until ``stop`` is set; when it raises, log ``{name}_failed`` and run it again
    ``retry_seconds`` later."""
    failures = 0
    while not stop.is_set():
        try:
            await feed()
        except Exception as exc:
            failures += 1
            if failures & (failures - 1) == 0:
                log.warning(f"{name}_failed", error=repr(exc), failures=failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_seconds)
