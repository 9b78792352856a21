"""Where the WebRTC media sockets live: host candidate addresses, a UDP port range, an announced IP.

aioice (aiortc's ICE) binds one UDP socket per local interface address (loopback excluded) on an
ephemeral port, and knows no port range. ``install()`` replaces, for this process, the address
list and the binding of host candidates: sockets are bound on ``IcePolicy.addresses`` (all
interfaces but loopback when empty) on a port of ``IcePolicy.ports`` (ephemeral when None). No
STUN or TURN server is contacted (the peer connections get no ICE servers). ``announce()`` rewrites
the host candidates of an SDP answer to the announced IP (a 1:1 NAT or load balancer in front).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aioice.ice
from aioice.candidate import Candidate, candidate_foundation, candidate_priority

from camflow.errors import ConfigError
from ingest.sources.whip.errors import WhipError

_PORTS_RE = re.compile(r"(\d{1,5})-(\d{1,5})")


@dataclass(frozen=True)
class IcePolicy:
    addresses: tuple[str, ...] = ()  # host candidate addresses; () = aioice's (every interface but lo)
    ports: tuple[int, int] | None = None  # inclusive UDP port range; None = ephemeral
    announce_ip: str | None = None  # the address written into the answer's candidates


def parse_webrtc_ports(text: str) -> tuple[int, int] | None:
    """``--webrtc-ports FIRST-LAST`` (or ``any`` for ephemeral ports)."""
    if text.strip().lower() in ("any", ""):
        return None
    match = _PORTS_RE.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"--webrtc-ports {text!r}: expected FIRST-LAST, e.g. 40000-40999, or any")
    first, last = int(match[1]), int(match[2])
    if not 1024 <= first <= last <= 65535:
        raise ConfigError(f"--webrtc-ports {text!r}: expected 1024 <= FIRST <= LAST <= 65535")
    return first, last


def check_announce_ip(text: str | None) -> str | None:
    if not text:
        return None
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    except OSError:
        raise ConfigError(f"--webrtc-announce-ip {text!r}: expected an IPv4 or IPv6 address") from None
    return text


class _PortCursor:
    """Hands out ports of the range round robin, so consecutive sessions do not retry the same ones."""

    def __init__(self, ports: tuple[int, int]) -> None:
        self.first, self.last = ports
        self._next = itertools.cycle(range(self.first, self.last + 1))

    def candidates(self) -> list[int]:
        start = next(self._next)
        return [
            start + i if start + i <= self.last else start + i - (self.last - self.first + 1)
            for i in range(self.last - self.first + 1)
        ]


async def _bind(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], Any], address: str, cursor: _PortCursor | None
) -> tuple[Any, Any]:
    if cursor is None:
        return await loop.create_datagram_endpoint(factory, local_addr=(address, 0))
    for port in cursor.candidates():  # bounded: each port of the range once
        try:
            return await loop.create_datagram_endpoint(factory, local_addr=(address, port))
        except OSError:
            continue
    raise OSError(f"no free UDP port in --webrtc-ports {cursor.first}-{cursor.last} on {address}")


def install(policy: IcePolicy) -> None:
    """Apply ``policy`` to every ICE connection aiortc makes in this process from now on."""
    cursor = _PortCursor(policy.ports) if policy.ports else None
    default_addresses = aioice.ice.get_host_addresses

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return list(policy.addresses) or default_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)

    async def host_candidates(
        self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5
    ) -> list[Candidate]:
        loop = asyncio.get_running_loop()
        candidates = []
        for address in addresses:
            try:
                _, protocol = await _bind(loop, lambda: aioice.ice.StunProtocol(self), address, cursor)
            except OSError as exc:
                aioice.ice.logger.info("could not bind to %s: %s", address, exc)
                continue
            host, port = protocol.transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            candidates.append(protocol.local_candidate)
            self._protocols.append(protocol)
        return candidates

    aioice.ice.get_host_addresses = host_addresses
    aioice.ice.Connection.get_component_candidates = host_candidates  # type: ignore[method-assign]


def check_candidates(sdp: str, policy: IcePolicy) -> None:
    """A WhipError 503 (``no_usable_candidate``) when the answer ``sdp`` has no ICE candidate: no
    address could be bound (``--host`` a wildcard on a machine whose only address is loopback, which
    aioice leaves out, or a ``--host`` not on this machine), so no peer could ever reach it."""
    if any(line.startswith("a=candidate:") for line in sdp.splitlines()):
        return
    where = ", ".join(policy.addresses) or "every interface but loopback (--host is a wildcard)"
    raise WhipError(
        503,
        "no_usable_candidate",
        f"no ICE candidate could be gathered on {where}: the answer would be unreachable; start camflow"
        " with --host set to an address peers can reach (127.0.0.1 for peers on this machine) or on a"
        " machine with a non-loopback address",
    )


def announce(sdp: str, policy: IcePolicy) -> str:
    """The answer with its host candidates' (and ``c=`` lines') addresses replaced by the announced IP."""
    if policy.announce_ip is None:
        return sdp
    out = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:"):
            parts = line.split(" ")
            if len(parts) > 7 and parts[7] == "host":
                parts[4] = policy.announce_ip
            line = " ".join(parts)
        elif line.startswith("c=IN IP"):
            version = "IP6" if ":" in policy.announce_ip else "IP4"
            line = f"c=IN {version} {policy.announce_ip}"
        out.append(line)
    return "\r\n".join(out)
