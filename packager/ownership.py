"""Which streams this packager's region owns (``camflow.regions``): only the owner writes a stream's
playlists, the day summaries of its recording index and retention's edits; every region writes what
is under its own epochs. Without a region (one region, the default), every stream is owned.

The owner is the region of the stream's newest epoch. The packager knows its own newest epoch of
each stream (from the events) and whether that session is live (from its stream states); the
directory entry (``directory/{stream}.json``, replicated from wherever it was written) is read
when either changes and every ``CHECK_SECONDS`` besides, and written (claimed) each time this
region finds it owns the stream, so an owner's entry is never older than that in any replica that
keeps up. A region that is no longer the owner (it came back after its cameras moved to another
region, or a camera published to two regions at once) learns it within ``CHECK_SECONDS`` plus the
replication lag, and leaves the stream alone from then on. A packager that has just started owns
nothing until its replica has settled (``RegionWatch.settled``): a region coming back must not
write from a directory its peers' newer claims have not reached yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from camflow.events import PartReady, SegmentReady, StreamState, StreamStateKind
from camflow.log import get_logger
from camflow.regions import RegionWatch, owns

CHECK_SECONDS = 10.0  # a stream's directory entry is read again this often while its events flow


@dataclass
class _Decision:
    owned: bool
    other: str  # the owner region when not this one
    epoch: str
    live: bool
    at: float


class Ownership:
    def __init__(self, regions: RegionWatch | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.regions = regions
        self._clock = clock
        self._newest: dict[str, str] = {}  # stream -> the newest epoch of its events here
        self._live: dict[str, bool] = {}  # stream -> whether that epoch is live (its stream states)
        self._decided: dict[str, _Decision] = {}
        self.claims = 0  # directory entries written
        self.foreign_flushes = 0  # flushes whose playlists and summaries were left unwritten here
        self.unsettled_flushes = 0  # ... of them while the replica settled after a start
        self._log: Any = get_logger("packager.ownership")

    def saw(self, event: SegmentReady | PartReady | StreamState) -> None:
        newest = self._newest.get(event.stream)
        if newest is None or event.epoch > newest:
            self._newest[event.stream] = event.epoch
            self._live[event.stream] = True  # a new session is live until its state says otherwise
        if isinstance(event, StreamState) and event.epoch == self._newest[event.stream]:
            self._live[event.stream] = event.state is not StreamStateKind.OFFLINE

    def forget(self) -> None:
        """A rebalance: the decisions are made again from the directory on the next flush."""
        self._decided.clear()

    async def owns(self, stream: str) -> bool:
        """Whether this region writes the stream's playlists and summaries now (counted when not)."""
        owned = await self._decide(stream)
        if not owned:
            self.foreign_flushes += 1
        return owned

    async def _decide(self, stream: str) -> bool:
        regions, epoch = self.regions, self._newest.get(stream)
        if regions is None or epoch is None:
            return True
        if not regions.settled():
            self.unsettled_flushes += 1
            return False
        live = self._live.get(stream, True)
        now = self._clock()
        known = self._decided.get(stream)
        same = known is not None and (known.epoch, known.live) == (epoch, live)
        if known is not None and same and now - known.at < CHECK_SECONDS:
            return known.owned
        entry = await regions.entry(stream, fresh=True)
        owned = owns(regions.config.name, epoch, entry)
        if owned:
            await regions.claim(stream, epoch, live)
            self.claims += 1
        if known is None or known.owned != owned:
            if owned:
                self._log.info("stream owned here", stream_id=stream, epoch=epoch, live=live)
            else:
                assert entry is not None
                self._log.warning(
                    "stream owned by another region: its playlists and day summaries left to it",
                    stream_id=stream,
                    epoch=epoch,
                    owner=entry.region,
                    owner_epoch=entry.epoch,
                )
        other = "" if owned or entry is None else entry.region
        self._decided[stream] = _Decision(owned, other, epoch, live, now)
        return owned

    async def elsewhere(self, stream: str) -> bool:
        """Whether the directory names another region for ``stream`` (read now): the stored
        playlists a packager opens the stream from are then that region's."""
        if self.regions is None:
            return False
        entry = await self.regions.entry(stream, fresh=True)
        return entry is not None and entry.region != self.regions.config.name

    def owner(self, stream: str) -> str:
        """The stream's owner region as last decided here ("" without a region or a decision)."""
        known = self._decided.get(stream)
        if self.regions is None or known is None:
            return ""
        return self.regions.config.name if known.owned else known.other

    async def sweeps(self, stream: str) -> bool:
        """Whether retention sweeps ``stream`` here: owned, or (no event of it here) no other region
        is named in its entry."""
        regions = self.regions
        if regions is None:
            return True
        if stream in self._newest:
            return await self.owns(stream)
        entry = await regions.entry(stream)
        return entry is None or entry.region == regions.config.name
