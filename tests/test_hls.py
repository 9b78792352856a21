"""camflow.hls: date-times, and media and master playlists written, read back and written again."""

from __future__ import annotations

import m3u8
import pytest

from camflow.hls.dates import format_date_time, parse_date_time, read_date_time
from camflow.hls.errors import PlaylistError
from camflow.hls.master import (
    AudioRendition,
    Variant,
    parse_master,
    parse_master_audio,
    render_master,
    write_master,
)
from camflow.hls.media import MediaPlaylist, Segment
from camflow.hls.rules import check_media
from camflow.hls.scan import map_uris, media_facts, scan_media
from camflow.hls.tags import AUDIO_GROUP, VOD, attributes, rounded_target

T0 = 1_795_256_100.0  # 2026-11-21T10:15:00Z
EPOCH_A = "20261121T101500000Z"
EPOCH_B = "20261121T103000000Z"


@pytest.mark.parametrize(
    ("unix", "expected"),
    [
        (T0, "2026-11-21T10:15:00.000Z"),
        (T0 + 0.123, "2026-11-21T10:15:00.123Z"),
        (T0 + 59.9996, "2026-11-21T10:16:00.000Z"),
        (0.0, "1970-01-01T00:00:00.000Z"),
    ],
)
def test_program_date_time_format(unix: float, expected: str) -> None:
    assert format_date_time(unix) == expected
    assert parse_date_time(expected) == pytest.approx(unix, abs=0.0005)


@pytest.mark.parametrize(
    "text", ["2026-11-21T10:15:00Z", "2026-11-21T11:15:00+01:00", "2026-11-21T10:15:00.000z"]
)
def test_parse_time(text: str) -> None:
    assert parse_date_time(text) == T0


@pytest.mark.parametrize("text", ["2026-11-21T10:15:00", "yesterday", ""])
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_date_time(text)
    with pytest.raises(PlaylistError):
        parse_date_time(text)
    assert read_date_time(text) is None


def _segments(epoch: str, first: int, n: int, start: float) -> list[Segment]:
    base = f"{epoch}/720p"
    return [
        Segment(f"{base}/{seq:08d}.m4s", 2.0, f"{base}/init.mp4", start + 2.0 * (seq - first))
        for seq in range(first, first + n)
    ]


LIVE = MediaPlaylist(
    4,
    (
        *_segments(EPOCH_A, 7, 2, T0),
        Segment(f"{EPOCH_A}/720p/00000009.m4s", 1.5, f"{EPOCH_A}/720p/init.mp4", T0 + 4.0, gap=True),
        *(
            Segment(s.uri, s.duration, s.map_uri, s.program_date_time, discontinuity=i == 0)
            for i, s in enumerate(_segments(EPOCH_B, 0, 3, T0 + 900.123))
        ),
    ),
    media_sequence=7,
    discontinuity_sequence=2,
)


@pytest.mark.parametrize(
    "playlist",
    [
        LIVE,
        MediaPlaylist(4, LIVE.segments, 7, 2, ended=True),
        MediaPlaylist(4),  # nothing yet
        MediaPlaylist(
            2, tuple(_segments(EPOCH_A, 0, 3, T0)), discontinuity_sequence=None, playlist_type=VOD, ended=True
        ),
        MediaPlaylist(
            3, (Segment("a.m4s", 2.5, "i.mp4"), Segment("b.m4s", 2.5, "i.mp4", discontinuity=True))
        ),
    ],
)
def test_media_round_trip(playlist: MediaPlaylist) -> None:
    """write -> parse -> write gives the same bytes (and the same model)."""
    text = playlist.render()
    back = MediaPlaylist.parse(text)
    assert back == playlist
    assert back.render() == text


def test_media_written_form() -> None:
    text = LIVE.render()
    assert check_media(text) == []
    assert text.startswith(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:7\n"
        "#EXT-X-DISCONTINUITY-SEQUENCE:2\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        f'#EXT-X-MAP:URI="{EPOCH_A}/720p/init.mp4"\n#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:15:00.000Z\n'
    )
    assert "#EXTINF:1.500,\n#EXT-X-GAP\n" in text
    assert f'#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI="{EPOCH_B}/720p/init.mp4"\n' in text
    assert text.count("#EXT-X-MAP:") == 2
    vod = MediaPlaylist(2, LIVE.segments[:1], discontinuity_sequence=None, playlist_type=VOD, ended=True)
    assert "#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n" in vod.render()
    assert "DISCONTINUITY-SEQUENCE" not in vod.render()


@pytest.mark.parametrize("text", ["", "hello\n", "#EXTM3U\n#EXTINF:2.000,\na.m4s\n"])
def test_media_parse_refuses(text: str) -> None:
    with pytest.raises(PlaylistError):
        MediaPlaylist.parse(text)


def test_rounded_target() -> None:
    assert [rounded_target(s) for s in (0.2, 1.4994, 1.4995, 2.0, 3.5)] == [1, 1, 2, 2, 4]


MASTER_VARIANTS = [
    Variant("360p.m3u8", 900_000, 800_000, "avc1.42c01e,mp4a.40.2", 640, 360, 25.0, AUDIO_GROUP),
    Variant(
        "source-hevc.m3u8", 9_000_000, 8_000_000, "hvc1.1.6.L93.B0,mp4a.40.2", 1920, 1080, 0.0, AUDIO_GROUP
    ),
    Variant("720p.m3u8", 2_900_000, 2_500_000, "avc1.64001f,mp4a.40.2", 1280, 720, 29.97, AUDIO_GROUP),
]
MASTER_AUDIO = [AudioRendition(AUDIO_GROUP, "audio", "audio.m3u8", channels=2)]


def test_master_round_trip() -> None:
    text = render_master(MASTER_VARIANTS, MASTER_AUDIO)
    # (check_master wants bandwidth strictly descending, so it flags the H.265 original placed last)
    assert [p.uri for p in m3u8.loads(text).playlists] == ["720p.m3u8", "360p.m3u8", "source-hevc.m3u8"]
    variants, audio = parse_master(text), parse_master_audio(text)
    assert variants == {v.uri.removesuffix(".m3u8"): v for v in MASTER_VARIANTS}
    assert audio == {"audio": MASTER_AUDIO[0]}
    assert render_master(variants.values(), audio.values()) == text


def test_write_master_keeps_the_order_given_and_may_leave_out_average_bandwidth() -> None:
    text = write_master(
        [Variant("b.m3u8?x=1", 2, None, "avc1", 2, 2), Variant("a.m3u8?x=1", 1, None, "avc1", 1, 1, 30.0)]
    )
    assert text == (
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=2,CODECS="avc1",RESOLUTION=2x2\nb.m3u8?x=1\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS="avc1",RESOLUTION=1x1,FRAME-RATE=30.000\na.m3u8?x=1\n'
    )
    with pytest.raises(PlaylistError, match="stored master"):
        parse_master(text)  # the packager's own master always has AVERAGE-BANDWIDTH


def test_attributes_keep_quoted_commas() -> None:
    assert attributes('BANDWIDTH=1,CODECS="avc1.64001f,mp4a.40.2",RESOLUTION=1x1') == {
        "BANDWIDTH": "1",
        "CODECS": "avc1.64001f,mp4a.40.2",
        "RESOLUTION": "1x1",
    }


def test_scan_agrees_with_the_model() -> None:
    text = LIVE.render()
    scanned = scan_media(text)
    assert scanned.problems == []
    assert [(s.msn, s.dsn, s.uri, s.map_uri, s.duration, s.gap) for s in scanned.segments] == [
        (7 + i, 2 + (i >= 3), s.uri, s.map_uri, s.duration, s.gap) for i, s in enumerate(LIVE.segments)
    ]
    facts = media_facts(text)
    assert (facts.segments, facts.last_uri, facts.last_duration) == (6, LIVE.segments[-1].uri, 2.0)
    assert facts.last_pdt == pytest.approx(LIVE.segments[-1].program_date_time, abs=0.0005)
    assert scan_media("#EXTM3U\n#EXT-X-TARGETDURATION:x\n").problems == [
        ("integer", "#EXT-X-TARGETDURATION 'x' is not a decimal integer")
    ]


def test_map_uris_reaches_lines_and_uri_attributes() -> None:
    text = '#EXTM3U\r\n#EXT-X-MAP:URI="i.mp4"\r\n#EXTINF:2.000,\r\n a.m4s \r\n\r\n'
    assert map_uris(text, lambda u: u + "?t=1") == (
        '#EXTM3U\r\n#EXT-X-MAP:URI="i.mp4?t=1"\r\n#EXTINF:2.000,\r\na.m4s?t=1\r\n\r\n'
    )
