"""camflow.hls.scan and edge.policy: facts the edge reads from playlists, and the cache lifetimes."""

from __future__ import annotations

from camflow.hls.dates import read_date_time
from camflow.hls.scan import master_variants, media_facts
from edge.policy import IMMUTABLE, PlaylistPolicy

MEDIA = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:4
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-MAP:URI="e/source/init.mp4"
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:15:00.000Z
#EXTINF:4.000,
e/source/00000007.m4s
#EXTINF:3.500,
e/source/00000008.m4s
"""
MASTER = """#EXTM3U
#EXT-X-STREAM-INF:BANDWIDTH=2500000,AVERAGE-BANDWIDTH=2000000,CODECS="avc1.64001f,mp4a.40.2",RESOLUTION=1280x720,FRAME-RATE=29.970
source.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360
360p.m3u8
"""


def test_media_facts_follow_program_date_time_over_segments() -> None:
    facts = media_facts(MEDIA)
    assert facts.target_duration == 4 and not facts.ended and not facts.vod
    assert facts.segments == 2 and facts.last_uri == "e/source/00000008.m4s"
    start = read_date_time("2026-11-21T10:15:00.000Z")
    assert start is not None and facts.last_pdt == start + 4.0 and facts.last_duration == 3.5
    assert media_facts(MEDIA + "#EXT-X-ENDLIST\n").ended
    assert media_facts("#EXTM3U\n#EXT-X-TARGETDURATION:x\n").target_duration is None


def test_master_variants_read_attributes_with_quoted_commas() -> None:
    top, low = master_variants(MASTER)
    assert (top.uri, top.bandwidth, top.width, top.height, top.frame_rate) == (
        "source.m3u8",
        2500000,
        1280,
        720,
        29.97,
    )
    assert top.codecs == "avc1.64001f,mp4a.40.2"
    assert (low.uri, low.frame_rate, low.codecs) == ("360p.m3u8", None, None)


def test_cache_lifetimes() -> None:
    policy = PlaylistPolicy()
    assert policy.cache_control(MEDIA.encode()) == "public, max-age=2"
    assert policy.memory_ttl(MEDIA.encode()) == 1.0
    assert policy.cache_control(MASTER.encode()) == "public, max-age=1"
    vod = MEDIA.replace("#EXT-X-VERSION:7", "#EXT-X-VERSION:7\n#EXT-X-PLAYLIST-TYPE:VOD") + "#EXT-X-ENDLIST\n"
    assert policy.cache_control(vod.encode()) == "public, max-age=86400"
    assert policy.memory_ttl(vod.encode()) == 86400
    short = PlaylistPolicy(max_age_override=0.4)
    assert short.cache_control(MEDIA.encode()) == "public, max-age=1"
    assert short.memory_ttl(MEDIA.encode()) == 0.4
    assert IMMUTABLE == "public, max-age=31536000, immutable"
