"""The listener limits, sans-IO: request deadlines a trickle cannot move, the head bound, the per-client
cap and the once-per-client refusal log."""

from __future__ import annotations

import json

import pytest

from camflow.errors import ConfigError
from camflow.limits import (
    ClientCap,
    Phase,
    Refusal,
    RefusalLog,
    RequestClock,
    body_length,
    parse_networks,
    refusal_response,
)
from tests import defaults

LIMITS = defaults.limits(head_timeout=10.0, body_timeout=10.0, body_min_rate=1000.0, idle_timeout=30.0)
GET = b"GET /live/cam1/x.m3u8 HTTP/1.1\r\nHost: a\r\n\r\n"


def test_a_trickled_head_expires_at_its_first_byte_plus_the_head_timeout() -> None:
    clock = RequestClock(LIMITS, now=0.0)
    for second, byte in enumerate(GET[:-1]):  # one byte a second, never the end
        assert clock.feed(bytes([byte]), now=5.0 + second) is None
    assert clock.phase is Phase.HEAD and clock.since == 5.0
    assert clock.expired(15.0) is None
    assert clock.expired(15.1) is Refusal.HEAD_TIMEOUT


def test_idle_then_requests_then_idle_again() -> None:
    clock = RequestClock(LIMITS, now=0.0)
    assert clock.expired(29.0) is None and clock.expired(30.5) is Refusal.IDLE_TIMEOUT
    clock.feed(GET, now=1.0)
    assert clock.phase is Phase.BUSY and clock.expired(1e6) is None  # the application has it
    clock.answered(2.0)
    assert clock.expired(31.0) is None and clock.expired(32.5) is Refusal.IDLE_TIMEOUT


def test_pipelined_requests_and_blank_lines_between_them() -> None:
    clock = RequestClock(LIMITS, now=0.0)
    assert clock.feed(GET + b"\r\n" + GET + GET[:10], now=1.0) is None
    assert clock.phase is Phase.HEAD and clock.deadline == 11.0
    assert clock.feed(GET[10:], now=2.0) is None
    assert clock.phase is Phase.BUSY


def test_a_head_split_at_its_end_is_found() -> None:
    clock = RequestClock(LIMITS, now=0.0)
    for part in (GET[:-3], GET[-3:-1], GET[-1:]):
        clock.feed(part, now=1.0)
    assert clock.phase is Phase.BUSY


def test_a_body_has_its_deadline_from_its_length_and_rate() -> None:
    clock = RequestClock(LIMITS, now=0.0)
    head = b"POST /whip/cam1 HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"
    clock.feed(head + b"x" * 100, now=1.0)
    assert clock.phase is Phase.BODY and clock.deadline == 1.0 + 10.0 + 5.0
    clock.feed(b"x" * 4000, now=3.0)  # progress does not move the deadline
    assert clock.expired(16.5) is Refusal.BODY_TIMEOUT
    clock.feed(b"x" * 900 + GET[:4], now=4.0)  # the body's end, then the next head begins
    assert clock.phase is Phase.HEAD and clock.since == 4.0


def test_a_head_over_the_bound_is_refused_however_it_arrives() -> None:
    limits = defaults.limits(max_head=1024)
    big = b"GET / HTTP/1.1\r\nX-Filler: " + b"a" * 1100 + b"\r\n\r\n"
    assert RequestClock(limits, 0.0).feed(big, 1.0) is Refusal.HEAD_TOO_LARGE
    clock = RequestClock(limits, 0.0)
    results = [clock.feed(big[i : i + 100], 1.0) for i in range(0, 1100, 100)]
    assert results[-1] is Refusal.HEAD_TOO_LARGE and set(results[:-1]) == {None}
    exact = b"GET / HTTP/1.1\r\nX: " + b"a" * (1024 - 23) + b"\r\n\r\n"
    assert len(exact) == 1024 and RequestClock(limits, 0.0).feed(exact, 1.0) is None


def test_body_lengths_it_can_and_cannot_frame() -> None:
    assert body_length(b"GET / HTTP/1.1\r\nHost: a") == 0
    assert body_length(b"POST / HTTP/1.1\r\ncontent-length:  12 ") == 12
    assert body_length(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked") is None
    assert body_length(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2") is None
    assert body_length(b"POST / HTTP/1.1\r\nContent-Length: -1") is None
    clock = RequestClock(LIMITS, 0.0)
    clock.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello", 1.0)
    assert clock.phase is Phase.UNFRAMED and clock.expired(1e6) is None


def test_the_per_client_cap_counts_each_address_and_spares_the_exempt() -> None:
    limits = defaults.limits(per_client=2, exempt=parse_networks("10.0.0.0/8,::1"))
    cap = ClientCap(limits)
    assert cap.admit("192.0.2.1") and cap.admit("192.0.2.1") and not cap.admit("192.0.2.1")
    assert cap.admit("192.0.2.2")
    assert all(cap.admit("10.1.2.3") for _ in range(10)) and all(cap.admit("::1") for _ in range(10))
    assert all(cap.admit("::ffff:10.1.2.3") for _ in range(10))  # IPv4 on a dual-stack listener
    cap.release("192.0.2.1")
    assert cap.admit("192.0.2.1") and not cap.admit("192.0.2.1")
    for _ in range(2):
        cap.release("192.0.2.1")
    cap.release("192.0.2.2")
    cap.release("10.1.2.3")  # never counted: nothing to release
    assert cap.open == {}
    unlimited = ClientCap(defaults.limits(per_client=0, exempt=()))
    assert all(unlimited.admit("192.0.2.1") for _ in range(1000)) and unlimited.open == {}


def test_loopback_is_exempt_by_default() -> None:
    limits = defaults.limits()
    assert limits.per_client == 64 and not limits.capped("127.0.0.1") and limits.capped("192.0.2.1")


def test_refusals_are_logged_once_per_client_and_reason_per_interval() -> None:
    log = RefusalLog(interval=60.0, clients=3)
    assert log.note("192.0.2.1", "head_timeout", 0.0) == 1
    assert [log.note("192.0.2.1", "head_timeout", t) for t in range(1, 50)] == [None] * 49
    assert log.note("192.0.2.1", "per_client_cap", 50.0) == 1  # another reason: its own line
    assert log.note("192.0.2.1", "head_timeout", 61.0) == 50  # the next line says how many
    for i in range(10):  # bounded: full, it forgets everything and goes on
        log.note(f"198.51.100.{i}", "head_timeout", 62.0)
    assert len(log._last) <= 3


def test_networks_and_bad_values() -> None:
    assert [str(n) for n in parse_networks("10.0.0.0/8, 192.0.2.7,2001:db8::/32")] == [
        "10.0.0.0/8",
        "192.0.2.7/32",
        "2001:db8::/32",
    ]
    assert parse_networks("none") == ()
    with pytest.raises(ConfigError, match=r"'10\.0\.0\.300'"):
        parse_networks("10.0.0.300")
    with pytest.raises(ConfigError, match="head_timeout"):
        defaults.limits(head_timeout=0.0)


def test_refusal_responses_are_whole_json_answers() -> None:
    raw = refusal_response(431, "head_too_large", "too big", ("Retry-After: 5",))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"Connection: close" in head and b"Retry-After: 5" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"error": "head_too_large", "detail": "too big"}
