"""The edge's Prometheus figures: requests by status and cache result, viewers, cache bytes.

Requests are counted in plain ints (``RequestCounts``): once per request by the ``count_requests``
middleware, whose cache result comes from ``CACHE_RESULT`` (set by ``ObjectCache.get`` in the
request's task), plus the fast path's own count of the cached ``200``s it answered without the
application. Prometheus reads them at scrape time (``edge_samples``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web

from camflow.metrics import Sample
from edge.cache import CACHE_RESULT
from edge.state import EdgeState

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

    return samples
