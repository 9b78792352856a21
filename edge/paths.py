"""Viewer paths under ``/live/`` mapped to store keys, with no I/O.

Every component is checked against the key grammar of ``camflow.keys`` before a key is
built, so nothing a viewer sends (``..``, percent-encoding, odd characters) reaches the store.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass

from camflow.keys import (
    init_key,
    is_epoch,
    is_rendition,
    is_stream_name,
    master_playlist_key,
    media_playlist_key,
    part_key,
    segment_key,
)
from edge.errors import BadPath

LIVE_PREFIX = "/live/"
MASTER_NAME = "master.m3u8"
INIT_NAME = "init.mp4"
SEGMENT_RE = re.compile(r"[0-9]{8}\.m4s")
PART_RE = re.compile(r"([0-9]{8})\.([0-9]{3})\.m4s")

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
INIT_TYPE = "video/mp4"
SEGMENT_TYPE = "video/iso.segment"

EXPECTED = (
    "expected /live/{stream}/master.m3u8, /live/{stream}/{rendition}.m3u8 or "
    "/live/{stream}/{epoch}/{rendition}/{init.mp4|NNNNNNNN.m4s|NNNNNNNN.PPP.m4s}"
)


class Kind(enum.Enum):
    MASTER = "master"
    MEDIA = "media"
    INIT = "init"
    SEGMENT = "segment"
    PART = "part"  # a low-latency part of a segment: NNNNNNNN.PPP.m4s


@dataclass(frozen=True)
class LiveObject:
    """One object a viewer may fetch: which stream it belongs to and where it lives in the store."""

    kind: Kind
    stream: str
    key: str
    rendition: str = ""  # of a media playlist, init section, segment or part
    epoch: str = ""  # of an init section, segment or part
    seq: int = -1  # of a segment or part

    @property
    def is_playlist(self) -> bool:
        return self.kind in (Kind.MASTER, Kind.MEDIA)

    @property
    def content_type(self) -> str:
        if self.is_playlist:
            return PLAYLIST_TYPE
        return INIT_TYPE if self.kind is Kind.INIT else SEGMENT_TYPE


def _stream(name: str) -> str:
    if not is_stream_name(name):
        raise BadPath(
            f"stream name {name!r} is not valid: expected 1-64 characters of A-Z a-z 0-9 _ -, "
            "starting with a letter or digit"
        )
    return name


def _rendition(name: str) -> str:
    if not is_rendition(name):
        raise BadPath(
            f"rendition {name!r} is not valid: expected 1-32 characters of a-z 0-9 _ -, "
            "starting with a letter or digit"
        )
    return name


@functools.lru_cache(maxsize=8192)
def parse_live_path(raw_path: str) -> LiveObject:
    """The object named by a raw (still percent-encoded) request path; ``BadPath`` if it names none."""
    if not raw_path.startswith(LIVE_PREFIX):
        raise BadPath(f"path {raw_path!r} is not under {LIVE_PREFIX}: {EXPECTED}")
    parts = raw_path[len(LIVE_PREFIX) :].split("/")
    if len(parts) == 2:
        stream, name = _stream(parts[0]), parts[1]
        if name == MASTER_NAME:
            return LiveObject(Kind.MASTER, stream, master_playlist_key(stream))
        if name.endswith(".m3u8"):
            rendition = _rendition(name.removesuffix(".m3u8"))
            return LiveObject(Kind.MEDIA, stream, media_playlist_key(stream, rendition), rendition)
        raise BadPath(f"playlist name {name!r} is not valid: expected master.m3u8 or {{rendition}}.m3u8")
    if len(parts) == 4:
        stream, epoch, rendition, name = _stream(parts[0]), parts[1], _rendition(parts[2]), parts[3]
        # camflow.keys.EPOCH_RE uses \d, which also matches non-ASCII digits: insist on ASCII here.
        if not (epoch.isascii() and is_epoch(epoch)):
            raise BadPath(
                f"epoch {epoch!r} is not valid: expected YYYYMMDDTHHMMSSmmmZ, e.g. 20261121T101500123Z"
            )
        if name == INIT_NAME:
            return LiveObject(Kind.INIT, stream, init_key(stream, epoch, rendition), rendition, epoch)
        if SEGMENT_RE.fullmatch(name):
            seq = int(name.removesuffix(".m4s"))
            key = segment_key(stream, epoch, rendition, seq)
            return LiveObject(Kind.SEGMENT, stream, key, rendition, epoch, seq)
        part = PART_RE.fullmatch(name)
        if part is not None:
            seq = int(part[1])
            key = part_key(stream, epoch, rendition, seq, int(part[2]))
            return LiveObject(Kind.PART, stream, key, rendition, epoch, seq)
        raise BadPath(
            f"object name {name!r} is not valid: expected init.mp4, NNNNNNNN.m4s or NNNNNNNN.PPP.m4s (a part)"
        )
    raise BadPath(f"path {raw_path!r} has {len(parts)} components after {LIVE_PREFIX}: {EXPECTED}")
