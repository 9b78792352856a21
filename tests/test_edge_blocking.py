"""Blocking playlist reload and held objects at the edge: the playlist reading (no I/O) and ``LiveEnds``
with an in-memory store that counts its reads."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace

import pytest

from camflow.errors import NotFound
from camflow.events import PlaylistEnd, PlaylistsChanged
from camflow.hls.lowlatency import End, playlist_end
from camflow.keys import media_playlist_key, part_key
from edge.blocking import LiveEnds, view_of
from edge.cache import CachedObject, ObjectCache
from edge.delivery import never_written, newest_object
from edge.fastpath import query_token
from edge.hlsquery import BadQuery, BlockingQuery
from edge.paths import Kind, LiveObject, parse_live_path
from edge.rewrite import add_token_to_playlist
from tests.ll_playlists import EPOCH, ll_playlist, part_uri

KEY = media_playlist_key("cam1", "source")
WAITERS = 50


class CountingStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads: Counter[str] = Counter()

    async def get(self, key: str) -> bytes:
        self.reads[key] += 1
        await asyncio.sleep(0.005)  # a store round trip: concurrent readers overlap
        if key not in self.objects:
            raise NotFound(key)
        return self.objects[key]


def make_ends(store: CountingStore) -> tuple[LiveEnds, ObjectCache]:
    cache = ObjectCache(1 << 20)

    async def fetch(key: str) -> CachedObject:
        return await cache.get(key, store.get, lambda _: 0.5 if key.endswith(".m3u8") else None)

    ends = LiveEnds(cache, fetch)
    ends.following = True  # as if camflow.playlists were followed: no fallback re-reads
    return ends, cache


def changed(msn: int, part: int) -> PlaylistsChanged:
    return PlaylistsChanged("cam1", (PlaylistEnd("source", msn, part),), 0.0)


# -- reading LL playlists ------------------------------------------------------------------------


def cached(text: str) -> CachedObject:
    return CachedObject(KEY, text.encode(), '"e"', 0.0, None)


def test_what_the_edge_reads_of_a_playlist_in_progress() -> None:
    view = view_of(cached(ll_playlist(12, 3)))
    assert view is not None and view.end == End(12, 3) and view.blocking
    assert newest_object("cam1", view) == parse_live_path(f"/live/cam1/{part_uri(12, 4)}")  # the hint
    complete = view_of(cached(ll_playlist(12, -1)))
    assert complete is not None and complete.end == End(12, -1)
    assert newest_object("cam1", complete) == parse_live_path(f"/live/cam1/{part_uri(13, 0)}")
    unhinted = replace(complete, preload_hint=None)  # the last URI listed: segment 12
    assert newest_object("cam1", unhinted) == parse_live_path(f"/live/cam1/{EPOCH}/source/00000012.m4s")
    assert newest_object("cam1", replace(complete, preload_hint="x/y.m4s", last_uri="../z.m4s")) is None
    ended = view_of(cached(ll_playlist(12, -1, endlist=True)))
    assert ended is not None and ended.endlist and not ended.blocking
    assert view_of(cached(ll_playlist(12, 3, blocking=False))) == replace(
        view, can_block=False, can_skip_until=None
    )
    assert view_of(cached("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.m4s\n")) is None  # not LL
    unreadable = cached(ll_playlist(12, 3).replace("#EXT-X-TARGETDURATION:2", "#EXT-X-TARGETDURATION:x"))
    assert view_of(unreadable) is None and unreadable.derived == {"ll": None}  # served as it is, read once


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ({"_HLS_msn": "x"}, "_HLS_msn='x' is not valid"),
        ({"_HLS_msn": "-1"}, "_HLS_msn='-1' is not valid"),
        ({"_HLS_msn": "1", "_HLS_part": "1.5"}, "_HLS_part='1.5' is not valid"),
        ({"_HLS_part": "2"}, "without _HLS_msn"),
        ({"_HLS_msn": "1", "_HLS_skip": "NO"}, "_HLS_skip='NO' is not valid: expected YES or v2"),
        ({"_HLS_msn": "\u0661"}, "is not valid"),  # a non-ASCII digit
    ],
)
def test_malformed_queries_are_refused(query: dict[str, str], detail: str) -> None:
    with pytest.raises(BadQuery, match=detail):
        BlockingQuery.parse(query)


def test_queries_and_what_they_wait_for() -> None:
    assert BlockingQuery.parse({"token": "t"}) is None
    q = BlockingQuery.parse({"_HLS_msn": "12", "_HLS_part": "4"})
    assert q is not None and q.blocks and not q.skip
    assert not q.reached(End(12, 3)) and not q.reached(None) and not q.reached(End(11, -1))
    assert q.reached(End(12, 4)) and q.reached(End(13, 0))
    assert q.reached(End(12, -1))  # segment 12 complete: all its parts are there
    whole = BlockingQuery.parse({"_HLS_msn": "12"})
    assert whole is not None and not whole.reached(End(12, 9))
    assert whole.reached(End(13, 0)) and whole.reached(End(12, -1))
    skip = BlockingQuery.parse({"_HLS_skip": "YES"})
    assert skip is not None and skip.skip and not skip.blocks
    assert q.too_far(End(12, 1)) is None and q.too_far(End(10, 5)) is None and q.too_far(End(12, 0))
    far = BlockingQuery.parse({"_HLS_msn": "13"})
    assert far is not None and far.too_far(End(10, 5)) is not None and far.too_far(End(11, -1)) is None
    ahead = BlockingQuery.parse({"_HLS_msn": "12", "_HLS_part": "9"})
    assert ahead is not None and "more than 3 beyond the last part 3" in (ahead.too_far(End(12, 3)) or "")


def test_a_part_past_a_complete_segments_last_is_answered_not_refused() -> None:
    """Segment 12 is complete (with fewer than 10 parts): _HLS_part=9 of it is, by RFC 8216bis
    6.2.5.2, a request for segment 13's part 0, never a 400; the playlist answers it at once."""
    past = BlockingQuery.parse({"_HLS_msn": "12", "_HLS_part": "9"})
    assert past is not None and past.too_far(End(12, -1)) is None and past.reached(End(12, -1))
    assert past.too_far(End(13, 0)) is None and past.reached(End(13, 0))
    assert past.too_far(End(12, 5)) is not None  # segment 12 in progress: 9 is more than 3 beyond


def test_part_paths_and_the_fast_path_leaving_ll_queries_alone() -> None:
    obj = parse_live_path(f"/live/cam1/{EPOCH}/source/00000012.004.m4s")
    assert obj.kind is Kind.PART and obj.key == part_key("cam1", EPOCH, "source", 12, 4)
    assert (obj.rendition, obj.epoch, obj.seq) == ("source", EPOCH, 12)
    assert query_token(b"token=abc") == "abc"
    assert query_token(b"_HLS_msn=3&token=abc") is None  # the application answers blocking reloads


# -- LiveEnds ------------------------------------------------------------------------------------


async def test_fifty_blocked_reloads_cost_one_wakeup_and_one_store_read() -> None:
    store = CountingStore()
    store.objects[KEY] = ll_playlist(12, 3).encode()
    ends, cache = make_ends(store)
    first = await cache.get(KEY, store.get, lambda _: 0.5)
    query = BlockingQuery(12, 4, False)
    since = ends.generation("cam1", "source")
    waiters = [
        asyncio.create_task(ends.reload("cam1", "source", query, first, since)) for _ in range(WAITERS)
    ]
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiters)
    ends.changed(changed(12, 3))  # not there yet: nobody reads
    await asyncio.sleep(0.05)
    assert store.reads[KEY] == 1 and not any(w.done() for w in waiters)
    store.objects[KEY] = ll_playlist(12, 4).encode()
    ends.changed(changed(12, 4))
    answers = await asyncio.wait_for(asyncio.gather(*waiters), 2)
    assert all(a is not None and playlist_end(a.data.decode()) == End(12, 4) for a in answers)
    assert store.reads[KEY] == 2  # the first read, then one for all 50
    assert ends.stats.wakeups == 2 and ends.stats.reloads_blocked == WAITERS
    await ends.close()


async def test_a_change_between_the_read_and_the_wait_is_not_missed() -> None:
    store = CountingStore()
    store.objects[KEY] = ll_playlist(12, 3).encode()
    ends, cache = make_ends(store)
    since = ends.generation("cam1", "source")
    first = await cache.get(KEY, store.get, lambda _: 0.5)
    store.objects[KEY] = ll_playlist(12, 4).encode()
    ends.changed(changed(12, 4))  # after the read, before the wait
    answer = await asyncio.wait_for(
        ends.reload("cam1", "source", BlockingQuery(12, 4, False), first, since), 1
    )
    assert answer is not None and playlist_end(answer.data.decode()) == End(12, 4)


async def test_a_reload_not_reached_in_three_target_durations_gives_none() -> None:
    store = CountingStore()
    text = ll_playlist(12, 3).replace("#EXT-X-TARGETDURATION:2", "#EXT-X-TARGETDURATION:1")
    store.objects[KEY] = text.encode()
    ends, cache = make_ends(store)
    first = await cache.get(KEY, store.get, lambda _: 0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await ends.reload("cam1", "source", BlockingQuery(13, None, False), first, 0) is None
    assert 2.9 <= loop.time() - started < 3.75 and ends.stats.reloads_timed_out == 1
    await ends.close()


async def test_fifty_requests_for_a_future_part_cost_one_read_when_it_appears() -> None:
    store = CountingStore()
    key = part_key("cam1", EPOCH, "source", 12, 4)
    ends, _ = make_ends(store)
    since = ends.generation("cam1", "source")
    waiters = [asyncio.create_task(ends.hold(key, "cam1", "source", 2.0, since)) for _ in range(WAITERS)]
    await asyncio.sleep(0.05)
    assert store.reads[key] == 0 and ends.holding(key)
    store.objects[key] = b"part 12.4"
    ends.changed(changed(12, 4))
    found = await asyncio.wait_for(asyncio.gather(*waiters), 2)
    assert all(f is not None and f.data == b"part 12.4" for f in found)
    assert store.reads[key] == 1 and ends.stats.hold_reads == 1 and not ends.holding(key)
    await ends.close()


async def test_a_held_object_that_never_comes_times_out() -> None:
    store = CountingStore()
    key = part_key("cam1", EPOCH, "source", 12, 4)
    ends, _ = make_ends(store)
    assert await ends.hold(key, "cam1", "source", 0.2, 0) is None
    assert ends.stats.holds_timed_out == 1 and not ends.holding(key)
    await ends.close()


async def test_without_events_one_task_re_reads_the_playlist_per_part_target() -> None:
    store = CountingStore()
    store.objects[KEY] = ll_playlist(12, 3).encode()
    ends, cache = make_ends(store)
    ends.following = False  # the bus is down
    first = await cache.get(KEY, store.get, lambda _: 0.5)
    query = BlockingQuery(12, 5, False)
    waiters = [asyncio.create_task(ends.reload("cam1", "source", query, first, 0)) for _ in range(WAITERS)]
    await asyncio.sleep(0.5)  # ~2 re-reads (one per 0.2 s part target), for all 50 waiters
    reads = store.reads[KEY]
    assert 2 <= reads <= 5 and ends.stats.fallback_reads == reads - 1
    store.objects[KEY] = ll_playlist(12, 5).encode()
    answers = await asyncio.wait_for(asyncio.gather(*waiters), 2)
    assert all(a is not None for a in answers)
    assert store.reads[KEY] - reads <= 2  # the re-read that found it, not one per waiter
    await ends.close()


async def test_a_playlist_read_older_than_the_event_is_read_again() -> None:
    store = CountingStore()
    store.objects[KEY] = ll_playlist(12, 3).encode()
    ends, cache = make_ends(store)
    first = await cache.get(KEY, store.get, lambda _: 0.5)
    waiter = asyncio.create_task(ends.reload("cam1", "source", BlockingQuery(12, 4, False), first, 0))
    await asyncio.sleep(0.05)
    ends.changed(changed(12, 4))  # the event came before the store shows the new playlist
    await asyncio.sleep(0.3)
    assert not waiter.done()
    store.objects[KEY] = ll_playlist(12, 4).encode()  # no event says it again
    answer = await asyncio.wait_for(waiter, 1)
    assert answer is not None and playlist_end(answer.data.decode()) == End(12, 4)
    assert store.reads[KEY] <= 6  # about one read per part target, not a loop


async def test_events_that_stop_coming_make_the_waiters_fall_back() -> None:
    store = CountingStore()
    store.objects[KEY] = ll_playlist(12, 3).encode()
    ends, cache = make_ends(store)  # following: the bus is up, but the events stop (Kafka down)
    ends.changed(changed(12, 3))
    first = await cache.get(KEY, store.get, lambda _: 0.5)
    waiter = asyncio.create_task(ends.reload("cam1", "source", BlockingQuery(12, 4, False), first, 0))
    store.objects[KEY] = ll_playlist(12, 4).encode()
    answer = await asyncio.wait_for(waiter, 3)
    assert answer is not None and ends.stats.fallback_reads >= 1  # after 5 quiet part targets (1 s)


def test_the_token_is_carried_into_parts_hints_and_rendition_reports() -> None:
    text = add_token_to_playlist(ll_playlist(12, 3), "T")
    assert '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="' + part_uri(12, 4) + '?token=T"' in text
    assert 'URI="' + part_uri(12, 3) + '?token=T"' in text and 'URI="audio.m3u8?token=T"' in text


def live_part(seq: int, part: int, epoch: str = EPOCH) -> LiveObject:
    return parse_live_path(f"/live/cam1/{part_uri(seq, part, epoch=epoch)}")


def test_a_missing_part_is_known_never_to_come_once_its_segment_is_complete_or_a_later_one_began() -> None:
    older = "20261203T160000000Z"
    at_part_9 = view_of(cached(ll_playlist(12, 9)))  # hints 13.000; whether 12.010 comes is not known yet
    assert not never_written(live_part(12, 10), at_part_9)
    assert not never_written(live_part(13, 0), at_part_9)
    complete = view_of(cached(ll_playlist(12, -1)))  # segment 12 listed whole, parts 0..9
    assert never_written(live_part(12, 10), complete)
    assert not never_written(live_part(13, 0), complete)
    later = view_of(cached(ll_playlist(13, 0)))
    assert never_written(live_part(12, 10), later) and not never_written(live_part(13, 1), later)
    assert never_written(live_part(12, 3, older), later)  # an older epoch's
    assert never_written(live_part(14, 0), view_of(cached(ll_playlist(13, 3, endlist=True))))
    segment = parse_live_path(f"/live/cam1/{EPOCH}/source/00000013.m4s")
    assert not never_written(segment, later)  # segments lag their listing: never judged from it


async def test_a_held_part_is_answered_at_once_when_the_playlist_shows_it_will_never_exist() -> None:
    store = CountingStore()
    obj = live_part(12, 10)  # a preload hint of a segment that ended at part 9
    store.objects[KEY] = ll_playlist(12, 9).encode()
    ends, _ = make_ends(store)
    since = ends.generation("cam1", "source")

    def gone(playlist: CachedObject) -> bool:
        return never_written(obj, view_of(playlist))

    waiters = [
        asyncio.create_task(ends.hold(obj.key, "cam1", "source", 2.0, since, gone)) for _ in range(WAITERS)
    ]
    await asyncio.sleep(0.05)
    ends.changed(changed(12, 9))  # nothing new: held on
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiters)
    store.objects[KEY] = ll_playlist(13, 0).encode()
    t0 = asyncio.get_running_loop().time()
    ends.changed(changed(13, 0))
    assert await asyncio.wait_for(asyncio.gather(*waiters), 2) == [None] * WAITERS
    assert asyncio.get_running_loop().time() - t0 < 0.5
    assert ends.stats.holds_gone == 1 and ends.stats.holds_timed_out == 0 and not ends.holding(obj.key)
    # a part that does come is still served, the playlist read first
    nxt = live_part(13, 1)
    since = ends.generation("cam1", "source")
    waiter = asyncio.create_task(
        ends.hold(nxt.key, "cam1", "source", 2.0, since, lambda p: never_written(nxt, view_of(p)))
    )
    await asyncio.sleep(0.02)
    store.objects[nxt.key] = b"part 13.1"
    store.objects[KEY] = ll_playlist(13, 1).encode()
    ends.changed(changed(13, 1))
    found = await asyncio.wait_for(waiter, 2)
    assert found is not None and found.data == b"part 13.1"
    await ends.close()
