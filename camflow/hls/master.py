"""The master playlist: variants and audio renditions, written and read back.

``write_master`` is the only place camflow writes master playlist text: the packager's live
master (``render_master``: H.264 first, highest bandwidth first) and the edge's VOD master of a
recording (in its own order). ``parse_master`` / ``parse_master_audio`` read one back through
the ``m3u8`` package (the packager restoring its state after a restart).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import m3u8

from camflow.hls.errors import PlaylistError
from camflow.hls.tags import (
    EXT_X_INDEPENDENT_SEGMENTS,
    EXT_X_MEDIA,
    EXT_X_STREAM_INF,
    EXT_X_VERSION,
    EXTM3U,
    VERSION,
    quotable,
)


@dataclass(frozen=True)
class Variant:
    """One video rendition as the master playlist names it (bandwidths in bits/s).

    ``average_bandwidth`` None leaves AVERAGE-BANDWIDTH out; ``frame_rate`` 0 means unknown
    (no FRAME-RATE attribute); ``audio`` names the EXT-X-MEDIA group the variant plays with,
    whose codec must then be in ``codecs``.
    """

    uri: str
    bandwidth: int
    average_bandwidth: int | None
    codecs: str
    width: int
    height: int
    frame_rate: float = 0.0
    audio: str | None = None


@dataclass(frozen=True)
class AudioRendition:
    """An audio rendition (EXT-X-MEDIA:TYPE=AUDIO) of group ``group``: its own media playlist
    at ``uri`` (aligned with the video ones), and variants that name ``group``.
    ``channels`` 0 means unknown (no CHANNELS attribute).
    """

    group: str
    name: str
    uri: str
    language: str = ""
    default: bool = True
    channels: int = 0


def _media_line(a: AudioRendition) -> str:
    if not quotable(a.group, a.name, a.uri, a.language):
        raise PlaylistError(f"audio rendition {a.name!r} has a quote or newline in an attribute")
    media = [f'TYPE=AUDIO,GROUP-ID="{a.group}",NAME="{a.name}"']
    if a.language:
        media.append(f'LANGUAGE="{a.language}"')
    media.append(f"DEFAULT={'YES' if a.default else 'NO'},AUTOSELECT=YES")
    if a.channels > 0:
        media.append(f'CHANNELS="{a.channels}"')
    media.append(f'URI="{a.uri}"')
    return f"{EXT_X_MEDIA}:" + ",".join(media)


def _stream_inf_line(v: Variant, groups: set[str]) -> str:
    if v.bandwidth <= 0 or not quotable(v.codecs):
        raise PlaylistError(f"variant {v.uri!r} has bandwidth {v.bandwidth} or codecs {v.codecs!r}")
    if v.audio is not None and v.audio not in groups:
        raise PlaylistError(f"variant {v.uri!r} names audio group {v.audio!r}, which has no EXT-X-MEDIA")
    attrs = f"BANDWIDTH={v.bandwidth},"
    if v.average_bandwidth is not None:
        attrs += f"AVERAGE-BANDWIDTH={v.average_bandwidth},"
    attrs += f'CODECS="{v.codecs}",RESOLUTION={v.width}x{v.height}'
    if v.frame_rate > 0:
        attrs += f",FRAME-RATE={v.frame_rate:.3f}"
    if v.audio is not None:
        attrs += f',AUDIO="{v.audio}"'
    return f"{EXT_X_STREAM_INF}:{attrs}"


def write_master(variants: Iterable[Variant], audio: Iterable[AudioRendition] = ()) -> str:
    """The master playlist in the order given: EXT-X-MEDIA per audio rendition, then the variants."""
    lines = [EXTM3U, f"{EXT_X_VERSION}:{VERSION}", EXT_X_INDEPENDENT_SEGMENTS]
    groups: set[str] = set()
    for a in audio:
        lines.append(_media_line(a))
        groups.add(a.group)
    for v in variants:
        lines += [_stream_inf_line(v, groups), v.uri]
    return "\n".join(lines) + "\n"


def render_master(variants: Iterable[Variant], audio: Iterable[AudioRendition] = ()) -> str:
    """The live master: audio by group (default first), then variants H.264 first, highest bandwidth first.

    H.264 first: the first variant is where players start, and every browser plays avc1 (an
    H.265 camera's original, e.g. source-hevc, comes after the H.264 ladder).
    """
    return write_master(
        sorted(variants, key=lambda v: (not v.codecs.startswith("avc1"), -v.bandwidth, v.uri)),
        sorted(audio, key=lambda a: (a.group, not a.default, a.name)),
    )


def _loads(text: str) -> Any:
    try:
        return m3u8.loads(text)
    except Exception as exc:  # m3u8 raises what its parsing meets (ValueError, IndexError, ...)
        raise PlaylistError(f"text is not an HLS playlist: {exc!r}") from exc


def parse_master(text: str) -> dict[str, Variant]:
    """The variants of a master ``render_master`` wrote, by rendition name (URI ``{name}.m3u8``)."""
    out: dict[str, Variant] = {}
    for p in _loads(text).playlists:
        info = p.stream_info
        if None in (info.bandwidth, info.average_bandwidth, info.codecs) or not info.resolution:
            raise PlaylistError(f"stored master has a variant {p.uri!r} this packager did not write")
        width, height = info.resolution
        variant = Variant(
            p.uri,
            int(info.bandwidth),
            int(info.average_bandwidth),
            str(info.codecs),
            int(width),
            int(height),
            float(info.frame_rate or 0.0),
            None if info.audio is None else str(info.audio),
        )
        out[p.uri.removesuffix(".m3u8")] = variant
    return out


def parse_master_audio(text: str) -> dict[str, AudioRendition]:
    """The audio renditions (EXT-X-MEDIA:TYPE=AUDIO) of a master ``render_master`` wrote, by name."""
    out: dict[str, AudioRendition] = {}
    for m in _loads(text).media:
        if m.type != "AUDIO":
            continue
        if m.group_id is None or m.name is None or m.uri is None:
            raise PlaylistError(f"stored master has an audio rendition {m.name!r} it did not write")
        try:
            channels = int(str(m.channels or "0").partition("/")[0])
        except ValueError as exc:
            raise PlaylistError(f"stored master has audio CHANNELS {m.channels!r} it did not write") from exc
        rendition = AudioRendition(
            str(m.group_id), str(m.name), str(m.uri), str(m.language or ""), m.default == "YES", channels
        )
        out[rendition.uri.removesuffix(".m3u8")] = rendition
    return out
