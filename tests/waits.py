"""Bounded waits for tests on the event loop: poll a condition every 50 ms, fail with what was awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(what: str, check: Callable[[], object], timeout: float = 30.0) -> None:
    """Return once ``check()`` is truthy; an AssertionError naming ``what`` after ``timeout`` s."""
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")
