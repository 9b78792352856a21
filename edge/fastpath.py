"""The fast path: a cached ``/live/`` object as the bytes of one whole HTTP/1.1 response, or None.

Most requests an edge sees are GETs of objects it holds: the same segment or playlist, asked
by every viewer with a token it has seen before. For those, aiohttp's request parsing, router,
middleware and response objects cost more than the work itself. ``FastPath.respond`` answers
them synchronously from what is already in memory: the parsed path (memoised), the token's
claims (memoised by ``Authorizer``), the cached entry, its representation for this token
(memoised per entry by ``edge.delivery``) and a header block built once per representation.

What a request head decides (the object, the token, gzip, keep-alive) is remembered per exact
head bytes (``Plan``, bounded), since players and CDNs send the same head again and again; what
can change between two identical requests (the token's expiry, the cache entry, the signing keys
or the identity provider's JWKS: ``Authorizer.refresh``) is checked on every request.

It answers only the plain case, a ``200`` (or its ``HEAD``) of an object it has or can load
(a miss is loaded through the cache like any other: coalesced, one store read). For everything
else (an object the store does not have or cannot give, a bad path or token, conditional and
``Range`` requests, any query it would have to decode or a low-latency ``_HLS_*`` one (a blocking
reload, a delta update), an object requests are held for, a request body) it returns None and the
request goes to the aiohttp application, which gives the same bytes, headers and errors as
before (``edge.wire`` hands it the connection). So every status and header of the full
application stays as it was; the fast path only makes its most common answer cheaper.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import cast

from aiohttp.http import SERVER_SOFTWARE

from camflow.errors import TokenError
from edge.access import needs_token
from edge.cache import CachedObject
from edge.delivery import media_representation, playlist_representation
from edge.errors import BadPath
from edge.http import accepts_gzip
from edge.paths import LIVE_PREFIX, LiveObject, parse_live_path
from edge.state import EdgeState

LIVE = LIVE_PREFIX.encode()
TOKEN = b"token"
LOW_LATENCY = b"_HLS_"  # a blocking reload or delta update: the application answers it (edge.blocking)
BEARER = b"bearer "
# Queries the fast path reads as they are; anything else (%-escapes, '+', ';') goes to aiohttp.
PLAIN_QUERY = re.compile(rb"[A-Za-z0-9._~=&-]*")
# Request headers that ask for more than a plain 200: the application answers them.
NOT_FAST = frozenset(
    (
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"range",
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"upgrade",
    )
)
PLANS = 8192  # request heads remembered (then forgotten all at once)
KEYS_CHECK = 0.25  # seconds between two checks that the signing keys and the JWKS are unchanged
Answer = tuple[bytes, bytes, bool]  # response head, body, keep the connection open
Wire = tuple[bytes, bytes]  # a representation's header block (status line to Content-Length) and body
SERVER_LINE = f"Server: {SERVER_SOFTWARE}\r\n".encode()
KEEP_ALIVE_LINE = b"Connection: keep-alive\r\n"
CLOSE_LINE = b"Connection: close\r\n"


class DateLine:
    """``Date: ...\\r\\n`` for the current second, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def __call__(self, now: float) -> bytes:
        second = int(now)
        if second != self._second:
            self._second = second
            stamp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(second))
            self._line = b"Date: " + stamp.encode() + b"\r\n"
        return self._line


def parse_head(head: bytes) -> tuple[bytes, bytes, bytes, dict[bytes, bytes]] | None:
    """``(method, target, version, headers)`` of a request head (without its blank line), or None.

    Only the plain form is read here: anything unusual (obsolete line folding, a malformed or
    repeated field, another version than HTTP/1.0 or 1.1) is None, and aiohttp parses it.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if version != b"HTTP/1.1" and version != b"HTTP/1.0":
        return None
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or b" " in name or b"\t" in name:
            return None
        key = name.lower()
        if key in headers:
            return None
        headers[key] = value.strip(b" \t")
    return method, target, version, headers


def query_token(query: bytes) -> str | None:
    """The first ``token`` parameter of a plain query ("" when absent), None when it needs decoding."""
    if PLAIN_QUERY.fullmatch(query) is None or LOW_LATENCY in query:
        return None
    for param in query.split(b"&"):
        name, _, value = param.partition(b"=")
        if name == TOKEN:
            return value.decode("ascii")
    return ""


def bearer_token(value: bytes) -> str | None:
    """The token of an ``Authorization: Bearer`` value ("" without one), None when not plain ASCII."""
    if value[:7].lower() != BEARER:
        return ""
    try:
        return value[7:].strip(b" \t").decode("ascii")
    except UnicodeDecodeError:
        return None


def _head_block(headers: dict[str, str], size: int) -> bytes:
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"HTTP/1.1 200 OK\r\n{lines}Content-Length: {size}\r\n".encode("latin-1")


@dataclass(frozen=True, slots=True)
class Plan:
    """What one exact request head asks for, as far as the head alone decides it."""

    obj: LiveObject
    token: str
    carried: str  # the token written into a playlist's URIs: a ?token=, not an Authorization header
    expires: float  # the token's expiry (UNIX s, 0 = never); 0 also when no token is checked
    variant: tuple[object, ...]  # key of the wire form in the cache entry's memo
    gzipped: bool
    get: bool  # GET (else HEAD: no body)
    keep_alive: bool
    connection: bytes  # the Connection line to send, if any


class FastPath:
    def __init__(self, state: EdgeState) -> None:
        self._state = state
        self._plans: dict[bytes, Plan] = {}
        self._epoch = state.auth.epoch
        self._keys_checked = 0.0
        self.date = DateLine()
        self.served = 0  # requests answered here from the cache (cache hits)
        self.loaded = 0  # requests answered here after a load (misses, coalesced or not)

    def respond(self, head: bytes, loaded: CachedObject | None = None) -> Answer | str | None:
        """``(head, body, keep_alive)`` of the response to a request head (without its blank line).

        ``body`` is empty for HEAD. None: the application must answer this request. A string: the
        store key of an object to load first (``load``; coalesced with every other request for
        it), then to call again with ``loaded``.
        """
        state = self._state
        now = time.time()
        if now >= self._keys_checked + KEYS_CHECK:
            self._keys_checked = now
            epoch = state.auth.refresh()  # a key rotated or retired: every plan is made again
            if epoch != self._epoch:
                self._plans.clear()
                self._epoch = epoch
        plan = self._plans.get(head)
        if plan is None:
            plan = self._plan(head)
            if plan is None:
                return None
            if len(self._plans) >= PLANS:
                self._plans.clear()
            self._plans[head] = plan
        if 0 < plan.expires <= now:  # the application answers 403 token_expired
            del self._plans[head]
            return None
        obj = plan.obj
        if obj.is_playlist and state.regions is not None and not state.regions.found_here(obj.stream):
            return None  # where the stream is live is looked up (edge.regions) by the application
        cached = loaded if loaded is not None and loaded.key == obj.key else state.cache.fresh(obj.key)
        if cached is None:
            # an object requests already wait for (a part not written yet): join them there
            return None if state.ll.holding(obj.key) else obj.key
        wire = cached.derived.get(plan.variant)
        if wire is None:
            wire = self._wire(cached, plan)
            if wire is None:
                return None
        if obj.is_playlist:
            state.viewers.saw(obj.stream, plan.token)
        block, body = cast(Wire, wire)
        if loaded is None:
            self.served += 1
        else:
            self.loaded += 1
        response = b"".join((block, self.date(now), SERVER_LINE, plan.connection, b"\r\n"))
        return response, (body if plan.get else b""), plan.keep_alive

    async def load(self, key: str) -> CachedObject:
        """The object from the cache or, once for all who ask, the store; raises what ``fetch`` raises."""
        return await self._state.fetch(key)

    def _plan(self, head: bytes) -> Plan | None:
        parsed = parse_head(head)
        if parsed is None:
            return None
        method, target, version, headers = parsed
        if not target.startswith(LIVE) or (method != b"GET" and method != b"HEAD"):
            return None
        if not NOT_FAST.isdisjoint(headers):
            return None
        path, _, query = target.partition(b"?")
        token = query_token(query)
        if token is None:
            return None
        carried = token
        if not token:
            token = bearer_token(headers.get(b"authorization", b""))
            if token is None:
                return None
        state = self._state
        try:
            obj = parse_live_path(path.decode("ascii"))
        except (BadPath, UnicodeDecodeError):
            return None
        expires = 0.0
        if needs_token(state, obj):
            if not token:
                return None
            try:
                expires = state.auth.verify_viewer(token, obj.stream).expires
            except TokenError:
                return None
        gzipped = obj.is_playlist and accepts_gzip(headers.get(b"accept-encoding", b"").decode("latin-1"))
        connection = headers.get(b"connection", b"").lower()
        http10 = version == b"HTTP/1.0"
        keep_alive = connection == b"keep-alive" if http10 else connection != b"close"
        return Plan(
            obj=obj,
            token=token,
            carried=carried,
            expires=float(expires),
            variant=("wire", carried, gzipped) if obj.is_playlist else ("wire",),
            gzipped=gzipped,
            get=method == b"GET",
            keep_alive=keep_alive,
            # as aiohttp does: name the Connection only where it differs from the version's default
            connection=(KEEP_ALIVE_LINE if keep_alive else b"")
            if http10
            else (b"" if keep_alive else CLOSE_LINE),
        )

    def _wire(self, cached: CachedObject, plan: Plan) -> Wire | None:
        """The entry's header block and body for this plan, built once and kept in its memo."""
        if plan.obj.is_playlist:
            try:
                body, fields = playlist_representation(
                    self._state, cached, plan.obj, plan.carried, plan.gzipped
                )
            except UnicodeDecodeError:
                return None
        else:
            body, fields = media_representation(cached, plan.obj)
        wire = (_head_block(fields, len(body)), body)
        cached.derived[plan.variant] = wire
        return wire
