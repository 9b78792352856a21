"""Edge throughput against nginx, and request coalescing.

``python -m bench edge [-- --workers 2 --seconds 5 --connections 64 --repeats 3]``

1. `camflow edge --workers N` (a real process tree, FileStore) serves a cached 500 KB segment
   and a 5 KB live playlist (with a view token, which the edge carries into every URI, so the
   body it sends is larger than the stored 5 KB); Debian's nginx serves the same bytes from
   disk (``sendfile on``, as many workers): the segment, and the playlist exactly as the edge
   sends it (token-rewritten), so both servers send equal bodies. wrk measures requests/s for
   each; the medians of ``--repeats`` runs, their ratio edge/nginx, and the median of the
   per-repeat ratios ("paired", steadier on a shared machine) are printed against the targets
   (0.8x for segments, 0.5x for playlists). ``--app-path`` also measures the edge with
   ``--no-fast-path`` (every request through the aiohttp application).
2. 500 concurrent cold requests for one segment through the edge app: store reads (must be 1).

By default (``--no-tls`` leaves it out) the run also has the edge over HTTPS (``--tls-cert``, a
certificate made for the run) and nginx over HTTPS (``listen ... ssl``, the same certificate, its
default ciphers), and prints what TLS costs each: HTTPS req/s over its own HTTP req/s, and edge
HTTPS over nginx HTTPS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
from aiohttp import web

from camflow.store import FileStore
from camflow.tokens import Action, TokenSigner
from edge.app import build_app
from edge.state import EDGE
from tests import defaults

EPOCH = "20261121T101500123Z"
SECRET = "bench-edge-secret-0123456789abcdef"
SEGMENT_KEY = f"streams/bench/{EPOCH}/source/00000001.m4s"
PLAYLIST_KEY = "streams/bench/source.m3u8"
TARGETS = {"segment": 0.8, "playlist": 0.5}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def playlist_text(size: int = 5000) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:2", "#EXT-X-MEDIA-SEQUENCE:1"]
    lines.append(f'#EXT-X-MAP:URI="{EPOCH}/source/init.mp4"')
    seq = 1
    while len("\n".join(lines)) < size - 80:
        lines += ["#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:15:00.000Z", "#EXTINF:2.000,"]
        lines.append(f"{EPOCH}/source/{seq:08d}.m4s")
        seq += 1
    return "\n".join(lines) + "\n"


_TLS_CONTEXT: ssl.SSLContext | None = None  # trusts the run's CA (--tls)


def edge_body(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10, context=_TLS_CONTEXT) as resp:
        return bytes(resp.read())


def write_objects(root: Path) -> None:
    for key, data in ((SEGMENT_KEY, os.urandom(500_000)), (PLAYLIST_KEY, playlist_text().encode())):
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2, context=_TLS_CONTEXT) as resp:
                resp.read()
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


NGINX_CONF = """
worker_processes {workers};
daemon off;
pid nginx.pid;
error_log stderr warn;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path temp/body;
    proxy_temp_path temp/proxy;
    fastcgi_temp_path temp/fastcgi;
    uwsgi_temp_path temp/uwsgi;
    scgi_temp_path temp/scgi;
    types {{ application/vnd.apple.mpegurl m3u8; video/iso.segment m4s; }}
    server {{
        listen 127.0.0.1:{port};
        location /live/ {{ alias {root}/streams/; }}
    }}
    {tls_server}
}}
"""
NGINX_TLS_SERVER = """server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location /live/ {{ alias {root}/streams/; }}
    }}"""


def wrk(url: str, seconds: float, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if match is None:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{out}")
    return float(match[1])


async def coalescing(root: Path) -> tuple[int, int]:
    """500 concurrent cold requests for one segment: (store reads, 200 responses)."""
    reads: list[str] = []

    class CountingStore(FileStore):
        async def get(self, key: str) -> bytes:
            reads.append(key)
            return await super().get(key)

    store = CountingStore(root)
    signer = TokenSigner(SECRET.encode())
    token = signer.issue("bench", Action.VIEW, ttl=600)
    app = build_app(store, signer, **defaults.edge_app())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    url = f"http://127.0.0.1:{port}/live/bench/{EPOCH}/source/00000001.m4s?token={token}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def one() -> int:
                async with session.get(url) as resp:
                    await resp.read()
                    return resp.status

            statuses = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(500))), timeout=120)
        assert app[EDGE].cache.stats.misses == 1
    finally:
        await runner.cleanup()
    return len(reads), sum(1 for s in statuses if s == 200)


def parse(rest: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench edge --")
    p.add_argument("--workers", type=int, default=2, help="edge processes and nginx workers (default 2)")
    p.add_argument("--seconds", type=float, default=5.0, help="wrk duration per run (default 5)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--repeats", type=int, default=3, help="runs per case; medians reported (default 3)")
    p.add_argument(
        "--app-path", action="store_true", help="also measure the edge with --no-fast-path (aiohttp only)"
    )
    p.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the edge and nginx over HTTPS (default on; --no-tls for plain HTTP only)",
    )
    return p.parse_args(rest)


def start_edge(
    cli: list[str], port: int, workers: int, env: dict[str, str], *extra: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*cli, "--http-port", str(port), "--workers", str(workers), "--log-level", "warning", *extra],
        env=env,
        stdout=subprocess.DEVNULL,
    )


def start_nginx(
    prefix: Path, root: Path, port: int, workers: int, tls: tuple[int, Path, Path] | None = None
) -> subprocess.Popen[bytes]:
    """nginx on ``port``; with ``tls`` (port, certificate, key) also over HTTPS on that port."""
    (prefix / "temp").mkdir(parents=True)
    tls_server = ""
    if tls is not None:
        tls_server = NGINX_TLS_SERVER.format(port=tls[0], cert=tls[1], key=tls[2], root=root)
    conf = NGINX_CONF.format(
        workers=workers,
        port=port,
        root=root,
        user="user root;" if os.geteuid() == 0 else "",
        tls_server=tls_server,
    )
    (prefix / "nginx.conf").write_text(conf)
    nginx_exe = shutil.which("nginx") or "/usr/sbin/nginx"
    return subprocess.Popen([nginx_exe, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"])


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A CA and a certificate for 127.0.0.1 (tests/tls_certs.py); trusted by this process's requests."""
    global _TLS_CONTEXT
    from tests.tls_certs import TestCa

    ca = TestCa(directory)
    issued = ca.issue("edge")
    _TLS_CONTEXT = ca.client_context()
    return issued.cert, issued.key


def tls_table(results: dict[tuple[str, str], list[float]]) -> None:
    """What HTTPS costs each server (its HTTPS req/s over its HTTP req/s, paired per repeat), and the
    edge over HTTPS against nginx over HTTPS; TLS must not cost the edge more than it costs nginx."""
    print(
        f"{'object':<10}{'edge https':>11}{'edge http':>10}{'edge tls/plain':>16}"
        f"{'nginx https':>12}{'nginx tls/plain':>17}{'edge/nginx https':>18}"
    )
    for kind in ("segment", "playlist"):
        eh, ep = results[("edge-tls", kind)], results[("edge", kind)]
        nh, np_ = results[("nginx-tls", kind)], results[("nginx", kind)]
        edge_cost = statistics.median(a / b for a, b in zip(eh, ep, strict=True))
        nginx_cost = statistics.median(a / b for a, b in zip(nh, np_, strict=True))
        versus = statistics.median(a / b for a, b in zip(eh, nh, strict=True))
        verdict = "ok" if edge_cost >= nginx_cost * 0.95 else "edge pays more"
        print(
            f"{kind:<10}{statistics.median(eh):>11.0f}{statistics.median(ep):>10.0f}{edge_cost:>15.2f}x"
            f"{statistics.median(nh):>12.0f}{nginx_cost:>16.2f}x{versus:>17.2f}x {verdict}"
        )


def run(args: argparse.Namespace) -> None:
    opts = parse(args.rest)
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"bench edge: {tool} is not installed; run `make install`")
    with tempfile.TemporaryDirectory(prefix="camflow-bench-edge-") as tmp:
        work = Path(tmp)
        data = work / "data"
        write_objects(data / "store")
        token = TokenSigner(SECRET.encode()).issue("bench", Action.VIEW, ttl=3600)
        servers = {"edge": free_port(), "nginx": free_port()}
        if opts.app_path:
            servers["edge-app"] = free_port()
        if opts.tls:
            servers |= {"edge-tls": free_port(), "nginx-tls": free_port()}
            cert, key = make_certificate(work / "pki")
        env = {**os.environ, "CAMFLOW_SECRET": SECRET}
        cli = [sys.executable, "-m", "camflow.cli", "edge", "--host", "127.0.0.1", "--data-dir", str(data)]
        procs = [start_edge(cli, servers["edge"], opts.workers, env)]
        if opts.app_path:
            procs.append(start_edge(cli, servers["edge-app"], opts.workers, env, "--no-fast-path"))
        if opts.tls:
            tls_flags = ("--tls-cert", str(cert), "--tls-key", str(key))
            procs.append(start_edge(cli, servers["edge-tls"], opts.workers, env, *tls_flags))
        paths = {
            "segment": f"/live/bench/{EPOCH}/source/00000001.m4s?token={token}",
            "playlist": f"/live/bench/source.m3u8?token={token}",
        }
        try:
            base = f"http://127.0.0.1:{servers['edge']}"
            wait_http(base + paths["playlist"])
            # nginx serves what the edge sends: the segment, and the playlist with the token in it.
            nginx_root = work / "nginx-root"
            stored = (data / "store" / PLAYLIST_KEY).read_bytes()
            rewritten = edge_body(base + paths["playlist"])
            for name, body in (
                (SEGMENT_KEY, (data / "store" / SEGMENT_KEY).read_bytes()),
                (PLAYLIST_KEY, rewritten),
            ):
                (nginx_root / name).parent.mkdir(parents=True, exist_ok=True)
                (nginx_root / name).write_bytes(body)
            nginx_tls = (servers["nginx-tls"], cert, key) if opts.tls else None
            procs.append(start_nginx(work / "nginx", nginx_root, servers["nginx"], opts.workers, nginx_tls))
            urls = {
                (server, kind): f"{'https' if server.endswith('-tls') else 'http'}://127.0.0.1:{port}{path}"
                for server, port in servers.items()
                for kind, path in paths.items()
            }
            for url in urls.values():
                wait_http(url)
            for _ in range(opts.workers * 4):  # warm every worker's cache
                for (server, _kind), url in urls.items():
                    if not server.startswith("nginx"):
                        wait_http(url)
            results: dict[tuple[str, str], list[float]] = {k: [] for k in urls}
            for _ in range(opts.repeats):
                for case, url in urls.items():
                    results[case].append(wrk(url, opts.seconds, opts.connections))
        finally:
            for proc in procs:
                stop(proc)
        load = os.getloadavg()
        print(
            f"wrk -t2 -c{opts.connections} -d{max(1, round(opts.seconds))}s, medians of {opts.repeats}; "
            f"{opts.workers} edge processes, {opts.workers} nginx workers; load average before the "
            f"summary {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores"
        )
        print(
            f"bodies: segment {len((data / 'store' / SEGMENT_KEY).read_bytes())} B; playlist "
            f"{len(rewritten)} B from both (the stored {len(stored)} B with the token in every URI)"
        )
        # On a shared machine the load changes between runs: each repeat runs edge and nginx back
        # to back, so the median of the per-repeat ratios is steadier than the ratio of medians.
        print(
            f"{'object':<10}{'server':<10}{'req/s':>10}{'nginx req/s':>13}{'ratio':>8}"
            f"{'paired':>8}{'target':>8}"
        )
        for kind in ("segment", "playlist"):
            nginx_runs = results[("nginx", kind)]
            n = statistics.median(nginx_runs)
            for server in servers:
                if server.startswith("nginx") or server == "edge-tls":
                    continue
                runs = results[(server, kind)]
                e = statistics.median(runs)
                paired = statistics.median(a / b for a, b in zip(runs, nginx_runs, strict=True))
                ok = "ok" if paired >= TARGETS[kind] else "BELOW"
                print(
                    f"{kind:<10}{server:<10}{e:>10.0f}{n:>13.0f}{e / n:>7.2f}x{paired:>7.2f}x"
                    f"{TARGETS[kind]:>7.1f}x {ok}"
                )
        if opts.tls:
            tls_table(results)
        reads, ok_count = asyncio.run(coalescing(data / "store"))
        print(f"500 concurrent cold requests: {ok_count} x 200, {reads} store read(s) (expected 1)")
