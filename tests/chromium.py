"""Headless Chromium for the tests that play camflow's pages in a real browser: started by PID with a
fresh profile, driven over the DevTools protocol (an aiohttp websocket), sampled once a second."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.process import stop_process

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1100,900",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]
Sample = dict[str, Any]


def chromium_path() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: run `make install` (scripts/install-system.sh)")
    return exe


@contextmanager
def chromium(profile: Path, url: str, log: Path, flags: Sequence[str] = ()) -> Iterator[int]:
    """Chromium on ``url`` with a fresh profile (and ``flags`` besides CHROMIUM_FLAGS); yields its
    DevTools port; stopped by PID."""
    profile.mkdir(parents=True)
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [chromium_path(), *CHROMIUM_FLAGS, *flags, f"--user-data-dir={profile}", url],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and active.read_text().strip()):
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {proc.returncode}: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("chromium wrote no DevToolsActivePort within 30 s")
            time.sleep(0.1)
        yield int(active.read_text().splitlines()[0])
    finally:
        stop_process(proc, timeout=10)


class DevTools:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        await self._ws.send_json({"id": msg_id, "method": method, "params": params})
        for _ in range(10_000):  # skip events until our answer (bounded)
            msg = await asyncio.wait_for(self._ws.receive_json(), timeout=30)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg["result"]
                return result
        raise RuntimeError(f"{method}: no answer")

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


@asynccontextmanager
async def devtools(port: int) -> AsyncIterator[DevTools]:
    """The DevTools protocol of the browser's page tab (waited for: at most 10 s)."""
    async with aiohttp.ClientSession() as session:
        targets: list[dict[str, Any]] = []
        for _ in range(100):
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = [t for t in await resp.json(content_type=None) if t.get("type") == "page"]
            if targets:
                break
            await asyncio.sleep(0.1)
        async with session.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            yield DevTools(ws)


async def sample(
    tools: DevTools, probe: str, most: int, done: Callable[[list[Sample]], bool]
) -> list[Sample]:
    """Evaluate ``probe`` (a JSON string, or null until the page has loaded) once a second, at most
    ``most`` times, until ``done`` holds for the samples so far."""
    samples: list[Sample] = []
    for _ in range(most):
        await asyncio.sleep(1.0)
        raw = await tools.evaluate(probe)
        if raw is None:
            continue
        samples.append(json.loads(raw))
        if done(samples):
            break
    return samples


def advanced(samples: list[Sample]) -> float:
    """How far the video's time ``t`` advanced since the first sample where it played (0 before)."""
    first = next((s["t"] for s in samples if s["t"] > 0), None)
    return 0.0 if first is None else float(samples[-1]["t"] - first)


def unexpected_errors(
    errors: list[dict[str, Any]], at_join: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The hls.js errors a live play must not have: all but one non-fatal ``bufferSeekOverHole``, the
    jump hls.js may make over the sliver (under a frame) where a live join starts between the two
    tracks' first samples (playback goes on). A second such jump is unexpected too.

    ``at_join``: the errors already there when playback first advanced. One non-fatal
    ``bufferStalledError`` among them is the join's, and tolerated: a low-latency join lands 0.6 s
    behind the live edge, and on a loaded machine may wait once for its next part (hls.js then moves
    its target back, ``liveSyncOnStallIncrease``). A stall after the join is unexpected."""
    holes = [e for e in errors if (e.get("details"), e.get("fatal")) == ("bufferSeekOverHole", False)]
    stall = {"type": "mediaError", "details": "bufferStalledError", "fatal": False}
    join_stalls = [e for e in at_join or [] if e == stall][:1]
    others = [e for e in errors if e not in holes]
    for e in join_stalls:
        others.remove(e)
    return others + holes[1:]
