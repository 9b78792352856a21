"""WebRTC playback (WHEP, issue 17): glass-to-glass latency in a browser, and viewers per core, camflow
against mediamtx in one run.

``python -m bench whep [-- --seconds 30 --steps 25,50,100,150,200,250,300 --hold 20 --only latency,capacity]``

- **latency**: headless Chromium in a loopback-only network namespace plays WHEP of the barcode camera
  (tests/barcode_camera.py: 640x360 30 fps libx264 zerolatency, pushed over RTSP by ffmpeg) for
  ``--seconds`` after a 2 s warm-up, reading each frame's wall-clock stamp off the screen
  (bench/whep_glass.py); camflow (`camflow run --ladder source`), then mediamtx's WHEP.
- **capacity**: one 2 Mb/s stream (testsrc2 1280x720 30 fps libx264, 2 s GOP, no B-frames, a 60 s
  clip made once and pushed in a loop with ``-c copy``) and N aiortc viewers in processes of
  ``--per-process`` (bench/whep_viewers.py, counting frames without decoding them). The server is
  pinned to core 0, the pusher and the viewers to the other cores. For each N: all connect, then
  every viewer counts its frames and the frames missing from its RTP timestamps for ``--hold``
  seconds while the server's CPU (its whole process tree, from /proc) is read. The largest N with
  every viewer connected and no frame missing is the result; the steps stop after the first loss.

Prints the tables and the load average, records the figures (bench/results.py). Measures; asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import cache_dir, print_table
from bench.results import record
from tests.latency_targets import mediamtx_path, mediamtx_whep
from tests.process import Camflow, camflow_run, stop_process

STREAM = "cam1"
P50_TARGET_S, VIEWERS_TARGET = 0.5, 100
FPS = 30
PARTS = ("latency", "capacity")


def parse(rest: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench whep --")
    parser.add_argument("--seconds", type=float, default=30.0, help="latency sampling per target (>= 30)")
    parser.add_argument("--steps", default="25,50,100,150,200,250,300", help="viewer counts, ascending")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds each step counts frames")
    parser.add_argument("--per-process", type=int, default=25, help="aiortc viewers per process")
    parser.add_argument("--only", default=",".join(PARTS), help=f"some of {PARTS}")
    parser.add_argument("--targets", default="camflow,mediamtx", help="camflow, mediamtx or both")
    opts = parser.parse_args(rest)
    opts.steps = sorted(int(n) for n in opts.steps.split(",") if n.strip())
    opts.only = [p for p in opts.only.split(",") if p]
    opts.targets = [t for t in opts.targets.split(",") if t]
    if not set(opts.only) <= set(PARTS) or not set(opts.targets) <= {"camflow", "mediamtx"}:
        parser.error(f"--only takes {PARTS}, --targets camflow,mediamtx")
    return opts


def _quantiles(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), statistics.quantiles(values, n=20)[-1]


def latency(opts: argparse.Namespace, work: Path, figures: dict[str, float | int]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    cmd = ["unshare", "-rn", sys.executable, "-m", "bench.whep_glass", str(work), str(opts.seconds)]
    done = subprocess.run(
        [*cmd, ",".join(opts.targets)], capture_output=True, text=True, timeout=2 * opts.seconds + 400
    )
    if done.returncode != 0 or not done.stdout.strip():
        print(f"latency: FAILED ({done.returncode}): {done.stderr[-2000:]}", flush=True)
        return
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rows: list[list[object]] = []
    for target, got in result.items():
        page = got.get("page", {})
        samples = page.get("latencies", [])
        if not page.get("ok") or len(samples) < 20:
            rows.append([target, "-", "-", 0, "-", "-", f"failed: {got.get('error') or page.get('error')}"])
            continue
        p50, p95 = (q / 1000 for q in _quantiles(samples))
        stats = page.get("stats", {})
        first = page.get("firstFrame")
        rows.append(
            [target, round(p50, 3), round(p95, 3), len(samples), stats.get("framesDropped", "-"),
             round(first) if first is not None else "-", "yes" if p50 <= P50_TARGET_S else "NO"]
        )  # fmt: skip
        figures |= {f"{target}_glass_p50_s": p50, f"{target}_glass_p95_s": p95}
    print_table(
        ["target", "p50 s", "p95 s", "frames read", "dropped", "first frame ms", f"p50 <= {P50_TARGET_S}"],
        rows,
        title=f"WHEP glass-to-glass in headless Chromium, {opts.seconds:g} s per target (loopback)",
    )


def _tree(root: int) -> list[int]:
    """``root`` and every process below it (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += parents.get(pid, [])
    return found


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root``'s process tree so far (its live processes)."""
    total = 0
    for pid in _tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def udp_drops() -> int:
    """Datagrams this machine's kernel dropped for want of socket buffer (/proc/net/snmp RcvbufErrors)."""
    lines = [
        line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")
    ]
    return int(dict(zip(lines[0], lines[1], strict=True))["RcvbufErrors"])


def clip() -> Path:
    """The 60 s 720p30 2 Mb/s camera-like clip (made once, cached)."""
    path = cache_dir() / "whep-testsrc2-720p30-2M.mp4"
    if not path.exists():
        tmp = path.with_suffix(".tmp.mp4")
        subprocess.run(
            ["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
             "-t", "60", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2M", "-maxrate", "2M",
             "-bufsize", "2M", "-g", "60", "-keyint_min", "60", "-bf", "0", "-pix_fmt", "yuv420p", str(tmp)],
            check=True, timeout=600,
        )  # fmt: skip
        tmp.replace(path)
    return path


@contextlib.contextmanager
def pinned(cores: set[int]) -> Iterator[None]:
    """Processes started in this block run on ``cores`` (they inherit this process's affinity)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def pushing(url: str, log: Path, cores: set[int]) -> Iterator[None]:
    with pinned(cores), log.open("wb") as err:
        proc = subprocess.Popen(
            ["ffmpeg", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(clip()), "-c", "copy",
             "-f", "rtsp", "-rtsp_transport", "tcp", url],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        yield
    finally:
        stop_process(proc, timeout=10)


async def step(url: str, token: str, n: int, opts: argparse.Namespace, server: int) -> dict[str, Any]:
    """N viewers in processes on the other cores: connected, frames counted for --hold, server CPU."""
    others = (os.sched_getaffinity(0) - {0}) or {0}
    sizes = [opts.per_process] * (n // opts.per_process) + (
        [n % opts.per_process] if n % opts.per_process else []
    )
    procs: list[asyncio.subprocess.Process] = []
    with pinned(others):
        for size in sizes:
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.whep_viewers", url, token, str(size),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )  # fmt: skip
    out: dict[str, Any] = {"n": n, "connected": 0, "frames": [], "missing": [], "errors": []}
    try:
        for p in procs:
            assert p.stdout is not None
            line = ""
            while not line.startswith("ready ") and not p.stdout.at_eof():  # its own log lines first
                line = (await asyncio.wait_for(p.stdout.readline(), 120)).decode()
            out["connected"] += int(line.split()[1]) if line.startswith("ready ") else 0
        await asyncio.sleep(2.0)  # past the IDR burst of the last viewer
        cpu0, t0, load0 = cpu_seconds(server), time.monotonic(), os.getloadavg()[0]
        viewers0, drops0 = sum(cpu_seconds(p.pid) for p in procs), udp_drops()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        await asyncio.sleep(opts.hold)
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"stop\n")
            await p.stdin.drain()
        span = time.monotonic() - t0
        out["cpu"] = (cpu_seconds(server) - cpu0) / span
        out["viewers_cpu"] = (sum(cpu_seconds(p.pid) for p in procs) - viewers0) / span
        out["udp_drops"] = udp_drops() - drops0
        out["load"] = (load0, os.getloadavg()[0])
        for p in procs:
            assert p.stdout is not None
            got = json.loads((await asyncio.wait_for(p.stdout.read(), 60)).decode().strip().splitlines()[-1])
            out["frames"] += got["frames"]
            out["missing"] += got["missing"]
            out["errors"] += got["errors"]
            out["missing_packets"] = out.get("missing_packets", []) + got["missing_packets"]
            out["window"] = got["window_s"]
    finally:
        for p in procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(p.wait(), 10)
                if p.returncode is None:
                    p.kill()
                    await p.wait()
    return out


def _ok(r: dict[str, Any], hold: float) -> bool:
    floor = 0.97 * FPS * hold  # every viewer got about every frame of the window
    return (
        r["connected"] == r["n"]
        and len(r["frames"]) == r["n"]
        and sum(r["missing"]) == 0
        and sum(r["missing_packets"]) == 0
        and min(r["frames"], default=0) >= floor
    )


def ended_sessions(log: str) -> dict[str, int]:
    """camflow's own account of its WHEP sessions that ended (``whep_session_ended`` lines of ``log``)."""
    total = {"sessions": 0, "dropped": 0, "overflows": 0, "resyncs": 0}
    for line in log.splitlines():
        if '"whep_session_ended"' in line:
            event = json.loads(line[line.index("{") :])
            total["sessions"] += 1
            for key in ("dropped", "overflows", "resyncs"):
                total[key] += int(event.get(key, 0))
    return total


async def ladder(
    name: str, url: str, token: str, server: int, opts: argparse.Namespace, camflow: Camflow | None
) -> list[dict[str, Any]]:
    """The steps of N viewers until one loses; with ``camflow``, its own account of each step's sessions."""
    results = []
    for n in opts.steps:
        ended0 = ended_sessions(camflow.log) if camflow else None
        print(f"  {name}: {n} viewers ...", flush=True)
        try:
            r = await step(url, token, n, opts, server)
        except Exception as exc:
            print(f"  {name}: {n} viewers FAILED: {exc!r}", flush=True)
            results.append({"n": n, "failed": repr(exc)[:200]})
            break
        r["ok"] = _ok(r, opts.hold)
        results.append(r)
        print(
            f"  {name}: {n}: connected {r['connected']}, frames min {min(r['frames'], default=0)} "
            f"max {max(r['frames'], default=0)}, missing frames {sum(r['missing'])} packets "
            f"{sum(r['missing_packets'])}, CPU {r['cpu'] * 100:.0f}% "
            f"(viewers {r['viewers_cpu'] * 100:.0f}%), "
            f"UDP drops {r['udp_drops']}, load {r['load'][1]:.2f}, errors {r['errors'][:2]}",
            flush=True,
        )
        await asyncio.sleep(12)  # the sessions end (DELETE; the slow ones by their timeout)
        if camflow and ended0:
            ended = ended_sessions(camflow.log)
            r["server"] = {k: ended[k] - ended0[k] for k in ended}
            print(f"  {name}: {n}: camflow's sessions: {r['server']}", flush=True)
        if not r["ok"]:
            break
    return results


async def capacity(opts: argparse.Namespace, work: Path, figures: dict[str, float | int]) -> None:
    clip()
    table: list[list[object]] = []
    for target in opts.targets:
        w = work / target
        w.mkdir(parents=True, exist_ok=True)
        results: list[dict[str, Any]] = []
        with contextlib.ExitStack() as stack:
            if target == "camflow":
                with pinned({0}):
                    cf = stack.enter_context(
                        camflow_run(
                            w, ["--ladder", "source", "--webrtc-max-client-sessions", "1000",
                                "--webrtc-max-viewers", "1000"],
                        )
                    )  # fmt: skip
                server, publish = cf.proc.pid, cf.rtsp_url(STREAM, cf.token("publish", STREAM))
                camflow: Camflow | None = cf
                url, token = cf.http_url(f"/whep/{STREAM}"), cf.token("view", STREAM)
            else:
                exe = mediamtx_path()
                if exe is None:
                    print("  mediamtx: not found in ../shared/peers (or $CAMFLOW_PEERS)", flush=True)
                    continue
                with pinned({0}):
                    publish, url = stack.enter_context(mediamtx_whep(w, exe))
                server, token, camflow = _pid_on(url), "", None
            stack.enter_context(pushing(publish, w / "push.log", (os.sched_getaffinity(0) - {0}) or {0}))
            await asyncio.sleep(5)
            results = await ladder(target, url, token, server, opts, camflow)
        best = max((r["n"] for r in results if r.get("ok")), default=0)
        for r in results:
            if "failed" in r:
                table.append([target, r["n"], "-", "-", "-", "-", "-", "-", "-", r["failed"][:50]])
                continue
            table.append(
                [target, r["n"], r["connected"], min(r["frames"], default=0), sum(r["missing"]),
                 sum(r["missing_packets"]), round(r["cpu"] * 100), round(r["viewers_cpu"] * 100),
                 f"{r['load'][0]:.2f}/{r['load'][1]:.2f}", "yes" if r["ok"] else "NO"]
            )  # fmt: skip
        figures[f"{target}_viewers_no_loss"] = best
        at_best = next((r for r in results if r.get("ok") and r["n"] == best), None)
        if at_best is not None:
            figures[f"{target}_cpu_pct_at_best"] = at_best["cpu"] * 100
        print(f"  {target}: largest N without loss {best} (target >= {VIEWERS_TARGET})", flush=True)
    print_table(
        [
            "server",
            "viewers",
            "connected",
            "min frames",
            "missing frames",
            "missing packets",
            "server CPU %",
            "viewers CPU %",
            "load 1m",
            "no loss",
        ],
        table,
        title=f"WHEP viewers of one 720p30 2 Mb/s stream, server on core 0, {opts.hold:g} s a step",
    )


def _pid_on(url: str) -> int:
    """The pid of the mediamtx child just started (the newest process named mediamtx of this user)."""
    ours = [p for p in _tree(os.getpid())[1:] if Path(f"/proc/{p}/comm").read_text().strip() == "mediamtx"]
    if not ours:
        raise RuntimeError(f"no mediamtx process under this one for {url}")
    return ours[-1]


def run(args: argparse.Namespace) -> None:
    opts = parse(list(args.rest))
    before = os.getloadavg()
    print(f"load average before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f} ({os.cpu_count()} cores)")
    figures: dict[str, float | int] = {}
    with tempfile.TemporaryDirectory(prefix="camflow-bench-whep-") as tmp:
        if "latency" in opts.only:
            latency(opts, Path(tmp) / "latency", figures)
        if "capacity" in opts.only:
            asyncio.run(capacity(opts, Path(tmp) / "capacity", figures))
    after = os.getloadavg()
    print(f"load average after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    if figures:
        record("whep", figures)
