"""The ``_HLS_msn`` / ``_HLS_part`` / ``_HLS_skip`` query of a low-latency playlist request (RFC 8216bis
6.2.5): ``BlockingQuery.parse`` reads it, or raises ``BadQuery`` naming the value and the expected form
(a 400); no I/O. The playlist itself is read by ``camflow.hls.lowlatency`` (``facts``, ``delta``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from camflow.hls.lowlatency import End

ADVANCE_PART_LIMIT = 3  # RFC 8216bis 6.2.5.2: _HLS_part beyond the last part by more is a 400
ADVANCE_MSN_LIMIT = 2  # _HLS_msn beyond the last segment's by more is a 400
MSN_PARAM, PART_PARAM, SKIP_PARAM = "_HLS_msn", "_HLS_part", "_HLS_skip"
SKIP_VALUES = ("YES", "v2")


class BadQuery(ValueError):
    """A ``_HLS_*`` query parameter that is malformed or asks for what the spec refuses (400)."""


@dataclass(frozen=True, slots=True)
class BlockingQuery:
    """A request's ``_HLS_*`` parameters: ``msn`` None means no blocking (a skip request alone)."""

    msn: int | None
    part: int | None
    skip: bool

    @property
    def blocks(self) -> bool:
        return self.msn is not None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> BlockingQuery | None:
        """None when the request has no ``_HLS_*`` parameter; ``BadQuery`` for a malformed one."""
        if MSN_PARAM not in query and PART_PARAM not in query and SKIP_PARAM not in query:
            return None
        msn = _count(query, MSN_PARAM)
        part = _count(query, PART_PARAM)
        if part is not None and msn is None:
            raise BadQuery(f"{PART_PARAM}={query[PART_PARAM]} without {MSN_PARAM}: expected both")
        skip = query.get(SKIP_PARAM)
        if skip is not None and skip not in SKIP_VALUES:
            raise BadQuery(f"{SKIP_PARAM}={skip!r} is not valid: expected YES or v2")
        return cls(msn, part, skip is not None)

    def reached(self, end: End | None) -> bool:
        """True when a playlist ending at ``end`` holds segment ``msn`` whole, or part ``part`` of it
        (or a later segment); False when it lists nothing (``end`` None).

        A complete segment ``msn`` answers any ``part`` of it: ``End`` does not say how many parts it
        has, and a part index past its last is, by RFC 8216bis 6.2.5.2, one for the next segment's
        part 0, which the player then asks for with the playlist it gets (one more request, never a
        400)."""
        assert self.msn is not None
        if end is None:
            return False
        if end.msn != self.msn:
            return end.msn > self.msn
        return end.part == -1 or (self.part is not None and end.part >= self.part)

    def too_far(self, end: End) -> str | None:
        """Why the request asks beyond what the spec lets a server wait for (a 400), or None."""
        assert self.msn is not None
        if self.msn > end.msn + ADVANCE_MSN_LIMIT:
            return (
                f"{MSN_PARAM}={self.msn} is more than {ADVANCE_MSN_LIMIT} beyond the playlist's last "
                f"media sequence number {end.msn}"
            )
        # Only a segment in progress limits the part: once segment ``msn`` is complete (``end.part``
        # -1), a part index past its last part is a request for the next segment's part 0 (RFC 8216bis
        # 6.2.5.2), and ``reached`` answers it with the playlist.
        in_progress = self.msn == end.msn and end.part >= 0
        if self.part is not None and in_progress and self.part > end.part + ADVANCE_PART_LIMIT:
            return (
                f"{PART_PARAM}={self.part} is more than {ADVANCE_PART_LIMIT} beyond the last part "
                f"{end.part} of segment {end.msn}"
            )
        return None


def _count(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        raise BadQuery(f"{name}={value!r} is not valid: expected a decimal integer 0 or more")
    return int(value)
