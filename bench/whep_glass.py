"""Glass-to-glass latency of WHEP in headless Chromium, camflow and mediamtx in one run (bench_whep).

    unshare -rn python -m bench.whep_glass WORKDIR SECONDS [camflow,mediamtx]   # prints one JSON line

Inside a loopback-only network namespace (``unshare -rn``), as tests/whep_chromium.py: the barcode
camera (tests/barcode_camera.py, 640x360 30 fps libx264 zerolatency, an IDR every 2 s) pushes RTSP
to the target, and the page of tests/whep_chromium.py plays the target's WHEP for SECONDS, reading
each frame's wall-clock stamp off the screen. One target after the other; each process started is
stopped by PID. Holds no tests.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.barcode_camera import BarcodeCamera
from tests.latency_targets import mediamtx_path, mediamtx_whep
from tests.process import camflow_run
from tests.whep_chromium import WARMUP_S, PageServer

STREAM = "cam1"
PREROLL_S = 3.0  # the camera live this long before the viewer joins


def _query(seconds: float, whep: str, view: str = "") -> str:
    return f"source=rtsp&seconds={seconds}&warmup={WARMUP_S}&view={view}&whep={whep}"


async def camflow(pages: PageServer, work: Path, seconds: float) -> dict[str, Any]:
    with camflow_run(work, ["--ladder", "source"]) as cf:
        camera = BarcodeCamera(cf.rtsp_url(STREAM, cf.token("publish", STREAM)))
        try:
            await asyncio.sleep(PREROLL_S)
            query = _query(seconds, cf.http_url(f"/whep/{STREAM}"), cf.token("view", STREAM))
            page = await pages.play(query, timeout=seconds + 90, name="chromium-camflow")
        finally:
            errors = camera.stop()[-1000:]
    return {"page": page, "camera_errors": errors}


async def mediamtx(pages: PageServer, work: Path, seconds: float) -> dict[str, Any]:
    exe = mediamtx_path()
    if exe is None:
        return {"error": "mediamtx not found in ../shared/peers (or $CAMFLOW_PEERS)"}
    with mediamtx_whep(work, exe) as (publish, whep):
        camera = BarcodeCamera(publish)
        try:
            await asyncio.sleep(PREROLL_S)
            page = await pages.play(_query(seconds, whep), timeout=seconds + 90, name="chromium-mediamtx")
        finally:
            errors = camera.stop()[-1000:]
    return {"page": page, "camera_errors": errors}


async def run(work: Path, seconds: float, targets: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    async with PageServer(work) as pages:
        for name in targets:
            body = camflow if name == "camflow" else mediamtx
            (work / name).mkdir(parents=True, exist_ok=True)
            started = time.monotonic()
            try:
                result[name] = await body(pages, work / name, seconds)
            except Exception as exc:  # the other target still runs
                result[name] = {"error": repr(exc)[:500]}
            result[name]["seconds"] = round(time.monotonic() - started, 1)
    return result


def main() -> None:
    work, seconds = Path(sys.argv[1]), float(sys.argv[2])
    targets = sys.argv[3].split(",") if len(sys.argv) > 3 else ["camflow", "mediamtx"]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
    print(json.dumps(asyncio.run(run(work, seconds, targets))), flush=True)


if __name__ == "__main__":
    main()
