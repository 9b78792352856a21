"""The edge application's typed state, shared by its route modules."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from camflow.regions import RegionWatch
from camflow.store import Store
from edge.auth import Authorizer, ViewerCounter
from edge.blocking import LiveEnds
from edge.cache import Fetch, ObjectCache
from edge.catalog import StreamCatalog
from edge.health import HealthSource
from edge.policy import PlaylistPolicy, TokenCheck


@dataclass
class EdgeCounters:
    """Requests refused or failed, by reason (also logged, one event each)."""

    bad_path: int = 0
    token_missing: int = 0
    token_refused: int = 0
    not_found: int = 0
    bad_query: int = 0  # malformed or too far _HLS_* parameters (400)
    store_failed: int = 0
    region_redirects: int = 0  # live playlists of a stream live in another region: 307 there (not an error)


@dataclass(frozen=True)
class EdgeState:
    store: Store
    auth: Authorizer
    cache: ObjectCache
    fetch: Fetch
    ll: LiveEnds  # where live playlists end, and the requests waiting for them (low-latency HLS)
    policy: PlaylistPolicy
    token_check: TokenCheck
    viewers: ViewerCounter
    catalog: StreamCatalog
    health: HealthSource
    health_interval: float
    static_dir: Path
    counters: EdgeCounters
    log: Any
    regions: RegionWatch | None = None  # with --region: where streams are live (live playlists redirect)


EDGE = web.AppKey("edge", EdgeState)
CLOSING = web.AppKey("edge-closing", asyncio.Event)  # set on shutdown: long responses (SSE) end
