"""`camflow edge --workers N`: `/metrics` of any worker reports the requests of every worker.

The functional test runs a real `camflow edge --workers 3` on a FileStore holding a stream's init
section and segments, fetches them with curl (one connection per object, so the kernel spreads
them over the workers; two GETs per connection: the fast path's miss, then its hit), and scrapes
`/metrics` on new connections again and again: every scrape must count every request. Then it
SIGKILLs one worker: its counters still count (its last snapshot), its gauges do not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge.metrics import MergedFamilies, merge_expositions
from tests.process import CAMFLOW, ask_edge_worker, children_of, free_port, running, stop_edge

STREAM = "cam1"
EPOCH = "20260101T000000000Z"
SEGMENTS = 12  # distinct objects: one curl connection each
MISSING = 5  # requests for segments the store lacks: 404 from the application
WORKERS = 3
SECRET = "edge-workers-metrics-test-secret"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``name`` in a Prometheus text, by its sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def requests_by(text: str) -> dict[tuple[str, str], float]:
    """``camflow_edge_requests_total`` by (status, cache)."""
    found = samples(text, "camflow_edge_requests_total")
    return {(dict(k)["status"], dict(k)["cache"]): v for k, v in found.items()}


def scrape(port: int, token: str = "") -> str:
    """/metrics on a new connection: the public port with an operator ``token``, or --metrics-port."""
    query = f"?token={token}" if token else ""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics{query}", headers={"Connection": "close"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


def own_figures(path: Path) -> str:
    """One worker's own exposition, from its socket in the edge's metrics folder."""
    return ask_edge_worker(path, b"metrics\n").decode()


def test_merge_sums_counters_and_keeps_one_process_figures() -> None:
    local = (
        "# TYPE camflow_edge_requests_total counter\n"
        'camflow_edge_requests_total{status="200",cache="hit"} 3\n'
        "# TYPE camflow_edge_cache_bytes gauge\ncamflow_edge_cache_bytes 100\n"
        "# TYPE camflow_x_age_seconds gauge\ncamflow_x_age_seconds 2\n"
        "# TYPE process_open_fds gauge\nprocess_open_fds 7\n"
        "# TYPE camflow_store_operation_seconds histogram\n"
        'camflow_store_operation_seconds_bucket{op="get",le="0.1"} 1\n'
        'camflow_store_operation_seconds_bucket{op="get",le="+Inf"} 1\n'
        'camflow_store_operation_seconds_count{op="get"} 1\n'
        'camflow_store_operation_seconds_sum{op="get"} 0.05\n'
    )
    live = local.replace(" 3\n", " 4\n").replace("100", "50").replace("seconds 2", "seconds 9")
    live = live.replace("fds 7", "fds 70")
    gone = local.replace(" 3\n", " 5\n").replace("100", "1000")
    merged = generate_latest(MergedFamilies(merge_expositions(local, [live], [gone]))).decode()
    assert requests_by(merged) == {("200", "hit"): 12.0}
    assert samples(merged, "camflow_edge_cache_bytes") == {(): 150.0}  # not the gone worker's gauge
    assert samples(merged, "camflow_x_age_seconds") == {(): 9.0}  # an age: the largest
    assert samples(merged, "process_open_fds") == {(): 7.0}  # the answering process's own
    assert samples(merged, "camflow_store_operation_seconds_count") == {(("op", "get"),): 3.0}
    assert samples(merged, "camflow_store_operation_seconds_bucket")[(("le", "0.1"), ("op", "get"))] == 3.0
    assert samples(merged, "camflow_store_operation_seconds_sum")[(("op", "get"),)] == pytest.approx(0.15)


def test_merge_keeps_the_answering_workers_viewers_never_a_sum() -> None:
    """Every worker reports the whole edge's viewers (the union): summing would count a viewer twice."""
    local = '# TYPE camflow_edge_viewers gauge\ncamflow_edge_viewers{stream="cam1"} 2\n'
    live = [
        local.replace(" 2\n", " 1\n"),
        '# TYPE camflow_edge_viewers gauge\ncamflow_edge_viewers{stream="cam2"} 4\n',
    ]
    merged = generate_latest(MergedFamilies(merge_expositions(local, live, []))).decode()
    assert samples(merged, "camflow_edge_viewers") == {(("stream", "cam1"),): 2.0}


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_every_worker_scrape_counts_every_request(tmp_path: Path) -> None:
    data = tmp_path / "data"
    media = data / "store" / "streams" / STREAM / EPOCH / "720p"
    media.mkdir(parents=True)
    (media / "init.mp4").write_bytes(b"\x00\x00\x00\x18ftypiso6" + bytes(12))
    for seq in range(SEGMENTS - 1):
        (media / f"{seq:08d}.m4s").write_bytes(bytes([seq]) * (1000 + seq))
    env = {**os.environ, "CAMFLOW_SECRET": SECRET}
    token = subprocess.run(
        [*CAMFLOW, "token", "view", STREAM], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    admin = subprocess.run(
        [*CAMFLOW, "token", "admin", "*"], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    port, metrics_port = free_port(), free_port()
    err = (tmp_path / "edge.err").open("wb")
    argv = [*CAMFLOW, "edge", "--host", "127.0.0.1", "--http-port", str(port), "--data-dir", str(data)]
    argv += ["--metrics-port", str(metrics_port)]  # the parent's alone, on loopback
    proc = subprocess.Popen(
        [*argv, "--workers", str(WORKERS), "--cache-mb", "16"], env=env, stdout=subprocess.PIPE, stderr=err
    )
    workers: list[int] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert b"running" in line, (tmp_path / "edge.err").read_text()[-2000:]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # every worker serving: the scrape sums all of them
            if samples(scrape(port, admin), "camflow_edge_workers") == {(): float(WORKERS)}:
                break
            time.sleep(0.2)
        workers = children_of(proc.pid)
        assert len(workers) == WORKERS - 1

        base = f"http://127.0.0.1:{port}/live/{STREAM}/{EPOCH}/720p"
        names = ["init.mp4", *(f"{seq:08d}.m4s" for seq in range(SEGMENTS - 1))]
        for name in names:  # one curl, one connection: the miss (loaded), then the hit (cached)
            url = f"{base}/{name}?token={token}"
            out = subprocess.run(
                [
                    "curl",
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{num_connects}\n",
                    url,
                    url,
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.split()
            assert out == ["200", "1", "200", "0"], out  # the second GET reused the connection
        for seq in range(100, 100 + MISSING):
            code = subprocess.run(
                [
                    "curl",
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    f"{base}/{seq:08d}.m4s?token={token}",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            assert code == "404"

        def check(text: str, workers_answering: int) -> None:
            counts = requests_by(text)
            assert counts.get(("200", "miss")) == SEGMENTS, counts
            assert counts.get(("200", "hit")) == SEGMENTS, counts
            assert sum(v for (status, _), v in counts.items() if status == "404") == MISSING, counts
            assert samples(text, "camflow_edge_workers") == {(): float(workers_answering)}

        for _ in range(10):  # each scrape on a new connection: any worker may answer
            check(scrape(port, admin), WORKERS)
        check(scrape(metrics_port), WORKERS)  # the metrics listener: the same merged figures

        # The figures really are spread: each worker's own share is less than the whole.
        shared = Path(
            dict(
                kv.split("=", 1)
                for kv in Path(f"/proc/{workers[0]}/environ").read_text().split("\0")
                if "=" in kv
            )["CAMFLOW_EDGE_METRICS_DIR"]
        )
        shares = []
        for sock in sorted(shared.glob("*.sock")):
            shares.append(requests_by(own_figures(sock)).get(("200", "hit"), 0.0))
        assert len(shares) == WORKERS and sum(shares) == SEGMENTS and max(shares) < SEGMENTS, shares

        # A worker that dies: its counters stay (its last snapshot), it no longer answers.
        victim = shared / f"{workers[0]}.sock"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until its snapshot (every 5 s) holds its requests
            snapshot = victim.with_suffix(".prom")
            wanted = {k: v for k, v in requests_by(own_figures(victim)).items() if k[1] != "none"}
            if snapshot.exists() and wanted.items() <= requests_by(snapshot.read_text()).items():
                break
            time.sleep(0.5)
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while running(workers[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ConnectionResetError):
            scrape(port, admin)  # the first connection after a worker's SIGKILL is sometimes reset (kernel)
        for _ in range(6):
            check(scrape(port, admin), WORKERS - 1)
    finally:
        stop_edge(proc, workers)
        err.close()
    assert not shared.exists(), "the parent removes the workers' metrics folder"
