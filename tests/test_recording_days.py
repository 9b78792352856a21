"""camflow.recording_days: day summaries round-trip, refuse what they did not write, and merge into the
same covered ranges as the chunks they summarise."""

from __future__ import annotations

import random

import pytest

from camflow.recording_days import (
    DAY_SECONDS,
    DaySummary,
    chunk_spans,
    day_of,
    days_between,
    format_day,
    merge_spans,
    parse_day,
    parse_day_key,
)
from camflow.recordings import (
    BUCKET_SECONDS,
    IndexChunk,
    RecordedRendition,
    RecordedSegment,
    RecordingIndexError,
    bucket_of,
    covered,
)

EPOCH_A = "20261121T101500000Z"
EPOCH_B = "20261121T230000000Z"
DAY = 1_795_219_200  # 2026-11-21T00:00:00Z
HD = RecordedRendition("720p", 1280, 720, "avc1.64001f", 2_800_000, 30.0)


def chunk(epoch: str, start: float, seqs: list[int]) -> IndexChunk:
    c = IndexChunk("cam1", epoch, bucket_of(start))
    for n in seqs:
        c.add(RecordedSegment(n, start + 2.0 * (n - seqs[0]), 2.0, ("720p",)), [HD])
    return c


def test_summary_round_trip_and_set_chunk() -> None:
    summary = DaySummary("cam1", DAY)
    a = chunk(EPOCH_A, DAY + 36_900.5, [0, 1, 2, 4, 5])  # seq 3 missing: two spans
    assert summary.set_chunk(a)
    assert not summary.set_chunk(a)  # the same chunk again: nothing changed
    assert summary.chunks[(EPOCH_A, a.bucket)] == (
        (DAY + 36_900.5, DAY + 36_906.5, 3),
        (DAY + 36_908.5, DAY + 36_912.5, 2),
    )
    back = DaySummary.parse(summary.render())
    assert back == summary
    assert back.key == "streams/cam1/recording-days/20261121.json"
    assert parse_day_key("cam1", back.key) == DAY
    assert parse_day_key("cam1", "streams/cam1/recording-days/v1.json") is None
    a.remove_before(DAY + 37_000.0)
    assert summary.set_chunk(a) and summary.chunks == {}  # an emptied chunk is forgotten
    with pytest.raises(ValueError, match="is not of day"):
        summary.set_chunk(chunk(EPOCH_A, DAY + DAY_SECONDS + 5, [0]))


def test_refs_name_the_chunks_of_a_window() -> None:
    summary = DaySummary("cam1", DAY)
    first = chunk(EPOCH_A, DAY + 0.5, list(range(300)))
    second = chunk(EPOCH_A, DAY + 600.5, list(range(300, 600)))
    summary.set_chunk(first)
    summary.set_chunk(second)
    assert summary.refs(DAY + 100, DAY + 200) == [(EPOCH_A, DAY)]
    assert summary.refs(DAY + 599, DAY + 601) == [(EPOCH_A, DAY), (EPOCH_A, DAY + 600)]
    assert summary.refs(DAY + 2000, DAY + 3000) == []


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"v": 2}',
        b"[1]",
        b'{"v": 1, "stream": "cam1", "day": "2026-11-21", "chunks": {}}',
        b'{"v": 1, "stream": "../x", "day": "20261121", "chunks": {}}',
        b'{"v": 1, "stream": "cam1", "day": "20261121"}',
        b'{"v": 1, "stream": "cam1", "day": "20261121", "chunks": {"bad": {"1795219200": [[1, 2, 1]]}}}',
        b'{"v": 1, "stream": "cam1", "day": "20261121",'
        b' "chunks": {"20261121T101500000Z": {"12": [[1, 2, 1]]}}}',
        b'{"v": 1, "stream": "cam1", "day": "20261121",'
        b' "chunks": {"20261121T101500000Z": {"1795305600": [[1, 2, 1]]}}}',  # the next day's bucket
        b'{"v": 1, "stream": "cam1", "day": "20261121",'
        b' "chunks": {"20261121T101500000Z": {"1795219200": [[2, 1, 1]]}}}',  # ends before it starts
        b'{"v": 1, "stream": "cam1", "day": "20261121",'
        b' "chunks": {"20261121T101500000Z": {"1795219200": [[1, 2]]}}}',
        b'{"v": 1, "stream": "cam1", "day": "20261121",'
        b' "chunks": {"20261121T101500000Z": {"1795219200": [[1, 2, 0]]}}}',
    ],
)
def test_bad_summaries_are_refused(data: bytes) -> None:
    with pytest.raises(RecordingIndexError):
        DaySummary.parse(data)


def test_days() -> None:
    assert format_day(DAY) == "20261121" and parse_day("20261121") == DAY
    assert day_of(DAY + 86_399.9) == DAY
    with pytest.raises(RecordingIndexError, match="YYYYMMDD"):
        parse_day("2026-11-21")
    # a segment filed in the last bucket of the day before can reach into a window at midnight
    assert list(days_between(DAY + 10, DAY + 20)) == [DAY - DAY_SECONDS, DAY]
    assert list(days_between(DAY + 700, DAY + 2 * DAY_SECONDS + 5)) == [
        DAY,
        DAY + DAY_SECONDS,
        DAY + 2 * DAY_SECONDS,
    ]


def test_merged_spans_are_the_covered_ranges_of_the_chunks() -> None:
    """Random recordings (gaps, missing segments, two epochs overlapping in time, midnight crossed):
    merging every chunk's spans gives what ``covered`` gives from all the segments."""
    rng = random.Random(16)
    for _ in range(30):
        chunks: dict[tuple[str, int], IndexChunk] = {}
        for epoch, t in ((EPOCH_A, DAY - 1500.25), (EPOCH_B, DAY - 900.0)):
            for seq in range(rng.randrange(50, 1500)):
                if rng.random() < 0.97:
                    c = chunks.setdefault((epoch, bucket_of(t)), IndexChunk("cam1", epoch, bucket_of(t)))
                    c.add(RecordedSegment(seq, t, 2.0, ("720p",)), [HD])
                t += 2.0 + (rng.choice([0.0, 0.0, 0.0, 0.5, 5.0]) if rng.random() < 0.05 else 0.0)
        spans = [(c.epoch, s) for c in chunks.values() for s in chunk_spans(c)]
        want = [(r.epoch, round(r.start, 3), round(r.end, 3), r.segments) for r in covered(chunks.values())]
        got = [(r.epoch, r.start, r.end, r.segments) for r in merge_spans(spans)]
        assert got == want
        assert all(c.bucket % BUCKET_SECONDS == 0 for c in chunks.values())
