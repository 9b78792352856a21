"""LivePlaylist / render_master: fixtures in, text out, read back by the m3u8 package and our rules."""

from __future__ import annotations

import itertools

import m3u8
import pytest

from camflow.hls.errors import PlaylistError
from camflow.hls.master import AudioRendition, Variant, parse_master, render_master
from camflow.hls.rules import check_master, check_media, check_update
from packager.playlist import LivePlaylist, MasterPlaylist, PlaylistEntry

EPOCH_A = "20261121T101500000Z"
EPOCH_B = "20261121T103000000Z"
T0 = 1_795_256_100.0  # 2026-11-21T10:15:00Z


def entry(
    seq: int,
    epoch: str = EPOCH_A,
    duration: float = 2.0,
    *,
    discontinuity: bool = False,
    gap: bool = False,
    pdt: float | None = None,
) -> PlaylistEntry:
    return PlaylistEntry(
        epoch=epoch,
        seq=seq,
        duration=duration,
        uri=f"{epoch}/720p/{seq:08d}.m4s",
        map_uri=f"{epoch}/720p/init.mp4",
        program_date_time=T0 + 2.0 * seq if pdt is None else pdt,
        discontinuity=discontinuity,
        gap=gap,
    )


def clean(text: str) -> m3u8.M3U8:
    assert check_media(text) == []
    return m3u8.loads(text)


def test_render_reads_back() -> None:
    pl = LivePlaylist()
    for seq in range(3):
        pl.append(entry(seq))
    text = pl.render()
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:7\n")
    parsed = clean(text)
    assert parsed.version == 7
    assert parsed.target_duration == 4  # the default, fixed up front
    assert parsed.media_sequence == 0
    assert parsed.discontinuity_sequence == 0
    assert parsed.is_independent_segments
    assert not parsed.is_endlist
    assert [s.uri for s in parsed.segments] == [f"{EPOCH_A}/720p/{n:08d}.m4s" for n in range(3)]
    assert all(s.init_section.uri == f"{EPOCH_A}/720p/init.mp4" for s in parsed.segments)
    assert [s.duration for s in parsed.segments] == [2.0, 2.0, 2.0]
    assert text.count("#EXT-X-MAP:") == 1
    assert "#EXTINF:2.000,\n" in text
    assert parsed.segments[0].program_date_time.isoformat() == "2026-11-21T10:15:00+00:00"


def test_target_duration_is_fixed_and_refuses_longer_entries() -> None:
    pl = LivePlaylist(window=4.0, target_duration=3)
    texts = [pl.render()]
    for seq, duration in enumerate([2.0004, 2.4, 3.4994, 1.0, 2.0, 2.0, 2.0]):
        pl.append(entry(seq, duration=duration))
        texts.append(pl.render())
        assert clean(texts[-1]).target_duration == 3
    assert pl.fits(3.499) and not pl.fits(3.5)  # nearest integer, halves up (RFC 8216 4.3.3.1)
    with pytest.raises(PlaylistError, match="rounds above the target duration of 3 s"):
        pl.append(entry(9, duration=3.5))
    for before, after in itertools.pairwise(texts):
        assert check_update(before, after) == []


def test_rules_flag_a_changed_target_duration() -> None:
    a, b = LivePlaylist(target_duration=2), LivePlaylist(target_duration=3)
    a.append(entry(0))
    b.append(entry(0))
    assert [v.rule for v in check_update(a.render(), b.render())] == ["target-duration"]


@pytest.mark.parametrize("target", [0, -1, 2.5])
def test_bad_target_duration_is_refused(target: int) -> None:
    with pytest.raises(PlaylistError, match="target duration"):
        LivePlaylist(target_duration=target)


def test_media_sequence_counts_what_slid_out() -> None:
    pl = LivePlaylist(window=10.0)
    previous = pl.render()
    for seq in range(12):
        pl.append(entry(seq))
        text = pl.render()
        assert check_update(previous, text) == []
        previous = text
        parsed = clean(text)
        assert parsed.media_sequence == pl.entries[0].seq
        assert sum(s.duration for s in parsed.segments) >= min(10.0, 2.0 * (seq + 1))
        assert sum(s.duration for s in parsed.segments[1:]) < 10.0
    assert pl.media_sequence == 7
    assert len(pl.entries) == 5


def test_default_window_keeps_a_whole_twenty_second_stream() -> None:
    pl = LivePlaylist()
    for seq in range(10):
        pl.append(entry(seq))
    pl.end()
    parsed = clean(pl.render())
    assert len(parsed.segments) == 10
    assert parsed.media_sequence == 0
    assert parsed.is_endlist


def test_discontinuity_sequence_and_map_per_epoch() -> None:
    pl = LivePlaylist(window=6.0)
    for seq in range(3):
        pl.append(entry(seq))
    renders = [pl.render()]
    pl.append(entry(0, EPOCH_B, discontinuity=True, pdt=T0 + 900))
    renders.append(pl.render())
    parsed = clean(renders[-1])
    assert [s.discontinuity for s in parsed.segments] == [False, False, True]
    assert [s.init_section.uri for s in parsed.segments] == [
        f"{EPOCH_A}/720p/init.mp4",
        f"{EPOCH_A}/720p/init.mp4",
        f"{EPOCH_B}/720p/init.mp4",
    ]
    assert renders[-1].count("#EXT-X-MAP:") == 2
    for seq in range(1, 4):
        pl.append(entry(seq, EPOCH_B, pdt=T0 + 900 + 2 * seq))
        renders.append(pl.render())
    # The discontinuity entry slid out: the sequence took it over.
    assert pl.discontinuity_sequence == 1
    assert clean(renders[-1]).discontinuity_sequence == 1
    assert "#EXT-X-DISCONTINUITY\n" not in renders[-1]
    for before, after in itertools.pairwise(renders):
        assert check_update(before, after) == []


def test_discontinuity_on_first_entry_is_rendered() -> None:
    pl = LivePlaylist(window=2.0)
    pl.append(entry(0))
    pl.append(entry(0, EPOCH_B, discontinuity=True))
    before = pl.render()
    assert pl.entries[0].discontinuity
    assert before.count("#EXT-X-DISCONTINUITY\n") == 1
    pl.append(entry(1, EPOCH_B))
    assert check_update(before, pl.render()) == []


def test_pdt_on_every_segment() -> None:
    pl = LivePlaylist()
    for seq in range(3):
        pl.append(entry(seq, pdt=T0 + 2 * seq + 0.123))
    text = pl.render()
    assert "#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:15:04.123Z\n" in text
    parsed = clean(text)
    assert [s.program_date_time.timestamp() for s in parsed.segments] == pytest.approx(
        [T0 + 0.123, T0 + 2.123, T0 + 4.123]
    )


def test_ended_playlist_is_never_reopened_a_new_epoch_starts_a_new_presentation() -> None:
    pl = LivePlaylist(window=10.0)
    for seq in range(3):
        pl.append(entry(seq))
    pl.end()
    ended = pl.render()
    assert ended.rstrip().endswith("#EXT-X-ENDLIST")
    assert clean(ended).is_endlist
    pl.append(entry(0, EPOCH_B, pdt=T0 + 900))  # even without the flag: it gets a discontinuity
    fresh = pl.render()
    parsed = clean(fresh)
    assert not parsed.is_endlist
    assert [s.uri for s in parsed.segments] == [f"{EPOCH_B}/720p/00000000.m4s"]
    assert parsed.segments[0].discontinuity
    assert parsed.media_sequence == 3  # past every number the old presentation used
    assert check_update(ended, fresh) == []
    # Reopening (the old entries plus the new one, ENDLIST gone) is what the rules refuse.
    reopened = ended.replace("#EXT-X-ENDLIST\n", "") + (
        f"#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\n{EPOCH_B}/720p/00000000.m4s\n"
    )
    assert [v.rule for v in check_update(ended, reopened)] == ["endlist"]


def test_stored_playlist_reads_back_into_the_same_state() -> None:
    pl = LivePlaylist(window=6.0, target_duration=3)
    for seq in range(3):
        pl.append(entry(seq))
    pl.append(entry(3, gap=True))
    pl.append(entry(0, EPOCH_B, discontinuity=True, pdt=T0 + 900.5))
    pl.append(entry(1, EPOCH_B, pdt=T0 + 902.5))
    text = pl.render()
    back = LivePlaylist.parse(text, window=6.0, target_duration=5)
    assert back.render() == text  # the published target (3) stays, not the configured 5
    assert back.entries == pl.entries
    back.append(entry(2, EPOCH_B, pdt=T0 + 904.5))
    pl.append(entry(2, EPOCH_B, pdt=T0 + 904.5))
    assert back.render() == pl.render()
    with pytest.raises(PlaylistError, match="EPOCH/RENDITION"):
        LivePlaylist.parse(text.replace(f"{EPOCH_B}/720p/00000001.m4s", "x.m4s"), 6.0, 3)


def test_gap_entry() -> None:
    pl = LivePlaylist()
    pl.append(entry(0))
    pl.append(entry(1, gap=True))
    pl.append(entry(2))
    text = pl.render()
    assert "#EXTINF:2.000,\n#EXT-X-GAP\n" in text
    parsed = clean(text)
    assert [bool(s.gap_tag) for s in parsed.segments] == [False, True, False]


@pytest.mark.parametrize("duration", [0.0, -1.0, float("nan")])
def test_bad_duration_is_refused(duration: float) -> None:
    with pytest.raises(PlaylistError, match="duration"):
        LivePlaylist().append(entry(0, duration=duration))


def test_master_sorted_by_bandwidth() -> None:
    master = MasterPlaylist()
    master.set("360p", Variant("360p.m3u8", 900_000, 800_000, "avc1.42c01e", 640, 360))
    master.set("1080p", Variant("1080p.m3u8", 5_000_000, 4_200_000, "avc1.640028", 1920, 1080))
    master.set("720p", Variant("720p.m3u8", 2_800_000, 2_500_000, "avc1.64001f", 1280, 720))
    text = master.render()
    assert check_master(text) == []
    parsed = m3u8.loads(text)
    assert parsed.is_variant
    assert [p.uri for p in parsed.playlists] == ["1080p.m3u8", "720p.m3u8", "360p.m3u8"]
    info = parsed.playlists[1].stream_info
    assert (info.bandwidth, info.average_bandwidth, info.codecs, info.resolution) == (
        2_800_000,
        2_500_000,
        "avc1.64001f",
        (1280, 720),
    )
    assert render_master(master.variants.values()) == text


def test_rules_catch_violations() -> None:
    bad = (
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:4\n"
        "#EXT-X-PROGRAM-DATE-TIME:2026-11-21 10:15:00\n#EXTINF:3.600,\na.m4s\n"
    )
    rules = {v.rule for v in check_media(bad)}
    assert rules == {"target-duration", "map", "program-date-time"}
    before = (
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n"
        '#EXT-X-MAP:URI="i.mp4"\n#EXTINF:2.000,\na.m4s\n#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\nb.m4s\n'
    )
    after = (
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:6\n"
        '#EXT-X-MAP:URI="i.mp4"\n#EXTINF:2.000,\nb.m4s\n'  # slid out a discontinuity, sequence not advanced
    )
    assert [v.rule for v in check_update(before, after)] == ["discontinuity-sequence"]
    assert [v.rule for v in check_update(after, before)] == ["media-sequence", "discontinuity-sequence"]
    unsorted = (
        '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,AVERAGE-BANDWIDTH=1,CODECS="a",RESOLUTION=1x1\na.m3u8\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=2,AVERAGE-BANDWIDTH=3,CODECS="a",RESOLUTION=1x1\nb.m3u8\n'
    )
    assert len(check_master(unsorted)) == 2


def test_master_frame_rate_and_audio_group() -> None:
    master = MasterPlaylist()
    master.set_audio("aac", AudioRendition("audio", "English", "audio_aac.m3u8", language="en"))
    master.set(
        "720p", Variant("720p.m3u8", 2_900_000, 2_500_000, "avc1.64001f,mp4a.40.2", 1280, 720, 29.97, "audio")
    )
    master.set("360p", Variant("360p.m3u8", 900_000, 800_000, "avc1.42c01e", 640, 360, 25.0))
    text = master.render()
    assert check_master(text) == []
    parsed = m3u8.loads(text)
    [audio] = parsed.media
    assert (audio.type, audio.group_id, audio.name, audio.language, audio.default, audio.uri) == (
        "AUDIO",
        "audio",
        "English",
        "en",
        "YES",
        "audio_aac.m3u8",
    )
    assert [p.stream_info.frame_rate for p in parsed.playlists] == [29.97, 25.0]
    assert parsed.playlists[0].stream_info.audio == "audio"
    assert parse_master(text) == master.variants
    with pytest.raises(PlaylistError, match="audio group"):
        render_master([Variant("a.m3u8", 1, 1, "avc1", 1, 1, audio="nope")])
