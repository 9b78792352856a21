"""mediamtx's recordings listing (its playback server's ``/list``), for ``bench recordings``.

mediamtx records each path as fMP4 files named by their start time; ``/list?path=`` finds the files
and reads each one's header and fragments for its duration, merging consecutive ones. So that the
listing has ``days`` of recording without recording for days, mediamtx records a few seconds of a
10 fps clip (2 s GOP, ``recordSegmentDuration: 2s``), one complete 2 s segment is copied under every
2 s file name of the span, each copy with the next segment number in its ``mtxi`` box (which is how
mediamtx tells consecutive segments of one recording), and a second mediamtx serves the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from bench import median, print_table

PEER = Path(os.environ.get("CAMFLOW_PEERS", "/work/shared/peers")) / "mediamtx"
START = 1_793_491_200  # 2026-11-01T00:00:00Z
SEGMENT = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(root: Path, rtsp: int, playback: int, record: bool) -> str:
    return f"""logLevel: warn
rtspAddress: 127.0.0.1:{rtsp}
rtspTransports: [tcp]
rtmp: no
hls: no
webrtc: no
srt: no
api: no
metrics: no
pprof: no
playback: yes
playbackAddress: 127.0.0.1:{playback}
pathDefaults:
  record: {"yes" if record else "no"}
  recordPath: {root}/%path/%Y-%m-%d_%H-%M-%S-%f
  recordFormat: fmp4
  recordSegmentDuration: 2s
  recordDeleteAfter: 0s  # its cleaner would delete the copies (named weeks ago) as they are listed
paths:
  all_others: {{}}
"""


@contextlib.contextmanager
def mediamtx(work: Path, root: Path, *, record: bool) -> object:
    rtsp, playback = free_port(), free_port()
    conf = work / f"mediamtx-{'rec' if record else 'play'}.yml"
    conf.write_text(config(root, rtsp, playback, record))
    log = (work / f"{conf.stem}.log").open("wb")
    # cwd: mediamtx writes a self-signed auto.crt / auto.key where it runs
    proc = subprocess.Popen([str(PEER), str(conf)], cwd=work, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", playback)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mediamtx did not start: {(work / f'{conf.stem}.log').read_text()[-500:]}"
                )
            time.sleep(0.1)
        yield rtsp, playback
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def one_segment(work: Path) -> bytes:
    """A complete 2 s fMP4 segment recorded by mediamtx."""
    clip = work / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=10", "-t", "9",
         "-c:v", "libx264", "-g", "20", "-keyint_min", "20", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
         "-b:v", "40k", str(clip)],
        check=True, timeout=60,
    )  # fmt: skip
    return recorded_segment(clip, work)


def recorded_segment(clip: Path, work: Path) -> bytes:
    """The second 2 s segment mediamtx records of ``clip`` (9 s or so) pushed to it over RTSP: a
    complete one (the first may start late)."""
    recorded = work / "recorded"
    with mediamtx(work, recorded, record=True) as (rtsp, _):
        subprocess.run(
            ["ffmpeg", "-v", "error", "-re", "-i", str(clip), "-c", "copy", "-f", "rtsp",
             "-rtsp_transport", "tcp", f"rtsp://127.0.0.1:{rtsp}/cam1"],
            check=True, timeout=60,
        )  # fmt: skip
        time.sleep(1)
    files = sorted((recorded / "cam1").glob("*.mp4"))
    if len(files) < 3:
        raise RuntimeError(f"mediamtx recorded {len(files)} segments, expected 3 or more")
    return files[1].read_bytes()


def copies(segment: bytes, root: Path, count: int) -> None:
    at = segment.find(b"mtxi")
    if at < 0:
        raise RuntimeError("no mtxi box in mediamtx's segment")
    number = at + 4 + 4 + 16  # type, version and flags, stream id; then the segment number (uint64)
    folder = root / "cam1"
    folder.mkdir(parents=True, exist_ok=True)
    data = bytearray(segment)
    for n in range(count):
        data[number : number + 8] = struct.pack(">Q", n)
        t = START + n * SEGMENT
        name = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d_%H-%M-%S-%f")
        (folder / f"{name}.mp4").write_bytes(data)


async def compare_mediamtx(work: Path, days: float, camflow_ms: float | None, repeats: int = 3) -> None:
    if not PEER.exists():
        print(f"peer mediamtx missing ({PEER}): camflow measured alone\n")
        return
    count = int(days * 86400 / SEGMENT)
    began = time.perf_counter()
    segment = await asyncio.to_thread(one_segment, work)
    await asyncio.to_thread(copies, segment, work / "peer", count)
    made = time.perf_counter() - began
    print(f"mediamtx: {count} segment files of {len(segment)} bytes made in {made:.0f} s", flush=True)
    times: list[float] = []
    with mediamtx(work, work / "peer", record=False) as (_, playback):
        async with aiohttp.ClientSession() as http:
            for _ in range(repeats + 1):
                began = time.perf_counter()
                async with http.get(f"http://127.0.0.1:{playback}/list?path=cam1") as resp:
                    body = await resp.json()
                    if resp.status != 200:
                        raise RuntimeError(f"mediamtx /list: {resp.status} {body}")
                times.append((time.perf_counter() - began) * 1000)
    listed = sum(float(e["duration"]) for e in body)
    cold, warm = times[0], median(times[1:])
    rows: list[list[object]] = [
        [f"mediamtx /list, {days:g} day(s) of files", f"{len(body)} ranges, {listed:.0f} s", cold, warm, ""],
    ]
    if camflow_ms is not None:
        rows.append(
            ["camflow listing of one day (30-day index)", "", "", camflow_ms, f"{warm / camflow_ms:.3g}"]
        )
    print_table(
        ["listing", "answer", "first ms", "median ms", "mediamtx / camflow"],
        rows,
        title=f"peer: mediamtx playback /list ({repeats} queries, load {os.getloadavg()[0]:.1f})",
    )
