"""Commit after effects: a delivery's offset is committed only once it, and every delivery
before it on its partition, has had its effects written.

A consumer may have several deliveries of one partition in hand at once: the transcoder
works on a few segments in parallel (offset 7 may finish before offset 6), the packager
holds a segment in its reorder buffer or an ``offline`` until the segments before it are
in. Committing an offset while an earlier one is still in hand would lose that one on a
crash. ``CommitTracker`` answers, each time a delivery is done, which message (if any) may
be committed now: the highest one of its partition below which every delivery is done.

Deliveries are ordered by offset within their ``(topic, partition)``, and by arrival for
equal offsets (a message delivered again after a rebalance is a delivery of its own: both
must be done before anything past them is committed).

A consumer whose partitions were reassigned (``Rebalancing.generation`` moved on) calls
``clear``: what it held is delivered again to the partition's new owner, and a token handed
out before then is ignored by ``done``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

from camflow.bus.base import Consumer, Message


@dataclass
class _Delivery:
    message: Message
    done: bool = False


class CommitTracker:
    def __init__(self) -> None:
        self._next = 0  # never reset, so a token from before ``clear`` cannot name a later delivery
        self._deliveries: dict[int, _Delivery] = {}
        # (topic, partition) -> heap of (offset, token) in hand
        self._partitions: dict[tuple[str, int], list[tuple[int, int]]] = {}

    def track(self, message: Message) -> int:
        """A token for this delivery of ``message``, to hand to ``done`` once its effects are written."""
        token = self._next
        self._next += 1
        self._deliveries[token] = _Delivery(message)
        heap = self._partitions.setdefault((message.topic, message.partition), [])
        heapq.heappush(heap, (message.offset, token))
        return token

    @property
    def outstanding(self) -> int:
        """Deliveries tracked and not yet committable (not done, or behind one that is not)."""
        return len(self._deliveries)

    def done(self, token: int) -> Message | None:
        """Mark ``token`` done; the message to commit now (the last of a done prefix), if any.

        A token already done and committable, or from before ``clear``, is ignored (None).
        """
        delivery = self._deliveries.get(token)
        if delivery is None:
            return None
        delivery.done = True
        partition = (delivery.message.topic, delivery.message.partition)
        heap = self._partitions[partition]
        last: Message | None = None
        while heap and self._deliveries[heap[0][1]].done:
            _, first = heapq.heappop(heap)
            last = self._deliveries.pop(first).message
        if not heap:
            del self._partitions[partition]
        return last

    def clear(self) -> None:
        """Forget every delivery in hand (after a rebalance: the new owner gets them again)."""
        self._deliveries.clear()
        self._partitions.clear()


async def commit_or_log(consumer: Consumer, message: Message, log: Any) -> bool:
    """Commit ``message``; False, logged as ``commit_failed``, when the consumer refuses (e.g. Kafka:
    the group rebalanced meanwhile). Not fatal: the work is written, and what is not committed is
    delivered again to whoever owns the partition now, where repeating it is a no-op (idempotent keys)."""
    try:
        await consumer.commit(message)
    except Exception as exc:
        log.warning("commit_failed", partition=message.partition, offset=message.offset, error=repr(exc))
        return False
    return True
