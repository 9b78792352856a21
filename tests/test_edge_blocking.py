"""Blocking playlist reload and held objects at the edge: the playlist reading (no I/O) and ``LiveEnds``
with an in-memory store that counts its reads."""

from __future__ import annotations

import asyncio
from collections import Counter

import m3u8
import pytest

from camflow.errors import NotFound
from camflow.events import PlaylistEnd, PlaylistsChanged
from camflow.keys import media_playlist_key, part_key
from edge.blocking import LiveEnds
from edge.cache import CachedObject, ObjectCache
from edge.fastpath import query_token
from edge.llplaylist import BadQuery, BlockingQuery, End, delta_update, ll_view
from edge.paths import Kind, parse_live_path
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


def test_view_of_a_playlist_in_progress() -> None:
    view = ll_view(ll_playlist(12, 3))
    assert view.end == End(12, 3) and view.last_complete == 11
    assert view.part_target == 0.2 and view.target_duration == 2 and view.can_skip_until == 12
    assert view.blocking and view.newest == (EPOCH, 12)  # the preload hint names 12.004
    complete = ll_view(ll_playlist(12, -1))
    assert complete.end == End(12, -1) and complete.last_complete == 12 and complete.newest == (EPOCH, 13)
    assert not ll_view(ll_playlist(12, -1, endlist=True)).blocking
    assert not ll_view(ll_playlist(12, 3, blocking=False)).blocking
    plain = ll_view("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.m4s\n")
    assert plain.part_target is None and not plain.blocking and plain.end == End(0, -1)


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
    assert not q.reached(ll_view(ll_playlist(12, 3)))
    assert q.reached(ll_view(ll_playlist(12, 4)))
    assert q.reached(ll_view(ll_playlist(12, -1)))  # segment 12 complete: all its parts are there
    whole = BlockingQuery.parse({"_HLS_msn": "12"})
    assert whole is not None and not whole.reached(ll_view(ll_playlist(12, 9)))
    assert whole.reached(ll_view(ll_playlist(13, 0)))
    skip = BlockingQuery.parse({"_HLS_skip": "YES"})
    assert skip is not None and skip.skip and not skip.blocks
    assert q.too_far(End(12, 1)) is None and q.too_far(End(10, 5)) is None and q.too_far(End(12, 0))
    far = BlockingQuery.parse({"_HLS_msn": "13"})
    assert far is not None and far.too_far(End(10, 5)) is not None and far.too_far(End(11, -1)) is None
    ahead = BlockingQuery.parse({"_HLS_msn": "12", "_HLS_part": "9"})
    assert ahead is not None and "more than 3 beyond the last part 3" in (ahead.too_far(End(12, 3)) or "")


def test_delta_update_skips_what_is_older_than_can_skip_until() -> None:
    full = ll_playlist(30, 3, window=20)
    delta = delta_update(full, 12.0)
    parsed = m3u8.loads(delta)
    assert "#EXT-X-SKIP:SKIPPED-SEGMENTS=" in delta
    skipped = int(delta.split("SKIPPED-SEGMENTS=")[1].split("\n")[0])
    kept = [s.uri for s in parsed.segments if s.uri]
    # kept segments cover at least 12 s before the end, the skipped ones end earlier
    assert skipped + len(kept) == 20 and 6 <= len(kept) <= 7 and kept[-1].endswith("00000029.m4s")
    assert parsed.media_sequence == 10  # unchanged: skipped segments still count
    assert delta.count("#EXT-X-MAP:") == 1 and delta.index("#EXT-X-MAP") < delta.index(kept[0])
    assert delta.endswith(
        full[full.index('#EXT-X-PART:DURATION=0.200,URI="' + EPOCH + "/source/00000030.000") :]
    )
    assert "PROGRAM-DATE-TIME" not in delta  # it was the first (skipped) segment's
    assert ll_view(delta).end == End(30, 3)
    short = ll_playlist(3, 1)
    assert delta_update(short, 12.0) == short


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
    assert all(a is not None and ll_view(a.data.decode()).end == End(12, 4) for a in answers)
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
    assert answer is not None and ll_view(answer.data.decode()).end == End(12, 4)


async def test_a_reload_not_reached_in_three_target_durations_gives_none() -> None:
    store = CountingStore()
    text = ll_playlist(12, 3).replace("#EXT-X-TARGETDURATION:2", "#EXT-X-TARGETDURATION:0.1")
    store.objects[KEY] = text.encode()
    ends, cache = make_ends(store)
    first = await cache.get(KEY, store.get, lambda _: 0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await ends.reload("cam1", "source", BlockingQuery(13, None, False), first, 0) is None
    assert 0.25 <= loop.time() - started < 1.0 and ends.stats.reloads_timed_out == 1
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
    assert answer is not None and ll_view(answer.data.decode()).end == End(12, 4)
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
