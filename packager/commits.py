"""Commit after effects: a message is committed only once it, and every message before it on
its partition, has had its effects written.

A segment held in the reorder buffer, or an ``offline`` waiting for the segments before
it, is not done when it arrives; committing its offset then would lose it on a crash.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from camflow.bus import Message


@dataclass
class _Slot:
    message: Message
    done: bool = False


class CommitTracker:
    def __init__(self) -> None:
        self._next = 0
        self._slots: dict[int, _Slot] = {}
        self._partitions: dict[tuple[str, int], deque[int]] = {}

    def track(self, message: Message) -> int:
        """A token for ``message``, to hand to ``done`` once its effects are written."""
        token = self._next
        self._next += 1
        self._slots[token] = _Slot(message)
        self._partitions.setdefault((message.topic, message.partition), deque()).append(token)
        return token

    @property
    def outstanding(self) -> int:
        return len(self._slots)

    def done(self, token: int) -> Message | None:
        """Mark ``token`` done; the message to commit now (the last of a done prefix), if any."""
        slot = self._slots.get(token)
        if slot is None:
            return None
        slot.done = True
        queue = self._partitions[(slot.message.topic, slot.message.partition)]
        last: Message | None = None
        while queue and self._slots[queue[0]].done:
            last = self._slots.pop(queue.popleft()).message
        return last
