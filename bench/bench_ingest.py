"""How many concurrent 2 Mb/s H.264 RTSP publishers one ingest process sustains on one core.

Ingest (``bench.ingest_server``: the service `camflow ingest` runs, on asyncio's loop, with a counting
sink in place of Kafka) is pinned to core 0 (``os.sched_setaffinity``); ``camflow loadgen``, in
its own process on core 1, replays a recorded 720p30 2 Mb/s stream to N sessions, all starting
to stream together once every handshake is done. For each N the bench reports frames lost
(frames the load generator sent minus the video samples in that stream's published fMP4
segments, counted by the sink from their ``trun`` boxes; in brackets the same against the
access units ingest counted), the load generator's worst lateness (ingest falling behind
shows as TCP back-pressure, not as loss), ingest's CPU and RSS per stream, and the ratio to
the floor: PyAV demuxing the same clip and remuxing the same packets into the same 2 s fMP4
segments, no network, measured in the same run on ingest's core.

CPU per stream is given two ways: steady (ingest's core utilisation in the middle of the step
divided by N, while every stream sends in real time, which a sustained step guarantees to
within the 1 s lateness bound) and whole-step (all of ingest's CPU during the step, handshakes,
per-session template opens and the last flush included, per stream-second of media received).

Options after ``--``: ``--steps 25,50,100,200,300 --step-seconds 15 --repeats 1 --floor-repeats 3
--loop uvloop|asyncio``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from bench import cache_dir, median, print_table
from bench.results import record
from camflow.mp4 import MOVFLAGS
from ingest.loadgen import Recording, record_clip

ROW = re.compile(r"^(\S+)\s+(\d+)\s+(\d+)\s+[\d.]+\s+([\d.]+)\s*(.*)$")
CLK_TCK = os.sysconf("SC_CLK_TCK")
SEGMENT_SECONDS = 2.0
LAG_LIMIT = 1.0  # seconds a frame may go out late before the step counts as not sustained
SATURATED = 0.95  # ingest core utilisation at which a step counts as not sustained


def make_clip() -> Path:
    path = cache_dir() / "bench-720p30-2mbps.mp4"
    if not path.exists():
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-t", "10",
             "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2M", "-maxrate", "2M", "-bufsize", "2M",
             "-g", "60", "-keyint_min", "60", "-pix_fmt", "yuv420p", str(path)],
            check=True,
            timeout=300,
        )  # fmt: skip
    return path


def floor_cpu_per_second(clip: Path, loops: int = 6) -> float:
    """CPU seconds per media second to demux ``clip`` and remux it into 2 s fMP4 segments with PyAV."""
    started = time.process_time()
    media = 0.0
    for _ in range(loops):
        with av.open(str(clip)) as src:
            stream = src.streams.video[0]
            tb = stream.time_base
            assert tb is not None
            out: av.container.OutputContainer | None = None
            out_stream = None
            seg_start = None
            for packet in src.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                t = float(packet.pts * tb)
                if packet.is_keyframe and (seg_start is None or t - seg_start >= SEGMENT_SECONDS):
                    if out is not None:
                        out.close()
                    out = av.open(io.BytesIO(), "w", format="mp4", options={"movflags": MOVFLAGS})
                    out_stream = out.add_stream_from_template(stream)
                    seg_start = t
                if out is None or out_stream is None:
                    continue
                packet.stream = out_stream
                out.mux(packet)
            if out is not None:
                out.close()
            media += float(stream.duration * tb) if stream.duration else 10.0
    return (time.process_time() - started) / media


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def runqueue_seconds(pid: int) -> float:
    """Seconds the process was runnable but waiting for a CPU (/proc/PID/schedstat): other load."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Step:
    streams: int
    lost: int
    failed: int
    max_lag: float
    core: float  # ingest CPU seconds per wall second, steady middle of the step
    load_core: float  # the load generator's, same window
    cpu_per_stream: float  # ingest CPU seconds (whole step) per stream-second of media ingest received
    units_lost: int  # frames sent minus access units ingest counted (publish_ended), a cross-check
    waited: float  # share of the steady window ingest was runnable but waiting for its core (other load)
    first_error: str
    rss_per_stream: float  # bytes

    @property
    def steady_per_stream(self) -> float:
        """Ingest CPU seconds per stream-second in the steady window (every stream sending in real time)."""
        return self.core / self.streams

    @property
    def sustained(self) -> bool:
        return self.lost == 0 and self.failed == 0 and self.max_lag <= LAG_LIMIT and self.core < SATURATED


def stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def pinned(core: int) -> Callable[[], None]:
    """A ``preexec_fn`` that pins the child to ``core`` (when the machine has it)."""

    def pin() -> None:
        if core in os.sched_getaffinity(0) and len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(0, {core})

    return pin


def run_step(streams: int, seconds: float, recording: Path, fps: float, work: Path, loop: str) -> Step:
    data_dir = work / f"data{streams}"
    port = free_port()
    ingest_log = work / f"ingest{streams}.err"
    ingest_out = work / f"ingest{streams}.out"
    with ingest_out.open("wb") as fo, ingest_log.open("wb") as fe:
        ingest = subprocess.Popen(
            [sys.executable, "-m", "bench.ingest_server", "--port", str(port), "--data-dir", str(data_dir),
             "--loop", loop],
            stdout=fo, stderr=fe, preexec_fn=pinned(0),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while b"ready" not in ingest_out.read_bytes():
            if ingest.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ingest did not start: {ingest_log.read_text()[-2000:]}")
            time.sleep(0.1)
        time.sleep(1.0)
        rss0 = rss_bytes(ingest.pid)
        cpu_start = cpu_seconds(ingest.pid)
        prefix = f"b{streams}x"
        load = subprocess.Popen(
            [sys.executable, "-m", "camflow.cli", "loadgen", "--url",
             f"rtsp://127.0.0.1:{port}", "--streams", str(streams), "--duration", str(seconds), "--rtp",
             str(recording), "--prefix", prefix, "--token-secret-from", str(data_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=pinned(1),
        )  # fmt: skip
        ramp = min(4.0, seconds / 4)
        time.sleep(ramp)
        cpu0, load0, t0 = cpu_seconds(ingest.pid), cpu_seconds(load.pid), time.monotonic()
        wait0 = runqueue_seconds(ingest.pid)
        time.sleep(max(1.0, seconds - 2 * ramp))
        cpu1, load1, t1 = cpu_seconds(ingest.pid), cpu_seconds(load.pid), time.monotonic()
        wait1 = runqueue_seconds(ingest.pid)
        rss1 = rss_bytes(ingest.pid)
        out, err = load.communicate(timeout=seconds + 120)
        sent: dict[str, tuple[int, float, str]] = {}
        for line in out.decode().splitlines():
            m = ROW.match(line)
            if m and m[1].startswith(prefix):
                sent[m[1]] = (int(m[3]), float(m[4]), m[5].strip())
        cpu_end = cpu_seconds(ingest.pid)  # every session has sent TEARDOWN or failed by now
        stop(ingest)
        units = {}
        for line in ingest_log.read_text().splitlines():
            if '"publish_ended"' in line:
                event = json.loads(line)
                units[event["stream_id"]] = int(event["units"])
        sink = json.loads(ingest_out.read_text().splitlines()[-1])  # what the sink got, printed at exit
        in_segments = {str(k): int(v) for k, v in sink["frames"].items()}
        lost = sum(max(0, frames - in_segments.get(name, 0)) for name, (frames, _, _) in sent.items())
        units_lost = sum(max(0, frames - units.get(name, 0)) for name, (frames, _, _) in sent.items())
        failed = sum(1 for _, _, error in sent.values() if error) + (streams - len(sent))
        if failed and not sent:
            print(err.decode()[-2000:], file=sys.stderr)
        return Step(
            streams=streams,
            lost=lost,
            failed=failed,
            max_lag=max((lag for _, lag, _ in sent.values()), default=0.0),
            core=(cpu1 - cpu0) / (t1 - t0),
            load_core=(load1 - load0) / (t1 - t0),
            cpu_per_stream=(cpu_end - cpu_start) / max(1e-9, sum(units.values()) / fps),
            units_lost=units_lost,
            waited=(wait1 - wait0) / (t1 - t0),
            first_error=next((error for _, _, error in sent.values() if error), ""),
            rss_per_stream=(rss1 - rss0) / streams,
        )
    finally:
        stop(ingest)


def parse(rest: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench ingest --")
    parser.add_argument("--steps", default="25,50,100,200,300")
    parser.add_argument("--step-seconds", type=float, default=15.0)
    parser.add_argument("--repeats", type=int, default=1, help="runs per step, median reported")
    parser.add_argument("--floor-repeats", type=int, default=3)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="ingest's loop")
    return parser.parse_args(rest)


def run(args: argparse.Namespace) -> None:
    opts = parse(args.rest)
    steps = [int(s) for s in opts.steps.split(",")]
    if not all(1 <= s <= 1000 for s in steps) or not 1 <= opts.repeats <= 5 or opts.step_seconds > 120:
        raise SystemExit("--steps 1..1000 each, --repeats 1..5, --step-seconds <= 120")
    clip = make_clip()
    rec_path = cache_dir() / "bench-720p30-2mbps.rtp"
    recording = record_clip(clip)
    recording.save(rec_path)
    Recording.load(rec_path)  # the file replays
    fps = len(recording.frames) * 90_000 / recording.duration
    affinity = os.sched_getaffinity(0)
    if len(affinity) > 1 and 0 in affinity:
        os.sched_setaffinity(0, {0})  # the floor on ingest's core
    try:
        floor = median([floor_cpu_per_second(clip) for _ in range(opts.floor_repeats)])
    finally:
        os.sched_setaffinity(0, affinity)
    print(
        f"machine: {os.cpu_count()} cores ({platform_cpu()}), shared; ingest (and the floor) on core 0, "
        f"loadgen on core 1; load average {os.getloadavg()[0]:.1f} at start.\n"
        f"stream: {clip.name}, {recording.bitrate / 1e6:.2f} Mb/s RTP payload, 1280x720 30 fps, GOP 2 s.\n"
        f"sink: counting in-process bus (no Kafka): measures ingest alone.\n"
        f"floor (PyAV demux + remux into {SEGMENT_SECONDS:g} s fMP4, no network, median of "
        f"{opts.floor_repeats}): {floor * 1000:.2f} ms CPU per stream-second.\n",
        flush=True,
    )
    rows = []
    best, at_best = 0, None
    with tempfile.TemporaryDirectory(prefix="camflow-bench-") as tmp:
        for streams in steps:
            runs = [
                run_step(streams, opts.step_seconds, rec_path, fps, Path(tmp), opts.loop)
                for _ in range(opts.repeats)
            ]
            step = sorted(runs, key=lambda s: s.steady_per_stream)[len(runs) // 2]
            rows.append(
                [
                    streams,
                    "yes" if step.sustained else "NO",
                    f"{step.lost} ({step.units_lost})",
                    step.failed,
                    step.max_lag,
                    f"{step.core * 100:.0f}%",
                    f"{step.waited * 100:.0f}%",
                    f"{step.load_core * 100:.0f}%",
                    step.steady_per_stream * 1000,
                    step.steady_per_stream / floor,
                    step.cpu_per_stream * 1000,
                    step.cpu_per_stream / floor,
                    step.rss_per_stream / 1e6,
                ]
            )
            print(f"  N={streams}: {rows[-1]} {step.first_error}", flush=True)
            if not step.sustained:
                break
            best, at_best = streams, step
    print_table(
        ["N", "sustained", "frames lost (units)", "failed", "max lag s", "ingest core", "ingest waited",
         "loadgen core",
         "steady ms/stream-s", "x floor", "whole-step ms/stream-s", "x floor", "RSS MB/stream"],
        rows,
        title=f"ingest on one core ({opts.loop}), {opts.step_seconds:g} s per step, median of {opts.repeats} "
        "(by steady CPU)",
    )  # fmt: skip
    print(
        "frames lost: frames sent minus video samples in the stream's published fMP4 segments (in brackets:"
        " minus access units ingest counted). steady: ingest core in the middle of the step / N, every stream"
        " sending in real time; whole-step: all ingest CPU of the step (handshakes, template opens, the last"
        " flush) per stream-second of media received. ingest waited: share of the window ingest was runnable"
        " but its core ran something else (other processes on a shared machine).",
        flush=True,
    )
    print(
        f"sustained: {best} streams on one core (target >= 200); "
        f"sustained = 0 frames lost, 0 failed sessions, loadgen lag <= {LAG_LIMIT:g} s, core < "
        f"{SATURATED * 100:.0f}%. Targets: <= 2 MB RSS per stream, <= 3x floor.",
        flush=True,
    )
    if at_best is not None:
        record(
            "ingest",
            {
                "streams_per_core": best,
                "stream_mbps": recording.bitrate / 1e6,
                "steady_cpu_ms_per_stream_s": at_best.steady_per_stream * 1000,
                "whole_cpu_ms_per_stream_s": at_best.cpu_per_stream * 1000,
                "rss_mb_per_stream": at_best.rss_per_stream / 1e6,
            },
        )


def platform_cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"
