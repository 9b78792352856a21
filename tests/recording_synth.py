"""A long recording synthesised straight into the recording index (no media), through the packager's
index writer (``packager.index.IndexWriter``): for ``bench/bench_recordings.py`` and the tests.

One camera, 2 s segments with three renditions; a new epoch (publish session) every
``epoch_seconds`` after a 30 s gap, and one segment missing from the recording every
``missing_every`` segments, so the listing has gaps of both kinds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from camflow.keys import new_epoch, recordings_prefix
from camflow.recordings import IndexChunk, RecordedRendition, RecordedSegment, parse_chunk_key
from camflow.store import Store
from packager.index import IndexWriter
from packager.output import IndexAppend

LADDER = (
    RecordedRendition("720p", 1280, 720, "avc1.64001f", 2_800_000, 30.0),
    RecordedRendition("360p", 640, 360, "avc1.4d401e", 800_000, 30.0),
    RecordedRendition("audio", 0, 0, "mp4a.40.2", 128_000),
)
NAMES = tuple(r.name for r in LADDER)
START = 1_793_491_200.25  # 2026-11-01T00:00:00.250Z
EPOCH_GAP = 30.0


@dataclass
class Synthesised:
    stream: str
    start: float
    end: float
    segments: int = 0
    epochs: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time the synthesis took


async def synthesise(
    store: Store,
    stream: str,
    days: float,
    *,
    start: float = START,
    segment: float = 2.0,
    epoch_seconds: float = 7 * 86400.0,
    missing_every: int = 5000,
) -> Synthesised:
    """``days`` of recording from ``start``, written an hour (1800 segments) per ``append``."""
    began = time.perf_counter()
    writer = IndexWriter(store)
    await writer.ensure(stream)  # the marker, before the first append (which would start it in a task)
    end = start + days * 86400
    out = Synthesised(stream, start, end)
    t, seq, epoch_start = start, 0, start
    epoch = new_epoch(t)
    out.epochs.append(epoch)
    while t < end:
        hour_end = min(end, (t // 3600 + 1) * 3600)
        appends: list[IndexAppend] = []
        while t < hour_end:
            if t - epoch_start >= epoch_seconds:
                t += EPOCH_GAP
                epoch, seq, epoch_start = new_epoch(t), 0, t
                out.epochs.append(epoch)
                continue
            if seq % missing_every == missing_every - 1:  # a segment missing from the recording
                seq, t = seq + 1, t + segment
                continue
            appends.append(IndexAppend(epoch, RecordedSegment(seq, t, segment, NAMES), LADDER))
            seq, t = seq + 1, t + segment
        await writer.append(stream, appends)
        out.segments += len(appends)
    out.seconds = time.perf_counter() - began
    return out


async def every_chunk(store: Store, stream: str) -> list[IndexChunk]:
    """Every index chunk of the stream, read the slow way (the ground truth)."""
    chunks = []
    for key in await store.list(recordings_prefix(stream)):
        if parse_chunk_key(stream, key) is not None:
            chunks.append(IndexChunk.parse(await store.get(key)))
    return chunks
