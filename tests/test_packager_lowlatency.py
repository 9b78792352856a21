"""The packager's low-latency playlists (``packager.lowlatency``): parts and segments in, LL media
playlists out, parsed with the ``m3u8`` package and with ``camflow.hls`` and checked against the
RFC 8216bis rules (``camflow.hls.rules.check_low_latency``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import m3u8
import pytest

from camflow.events import PartReady, PlaylistEnd, RenditionRef, SegmentReady
from camflow.hls.lowlatency import End, LowLatencyFacts, NextSegment, delta, facts, playlist_end
from camflow.hls.media import MediaPlaylist
from camflow.hls.rules import check_low_latency, check_media, check_update
from camflow.keys import dvr_playlist_key, init_key, master_playlist_key, media_playlist_key, part_key
from packager.stream import PackagerStats, StreamPackager
from tests.test_packager import EPOCH_A, EPOCH_B, LADDER, STREAM, T0, offline, ready

PARTS = 10  # per 2 s segment, 0.2 s each
TICKS = 18_000  # 0.2 s at 90 kHz


def part(
    epoch: str, seq: int, index: int, *, names: Sequence[str] = ("720p", "360p"), ticks: int = TICKS
) -> PartReady:
    refs = tuple(
        RenditionRef(
            name,
            w,
            h,
            bw,
            codecs,
            init_key(STREAM, epoch, name),
            part_key(STREAM, epoch, name, seq, index),
            99,
        )
        for name, w, h, bw, codecs in LADDER
        if name in names
    )
    start = seq * 180_000 + index * TICKS
    return PartReady(
        STREAM, epoch, seq, start, ticks, 90_000, index, index == 0, T0 + 2.0 * seq + 0.2 * index, refs
    )


def packager(*, dvr: float = 600.0, part_target: float | None = 0.2, grace: float = 0.0) -> StreamPackager:
    return StreamPackager(
        STREAM,
        live_window=60.0,
        gap_timeout=10.0,
        stats=PackagerStats(),
        offline_grace=grace,
        target_duration=4,
        dvr_window=dvr,
        part_target=part_target,
    )


class Feed:
    """A StreamPackager fed events; ``texts`` keeps every playlist written, by key."""

    def __init__(self, sp: StreamPackager) -> None:
        self.sp = sp
        self.texts: dict[str, str] = {}
        self.ends: tuple[PlaylistEnd, ...] | None = None
        self.unlisted: list[str] = []
        self.index: list[int] = []
        self.now = 0.0

    def send(self, *events: PartReady | SegmentReady) -> None:
        for ev in events:
            self.now += 0.01
            if isinstance(ev, PartReady):
                self.sp.on_part(ev, 0, self.now)
            else:
                self.sp.on_segment(ev, 0, self.now)
            out = self.sp.take_output(self.now)
            for key, text in out.writes:
                before = self.texts.get(key)
                if before is not None and not key.endswith("master.m3u8"):
                    assert check_update(before, text) == [], key
                self.texts[key] = text
            self.ends = out.ends if out.ends is not None else self.ends
            self.unlisted += [k for _, k in out.unlisted]
            self.index += [a.segment.seq for a in out.index]

    def segment_parts(self, epoch: str, seq: int, upto: int = PARTS) -> None:
        self.send(*(part(epoch, seq, i) for i in range(upto)))

    def live(self, name: str = "720p") -> str:
        return self.texts[media_playlist_key(STREAM, name)]

    def dvr(self, name: str = "720p") -> str:
        return self.texts[dvr_playlist_key(STREAM, name)]


def segment_uris(text: str) -> list[str]:
    return [s.uri for s in m3u8.loads(text).segments if s.uri is not None]


def in_progress(text: str) -> list[str]:
    """The parts after the last complete segment (``m3u8`` gives them as a segment without a URI)."""
    last = m3u8.loads(text).segments[-1]
    return [] if last.uri is not None else [p.uri for p in last.parts]


def checked(text: str) -> str:
    assert check_media(text) == []
    assert check_low_latency(text) == []
    return text


def test_parent_is_listed_when_the_next_segments_first_part_arrives_before_its_segment_ready() -> None:
    f = Feed(packager())
    f.send(ready(EPOCH_A, 0))
    f.segment_parts(EPOCH_A, 1)
    text = checked(f.live())
    assert segment_uris(text) == [f"{EPOCH_A}/720p/00000000.m4s"]
    assert in_progress(text) == [f"{EPOCH_A}/720p/00000001.{i:03d}.m4s" for i in range(PARTS)]
    f.send(part(EPOCH_A, 2, 0))
    text = checked(f.live())
    parsed = m3u8.loads(text)
    assert segment_uris(text) == [f"{EPOCH_A}/720p/{n:08d}.m4s" for n in (0, 1)]
    seg1 = parsed.segments[1]
    assert seg1.duration == pytest.approx(2.0)
    assert seg1.program_date_time.timestamp() == pytest.approx(T0 + 2.0)
    assert [p.uri for p in seg1.parts] == [f"{EPOCH_A}/720p/00000001.{i:03d}.m4s" for i in range(PARTS)]
    assert [p.independent for p in seg1.parts] == ["YES"] + [None] * (PARTS - 1)
    assert in_progress(text) == [f"{EPOCH_A}/720p/00000002.000.m4s"]
    assert parsed.preload_hint.uri == f"{EPOCH_A}/720p/00000002.001.m4s"
    assert parsed.part_inf.part_target == pytest.approx(0.2)
    control = parsed.server_control
    assert (control.can_block_reload, control.part_hold_back, control.can_skip_until) == ("YES", 0.6, 24.0)
    assert parsed.version == 9
    # The DVR playlist and the recording index wait for the segment-ready; the live one does not change.
    assert segment_uris(f.dvr()) == [f"{EPOCH_A}/720p/00000000.m4s"]
    assert "#EXT-X-PART" not in f.dvr() and "#EXT-X-VERSION:7" in f.dvr()
    assert f.index == [0]
    live = f.live()
    f.send(ready(EPOCH_A, 1))
    assert f.live() == live
    assert segment_uris(f.dvr()) == [f"{EPOCH_A}/720p/{n:08d}.m4s" for n in (0, 1)]
    assert f.index == [0, 1]
    assert f.sp.stats.parents_early == 2  # 720p and 360p


def test_msn_and_part_arithmetic_agree_with_the_events_and_the_parser() -> None:
    f = Feed(packager())
    f.send(ready(EPOCH_A, 0))
    assert f.ends == (PlaylistEnd("360p", 0, -1), PlaylistEnd("720p", 0, -1))
    f.segment_parts(EPOCH_A, 1, 3)
    assert f.ends == (PlaylistEnd("360p", 1, 2), PlaylistEnd("720p", 1, 2))
    f.segment_parts(EPOCH_A, 1)  # parts 0..2 again (duplicates), then 3..9
    f.send(part(EPOCH_A, 2, 0), part(EPOCH_A, 2, 1))
    for name in ("720p", "360p"):
        text = checked(f.live(name))
        assert playlist_end(text) == (2, 1)
        parsed = MediaPlaylist.parse(text)
        assert parsed.low_latency is not None
        assert sorted(parsed.low_latency.parts) == [1, 2]
        assert MediaPlaylist.parse(text).render() == text
    assert facts(f.live()) == LowLatencyFacts(
        part_target=0.2,
        target_duration=4,
        can_block=True,
        can_skip_until=24.0,
        preload_hint=f"{EPOCH_A}/720p/00000002.002.m4s",
        end=End(2, 1),
        endlist=False,
        last_uri=f"{EPOCH_A}/720p/00000002.001.m4s",
    )
    assert facts(f.dvr()) is None
    reports = m3u8.loads(f.live("720p")).rendition_reports
    assert [(r.uri, r.last_msn, r.last_part) for r in reports] == [("360p.m3u8", 2, 1)]
    assert f.ends == (PlaylistEnd("360p", 2, 1), PlaylistEnd("720p", 2, 1))
    assert f.sp.stats.duplicates == 6  # 3 parts x 2 renditions


def test_every_part_is_within_part_target_and_parts_drop_out_after_three_target_durations() -> None:
    f = Feed(packager())
    f.send(ready(EPOCH_A, 0))
    for seq in range(1, 13):
        f.segment_parts(EPOCH_A, seq)
        f.send(ready(EPOCH_A, seq))
    f.send(part(EPOCH_A, 13, 0))
    text = checked(f.live())
    parsed = m3u8.loads(text)
    with_parts = [s.uri for s in parsed.segments if s.uri is not None and s.parts]
    # 12 s (3 x 4 s) back from the end (26.2 s: part 0 of seq 13): seqs 8..12 start within it
    assert with_parts == [f"{EPOCH_A}/720p/{n:08d}.m4s" for n in range(8, 13)]
    assert all(p.duration <= 0.2 for s in parsed.segments for p in s.parts)
    gone = {
        part_key(STREAM, EPOCH_A, r, n, i)
        for r in ("720p", "360p")
        for n in range(1, 8)
        for i in range(PARTS)
    }
    assert set(f.unlisted) == gone


def test_a_segment_without_parts_is_listed_from_its_segment_ready_and_later_parts_wait_for_it() -> None:
    f = Feed(packager())
    f.send(ready(EPOCH_A, 0))
    f.segment_parts(EPOCH_A, 2, 4)  # seq 1's parts never came (LL rendition missing)
    assert segment_uris(f.live()) == [f"{EPOCH_A}/720p/00000000.m4s"]
    assert in_progress(f.live()) == []
    f.send(ready(EPOCH_A, 1))
    text = checked(f.live())
    assert segment_uris(text) == [f"{EPOCH_A}/720p/{n:08d}.m4s" for n in (0, 1)]
    assert in_progress(text) == [f"{EPOCH_A}/720p/00000002.{i:03d}.m4s" for i in range(4)]
    assert m3u8.loads(text).media_sequence == 0


def test_a_listed_segment_whose_segment_ready_never_comes_is_a_gap_in_the_dvr_playlist_only() -> None:
    f = Feed(packager())
    f.send(ready(EPOCH_A, 0))
    f.segment_parts(EPOCH_A, 1)
    f.segment_parts(EPOCH_A, 2)  # lists seq 1 from its parts; its transcode then fails
    f.send(ready(EPOCH_A, 2))  # waits for seq 1 in the reorder buffer
    f.sp.tick(f.now + 11.0)  # the gap timeout
    f.send(part(EPOCH_A, 3, 0))
    live, dvr = m3u8.loads(f.live()), m3u8.loads(f.dvr())
    assert [(s.uri, bool(s.gap_tag)) for s in live.segments if s.uri] == [
        (f"{EPOCH_A}/720p/{n:08d}.m4s", False) for n in range(3)
    ]
    assert [(s.uri, bool(s.gap_tag)) for s in dvr.segments] == [
        (f"{EPOCH_A}/720p/{n:08d}.m4s", n == 1) for n in range(3)
    ]
    assert live.media_sequence == dvr.media_sequence == 0  # one msn per seq in both
    assert f.index == [0, 2]
    assert f.sp.stats.gaps == 1


def test_a_part_longer_than_part_target_sends_its_segment_back_to_the_segment_path() -> None:
    f = Feed(packager())
    f.send(ready(EPOCH_A, 0))
    f.send(part(EPOCH_A, 1, 0), part(EPOCH_A, 1, 1), part(EPOCH_A, 1, 2, ticks=27_000))
    assert in_progress(f.live()) == []
    assert f.sp.stats.parts_abandoned == 2
    f.send(part(EPOCH_A, 1, 3), part(EPOCH_A, 2, 0))  # refused, and waiting for seq 1
    assert segment_uris(f.live()) == [f"{EPOCH_A}/720p/00000000.m4s"]
    f.send(ready(EPOCH_A, 1))
    text = checked(f.live())
    assert segment_uris(text) == [f"{EPOCH_A}/720p/{n:08d}.m4s" for n in (0, 1)]
    assert not m3u8.loads(text).segments[1].parts
    assert in_progress(text) == [f"{EPOCH_A}/720p/00000002.000.m4s"]
    assert part_key(STREAM, EPOCH_A, "720p", 1, 0) in f.unlisted


def test_a_new_epoch_lists_its_first_segments_parts_at_once_after_an_epoch_that_ended() -> None:
    f = Feed(packager(grace=30.0))
    f.send(ready(EPOCH_A, 0))
    f.segment_parts(EPOCH_A, 1)
    f.sp.on_state(offline(EPOCH_A, 1), 0, f.now)  # the epoch ended: seq 1 is complete
    f.segment_parts(EPOCH_B, 0, 3)  # before A's last segment-ready: the live playlist holds all of A
    text = checked(f.live())
    parsed = m3u8.loads(text)
    assert segment_uris(text) == [f"{EPOCH_A}/720p/{n:08d}.m4s" for n in (0, 1)]
    assert in_progress(text) == [f"{EPOCH_B}/720p/00000000.{i:03d}.m4s" for i in range(3)]
    head = next_segment(text)  # (the m3u8 package reads no tags of a segment in progress)
    assert head == NextSegment(f"{EPOCH_B}/720p/init.mp4", pytest.approx(T0), True)
    assert parsed.preload_hint.uri == f"{EPOCH_B}/720p/00000000.003.m4s"
    assert PlaylistEnd("720p", 2, 2) in (f.ends or ())
    f.send(*(part(EPOCH_B, 0, i) for i in range(3, PARTS)), part(EPOCH_B, 1, 0))
    f.send(ready(EPOCH_A, 1), ready(EPOCH_B, 0))
    text = checked(f.live())
    assert segment_uris(text)[2:] == [f"{EPOCH_B}/720p/00000000.m4s"]
    assert [s.discontinuity for s in m3u8.loads(text).segments if s.uri] == [False, False, True]
    assert m3u8.loads(text).discontinuity_sequence == 0
    dvr = checked_media(f.dvr())
    assert segment_uris(dvr)[2:] == [f"{EPOCH_B}/720p/00000000.m4s"]
    assert [s.discontinuity for s in m3u8.loads(dvr).segments] == [False, False, True]
    assert f.index == [0, 1, 0]  # the recording index: A 0, A 1, B 0


def next_segment(text: str) -> NextSegment | None:
    ll = MediaPlaylist.parse(text).low_latency
    return None if ll is None else ll.next_segment


def checked_media(text: str) -> str:
    assert check_media(text) == []
    return text


def test_a_new_epochs_parts_wait_while_the_older_epoch_may_still_grow() -> None:
    f = Feed(packager(grace=30.0))
    f.send(ready(EPOCH_A, 0))
    f.segment_parts(EPOCH_B, 0)  # no offline for A: its seq 1 may still come
    assert in_progress(f.live()) == [] and "EXT-X-PART:" not in f.live()
    f.sp.on_state(offline(EPOCH_A, 0), 0, f.now)
    f.send(ready(EPOCH_B, 0), part(EPOCH_B, 1, 0))
    assert segment_uris(checked(f.live()))[-1] == f"{EPOCH_B}/720p/00000000.m4s"
    assert part_key(STREAM, EPOCH_B, "720p", 0, 0) in f.unlisted  # parts of a segment listed already


def test_a_new_streams_first_segment_is_listed_with_its_parts_as_soon_as_it_is_complete() -> None:
    f = Feed(packager())
    f.segment_parts(EPOCH_A, 0)
    # players (hls.js, ffmpeg) refuse a playlist without a complete segment: nothing is written yet
    assert media_playlist_key(STREAM, "720p") not in f.texts and master_playlist_key(STREAM) not in f.texts
    assert not f.ends  # no playlists-changed either
    f.send(part(EPOCH_A, 1, 0))  # segment 0 is complete: listed from its parts, before its segment-ready
    text = checked(f.live())
    parsed = m3u8.loads(text)
    assert segment_uris(text) == [f"{EPOCH_A}/720p/00000000.m4s"] and parsed.media_sequence == 0
    assert [p.uri for p in parsed.segments[0].parts] == [
        f"{EPOCH_A}/720p/00000000.{i:03d}.m4s" for i in range(PARTS)
    ]
    assert parsed.segments[0].init_section.uri == f"{EPOCH_A}/720p/init.mp4"
    assert not parsed.segments[0].discontinuity
    assert in_progress(text) == [f"{EPOCH_A}/720p/00000001.000.m4s"]
    master = m3u8.loads(f.texts[master_playlist_key(STREAM)])
    assert sorted(p.uri for p in master.playlists) == ["360p.m3u8", "720p.m3u8"]
    assert playlist_end(text) == End(1, 0) and PlaylistEnd("720p", 1, 0) in (f.ends or ())
    f.send(ready(EPOCH_A, 0))
    assert f.live() == text  # listed already: the segment-ready adds it to the DVR playlist and the index
    assert segment_uris(f.dvr()) == [f"{EPOCH_A}/720p/00000000.m4s"] and f.index == [0]
    f.send(*(part(EPOCH_A, 1, i) for i in range(1, PARTS)))  # from now the usual length predicts the boundary
    assert m3u8.loads(checked(f.live())).preload_hint.uri == f"{EPOCH_A}/720p/00000002.000.m4s"


def test_a_first_segment_whose_segment_ready_comes_before_the_next_part_keeps_its_parts() -> None:
    f = Feed(packager())
    f.segment_parts(EPOCH_A, 0)
    f.send(ready(EPOCH_A, 0))
    text = checked(f.live())
    assert len(m3u8.loads(text).segments[0].parts) == PARTS and in_progress(text) == []
    assert m3u8.loads(text).preload_hint.uri == f"{EPOCH_A}/720p/00000001.000.m4s"


def test_a_new_presentation_after_endlist_starts_with_its_parts() -> None:
    f = Feed(packager(grace=0.0))
    f.send(ready(EPOCH_A, 0))
    f.segment_parts(EPOCH_A, 1)
    f.sp.on_state(offline(EPOCH_A, 1), 0, f.now)
    f.send(ready(EPOCH_A, 1))
    ended = f.live()
    assert "#EXT-X-ENDLIST" in ended
    f.segment_parts(EPOCH_B, 0)
    assert f.live() == ended  # the old presentation stays until the new one has a complete segment
    f.send(part(EPOCH_B, 1, 0))
    text = checked(f.live())
    parsed = m3u8.loads(text)
    assert "#EXT-X-ENDLIST" not in text and segment_uris(text) == [f"{EPOCH_B}/720p/00000000.m4s"]
    assert parsed.media_sequence == 2 and parsed.segments[0].discontinuity  # numbers go on past the old
    assert len(parsed.segments[0].parts) == PARTS
    f.send(ready(EPOCH_B, 0))
    assert f.live() == text
    assert [s.discontinuity for s in m3u8.loads(f.dvr()).segments] == [True]


def test_without_parts_or_with_low_latency_off_the_playlists_are_as_before() -> None:
    plain, on = Feed(packager(part_target=None)), Feed(packager())
    for seq in range(4):
        plain.send(ready(EPOCH_A, seq))
        on.send(ready(EPOCH_A, seq))
    assert plain.texts == on.texts
    assert "#EXT-X-VERSION:7" in on.live() and "PART" not in on.live()
    plain.segment_parts(EPOCH_A, 4)
    assert plain.sp.stats.parts_ignored == PARTS and "PART" not in plain.live()


def test_restore_continues_the_parts_and_the_segment_path() -> None:
    f = Feed(packager())
    f.send(ready(EPOCH_A, 0))
    f.segment_parts(EPOCH_A, 1)
    f.send(ready(EPOCH_A, 1))
    f.segment_parts(EPOCH_A, 2)
    f.send(part(EPOCH_A, 3, 0), part(EPOCH_A, 3, 1))  # seq 2 listed from its parts
    media = {n: f.live(n) for n in ("720p", "360p")}
    dvr = {n: f.dvr(n) for n in ("720p", "360p")}
    master = f.texts[master_playlist_key(STREAM)]
    g = Feed(packager())
    g.sp.restore(master, media, dvr)
    g.send(part(EPOCH_A, 3, 1), part(EPOCH_A, 3, 2))  # re-delivered, then new
    text = checked(g.live())
    assert in_progress(text) == [f"{EPOCH_A}/720p/00000003.{i:03d}.m4s" for i in range(3)]
    assert segment_uris(text) == segment_uris(media["720p"])
    assert m3u8.loads(text).segments[1].parts  # the restored parts are still listed
    g.send(ready(EPOCH_A, 2))  # its segment-ready: the DVR playlist and the index take it
    assert segment_uris(g.dvr()) == [f"{EPOCH_A}/720p/{n:08d}.m4s" for n in range(3)]
    assert g.index == [2]
    g.send(part(EPOCH_A, 4, 0))
    assert segment_uris(g.live())[-1] == f"{EPOCH_A}/720p/00000003.m4s"
    assert check_update(media["720p"], g.live()) == []


def test_delta_update_skips_old_segments_and_keeps_the_numbers() -> None:
    f = Feed(packager())
    f.send(ready(EPOCH_A, 0))
    for seq in range(1, 20):
        f.segment_parts(EPOCH_A, seq)
    text = checked(f.live())
    d = delta(text, 24.0)
    parsed, full = m3u8.loads(d), m3u8.loads(text)
    assert parsed.skip.skipped_segments == 8  # seqs 0..7 end 24 s or more before the end (40 s)
    assert parsed.media_sequence == full.media_sequence
    assert [s.uri for s in parsed.segments] == [s.uri for s in full.segments][8:]
    assert playlist_end(d) == playlist_end(text) == (19, PARTS - 1)
    assert parsed.segments[0].init_section.uri == f"{EPOCH_A}/720p/init.mp4"
    assert d.count("#EXT-X-MAP:") == 1 and d.index("#EXT-X-MAP:") < d.index(parsed.segments[0].uri)
    in_progress = f'#EXT-X-PART:DURATION=0.200,URI="{EPOCH_A}/720p/00000019.000.m4s"'
    assert d.endswith(text[text.index(in_progress) :])  # the parts, the hint and the reports as they were
    assert delta(checked(f.live()), 100.0) == text
    skipped = MediaPlaylist.parse(d)
    assert skipped.low_latency is not None and skipped.low_latency.skipped == 8
    assert sorted(skipped.low_latency.parts)[0] > 7


def test_the_stored_part_keys_are_the_contracts() -> None:
    ev = part(EPOCH_A, 3, 4)
    assert ev.renditions[0].key == f"streams/{STREAM}/{EPOCH_A}/720p/00000003.004.m4s"
    sp = packager()
    sp.on_part(replace(ev, renditions=(replace(ev.renditions[0], key="streams/cam1/x.m4s"),)), 7, 0.0)
    assert sp.stats.rejected == 1
    assert sp.take_output().done == [7]


def test_parts_of_a_rendition_no_segment_names_wait_bounded_and_are_deleted() -> None:
    f = Feed(packager())
    f.send(ready(EPOCH_A, 0))
    for i in range(PARTS):
        ev = part(EPOCH_A, 1, i)
        ghost = replace(ev.renditions[1], name="ghost", key=part_key(STREAM, EPOCH_A, "ghost", 1, i))
        f.send(replace(ev, renditions=(ev.renditions[0], ghost)))
    f.segment_parts(EPOCH_A, 2, 1)
    for seq in range(2, 9):
        f.segment_parts(EPOCH_A, seq)
    text = checked(f.live())
    assert "ghost" not in text and "ghost" not in f.texts[master_playlist_key(STREAM)]
    assert part_key(STREAM, EPOCH_A, "ghost", 1, 0) not in f.unlisted  # 10 wait, under the bound
    for seq in range(9, 20):
        f.send(
            *(
                replace(
                    p,
                    renditions=(
                        replace(
                            p.renditions[0], name="ghost", key=part_key(STREAM, EPOCH_A, "ghost", seq, p.part)
                        ),
                    ),
                )
                for p in (part(EPOCH_A, seq, i) for i in range(PARTS))
            )
        )
    assert part_key(STREAM, EPOCH_A, "ghost", 1, 0) in f.unlisted  # beyond the bound: dropped, deleted


def test_the_rules_catch_what_a_player_cannot_live_with() -> None:
    f = Feed(packager())
    f.send(ready(EPOCH_A, 0))
    f.segment_parts(EPOCH_A, 1)
    f.send(part(EPOCH_A, 2, 0), part(EPOCH_A, 2, 1))
    good = checked(f.live())
    uri = f"{EPOCH_A}/720p/00000001.003.m4s"
    long_part = good.replace(f'DURATION=0.200,URI="{uri}"', f'DURATION=0.250,URI="{uri}"')
    assert [v.rule for v in check_low_latency(long_part)] == ["part", "part"]  # above PART-TARGET; sum
    short = good.replace(
        'DURATION=0.200,URI="20261121T101500000Z/720p/00000001.004.m4s"', 'DURATION=0.100,URI="y"'
    )
    assert any("85 %" in v.detail for v in check_low_latency(short))
    no_hint = "\n".join(ln for ln in good.splitlines() if "PRELOAD-HINT" not in ln) + "\n"
    assert [v.rule for v in check_low_latency(no_hint)] == ["preload-hint"]
    listed_hint = good.replace("00000002.002.m4s", "00000002.001.m4s")
    assert [v.rule for v in check_low_latency(listed_hint)] == ["preload-hint"]
    holdback = good.replace("PART-HOLD-BACK=0.600", "PART-HOLD-BACK=0.300")
    assert [v.rule for v in check_low_latency(holdback)] == ["server-control"]


def test_a_segment_ready_before_the_next_segments_parts_lists_the_parent_with_its_parts() -> None:
    f = Feed(packager())
    f.send(ready(EPOCH_A, 0))
    f.segment_parts(EPOCH_A, 1)
    f.send(ready(EPOCH_A, 1))  # a fast transcode (the source copy): before part 0 of seq 2
    text = checked(f.live())
    assert segment_uris(text) == [f"{EPOCH_A}/720p/{n:08d}.m4s" for n in (0, 1)]
    assert len(m3u8.loads(text).segments[1].parts) == PARTS and in_progress(text) == []
    assert m3u8.loads(text).preload_hint.uri == f"{EPOCH_A}/720p/00000002.000.m4s"
    assert f.ends == (PlaylistEnd("360p", 1, -1), PlaylistEnd("720p", 1, -1))
    assert f.sp.stats.parents_early == 0
    f.segment_parts(EPOCH_A, 2, 2)
    assert in_progress(checked(f.live())) == [f"{EPOCH_A}/720p/00000002.{i:03d}.m4s" for i in range(2)]
    assert segment_uris(f.dvr()) == [f"{EPOCH_A}/720p/{n:08d}.m4s" for n in (0, 1)]


def hint_of(text: str) -> str:
    return str(m3u8.loads(text).preload_hint.uri)


def test_the_hint_names_the_next_segments_first_part_when_the_segment_reaches_its_usual_length() -> None:
    f = Feed(packager())
    f.send(ready(EPOCH_A, 0))  # 2.0 s: the epoch's usual segment
    f.segment_parts(EPOCH_A, 1, PARTS - 1)
    assert hint_of(checked(f.live())) == f"{EPOCH_A}/720p/00000001.009.m4s"
    f.send(part(EPOCH_A, 1, PARTS - 1))  # 2.0 s listed: part 010 will not come
    assert hint_of(checked(f.live())) == f"{EPOCH_A}/720p/00000002.000.m4s"
    assert hint_of(checked(f.live("360p"))) == f"{EPOCH_A}/360p/00000002.000.m4s"
    f.send(part(EPOCH_A, 2, 0))
    assert hint_of(checked(f.live())) == f"{EPOCH_A}/720p/00000002.001.m4s"


def test_a_segment_longer_than_usual_still_lists_its_extra_part() -> None:
    f = Feed(packager())
    f.send(ready(EPOCH_A, 0))
    f.segment_parts(EPOCH_A, 1)
    assert hint_of(f.live()) == f"{EPOCH_A}/720p/00000002.000.m4s"
    f.send(part(EPOCH_A, 1, PARTS, ticks=TICKS // 5))  # the prediction was wrong: one more frame came
    text = checked(f.live())
    assert in_progress(text)[-1] == f"{EPOCH_A}/720p/00000001.010.m4s"
    assert hint_of(text) == f"{EPOCH_A}/720p/00000002.000.m4s"
    f.send(part(EPOCH_A, 2, 0))
    assert segment_uris(checked(f.live()))[-1] == f"{EPOCH_A}/720p/00000001.m4s"
