"""Viewers counted once per edge, however many workers (`camflow edge --workers N`) their requests reach.

Unit tests: the union of this process's viewers with the other workers' (``ViewerCounter.census``),
and the workers' socket protocol (``viewers\\n``) with a worker that is gone and one that hangs.
The functional test runs a real `camflow edge --workers 2`: one viewer token fetches the master
playlist on many new connections until both workers have seen it (each worker's socket says so),
then `/metrics` and `/api/streams`, on new connections (any worker answers), report 1 viewer;
with a second token, 2.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from edge.auth import CENSUS_TTL, PEERS_KEEP, ViewerCounter, viewer_identity
from edge.metrics import VIEWERS_TIMEOUT, WorkerMetrics
from tests.process import CAMFLOW, ask_edge_worker, children_of, free_port, stop_edge
from tests.test_edge import MASTER
from tests.test_metrics_edge_workers import samples

STREAM = "cam1"
SECRET = "edge-viewers-workers-test-secret"


class OtherWorkers:
    """The peers of a ``ViewerCounter``: other counters' identities, as the sockets would carry them."""

    def __init__(self, *others: ViewerCounter) -> None:
        self.others = others
        self.asked = 0

    async def viewer_identities(self) -> list[dict[str, list[str]]]:
        self.asked += 1
        return [json.loads(json.dumps(other.identities())) for other in self.others]


async def test_count_is_the_union_of_every_workers_viewers() -> None:
    now = [100.0]
    a = ViewerCounter(clock=lambda: now[0])
    b = ViewerCounter(clock=lambda: now[0])
    peers = OtherWorkers(b)
    a.peers = peers
    a.saw(STREAM, "token-1")
    a.saw(STREAM, "token-2")
    b.saw(STREAM, "token-2")  # one viewer whose requests reached both workers
    b.saw(STREAM, "token-3")
    b.saw("cam2", "token-4")
    assert a.count(STREAM) == 2  # no census yet: this process's own
    await a.census()
    assert a.count(STREAM) == 3 and a.count("cam2") == 1 and a.local_count(STREAM) == 2
    assert b.count(STREAM) == 2  # b has no peers: its own viewers only
    ids = b.identities()
    assert sorted(ids[STREAM]) == sorted([viewer_identity("token-2"), viewer_identity("token-3")])
    assert not any("token" in i for i in ids[STREAM])  # hashes cross the socket, never tokens

    b.saw(STREAM, "token-5")
    await a.census()  # within CENSUS_TTL: the last census is reused, nobody is asked
    assert a.count(STREAM) == 3 and peers.asked == 1
    now[0] += CENSUS_TTL
    await asyncio.gather(a.census(), a.census(), a.census())  # callers at once share one census
    assert a.count(STREAM) == 4 and peers.asked == 2
    now[0] += PEERS_KEEP + 1  # no census for a while: the peers' part no longer counts
    assert a.count(STREAM) == 2  # token-1 and token-2, its own
    now[0] += 30  # every viewer's window ends
    await a.census()
    assert a.count(STREAM) == 0 and a.identities() == {}


async def test_workers_answer_viewers_on_their_socket_and_a_silent_worker_is_left_out(tmp_path: Path) -> None:
    counter = ViewerCounter()
    counter.saw(STREAM, "token-1")
    answering = WorkerMetrics()
    answering.viewers = counter
    answering.share(tmp_path)
    try:
        assert answering.directory == tmp_path
        (tmp_path / f"{os.getpid()}.sock").rename(tmp_path / "1.sock")  # as if another process's
        (tmp_path / "2.sock").write_bytes(b"")  # a worker that died and left its file
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as hung:  # accepts, never answers
            hung.bind(str(tmp_path / "3.sock"))
            hung.listen(1)
            asking = WorkerMetrics()
            asking.directory = tmp_path
            started = time.monotonic()
            answers = await asking.viewer_identities()
            took = time.monotonic() - started
        assert answers == [{STREAM: [viewer_identity("token-1")]}]
        assert took < VIEWERS_TIMEOUT + 1.0, took
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "1.sock"))
        writer.write(b"what\n")  # not a request: closed unanswered
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        await answering.stop()


def get(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Connection": "close"})  # a new connection each time
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return bytes(response.read())


def ask_viewers(path: Path) -> dict[str, list[str]]:
    """One worker's own viewers, from its socket."""
    return dict(json.loads(ask_edge_worker(path, b"viewers\n")))


@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_edge_workers_count_a_viewer_once_on_metrics_and_api(tmp_path: Path) -> None:
    data = tmp_path / "data"
    folder = data / "store" / "streams" / STREAM
    folder.mkdir(parents=True)
    (folder / "master.m3u8").write_text(MASTER)
    env = {**os.environ, "CAMFLOW_SECRET": SECRET}

    def token(*args: str) -> str:
        argv = [*CAMFLOW, "token", *args]
        return subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout.strip()

    viewer, other, admin = token("view", STREAM), token("view", STREAM, "--ttl", "600"), token("admin", "*")
    assert viewer != other
    port = free_port()
    err = (tmp_path / "edge.err").open("wb")
    argv = [*CAMFLOW, "edge", "--host", "127.0.0.1", "--http-port", str(port), "--data-dir", str(data)]
    proc = subprocess.Popen(
        [*argv, "--workers", "2", "--cache-mb", "16"], env=env, stdout=subprocess.PIPE, stderr=err
    )
    workers: list[int] = []
    base = f"http://127.0.0.1:{port}"
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert b"running" in line, (tmp_path / "edge.err").read_text()[-2000:]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # both processes serving
            if samples(get(f"{base}/metrics?token={admin}").decode(), "camflow_edge_workers") == {(): 2.0}:
                break
            time.sleep(0.2)
        workers = children_of(proc.pid)
        assert len(workers) == 1
        shared = Path(
            dict(
                kv.split("=", 1)
                for kv in Path(f"/proc/{workers[0]}/environ").read_text().split("\0")
                if "=" in kv
            )["CAMFLOW_EDGE_METRICS_DIR"]
        )
        sockets = [shared / f"{pid}.sock" for pid in (proc.pid, workers[0])]

        def both_saw(identity: str) -> bool:
            return all(identity in ask_viewers(s).get(STREAM, []) for s in sockets)

        fetched = 0
        for _ in range(200):  # new connections: the kernel spreads them over both workers
            get(f"{base}/live/{STREAM}/master.m3u8?token={viewer}")
            fetched += 1
            if fetched >= 4 and both_saw(viewer_identity(viewer)):
                break
        assert both_saw(viewer_identity(viewer)), f"one worker got all {fetched} requests"

        def viewers_everywhere() -> tuple[set[float], set[int]]:
            """The viewers figure of ten scrapes and ten stream listings, each on a new connection."""
            scraped = {
                samples(get(f"{base}/metrics?token={admin}").decode(), "camflow_edge_viewers")[
                    (("stream", STREAM),)
                ]
                for _ in range(10)
            }
            listed = set()
            for _ in range(10):
                streams = json.loads(get(f"{base}/api/streams?token={admin}"))["streams"]
                listed |= {s["viewers"] for s in streams if s["stream"] == STREAM}
            return scraped, listed

        assert viewers_everywhere() == ({1.0}, {1})
        get(f"{base}/live/{STREAM}/master.m3u8?token={other}")
        time.sleep(CENSUS_TTL)  # the census each worker keeps for CENSUS_TTL
        assert viewers_everywhere() == ({2.0}, {2})
        print(f"\nviewer token reached both workers after {fetched} playlist requests")
    finally:
        stop_edge(proc, workers)
        err.close()
