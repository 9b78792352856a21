"""The packager with a part's renditions in more than one part-ready: the part worker announces a
part's copies and audio first and its encoded rungs later (``transcode.parts``). Each rendition's
parts are listed in order as they come; the master names a rendition once its own parts complete
its first segment; a rung whose parts start late, or never come, enters from its segment-ready."""

from __future__ import annotations

from collections.abc import Sequence

import m3u8

from camflow.events import PartReady, RenditionRef, SegmentReady
from camflow.hls.rules import check_master
from camflow.keys import init_key, master_playlist_key, media_playlist_key, part_key, segment_key
from tests.test_packager import EPOCH_A, LADDER, STREAM, T0
from tests.test_packager_lowlatency import PARTS, TICKS, Feed, checked, in_progress, packager

COPIES = ("720p", "audio")  # the part worker's first part-ready of a part
RUNGS = ("360p",)  # its second, once encoded
AUDIO = ("audio", 0, 0, 128_000, "mp4a.40.2")


def _ref(name: str, key: str, epoch: str) -> RenditionRef:
    _, w, h, bw, codecs = next(r for r in (*LADDER, AUDIO) if r[0] == name)
    audio = name == "audio"
    return RenditionRef(
        name,
        w,
        h,
        bw,
        codecs,
        init_key(STREAM, epoch, name),
        key,
        99,
        kind="audio" if audio else "video",
        channels=2 if audio else 0,
        sample_rate=48_000 if audio else 0,
    )


def part(seq: int, index: int, names: Sequence[str], epoch: str = EPOCH_A) -> PartReady:
    refs = tuple(_ref(n, part_key(STREAM, epoch, n, seq, index), epoch) for n in names)
    start = seq * 180_000 + index * TICKS
    return PartReady(
        STREAM, epoch, seq, start, TICKS, 90_000, index, index == 0, T0 + 2.0 * seq + 0.2 * index, refs
    )


def ready(seq: int, names: Sequence[str] = ("720p", "360p", "audio"), epoch: str = EPOCH_A) -> SegmentReady:
    refs = tuple(_ref(n, segment_key(STREAM, epoch, n, seq), epoch) for n in names)
    return SegmentReady(STREAM, epoch, seq, seq * 180_000, 180_000, 90_000, T0 + 2.0 * seq, refs)


def master(f: Feed) -> m3u8.M3U8:
    text = f.texts[master_playlist_key(STREAM)]
    assert check_master(text) == []
    return m3u8.loads(text)


def variants(f: Feed) -> dict[str, str | None]:
    """Each variant's URI and its audio group."""
    return {p.uri: p.stream_info.audio for p in master(f).playlists}


def parts_of(text: str) -> list[str]:
    return [p.uri for s in m3u8.loads(text).segments for p in s.parts]


def test_a_rung_whose_parts_come_after_the_copies_enters_the_master_with_its_own_first_segment() -> None:
    f = Feed(packager())
    for i in range(PARTS):
        f.send(part(0, i, COPIES), part(0, i, RUNGS))
    assert master_playlist_key(STREAM) not in f.texts  # no complete segment yet
    f.send(part(1, 0, COPIES))  # the copies' segment 0 is complete; the rung's part is still encoding
    assert variants(f) == {"720p.m3u8": "aud"}  # the rung's playlist is not written yet: not named
    assert [m.uri for m in master(f).media] == ["audio.m3u8"]
    assert media_playlist_key(STREAM, "360p") not in f.texts
    assert in_progress(checked(f.live("720p"))) == [f"{EPOCH_A}/720p/00000001.000.m4s"]
    f.send(part(1, 0, RUNGS))
    assert variants(f) == {"720p.m3u8": "aud", "360p.m3u8": "aud"}
    codecs = {p.uri: p.stream_info.codecs for p in master(f).playlists}
    assert codecs["360p.m3u8"] == "avc1.42c01e,mp4a.40.2"
    rung = checked(f.live("360p"))
    assert parts_of(rung) == [f"{EPOCH_A}/360p/00000000.{i:03d}.m4s" for i in range(PARTS)] + [
        f"{EPOCH_A}/360p/00000001.000.m4s"
    ]
    assert f.sp.stats.parts_dropped == 0 and f.sp.stats.parts_abandoned == 0


def test_each_renditions_parts_stay_in_order_when_the_rung_lags_behind_the_copies() -> None:
    f = Feed(packager())
    f.send(part(0, 0, COPIES))
    for seq, i in [(s, i) for s in range(3) for i in range(PARTS)][1:]:
        f.send(part(seq, i, COPIES))  # the next part's copies come before this part's rung
        previous = (seq, i - 1) if i else (seq - 1, PARTS - 1)
        f.send(part(*previous, RUNGS))
    f.send(part(2, PARTS - 1, RUNGS))
    for name in ("720p", "360p", "audio"):
        text = checked(f.live(name))
        want = [f"{EPOCH_A}/{name}/{s:08d}.{i:03d}.m4s" for s in range(3) for i in range(PARTS)]
        assert parts_of(text) == want, name
        assert [s.uri for s in m3u8.loads(text).segments if s.uri] == [
            f"{EPOCH_A}/{name}/{s:08d}.m4s" for s in range(2)
        ]
    assert f.sp.stats.parts_dropped == 0 and f.sp.stats.parts_abandoned == 0
    assert set(variants(f)) == {"720p.m3u8", "360p.m3u8"}


def test_a_rung_skipped_until_the_next_segment_enters_from_the_segment_path() -> None:
    """The part worker took the stream over mid-segment: the rung's parts start at segment 1's IDR
    (``camflow_transcode_part_rungs_skipped``); its first segment comes from its segment-ready."""
    f = Feed(packager())
    for i in range(PARTS):
        f.send(part(0, i, COPIES))
    f.send(part(1, 0, COPIES), part(1, 0, RUNGS))
    assert variants(f) == {"720p.m3u8": "aud"}
    assert media_playlist_key(STREAM, "360p") not in f.texts  # its part waits for the segment path
    f.send(part(1, 1, COPIES), part(1, 1, RUNGS))
    f.send(ready(0))
    assert variants(f) == {"720p.m3u8": "aud", "360p.m3u8": "aud"}
    rung = checked(f.live("360p"))
    assert [s.uri for s in m3u8.loads(rung).segments if s.uri] == [f"{EPOCH_A}/360p/00000000.m4s"]
    assert in_progress(rung) == [f"{EPOCH_A}/360p/00000001.{i:03d}.m4s" for i in range(2)]
    assert f.sp.stats.parts_dropped == 0


def test_a_rung_without_parts_keeps_the_master_to_the_others_until_its_segments_come() -> None:
    """Every encode of the rung failed: the copies play with low latency, and the master never
    names a rendition without a playlist."""
    f = Feed(packager())
    for seq in range(2):
        for i in range(PARTS):
            f.send(part(seq, i, COPIES))
    assert variants(f) == {"720p.m3u8": "aud"}
    assert media_playlist_key(STREAM, "360p") not in f.texts
    f.send(ready(0, ("720p", "audio")))
    assert variants(f) == {"720p.m3u8": "aud"}
    f.send(ready(1))  # its segment workers made it: a rendition of the stream from then on
    assert "360p.m3u8" in variants(f) and media_playlist_key(STREAM, "360p") in f.texts
