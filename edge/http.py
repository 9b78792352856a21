"""HTTP details of serving a cached object: conditional requests, byte ranges, gzip. No store access."""

from __future__ import annotations

import gzip
from email.utils import formatdate

from aiohttp import web

from edge.errors import RangeNotSatisfiable

CORS_ORIGIN = "Access-Control-Allow-Origin"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, ETag",
}


def error_response(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status, headers=headers)


STORE_RETRY_AFTER = 2  # seconds a client is asked to wait when the store is unavailable


def store_unavailable_response(detail: str) -> web.Response:
    """503 while the store cannot serve (an outage): retry soon, and no cache keeps this answer."""
    headers = {"Retry-After": str(STORE_RETRY_AFTER), "Cache-Control": "no-store"}
    return error_response(503, "store_unavailable", detail, headers=headers)


def http_date(unix_seconds: float) -> str:
    return formatdate(unix_seconds, usegmt=True)


def not_modified(request: web.Request, etag: str, last_modified: float) -> bool:
    """RFC 9110 13.2.2: If-None-Match decides when present; else If-Modified-Since (GET and HEAD)."""
    if "If-None-Match" in request.headers:
        wanted = request.if_none_match or ()
        value = etag.strip('"')
        return any(e.value in ("*", value) for e in wanted)
    since = request.if_modified_since
    return since is not None and int(last_modified) <= since.timestamp()


def byte_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """``(start, stop)`` of a satisfiable single Range, ``None`` for the whole object.

    A malformed Range is ignored (RFC 9110 allows it); an unsatisfiable one raises
    ``RangeNotSatisfiable``.
    """
    if "Range" not in request.headers:
        return None
    try:
        rng = request.http_range
    except ValueError:
        return None
    if rng.start is not None and rng.start >= size:
        raise RangeNotSatisfiable(
            f"range {request.headers['Range']!r} starts beyond the object's {size} bytes"
        )
    start, stop, _ = rng.indices(size)
    return (start, stop) if stop > start else None


def wants_gzip(request: web.Request) -> bool:
    return accepts_gzip(request.headers.get("Accept-Encoding", ""))


def accepts_gzip(accept_encoding: str) -> bool:
    """True when an ``Accept-Encoding`` value takes gzip (or ``*``) with a non-zero q."""
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def send_bytes(
    request: web.Request, data: bytes, headers: dict[str, str], *, allow_range: bool = True
) -> web.Response:
    """200 with ``data``, 206 with the asked range, or 416; the caller handled 304 already."""
    if allow_range:
        try:
            span = byte_range(request, len(data))
        except RangeNotSatisfiable as exc:
            return error_response(
                416, "range_not_satisfiable", str(exc), headers={"Content-Range": f"bytes */{len(data)}"}
            )
        if span is not None:
            start, stop = span
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
            return web.Response(status=206, body=data[start:stop], headers=headers)
    return web.Response(body=data, headers=headers)
