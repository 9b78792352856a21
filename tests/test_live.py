"""The live fan-out (ingest.media.live): the IDR cache, viewers' queues, drops and clocks."""

from __future__ import annotations

from ingest.media.live import AUDIO_QUEUE, FRAME_TICKS, LiveFeed, LiveFeeds, LiveFrame, LiveViewer, annexb
from ingest.media.units import AccessUnit

SPS, PPS = b"\x67\x42\xc0\x1f", b"\x68\xce\x3c\x80"


def idr(pts: int) -> AccessUnit:
    return AccessUnit(pts, (SPS, PPS, b"\x65\x88" + bytes(4)), True)


def p(pts: int) -> AccessUnit:
    return AccessUnit(pts, (b"\x41\x9a" + bytes(4),), False)


def drain(viewer: LiveViewer) -> list[tuple[LiveFrame, int]]:
    out = []
    while (item := viewer.take()) is not None:
        out.append(item)
    return out


def test_annexb_puts_a_start_code_before_every_nal_unit() -> None:
    frame = annexb(idr(9000))
    assert frame.data == b"".join(b"\x00\x00\x00\x01" + n for n in (SPS, PPS, b"\x65\x88" + bytes(4)))
    assert frame.is_idr and frame.pts == 9000


def test_a_new_viewer_starts_on_the_cached_idr_in_a_burst_then_live_with_the_cameras_spacing() -> None:
    feed = LiveFeed("cam", "h264")
    generation = feed.begin("h264")
    feed.push(p(0), generation)  # before any IDR: nothing to start on
    assert feed.cached == 0
    feed.push(idr(3000), generation)
    for i in range(2, 5):
        feed.push(p(3000 * i), generation)
    assert feed.cached == 4
    viewer = feed.subscribe()
    burst = drain(viewer)
    assert [f.pts for f, _ in burst] == [3000, 6000, 9000, 12000] and burst[0][0].is_idr
    assert [stamp for _, stamp in burst] == [0, 1, 2, 3]  # one tick apart: shown at once
    feed.push(p(15000), generation)
    feed.push(p(18000), generation)
    assert [stamp for _, stamp in drain(viewer)] == [3 + 3000, 3 + 6000]  # the camera's spacing
    feed.push(idr(21000), generation)  # a new GOP replaces the cache
    assert feed.cached == 1


def test_without_a_cache_a_viewer_waits_for_the_next_idr_and_the_source_is_asked_for_one() -> None:
    feed = LiveFeed("cam", "h264")
    generation = feed.begin("h264")
    asked: list[int] = []
    feed.request_keyframe = lambda: asked.append(1)
    viewer = feed.subscribe()
    assert asked == [1]
    ready: list[int] = []
    viewer.on_ready = lambda: ready.append(1)
    feed.push(p(0), generation)
    assert viewer.take() is None and viewer.counters.dropped == 1 and not ready
    feed.push(idr(3000), generation)
    feed.push(p(6000), generation)
    out = drain(viewer)
    assert [f.pts for f, _ in out] == [3000, 6000] and [s for _, s in out] == [0, 3000] and len(ready) == 2


def test_a_gop_longer_than_the_cache_is_not_cached() -> None:
    feed = LiveFeed("cam", "h264", max_cached_units=3)
    generation = feed.begin("h264")
    feed.push(idr(0), generation)
    feed.push(p(3000), generation)
    feed.push(p(6000), generation)
    assert feed.cached == 3
    feed.push(p(9000), generation)
    assert feed.cached == 0 and feed.cache_overflows == 1
    feed.push(p(12000), generation)  # still no IDR: not cached
    assert feed.cached == 0
    feed.push(idr(15000), generation)
    assert feed.cached == 1


def test_a_slow_viewer_drops_its_queue_and_resumes_on_the_next_idr_with_a_continuous_clock() -> None:
    feed = LiveFeed("cam", "h264")
    generation = feed.begin("h264")
    feed.push(idr(0), generation)
    viewer = feed.subscribe(max_queue=3)
    for i in range(1, 5):
        feed.push(p(3000 * i), generation)  # 9000 overflows the queue of 3 (0, 3000, 6000)
    assert viewer.counters.overflows == 1 and viewer.queued == 0
    feed.push(p(15000), generation)  # not an IDR: dropped
    feed.push(idr(18000), generation)
    feed.push(p(21000), generation)
    out = drain(viewer)
    assert [f.pts for f, _ in out] == [18000, 21000] and out[0][0].is_idr
    last_before = 6000 + 0  # the burst's stamp 0 (pts 0), then live 3000, 6000 were queued
    assert out[0][1] == last_before + FRAME_TICKS and out[1][1] == out[0][1] + 3000
    assert viewer.counters.dropped == 3 + 3  # the queue, then 9000 (the overflow), 12000 and 15000


def test_a_new_publisher_keeps_viewers_who_wait_for_its_idr_and_ignore_the_old_ones_units() -> None:
    feeds = LiveFeeds()
    feed, first = feeds.publishing("cam", "h264")
    feed.push(idr(900_000), first)
    viewer = feed.subscribe()
    assert [s for _, s in drain(viewer)] == [0]
    same, second = feeds.publishing("cam", "h264")  # the camera reconnected
    assert same is feed and second != first
    feed.push(p(903_000), first)  # the replaced publisher's late unit
    feeds.ended(feed, first)  # and its end: changes nothing
    assert feed.live and viewer.queued == 0
    feed.push(p(3000), second)  # the new timeline; not an IDR yet
    feed.push(idr(6000), second)
    feed.push(p(9000), second)
    assert [(f.pts, s) for f, s in drain(viewer)] == [(6000, FRAME_TICKS), (9000, FRAME_TICKS + 3000)]


def test_feeds_forget_a_feed_once_its_publisher_and_its_viewers_are_gone() -> None:
    feeds = LiveFeeds()
    feed, generation = feeds.publishing("cam", "h264")
    feed.push(idr(0), generation)
    viewer = feed.subscribe()
    feeds.ended(feed, generation)
    assert feeds.get("cam") is feed and feed.cached == 0 and not feed.live
    feed.push(idr(3000), generation)  # nothing after the end
    assert feed.cached == 0
    viewer.close()
    feeds.forget(feed)
    assert feeds.get("cam") is None and feeds.viewers == 0


def test_a_closed_viewer_gets_nothing_more() -> None:
    feed = LiveFeed("cam", "h264")
    generation = feed.begin("h264")
    viewer = feed.subscribe()
    viewer.close()
    feed.push(idr(0), generation)
    assert viewer.take() is None and viewer.ended and viewer not in feed.viewers


def test_viewers_keyframe_requests_reach_the_source_at_most_once_per_interval() -> None:
    feed = LiveFeed("cam", "h264")
    assert not feed.want_keyframe(0.0, 1.0)  # a source that cannot be asked (RTSP)
    asked: list[int] = []
    feed.request_keyframe = lambda: asked.append(1)
    assert feed.want_keyframe(10.0, 1.0) and not feed.want_keyframe(10.5, 1.0)
    assert feed.want_keyframe(11.0, 1.0) and asked == [1, 1] and feed.keyframe_requests == 2


def test_opus_reaches_a_viewer_once_its_video_started_with_a_continuous_bounded_queue() -> None:
    feed = LiveFeed("cam", "h264")
    generation = feed.begin("h264")
    viewer = feed.subscribe()
    woken: list[int] = []
    viewer.on_audio = lambda: woken.append(1)
    feed.push_opus(b"early", 0, generation)  # before its first IDR: nothing to sync to
    assert viewer.take_audio() is None and not woken
    feed.push(idr(0), generation)
    feed.push_opus(b"a", 48_000, generation)
    feed.push_opus(b"b", 48_960, generation)
    assert [viewer.take_audio(), viewer.take_audio(), viewer.take_audio()] == [(b"a", 0), (b"b", 960), None]
    for i in range(AUDIO_QUEUE + 5):
        feed.push_opus(bytes([i]), 50_000 + 960 * i, generation)
    # the source's spacing (its pts - 48 000), the 5 oldest dropped
    assert viewer.counters.audio_dropped == 5 and viewer.take_audio() == (bytes([5]), 2000 + 5 * 960)
    second = feed.begin("h264")  # a new publisher: audio waits for its IDR, its clock continues
    feed.push(idr(0), second)
    feed.push_opus(b"new", 7, second)
    assert viewer.take_audio() == (b"new", 2000 + (AUDIO_QUEUE + 4) * 960 + 960)
