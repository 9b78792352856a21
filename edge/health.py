"""Where the health samples of ``/api/streams/{stream}/health`` come from, behind one small interface.

Today ``CatalogHealth`` derives a sample from what the edge itself knows (the stream's playlists
and its viewers here). A source fed by the ``camflow.health`` topic can replace it later without
touching the HTTP side: anything with ``async sample(stream) -> dict | None`` will do.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from edge.auth import ViewerCounter
from edge.catalog import StreamCatalog


class HealthSource(Protocol):
    async def sample(self, stream: str) -> dict[str, Any] | None:
        """The stream's latest health sample as JSON-ready data, or None when the stream is unknown."""
        ...


class CatalogHealth:
    def __init__(self, catalog: StreamCatalog, viewers: ViewerCounter) -> None:
        self._catalog = catalog
        self._viewers = viewers

    async def sample(self, stream: str) -> dict[str, Any] | None:
        summary = await self._catalog.summary(stream)
        if summary is None:
            return None
        return {
            **summary.as_json(),
            "viewers": self._viewers.count(stream),
            "time": round(time.time(), 3),
            "source": "edge",
        }
