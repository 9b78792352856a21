"""What a fuzz target is, the registry of them, and the record framing of multi-part inputs.

A target is a function of one input (``bytes``) that drives one parser the way the service does,
the exceptions it may raise (the project's own parse errors, nothing else), and the seeds the fuzzer
starts from: valid inputs (captured vectors, what real peers send, what camflow writes) that it
mutates, so that it gets past the first check. Anything else a target raises is a finding.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

Run = Callable[[bytes], None]


@dataclass(frozen=True)
class Target:
    name: str
    run: Run
    allowed: tuple[type[BaseException], ...]  # what the parser may raise on bad input
    seeds: Callable[[], list[bytes]]
    doc: str
    dictionary: tuple[bytes, ...] = ()  # tokens the mutator inserts (libFuzzer -dict)
    setup: Callable[[], None] | None = None  # run once in the worker, before the first input
    max_len: int = 4096

    def one(self, data: bytes) -> None:
        """One input: what the parser raises beyond ``allowed`` propagates (a finding)."""
        with contextlib.suppress(self.allowed):
            self.run(data)


TARGETS: dict[str, Target] = {}


def target(
    name: str,
    *,
    allowed: tuple[type[BaseException], ...],
    seeds: Callable[[], list[bytes]],
    dictionary: tuple[bytes, ...] = (),
    setup: Callable[[], None] | None = None,
    max_len: int = 4096,
) -> Callable[[Run], Run]:
    """Register the decorated function as the fuzz target ``name`` (its docstring says what it drives)."""

    def register(run: Run) -> Run:
        if name in TARGETS:
            raise ValueError(f"fuzz target {name!r} registered twice")
        doc = " ".join((run.__doc__ or name).split())
        TARGETS[name] = Target(name, run, allowed, seeds, doc, dictionary, setup, max_len)
        return run

    return register


def records(data: bytes) -> Iterator[bytes]:
    """The ``u16 big-endian length | bytes`` records of ``data`` (the format of tests/vectors/audio_rtp);
    a last record cut short is returned as it is."""
    pos = 0
    while pos + 2 <= len(data):
        (size,) = struct.unpack_from(">H", data, pos)
        yield data[pos + 2 : pos + 2 + size]
        pos += 2 + size


def framed(parts: list[bytes]) -> bytes:
    """``parts`` as records (the inverse of ``records``)."""
    return b"".join(struct.pack(">H", len(p)) + p for p in parts)


def chunks(data: bytes) -> Iterator[bytes]:
    """``data`` after its first byte, cut where the bytes say (from the first byte on: a chunk of 1..16
    bytes, or of up to 1 KB), for incremental readers that must give the same items however the bytes
    arrive."""
    if not data:
        return
    pos, step = 1, data[0]
    while pos < len(data):
        size = 1 + (step & 0x0F) if step & 0x80 else 1 + 8 * step
        yield data[pos : pos + size]
        pos += size
        step = (step * 31 + size) & 0xFF


@dataclass
class Sink:
    """Collects what a depacketizer hands on (the media path's place)."""

    items: list[object] = field(default_factory=list)

    def __call__(self, item: object) -> None:
        self.items.append(item)
