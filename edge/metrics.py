"""The edge's Prometheus figures: requests by status and cache result, viewers, cache bytes.

Requests are counted in plain ints (``RequestCounts``): once per request by the ``count_requests``
middleware, whose cache result comes from ``CACHE_RESULT`` (set by ``ObjectCache.get`` in the
request's task), plus the fast path's own count of the cached ``200``s it answered without the
application. Prometheus reads them at scrape time (``edge_samples``).

With ``camflow edge --workers N`` every worker process keeps its own figures; ``WorkerMetrics``
sums them at scrape time, so ``/metrics`` of any worker reports the whole edge. Viewers are not
summed: the workers' sockets also answer with their viewers (hashed), and each worker counts the
union (``edge.auth.ViewerCounter.census``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from camflow.log import get_logger
from camflow.metrics import Sample, metrics_response
from edge.auth import ViewerCounter
from edge.cache import CACHE_RESULT
from edge.state import EdgeState

log = get_logger("edge")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestCounts:
    """Requests by (status, cache result); ``fast_paths`` tell how many cached 200s each fast path
    (``edge.fastpath``) answered without the application."""

    def __init__(self) -> None:
        self.by: dict[tuple[str, str], int] = {}
        self.fast_paths: list[Callable[[], tuple[int, int]]] = []  # (hits, loads)

    def add(self, status: int, cache: str) -> None:
        key = (str(status), cache)
        self.by[key] = self.by.get(key, 0) + 1


REQUESTS = RequestCounts()


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    CACHE_RESULT.set("none")
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # the redirects json_errors lets through
        REQUESTS.add(exc.status, CACHE_RESULT.get())
        raise
    REQUESTS.add(response.status, CACHE_RESULT.get())
    return response


def edge_samples(state: EdgeState) -> Callable[[], Iterator[Sample]]:
    """A ``camflow.metrics`` source for one edge application."""

    def samples() -> Iterator[Sample]:
        counts = dict(REQUESTS.by)
        for counted in REQUESTS.fast_paths:
            hits, loads = counted()
            counts[("200", "hit")] = counts.get(("200", "hit"), 0) + hits
            counts[("200", "miss")] = counts.get(("200", "miss"), 0) + loads
        for (status, cache), n in counts.items():
            yield "camflow_edge_requests", (status, cache), float(n)
        for stream in state.catalog.names:
            yield "camflow_edge_viewers", (stream,), float(state.viewers.count(stream))
        yield "camflow_edge_cache_bytes", (), float(state.cache.size_bytes)
        for what, n in asdict(state.ll.stats).items():
            yield "camflow_edge_low_latency", (what,), float(n)

    return samples


# --- one figure for the whole edge: `camflow edge --workers N` ----------------------------------

WORKERS_DIR_ENV = "CAMFLOW_EDGE_METRICS_DIR"  # the edge's private folder, given to every worker
SNAPSHOT_INTERVAL = 5.0  # seconds between the snapshots kept for a worker that stops answering
PEER_TIMEOUT = 2.0  # seconds a scrape waits for one worker
VIEWERS_TIMEOUT = 1.0  # seconds a census of viewers waits for one worker
LOCAL_ONLY = ("process_", "python_")  # families about one process: the answering worker's own
EDGE_WIDE = ("camflow_edge_viewers",)  # families every worker already reports for the whole edge
ASK_METRICS = b"metrics\n"  # the requests a worker's socket answers, one line each
ASK_VIEWERS = b"viewers\n"


class WorkerMetrics:
    """Every worker's figures summed, so a scrape of any worker reports the whole edge.

    Each worker process answers on a Unix socket ``DIR/{pid}.sock``: to ``metrics\\n`` with its own
    exposition (the whole default registry), to ``viewers\\n`` with its ``ViewerCounter.identities``
    as JSON (hashes, never tokens). It keeps ``DIR/{pid}.prom``, a snapshot written every
    ``SNAPSHOT_INTERVAL`` seconds and when it stops. ``/metrics`` asks every worker at scrape time
    and merges (``merge_expositions``); for a worker that no longer answers, the counters and
    histograms of its last snapshot still count (as prometheus-client's ``mark_process_dead``
    does), its gauges do not.
    """

    def __init__(self) -> None:
        self.directory: Path | None = None
        self.viewers: ViewerCounter | None = None  # this process's, for the other workers' census
        self._task: asyncio.Task[None] | None = None

    def share(self, directory: Path) -> None:
        """Answer on ``directory/{pid}.sock`` from now on (bound at once, served by the running loop)."""
        if self.directory is not None:
            return
        path = directory / f"{os.getpid()}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            sock.listen(64)
            sock.setblocking(False)
        except OSError as exc:  # the edge serves on; its /metrics shows this process alone
            sock.close()
            log.warning(
                "edge_worker_metrics_unshared",
                path=str(path),
                error=repr(exc),
                expected="a writable folder with a short path (Unix sockets: under 108 bytes)",
            )
            return
        self.directory = directory
        self._task = asyncio.get_running_loop().create_task(self._serve(sock), name="edge-worker-metrics")

    async def _serve(self, sock: socket.socket) -> None:
        server = await asyncio.start_unix_server(self._answer, sock=sock)
        try:
            while True:
                await asyncio.sleep(SNAPSHOT_INTERVAL)
                self._snapshot()
        finally:
            server.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(PEER_TIMEOUT):
                ask = await reader.readline()
            if ask == ASK_METRICS:
                writer.write(generate_latest(REGISTRY))
            elif ask == ASK_VIEWERS:
                ids = self.viewers.identities() if self.viewers is not None else {}
                writer.write(json.dumps(ids, separators=(",", ":")).encode())
            await writer.drain()  # anything else: closed unanswered
        except (OSError, TimeoutError):
            pass  # the asking worker went away, or never asked
        finally:
            writer.close()

    def _snapshot(self) -> None:
        if self.directory is None:
            return
        final = self.directory / f"{os.getpid()}.prom"
        part = final.with_suffix(".part")
        try:
            part.write_bytes(generate_latest(REGISTRY))
            part.replace(final)
        except OSError as exc:  # the parent removed the folder: it is shutting down
            log.debug("edge_metrics_snapshot_failed", error=repr(exc))

    async def stop(self) -> None:
        """Stop answering; leave the last snapshot for the workers still running. (The folder is
        the parent's to remove, or an orphaned worker's: ``edge.service.EdgeServer.stop``.)"""
        task, self._task = self._task, None
        if task is None or self.directory is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._snapshot()
        with contextlib.suppress(OSError):
            (self.directory / f"{os.getpid()}.sock").unlink()
        self.directory = None

    async def scrape(self) -> bytes:
        """The Prometheus text of every worker of this edge, merged."""
        directory = self.directory
        local = generate_latest(REGISTRY).decode()
        if directory is None:
            return local.encode()
        me = os.getpid()
        pids = sorted(
            {int(p.stem) for p in directory.glob("*.sock")} | {int(p.stem) for p in directory.glob("*.prom")}
        )
        pids = [pid for pid in pids if pid != me]
        answers = await asyncio.gather(*(_ask(directory / f"{pid}.sock", ASK_METRICS) for pid in pids))
        live: list[str] = []
        gone: list[str] = []
        for pid, answer in zip(pids, answers, strict=True):
            if answer is not None:
                live.append(answer)
                continue
            with contextlib.suppress(OSError):
                gone.append((directory / f"{pid}.prom").read_text())
        families = merge_expositions(local, live, gone)
        workers = GaugeMetricFamily(
            "camflow_edge_workers", "Edge worker processes whose figures this scrape summed (answering now)"
        )
        workers.add_metric([], float(1 + len(live)))
        return generate_latest(MergedFamilies([*families, workers]))

    async def viewer_identities(self) -> list[dict[str, list[str]]]:
        """Every other answering worker's viewers per stream (``edge.auth.ViewerPeers``); a worker
        that does not answer within ``VIEWERS_TIMEOUT``, or answers nonsense, is left out."""
        directory = self.directory
        if directory is None:
            return []
        me = os.getpid()
        paths = [
            p for p in directory.glob("*.sock") if p.stem.isascii() and p.stem.isdigit() and int(p.stem) != me
        ]
        answers = await asyncio.gather(*(_ask(p, ASK_VIEWERS, VIEWERS_TIMEOUT) for p in paths))
        return [ids for answer in answers if answer is not None and (ids := _viewer_ids(answer)) is not None]


def _viewer_ids(answer: str) -> dict[str, list[str]] | None:
    """A worker's ``viewers`` answer, None unless it is a JSON object of lists of strings."""
    try:
        ids = json.loads(answer)
    except ValueError:
        return None
    if not isinstance(ids, dict):
        return None
    if not all(isinstance(v, list) and all(isinstance(i, str) for i in v) for v in ids.values()):
        return None
    return ids


async def _ask(path: Path, ask: bytes, timeout: float = PEER_TIMEOUT) -> str | None:
    """One worker's answer to ``ask`` from its socket, None when it does not answer in time."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                writer.write(ask)
                await writer.drain()
                return (await reader.read()).decode()
            finally:
                writer.close()
    except (OSError, TimeoutError, UnicodeDecodeError):
        return None


def merge_expositions(local: str, live: list[str], gone: list[str]) -> list[Metric]:
    """The families of several processes' expositions, merged sample by sample.

    ``local``'s families all count; ``live`` workers' except the ``process_``/``python_`` ones (they
    describe one process: the answering one's are kept) and ``camflow_edge_viewers`` (every worker
    counts the whole edge's viewers: the answering one's figure is kept); ``gone`` workers' only
    counters and histograms. Values are summed, except ``*_created`` (the earliest) and gauges in seconds (the
    largest: an age).
    """
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, frozenset[tuple[str, str]]], tuple[dict[str, str], float]]] = {}
    sources = [(local, True, True), *((t, False, True) for t in live), *((t, False, False) for t in gone)]
    for text, own, alive in sources:
        for family in text_string_to_metric_families(text):
            if not own and (family.name.startswith(LOCAL_ONLY) or family.name in EDGE_WIDE):
                continue
            if not alive and family.type not in ("counter", "histogram", "summary"):
                continue
            if family.name not in merged:
                merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            per = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                old = per.get(key)
                value = float(sample.value)
                per[key] = (sample.labels, value if old is None else _combine(family, old[1], value))
    out = []
    for name, family in merged.items():
        for (sample_name, _), (labels, value) in values[name].items():
            family.add_sample(sample_name, labels, value)
        out.append(family)
    return out


def _combine(family: Metric, old: float, new: float) -> float:
    if family.name.endswith("_created"):
        return min(old, new)
    if family.type == "gauge" and family.name.endswith("_seconds"):
        return max(old, new)
    return old + new


class MergedFamilies(Collector):
    """Already merged families, for ``generate_latest``."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


WORKERS = WorkerMetrics()


async def edge_metrics_response(state: EdgeState) -> web.Response:
    """``/metrics`` of the edge: this process's figures, or with ``--workers N`` every worker's summed
    (viewers: the union of every worker's)."""
    await state.viewers.census()
    if WORKERS.directory is None:
        return metrics_response()
    body = await WORKERS.scrape()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})
