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
HTTPS over nginx HTTPS. For playlists it also prints the CPU time per request (the server's processes
and wrk, from /proc and getrusage: what other programs' load does not inflate) over HTTP and HTTPS, and
OpenSSL's own CPU for one playlist exchange (``tls_floor``: the same certificate, TLS 1.3, memory BIOs):
the least TLS can add, so the best HTTPS/HTTP ratio any transport could give the edge.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
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

from bench.results import record
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


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc)."""
    pids, i = [pid], 0
    while i < len(pids):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pids[i]}/task").iterdir():
                pids += [int(child) for child in (task / "children").read_text().split()]
        i += 1
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes ``pids`` have used so far."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(url: str, seconds: float, connections: int) -> tuple[float, int]:
    """wrk's requests/s and request count for ``url``."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    count = re.search(r"([0-9]+) requests in", out)
    if match is None or count is None:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{out}")
    return float(match[1]), int(count[1])


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


def raw_exchange(port: int, path: str) -> tuple[bytes, bytes]:
    """wrk's request for ``path`` and the plain edge's whole answer to it (head and body), as bytes."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        while True:
            head_end = answer.find(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *([0-9]+)", answer[:head_end])
            if head_end >= 0 and length is not None and len(answer) >= head_end + 4 + int(length[1]):
                return request, answer
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"the edge closed before answering {path}: {answer[:200]!r}")
            answer += chunk


def tls_floor(cert: Path, key: Path, request: bytes, answer: bytes, rounds: int = 20) -> tuple[float, float]:
    """OpenSSL's own cost of one keep-alive exchange on a TLS 1.3 connection with the run's certificate
    (memory BIOs, no sockets, no server): (server: decrypt ``request`` + encrypt ``answer``, client: the
    reverse), in microseconds, the best of ``rounds`` x 1000 exchanges. No transport can cost less."""
    from camflow.tls import server_context

    assert _TLS_CONTEXT is not None
    server_ctx = server_context()
    server_ctx.load_cert_chain(cert, key)
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = _TLS_CONTEXT.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    for _ in range(4):  # the handshake, then the session tickets
        for end in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        c_in.write(s_out.read())
        s_in.write(c_out.read())
    best_server = best_client = float("inf")
    clock = time.perf_counter
    for _ in range(rounds):
        spent_server = spent_client = 0.0
        for _ in range(1000):
            t0 = clock()
            client.write(request)
            s_in.write(c_out.read())
            t1 = clock()
            server.read(len(request) + 1024)
            server.write(answer)
            c_in.write(s_out.read())
            t2 = clock()
            got = 0
            while got < len(answer):
                got += len(client.read(len(answer)))
            t3 = clock()
            spent_server += t2 - t1
            spent_client += (t1 - t0) + (t3 - t2)
        best_server, best_client = min(best_server, spent_server), min(best_client, spent_client)
    return best_server * 1e3, best_client * 1e3  # per exchange: seconds / 1000 * 1e6


def tls_table(
    results: dict[tuple[str, str], list[float]],
    cpu: dict[tuple[str, str], list[float]],
    floor: tuple[float, float],
) -> None:
    """What HTTPS costs each server (its HTTPS req/s over its HTTP req/s, paired per repeat), and the
    edge over HTTPS against nginx over HTTPS; TLS must not cost the edge more than it costs nginx.

    Then the same per playlist request in CPU time (the server's processes and wrk, which the load of
    other programs does not inflate as it does req/s), against ``floor`` (``tls_floor``): OpenSSL's own
    CPU for one exchange, server side and client side. A transport that cost nothing beyond it would
    make a playlist over HTTPS cost the edge its HTTP CPU plus the floor: the best ratio it allows."""
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
    us = {
        server: statistics.median(cpu[(server, "playlist")])
        for server in ("edge", "edge-tls", "nginx", "nginx-tls")
    }
    best = us["edge"] / (us["edge"] + sum(floor))
    print(
        f"playlist CPU per request (server + wrk): edge {us['edge']:.1f} us, over HTTPS {us['edge-tls']:.1f} "
        f"({us['edge'] / us['edge-tls']:.2f}x); nginx {us['nginx']:.1f} us, over HTTPS {us['nginx-tls']:.1f} "
        f"({us['nginx'] / us['nginx-tls']:.2f}x). OpenSSL alone (TLS 1.3, in memory) spends "
        f"{floor[0]:.1f} us on the server's side of one exchange and {floor[1]:.1f} us on the client's: "
        f"no edge transport can do better than {best:.2f}x"
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
        owner = {"edge": start_edge(cli, servers["edge"], opts.workers, env)}  # each server's process
        if opts.app_path:
            owner["edge-app"] = start_edge(cli, servers["edge-app"], opts.workers, env, "--no-fast-path")
        if opts.tls:
            tls_flags = ("--tls-cert", str(cert), "--tls-key", str(key))
            owner["edge-tls"] = start_edge(cli, servers["edge-tls"], opts.workers, env, *tls_flags)
        procs = list(owner.values())
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
            exchange = raw_exchange(servers["edge"], paths["playlist"])
            for name, body in (
                (SEGMENT_KEY, (data / "store" / SEGMENT_KEY).read_bytes()),
                (PLAYLIST_KEY, rewritten),
            ):
                (nginx_root / name).parent.mkdir(parents=True, exist_ok=True)
                (nginx_root / name).write_bytes(body)
            nginx_tls = (servers["nginx-tls"], cert, key) if opts.tls else None
            nginx = start_nginx(work / "nginx", nginx_root, servers["nginx"], opts.workers, nginx_tls)
            procs.append(nginx)
            owner |= {"nginx": nginx, "nginx-tls": nginx}
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
            # CPU per request (the server's processes and wrk): what load from others cannot inflate
            cpu: dict[tuple[str, str], list[float]] = {k: [] for k in urls}
            for _ in range(opts.repeats):
                for case, url in urls.items():
                    pids = process_tree(owner[case[0]].pid)
                    before = cpu_seconds(pids) + children_cpu()
                    rate, count = wrk(url, opts.seconds, opts.connections)
                    results[case].append(rate)
                    cpu[case].append((cpu_seconds(pids) + children_cpu() - before) * 1e6 / max(count, 1))
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
            tls_table(results, cpu, tls_floor(cert, key, *exchange))
        reads, ok_count = asyncio.run(coalescing(data / "store"))
        print(f"500 concurrent cold requests: {ok_count} x 200, {reads} store read(s) (expected 1)")
        figures: dict[str, float | int] = {"workers": opts.workers, "coalesced_store_reads": reads}
        for kind in ("segment", "playlist"):
            figures[f"{kind}_rps"] = statistics.median(results[("edge", kind)])
            figures[f"{kind}_cpu_us"] = statistics.median(cpu[("edge", kind)])  # with wrk's own
            figures[f"nginx_{kind}_rps"] = statistics.median(results[("nginx", kind)])
            if opts.tls:
                figures[f"{kind}_https_rps"] = statistics.median(results[("edge-tls", kind)])
        figures["segment_bytes"] = len((data / "store" / SEGMENT_KEY).read_bytes())
        figures["playlist_bytes"] = len(rewritten)
        record("edge", figures)
