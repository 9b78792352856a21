"""Fuzz targets of what services read back from the store: recording index chunks, their day summaries and
fMP4 segments."""

from __future__ import annotations

import contextlib
import functools
import io
from fractions import Fraction

import av

from camflow.errors import MediaFormatError
from camflow.mp4 import MOVFLAGS, base_media_decode_times, placed, shift_base_media_decode_time, split_init
from camflow.recording_days import DaySummary, merge_spans
from camflow.recordings import IndexChunk, RecordedRendition, RecordedSegment, RecordingIndexError, select
from tests.fuzz.harness import target


def _index_seeds() -> list[bytes]:
    chunk = IndexChunk("cam1", "20261121T101500123Z", 1_795_000_000 - 1_795_000_000 % 3600)
    renditions = (
        RecordedRendition("720p", 1280, 720, "avc1.64001f", 2_500_000, 30.0),
        RecordedRendition("audio", 0, 0, "mp4a.40.2", 64_000),
    )
    for seq in range(4):
        chunk.add(RecordedSegment(seq, chunk.bucket + 2.0 * seq, 2.0, ("720p", "audio")), renditions)
    return [chunk.render()]


@target(
    "recording-index",
    allowed=(RecordingIndexError,),
    seeds=_index_seeds,
    dictionary=(b"Infinity", b"NaN", b"-1", b"1e999", b"null", b"[]", b"{}", b'"v"', b'"segments"'),
)
def recording_index(data: bytes) -> None:
    """A recording index chunk from the store (``IndexChunk.parse``, what the edge's VOD reads for
    every recording request) and the segment selection over it. Only RecordingIndexError may come out."""
    chunk = IndexChunk.parse(data)
    select([chunk], chunk.bucket, chunk.bucket + 3600.0)
    IndexChunk.parse(chunk.render())


def _day_seeds() -> list[bytes]:
    chunk = IndexChunk.parse(_index_seeds()[0])
    summary = DaySummary("cam1", chunk.bucket - chunk.bucket % 86400)
    summary.set_chunk(chunk)
    chunk.segments.pop(2)  # two spans
    summary.set_chunk(
        IndexChunk("cam1", "20261121T101500123Z", chunk.bucket + 600, chunk.renditions, chunk.segments)
    )
    return [summary.render()]


@target(
    "recording-days",
    allowed=(RecordingIndexError,),
    seeds=_day_seeds,
    dictionary=(b"Infinity", b"NaN", b"-1", b"1e999", b"null", b"[]", b"{}", b'"v"', b'"chunks"', b'"day"'),
)
def recording_days(data: bytes) -> None:
    """A day summary of the recording index from the store (``DaySummary.parse``, what the edge reads for
    every listing and VOD request), the chunk refs of a window and the merged ranges over it. Only
    RecordingIndexError may come out."""
    summary = DaySummary.parse(data)
    summary.refs(summary.day, summary.day + 3600.0)
    merge_spans((epoch, span) for (epoch, _), spans in summary.chunks.items() for span in spans)
    assert DaySummary.parse(summary.render()) == summary


@functools.cache
def _fragmented() -> bytes:
    """Three frames of 64x64 H.264 as the fragmented MP4 the transcoder writes (``MOVFLAGS``)."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4", options={"movflags": MOVFLAGS}) as container:
        stream = container.add_stream("libx264", rate=30, options={"g": "2", "bframes": "0"})
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 30)
        for i in range(3):
            frame = av.VideoFrame(64, 64, "yuv420p")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


@target("mp4", allowed=(MediaFormatError,), seeds=lambda: [_fragmented()], max_len=8192)
def mp4(data: bytes) -> None:
    """A fragmented MP4 as the packager places it (``split_init``, ``base_media_decode_times``,
    ``shift_base_media_decode_time``, ``placed``). Only MediaFormatError may come out."""
    with contextlib.suppress(MediaFormatError):
        base_media_decode_times(data)
    with contextlib.suppress(MediaFormatError):
        shift_base_media_decode_time(data, 90_000)
    with contextlib.suppress(MediaFormatError):
        split_init(data)
    placed(data, {1: 0, 2: 1_000})
