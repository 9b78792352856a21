"""``camflow.stream_events``: a POST body becomes an event (rolls, lock, who), its object round-trips,
and its key alone tells the footage it covers."""

from __future__ import annotations

import json

import pytest

from camflow.hls.dates import parse_date_time
from camflow.stream_events import (
    DEFAULT_POST_ROLL,
    DEFAULT_PRE_ROLL,
    EventError,
    StreamEvent,
    day_prefixes,
    event_key,
    ids_touching,
    new_event,
    span_of,
)

NOW = parse_date_time("2026-12-03T14:02:00Z")


def test_a_moment_gets_the_default_rolls_and_locks() -> None:
    event = new_event("cam1", {"type": "motion", "label": "driveway"}, by="publish", now=NOW)
    assert (event.time, event.start, event.end) == (NOW, NOW - DEFAULT_PRE_ROLL, NOW + DEFAULT_POST_ROLL)
    assert event.lock and event.by == "publish" and event.created == NOW
    assert span_of(event.id) == (event.start, event.end)
    assert event.key == f"streams/cam1/events/20261203/{event.id}.json"
    assert event.id.startswith("20261203T140150000Z-20261203T140230000Z-")


def test_a_range_with_its_own_rolls_and_no_lock() -> None:
    body = {
        "type": "doorbell",
        "start": "2026-12-03T14:00:00Z",
        "end": "2026-12-03T14:01:00.250Z",
        "pre_roll": 0,
        "post_roll": 5.5,
        "lock": False,
    }
    event = new_event("cam1", body, by="admin", now=NOW)
    assert event.time is None and not event.lock
    assert event.start == parse_date_time("2026-12-03T14:00:00Z")
    assert event.end == pytest.approx(parse_date_time("2026-12-03T14:01:05.750Z"))


def test_an_event_object_round_trips() -> None:
    event = new_event("cam1", {"type": "motion", "time": "2026-12-03T23:59:55Z"}, by="device:door", now=NOW)
    assert StreamEvent.parse(event.render()) == event
    doc = json.loads(event.render())
    assert (
        doc["v"] == 1
        and doc["time"] == "2026-12-03T23:59:55.000Z"
        and doc["end"] == "2026-12-04T00:00:25.000Z"
    )
    assert event.key.startswith("streams/cam1/events/20261203/")  # filed under the day its footage starts


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (None, "must be a JSON object"),
        ([], "must be a JSON object"),
        ({}, "'type' must be"),
        ({"type": "Motion!"}, "'type' must be"),
        ({"type": "motion", "colour": "red"}, "unknown field(s) ['colour']"),
        ({"type": "motion", "label": "x" * 201}, "at most 200 characters"),
        ({"type": "motion", "time": "yesterday"}, "time='yesterday' is not ISO 8601"),
        ({"type": "motion", "time": 1733234520}, "'time' must be an ISO 8601 time"),
        ({"type": "motion", "time": "2026-12-03T14:00:00Z", "start": "2026-12-03T14:00:00Z"}, "not both"),
        ({"type": "motion", "start": "2026-12-03T14:00:00Z"}, "'start' and 'end' go together"),
        ({"type": "motion", "start": "2026-12-03T14:00:00Z", "end": "2026-12-03T13:00:00Z"}, "is before"),
        (
            {"type": "motion", "start": "2026-12-02T14:00:00Z", "end": "2026-12-03T14:00:00Z"},
            "at most 86400 s",
        ),
        ({"type": "motion", "pre_roll": -1}, "'pre_roll' must be seconds from 0 to 600"),
        ({"type": "motion", "post_roll": True}, "'post_roll' must be seconds"),
        ({"type": "motion", "lock": "yes"}, "'lock' must be true or false"),
    ],
)
def test_a_bad_body_is_refused_naming_what_is_wrong(body: object, says: str) -> None:
    with pytest.raises(EventError) as refused:
        new_event("cam1", body, by="admin", now=NOW)
    assert says in str(refused.value)


def test_keys_tell_which_events_touch_a_range() -> None:
    a = new_event("cam1", {"type": "a", "time": "2026-12-03T10:00:00Z"}, by="admin", now=NOW)
    b = new_event("cam1", {"type": "b", "time": "2026-12-03T12:00:00Z"}, by="admin", now=NOW)
    keys = [a.key, b.key, "streams/cam1/events/20261203/stray.json"]
    touching = ids_touching(
        keys, parse_date_time("2026-12-03T10:00:20Z"), parse_date_time("2026-12-03T12:00:00Z")
    )
    assert touching == [a.id, b.id]  # b's pre-roll reaches into the range
    assert (
        ids_touching(keys, parse_date_time("2026-12-03T10:01:00Z"), parse_date_time("2026-12-03T11:59:00Z"))
        == []
    )
    assert event_key("cam1", a.id) == a.key
    with pytest.raises(EventError):
        span_of("../../etc/passwd")


def test_day_prefixes_reach_back_one_event_span() -> None:
    days = day_prefixes(
        "cam1", parse_date_time("2026-12-03T01:00:00Z"), parse_date_time("2026-12-04T00:00:01Z")
    )
    assert days == [f"streams/cam1/events/{d}/" for d in ("20261202", "20261203", "20261204")]
