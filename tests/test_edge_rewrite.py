"""edge.rewrite: the viewer's token carried into every URI of a playlist (pure, no I/O)."""

from __future__ import annotations

import m3u8
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.rewrite import add_token_to_playlist, add_token_to_uri

TOKEN = "v1.eyJhIjoidmlldyJ9.c2ln-_"

MASTER = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aac",NAME="main",DEFAULT=YES,URI="audio.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=2500000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2",AUDIO="aac"
source.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2",AUDIO="aac"
360p.m3u8
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI="source-iframes.m3u8"
"""

MEDIA = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:1
#EXT-X-MAP:URI="20261121T101500123Z/source/init.mp4"
#EXTINF:2.000,
20261121T101500123Z/source/00000001.m4s
#EXTINF:2.000,
20261121T101500123Z/source/00000002.m4s
"""


def test_master_playlist_every_variant_and_rendition_uri_carries_the_token() -> None:
    out = add_token_to_playlist(MASTER, TOKEN)
    parsed = m3u8.loads(out)
    assert [p.uri for p in parsed.playlists] == [f"source.m3u8?token={TOKEN}", f"360p.m3u8?token={TOKEN}"]
    assert [m.uri for m in parsed.media] == [f"audio.m3u8?token={TOKEN}"]
    assert [p.uri for p in parsed.iframe_playlists] == [f"source-iframes.m3u8?token={TOKEN}"]
    # Tags without URIs and attributes that merely contain "URI" are untouched.
    assert 'CODECS="avc1.64001f,mp4a.40.2",AUDIO="aac"' in out
    assert out.startswith("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n")


def test_media_playlist_segments_and_map_carry_the_token() -> None:
    out = add_token_to_playlist(MEDIA, TOKEN)
    parsed = m3u8.loads(out)
    assert [s.uri for s in parsed.segments] == [
        f"20261121T101500123Z/source/00000001.m4s?token={TOKEN}",
        f"20261121T101500123Z/source/00000002.m4s?token={TOKEN}",
    ]
    assert parsed.segment_map[0].uri == f"20261121T101500123Z/source/init.mp4?token={TOKEN}"
    assert parsed.target_duration == 2
    assert parsed.media_sequence == 1
    assert out.count("token=") == 3


def test_line_count_and_crlf_endings_are_kept() -> None:
    crlf = MEDIA.replace("\n", "\r\n")
    out = add_token_to_playlist(crlf, TOKEN)
    assert out.count("\r\n") == crlf.count("\r\n")
    assert "00000001.m4s?token=" + TOKEN + "\r\n" in out
    assert add_token_to_playlist(MEDIA, TOKEN).count("\n") == MEDIA.count("\n")


def test_blank_lines_and_comments_are_left_alone() -> None:
    text = "#EXTM3U\n\n   \n# a comment mentioning seg.m4s\n#EXTINF:2.0,\nseg.m4s\n"
    out = add_token_to_playlist(text, TOKEN)
    assert out == f"#EXTM3U\n\n   \n# a comment mentioning seg.m4s\n#EXTINF:2.0,\nseg.m4s?token={TOKEN}\n"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("seg.m4s", f"seg.m4s?token={TOKEN}"),
        ("seg.m4s?cdn=1", f"seg.m4s?cdn=1&token={TOKEN}"),
        ("seg.m4s?", f"seg.m4s?token={TOKEN}"),
        ("seg.m4s?a=1&b=2#t=3", f"seg.m4s?a=1&b=2&token={TOKEN}#t=3"),
        ("seg.m4s?token=old&a=1", f"seg.m4s?a=1&token={TOKEN}"),
        ("seg.m4s?tokens=keep", f"seg.m4s?tokens=keep&token={TOKEN}"),
        ("/live/cam1/source.m3u8", f"/live/cam1/source.m3u8?token={TOKEN}"),
        ("../cam1/source.m3u8", f"../cam1/source.m3u8?token={TOKEN}"),
    ],
)
def test_relative_and_absolute_path_uris_get_the_token(uri: str, expected: str) -> None:
    assert add_token_to_uri(uri, TOKEN) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "https://cdn.example.com/live/cam1/source.m3u8",
        "http://other.example/seg.m4s?x=1",
        "//cdn.example.com/seg.m4s",
        "skd://key-id",
        "data:text/plain,hello",
    ],
)
def test_absolute_uris_naming_another_host_do_not_leak_the_token(uri: str) -> None:
    assert add_token_to_uri(uri, TOKEN) == uri
    assert add_token_to_playlist(f'#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI="{uri}"\n{uri}\n', TOKEN) == (
        f'#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI="{uri}"\n{uri}\n'
    )


def test_absolute_uris_in_a_playlist_mixed_with_relative_ones() -> None:
    text = "#EXTM3U\n#EXTINF:2,\nhttps://cdn.example.com/a.m4s\n#EXTINF:2,\nb.m4s?x=1\n"
    out = add_token_to_playlist(text, TOKEN)
    assert out == f"#EXTM3U\n#EXTINF:2,\nhttps://cdn.example.com/a.m4s\n#EXTINF:2,\nb.m4s?x=1&token={TOKEN}\n"


def test_token_characters_outside_the_url_safe_set_are_percent_encoded() -> None:
    assert add_token_to_uri("seg.m4s", "a b&c=d") == "seg.m4s?token=a%20b%26c%3Dd"


def test_rewriting_twice_keeps_one_token() -> None:
    once = add_token_to_playlist(MEDIA, TOKEN)
    assert add_token_to_playlist(once, TOKEN) == once
    assert add_token_to_playlist(once, "v1.new.sig").count("token=") == 3


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_any_text_keeps_its_lines_and_tags(text: str) -> None:
    out = add_token_to_playlist(text, TOKEN)
    lines_in, lines_out = text.split("\n"), out.split("\n")
    assert len(lines_in) == len(lines_out)
    for before, after in zip(lines_in, lines_out, strict=True):
        if before.strip().startswith("#") and 'URI="' not in before:
            assert after == before
