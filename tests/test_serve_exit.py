"""A service that crashes ends its process with exit status 1 (an orchestrator restarts it), not 0."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from camflow.bus import LocalBus
from camflow.cli import main as cli
from camflow.cli import serve
from packager.service import Packager


@pytest.fixture
def package_args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(serve, "make_bus", lambda args, required: LocalBus())
    return ["package", "--data-dir", str(tmp_path), "--health-interval", "60"]


def test_a_crashed_service_exits_1(package_args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    async def crash(self: Packager, stop: asyncio.Event) -> None:
        self.ready.set()
        await asyncio.sleep(0.2)
        raise RuntimeError("User rebalance callback throws an error")

    monkeypatch.setattr(Packager, "run", crash)
    parsed = cli.build_parser().parse_args(package_args)
    with capture_logs() as logs:
        assert asyncio.run(serve.serve(parsed, {"package"})) == 1
    failed = [e for e in logs if e["event"] == "service_failed"]
    assert failed and failed[0]["service"] == "package" and "rebalance callback" in failed[0]["error"]
    assert cli.main(package_args) == 1  # the process's exit status


def test_a_service_stopped_by_a_signal_exits_0(
    package_args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def runs(self: Packager, stop: asyncio.Event) -> None:
        self.ready.set()
        await stop.wait()

    async def run_then_stop() -> int:
        task = asyncio.create_task(serve.serve(cli.build_parser().parse_args(package_args), {"package"}))
        await asyncio.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)  # serve's own handler takes it
        return await task

    monkeypatch.setattr(Packager, "run", runs)
    assert asyncio.run(run_then_stop()) == 0
