"""What keeps hostile clients from exhausting a listener: deadlines, a head size bound, a per-client cap.

Sans-IO; the listeners (the edge, WHIP, RTSP) feed it bytes and times:

- ``ConnectionLimits``: the figures (``--request-head-timeout``, ``--request-body-timeout``,
  ``--request-body-min-rate``, ``--idle-timeout``, ``--send-timeout``, ``--max-request-head``,
  ``--max-connections-per-client``, ``--client-cap-exempt``; their defaults are in
  ``camflow.cli.limit_args``).
- ``RequestClock``: where one HTTP/1.x connection stands (between requests, in a request head, in a
  body, with the application) and the deadline of that phase. A deadline is set when the phase
  begins and never moved by the bytes that arrive in it, so a client trickling a head one byte a
  second is closed ``head_timeout`` after its first byte, however it trickles (slowloris).
- ``ClientCap``: open connections per client address, refused above ``per_client`` (unless the
  address is exempt: a CDN's or a NAT gateway's few addresses carry many legitimate clients).
- ``RefusalLog``: whether a refusal is logged: once per client address and reason per interval,
  with how many were refused since; never one line per connection or packet. Bounded.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum

from camflow.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
NEVER = float("inf")
LOG_INTERVAL = 60.0  # seconds between two log lines of one client address and reason
LOG_CLIENTS = 4096  # client addresses remembered by a RefusalLog (then forgotten all at once)


class Refusal(StrEnum):
    """Why a listener closed or refused a connection (the ``reason`` label of the refusal counter)."""

    HEAD_TIMEOUT = "head_timeout"
    BODY_TIMEOUT = "body_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    HEAD_TOO_LARGE = "head_too_large"
    PER_CLIENT_CAP = "per_client_cap"
    HANDSHAKE_TIMEOUT = "handshake_timeout"  # RTSP: nothing announced in time
    SEND_TIMEOUT = "send_timeout"  # the client read none of a full send buffer in time


@dataclass(frozen=True)
class ConnectionLimits:
    head_timeout: float  # s from the first byte of a request head to its end
    body_timeout: float  # s for a request body, plus its length / body_min_rate
    body_min_rate: float  # bytes/s a body must at least arrive at
    idle_timeout: float  # s a keep-alive connection may wait between requests
    max_head: int  # bytes of a request head, its blank line included
    per_client: int  # open connections of one client address; 0: no cap
    send_timeout: float  # s a response may wait on a full send buffer (a client that does not read)
    exempt: tuple[Network, ...] = ()  # client addresses the per-client cap does not apply to

    def __post_init__(self) -> None:
        for name in ("head_timeout", "body_timeout", "body_min_rate", "idle_timeout", "send_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} {getattr(self, name)!r}: expected a positive number")
        if self.max_head < 256 or self.per_client < 0:
            raise ConfigError(
                f"max_head {self.max_head} / per_client {self.per_client}: expected >= 256 bytes / >= 0"
            )

    def capped(self, host: str) -> bool:
        """Whether the per-client cap applies to connections from ``host``."""
        if self.per_client == 0:
            return False
        if not self.exempt:
            return True
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack listener's IPv4 client
        return not any(address in network for network in self.exempt)

    def body_deadline(self, start: float, length: int) -> float:
        return start + self.body_timeout + length / self.body_min_rate


def parse_networks(text: str) -> tuple[Network, ...]:
    """``10.0.0.0/8,2001:db8::/32,192.0.2.7`` as networks (a bare address: that one address); ``none``
    or nothing: none."""
    out: list[Network] = []
    if text.strip().lower() == "none":
        return ()
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(
                f"client address {part!r}: expected an IP address or network, e.g. 203.0.113.0/24"
            ) from None
    return tuple(out)


class Phase(Enum):
    IDLE = "idle"  # between requests: the idle deadline
    HEAD = "head"  # a request head has begun: the head deadline
    BODY = "body"  # a head with Content-Length was read: the body deadline
    BUSY = "busy"  # the whole request was read: the application has it (no deadline here)
    UNFRAMED = "unframed"  # a body whose end this clock cannot see (chunked, upgrade): not watched


HEAD_END = re.compile(rb"\r?\n\r?\n")
CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:[ \t]*(\S*)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
UNFRAMED_FIELD = re.compile(rb"^(transfer-encoding|upgrade)[ \t]*:", re.IGNORECASE | re.MULTILINE)


def body_length(head: bytes) -> int | None:
    """The body length a request head announces (0: none), None when this clock cannot frame it."""
    if UNFRAMED_FIELD.search(head):
        return None
    values = CONTENT_LENGTH.findall(head)
    if not values:
        return 0
    if len(values) > 1 or not values[0].isdigit():
        return None  # the application answers 400
    return int(values[0])


class RequestClock:
    """The phase of one HTTP/1.x connection and its deadline (see the module docstring).

    ``feed`` follows the requests in the bytes a client sends (heads, ``Content-Length`` bodies);
    a listener that frames requests itself (the edge's fast path) calls ``head_began``,
    ``answered`` and ``busy`` instead. ``expired`` names the deadline passed, if any.
    """

    __slots__ = ("_head", "_remaining", "deadline", "limits", "phase", "since")

    def __init__(self, limits: ConnectionLimits, now: float) -> None:
        self.limits = limits
        self.phase = Phase.IDLE
        self.since = now
        self.deadline = now + limits.idle_timeout
        self._head = bytearray()
        self._remaining = 0

    def head_began(self, now: float) -> None:
        self.phase, self.since, self.deadline = Phase.HEAD, now, now + self.limits.head_timeout

    def answered(self, now: float) -> None:
        self.phase, self.since, self.deadline = Phase.IDLE, now, now + self.limits.idle_timeout

    def busy(self) -> None:
        self.phase, self.deadline = Phase.BUSY, NEVER

    def expired(self, now: float) -> Refusal | None:
        if now <= self.deadline:
            return None
        if self.phase is Phase.HEAD:
            return Refusal.HEAD_TIMEOUT
        if self.phase is Phase.BODY:
            return Refusal.BODY_TIMEOUT
        return Refusal.IDLE_TIMEOUT

    def feed(self, data: bytes, now: float) -> Refusal | None:
        """Follow ``data``; ``HEAD_TOO_LARGE`` when a head grows past ``max_head`` (else None)."""
        pos, size = 0, len(data)
        while pos < size:
            phase = self.phase
            if phase is Phase.UNFRAMED:
                return None
            if phase is Phase.IDLE or phase is Phase.BUSY:
                if data[pos] in b"\r\n":  # blank lines between requests (RFC 9112 2.2)
                    pos += 1
                    continue
                self.head_began(now)
                self._head.clear()
            if self.phase is Phase.HEAD:
                head = self._head
                before = len(head)
                scan = max(0, before - 3)
                head += data[pos : pos + self.limits.max_head + 1]
                match = HEAD_END.search(head, scan)
                if match is None:
                    return Refusal.HEAD_TOO_LARGE if len(head) > self.limits.max_head else None
                end = match.end()
                if end > self.limits.max_head:
                    return Refusal.HEAD_TOO_LARGE
                pos += end - before  # the bytes of this head that came in ``data``
                length = body_length(bytes(head[: match.start()]))
                head.clear()
                if length is None:
                    self.phase, self.deadline = Phase.UNFRAMED, NEVER
                elif length == 0:
                    self.busy()
                else:
                    self.phase, self.since, self._remaining = Phase.BODY, now, length
                    self.deadline = self.limits.body_deadline(now, length)
            else:  # BODY
                take = min(self._remaining, size - pos)
                self._remaining -= take
                pos += take
                if self._remaining == 0:
                    self.busy()
        return None


class ClientCap:
    """Open connections per client address; ``admit`` refuses the one over ``limits.per_client``."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open: dict[str, int] = {}  # only capped addresses with at least one connection

    def admit(self, host: str) -> bool:
        if not self.limits.capped(host):
            return True
        count = self.open.get(host, 0)
        if count >= self.limits.per_client:
            return False
        self.open[host] = count + 1
        return True

    def release(self, host: str) -> None:
        count = self.open.get(host)
        if count is None:
            return
        if count <= 1:
            del self.open[host]
        else:
            self.open[host] = count - 1


class RefusalLog:
    """Whether to log a refusal now: the first of a (client, reason), then one per ``interval``.

    ``note`` returns None (stay quiet) or how many refusals of that client and reason this line
    stands for. At most ``clients`` entries are kept; when full, they are forgotten all at once
    (then each client's next refusal is logged again: still one line per client, never per packet).
    """

    def __init__(self, interval: float = LOG_INTERVAL, clients: int = LOG_CLIENTS) -> None:
        self.interval = interval
        self.clients = clients
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # -> (logged at, refused since)

    def note(self, host: str, reason: str, now: float) -> int | None:
        key = (host, reason)
        entry = self._last.get(key)
        if entry is not None and now - entry[0] < self.interval:
            self._last[key] = (entry[0], entry[1] + 1)
            return None
        if entry is None and len(self._last) >= self.clients:
            self._last.clear()
        self._last[key] = (now, 0)
        return 1 + (entry[1] if entry is not None else 0)


REASONS = {
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def refusal_response(status: int, error: str, detail: str, extra: Iterable[str] = ()) -> bytes:
    """A whole HTTP/1.1 response (JSON ``{"error", "detail"}``, ``Connection: close``) for a refusal
    written straight to a socket, before or instead of the application."""
    body = json.dumps({"error": error, "detail": detail}, separators=(",", ":")).encode()
    lines = "".join(f"{line}\r\n" for line in extra)
    head = (
        f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n{lines}\r\n"
    )
    return head.encode("latin-1") + body
