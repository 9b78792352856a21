"""Object keys and names: deterministic, so a retried write lands on the same key.

Layout in the store::

    streams/{stream}/{epoch}/{rendition}/init.mp4
    streams/{stream}/{epoch}/{rendition}/{seq:08d}.m4s
    streams/{stream}/{epoch}/{rendition}/{seq:08d}.{part:03d}.m4s   a low-latency part of that segment
    streams/{stream}/{rendition}.m3u8          live media playlist of one rendition
    streams/{stream}/master.m3u8               live master playlist
    streams/{stream}/dvr/{rendition}.m3u8      live playlist with the longest DVR window
    streams/{stream}/recordings/{bucket}/{epoch}.json  recording index chunk (camflow.recordings)
    streams/{stream}/recording-days/{YYYYMMDD}.json  day summary of the index (camflow.recording_days)
    streams/{stream}/recording-days/v1.json   marker: every day has its summary
    streams/{stream}/{epoch}/thumbs/{seq:08d}.jpg  thumbnail of one segment
    streams/{stream}/thumb.jpg                 thumbnail of the latest segment transcoded
    streams/{stream}/events/{YYYYMMDD}/{id}.json  an event on the timeline (camflow.stream_events)
    directory/{stream}.json                    where the stream is live: its owner region (camflow.regions)
    regions/{region}/heartbeat.json            a region's clock, for replication lag (camflow.regions)

The objects under an epoch (``ages_out``) are the recording's media: an S3 store tags them so the
bucket's lifecycle backstop may expire them by age, unless retention locked them for an event.
"""

from __future__ import annotations

import re
import time

from camflow.errors import ConfigError

STREAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
EPOCH_RE = re.compile(r"^[0-9]{8}T[0-9]{9}Z$")
RENDITION_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
KEY_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._/-]*$")


def is_stream_name(name: str) -> bool:
    return STREAM_RE.fullmatch(name) is not None


def check_stream_name(name: str) -> str:
    if not is_stream_name(name):
        raise ConfigError(
            f"stream name {name!r} is not valid: expected 1-64 characters of A-Z a-z 0-9 _ -, "
            "starting with a letter or digit"
        )
    return name


def is_epoch(name: str) -> bool:
    return EPOCH_RE.fullmatch(name) is not None


RESERVED_RENDITIONS = frozenset({"master"})  # streams/{stream}/master.m3u8 is the master playlist


def is_rendition(name: str) -> bool:
    return RENDITION_RE.fullmatch(name) is not None and name not in RESERVED_RENDITIONS


def is_safe_key(key: str) -> bool:
    """True for a relative key with no empty, '.' or '..' component."""
    if KEY_RE.fullmatch(key) is None:
        return False
    return all(part not in ("", ".", "..") for part in key.split("/"))


def new_epoch(now: float | None = None) -> str:
    """A sortable name for one publish session, e.g. ``20261121T101500123Z`` (UTC, ms)."""
    t = time.time() if now is None else now
    total_ms = int(t * 1000)
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(total_ms // 1000)) + f"{total_ms % 1000:03d}Z"


_EPOCH_OBJECT_RE = re.compile(r"^streams/[^/]+/[0-9]{8}T[0-9]{9}Z/")


def ages_out(key: str) -> bool:
    """True for a recording's media (an object under an epoch: segments, parts, init sections,
    thumbnails), which a lifecycle rule may expire by age; False for index, events, playlists."""
    return _EPOCH_OBJECT_RE.match(key) is not None


def stream_prefix(stream: str) -> str:
    return f"streams/{stream}/"


def init_key(stream: str, epoch: str, rendition: str) -> str:
    return f"streams/{stream}/{epoch}/{rendition}/init.mp4"


def segment_key(stream: str, epoch: str, rendition: str, seq: int) -> str:
    return f"streams/{stream}/{epoch}/{rendition}/{seq:08d}.m4s"


MAX_PARTS = 1000  # parts per segment a part key can name (part_key's three digits)


def part_key(stream: str, epoch: str, rendition: str, seq: int, part: int) -> str:
    """A low-latency part of segment ``seq`` (``part`` from 0), beside the segment."""
    if not 0 <= part < MAX_PARTS:
        raise ValueError(f"part index {part}: expected 0 to {MAX_PARTS - 1}")
    return f"streams/{stream}/{epoch}/{rendition}/{seq:08d}.{part:03d}.m4s"


def thumbnail_key(stream: str, epoch: str, seq: int) -> str:
    return f"streams/{stream}/{epoch}/thumbs/{seq:08d}.jpg"


def latest_thumbnail_key(stream: str) -> str:
    return f"streams/{stream}/thumb.jpg"


def media_playlist_key(stream: str, rendition: str) -> str:
    return f"streams/{stream}/{rendition}.m3u8"


def master_playlist_key(stream: str) -> str:
    return f"streams/{stream}/master.m3u8"


def dvr_playlist_key(stream: str, rendition: str) -> str:
    return f"streams/{stream}/dvr/{rendition}.m3u8"


def recordings_prefix(stream: str) -> str:
    return f"streams/{stream}/recordings/"


def recording_index_key(stream: str, bucket: str, epoch: str) -> str:
    """``bucket`` as ``camflow.recordings.format_bucket`` writes it (YYYYMMDDTHHMMSSZ)."""
    return f"streams/{stream}/recordings/{bucket}/{epoch}.json"


def recording_days_prefix(stream: str) -> str:
    return f"streams/{stream}/recording-days/"


def recording_day_key(stream: str, day: str) -> str:
    """``day`` as ``camflow.recording_days.format_day`` writes it (YYYYMMDD)."""
    return f"streams/{stream}/recording-days/{day}.json"


def recording_days_marker_key(stream: str) -> str:
    """Written once every day of the stream's index has its summary (``camflow.recording_days``)."""
    return f"streams/{stream}/recording-days/v1.json"


REGION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")


def is_region(name: str) -> bool:
    return REGION_RE.fullmatch(name) is not None


def check_region(name: str) -> str:
    if not is_region(name):
        raise ConfigError(
            f"region name {name!r} is not valid: expected 1-32 characters of A-Z a-z 0-9 -, "
            "starting with a letter or digit"
        )
    return name


def directory_key(stream: str) -> str:
    """Where ``stream`` is live: the region that owns it (``camflow.regions``)."""
    return f"directory/{stream}.json"


REGIONS_PREFIX = "regions/"


def heartbeat_key(region: str) -> str:
    return f"{REGIONS_PREFIX}{region}/heartbeat.json"
