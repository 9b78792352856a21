"""Commit after effects (``camflow.bus.CommitTracker``), as the packager and the transcoder use it.

The first two cases were the packager's ``CommitTracker`` and the transcoder's ``OffsetTracker``
tests before the two became one.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from camflow.bus import CommitTracker, Message
from camflow.events import TOPIC_RAW, TOPIC_READY, TOPIC_STREAMS

STREAM = "cam1"


def msg(partition: int, offset: int, topic: str = TOPIC_RAW) -> Message:
    return Message(topic, "k", b"", partition=partition, offset=offset)


def test_commits_done_prefix_per_topic() -> None:
    # the packager: ready segments and stream states from two topics through one consumer
    tracker = CommitTracker()
    msgs = [Message(TOPIC_READY, STREAM, b"", offset=n) for n in range(3)]
    other = Message(TOPIC_STREAMS, STREAM, b"", offset=0)
    tokens = [tracker.track(m) for m in msgs]
    t_other = tracker.track(other)
    assert tracker.done(tokens[1]) is None
    assert tracker.done(t_other) is other
    assert tracker.done(tokens[0]) is msgs[1]
    assert tracker.done(tokens[2]) is msgs[2]
    assert tracker.outstanding == 0


def test_offsets_are_committed_only_after_every_earlier_one_is_done() -> None:
    # the transcoder: several segments in flight, per partition
    tracker = CommitTracker()
    tokens = {offset: tracker.track(msg(0, offset)) for offset in (4, 5, 6)}
    t9 = tracker.track(msg(1, 9))
    assert tracker.done(tokens[5]) is None  # 4 still in flight: committing 6 would lose it
    assert tracker.done(t9) == msg(1, 9)
    assert tracker.done(tokens[4]) == msg(0, 5)
    assert tracker.done(tokens[6]) == msg(0, 6)
    assert tracker.done(tokens[6]) is None  # twice
    assert tracker.done(12345) is None  # never tracked
    assert tracker.outstanding == 0


def test_a_delivery_done_twice_before_it_is_committable_commits_once() -> None:
    tracker = CommitTracker()
    t0, t1 = tracker.track(msg(0, 0)), tracker.track(msg(0, 1))
    assert tracker.done(t1) is None
    assert tracker.done(t1) is None
    assert tracker.done(t0) == msg(0, 1)
    assert tracker.outstanding == 0


def test_a_message_delivered_again_is_a_delivery_of_its_own() -> None:
    # after a rebalance Kafka delivers from the committed offset again, while the first
    # delivery of the same offsets may still be in hand: nothing past an offset is
    # committed before every delivery of it is done
    tracker = CommitTracker()
    first = [tracker.track(msg(0, offset)) for offset in (4, 5)]
    again = [tracker.track(msg(0, offset)) for offset in (4, 5)]
    assert tracker.done(again[1]) is None
    assert tracker.done(first[1]) is None  # 4 is not done, by either delivery
    assert tracker.done(first[0]) == msg(0, 4)  # 4's effects are written (once is enough)
    assert tracker.done(again[0]) == msg(0, 5)
    assert tracker.outstanding == 0


def test_a_lower_offset_delivered_later_holds_the_commit_back() -> None:
    tracker = CommitTracker()
    t5, t6 = tracker.track(msg(0, 5)), tracker.track(msg(0, 6))
    t4 = tracker.track(msg(0, 4))  # a seek back: 4 arrives after 5 and 6
    assert tracker.done(t5) is None
    assert tracker.done(t6) is None
    assert tracker.done(t4) == msg(0, 6)


def test_clear_forgets_what_was_in_hand_and_ignores_its_tokens() -> None:
    # the packager after a rebalance: its streams are dropped, their deliveries go to the new owner
    tracker = CommitTracker()
    stale = tracker.track(msg(0, 1))
    tracker.track(msg(0, 2))
    tracker.clear()
    assert tracker.outstanding == 0
    fresh = tracker.track(msg(0, 3))
    assert fresh != stale
    assert tracker.done(stale) is None
    assert tracker.done(fresh) == msg(0, 3)


@settings(database=None, max_examples=300)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 20)), min_size=1, max_size=30),
    st.randoms(use_true_random=False),
)
def test_a_commit_never_passes_a_delivery_that_is_not_done(
    deliveries: list[tuple[int, int]], rnd: random.Random
) -> None:
    tracker = CommitTracker()
    tokens = [(tracker.track(msg(p, o)), p, o) for p, o in deliveries]
    order = list(tokens)
    rnd.shuffle(order)
    done: set[int] = set()
    for token, partition, _ in order:
        done.add(token)
        committed = tracker.done(token)
        pending = [o for t, p, o in tokens if p == partition and t not in done]
        if committed is not None:
            assert committed.partition == partition
            assert all(o >= committed.offset for o in pending)  # no earlier offset is left behind
    assert tracker.outstanding == 0
