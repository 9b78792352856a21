"""Events on a stream's timeline: a motion detector's alarm, a doorbell press, an operator's
bookmark. What one is, where it lives in the store, and the footage it locks. Pure code, no I/O.

The edge writes them (``POST /api/streams/{stream}/events``); the player's timeline and the API
read them; retention (in the packager) keeps the footage of every locked event past the stream's
retention, until the event is deleted. Like the recording index, this module is the contract
between them.

Layout: one object per event, filed under the UTC day its footage starts::

    streams/{stream}/events/{YYYYMMDD}/{id}.json

``id`` is ``{start}-{end}-{6 hex}``, the start and end of its footage (pre- and post-roll
included) as ``YYYYMMDDTHHMMSSmmmZ``, so a listing of keys alone tells which events touch a
time range; only those are read. Footage spans at most ``MAX_SPAN`` seconds, so a range's events
are under its days and the day before.

Versioned JSON (``"v": 1``)::

    {"v": 1, "id": "20261203T140150000Z-20261203T140330000Z-a1b2c3", "stream": "cam1",
     "type": "motion", "label": "driveway", "time": "2026-12-03T14:02:00.000Z",
     "start": "2026-12-03T14:01:50.000Z", "end": "2026-12-03T14:03:30.000Z",
     "lock": true, "created": "2026-12-03T14:02:01.250Z", "by": "publish"}

``time`` is the moment posted (null when a start and end were); ``by`` is who posted it
(``admin``, ``publish`` or ``device:NAME``).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from camflow.errors import CamflowError
from camflow.hls.dates import format_date_time, parse_date_time
from camflow.keys import stream_prefix

EVENT_VERSION = 1
DAY = 86_400
MAX_SPAN = DAY  # seconds of footage one event may cover, rolls included
DEFAULT_PRE_ROLL = 10.0
DEFAULT_POST_ROLL = 30.0
MAX_ROLL = 600.0
MAX_LABEL = 200
TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
_STAMP = "%Y%m%dT%H%M%S"
_ID_RE = re.compile(r"^([0-9]{8}T[0-9]{9}Z)-([0-9]{8}T[0-9]{9}Z)-([0-9a-f]{6})$")


class EventError(CamflowError):
    """An event body or object that is not one (the detail names the field and the expected form)."""


def _stamp(t: float) -> str:
    ms = round(t * 1000)
    return datetime.fromtimestamp(ms // 1000, UTC).strftime(_STAMP) + f"{ms % 1000:03d}Z"


def _unstamp(text: str) -> float:
    dt = datetime.strptime(text[:15], _STAMP).replace(tzinfo=UTC)
    return dt.timestamp() + int(text[15:18]) / 1000


def events_prefix(stream: str) -> str:
    return f"{stream_prefix(stream)}events/"


def day_prefix(stream: str, t: float) -> str:
    return f"{events_prefix(stream)}{datetime.fromtimestamp(t, UTC):%Y%m%d}/"


def event_key(stream: str, event_id: str) -> str:
    start, _ = span_of(event_id)
    return f"{day_prefix(stream, start)}{event_id}.json"


def span_of(event_id: str) -> tuple[float, float]:
    """(start, end) of an event's footage, from its id; EventError when it is not an id."""
    match = _ID_RE.fullmatch(event_id)
    if match is None:
        raise EventError(f"event id {event_id!r} is not START-END-HEX (e.g. {_stamp(0)}-{_stamp(60)}-a1b2c3)")
    return _unstamp(match[1]), _unstamp(match[2])


def day_prefixes(stream: str, start: float, end: float) -> list[str]:
    """The day folders that can hold an event touching ``[start, end)``: from the day before
    ``start``'s (an event started then may reach in) to ``end``'s."""
    first = int((start - MAX_SPAN) // DAY) * DAY
    return [day_prefix(stream, day) for day in range(first, int(end // DAY) * DAY + 1, DAY)]


def ids_touching(keys: Iterable[str], start: float, end: float) -> list[str]:
    """The event ids among ``keys`` whose footage overlaps ``[start, end)``, oldest first."""
    found: list[tuple[float, str]] = []
    for key in keys:
        name = key.rsplit("/", 1)[-1].removesuffix(".json")
        try:
            s, e = span_of(name)
        except EventError:
            continue  # not an event object
        if s < end and e > start:
            found.append((s, name))
    return [name for _, name in sorted(found)]


@dataclass(frozen=True)
class StreamEvent:
    id: str
    stream: str
    type: str
    label: str
    time: float | None
    start: float
    end: float
    lock: bool
    created: float
    by: str

    @property
    def key(self) -> str:
        return event_key(self.stream, self.id)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stream": self.stream,
            "type": self.type,
            "label": self.label,
            "time": None if self.time is None else format_date_time(self.time),
            "start": format_date_time(self.start),
            "end": format_date_time(self.end),
            "lock": self.lock,
            "created": format_date_time(self.created),
            "by": self.by,
        }

    def render(self) -> bytes:
        return json.dumps({"v": EVENT_VERSION, **self.to_json()}, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, data: bytes) -> StreamEvent:
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("v") != EVENT_VERSION:
                raise EventError(f"event object is not version {EVENT_VERSION}")
            start, end = span_of(str(doc["id"]))
            return cls(
                id=str(doc["id"]),
                stream=str(doc["stream"]),
                type=str(doc["type"]),
                label=str(doc["label"]),
                time=None if doc["time"] is None else parse_date_time(str(doc["time"])),
                start=start,
                end=end,
                lock=bool(doc["lock"]),
                created=parse_date_time(str(doc["created"])),
                by=str(doc["by"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise EventError(f"event object is not readable: {exc}") from exc


def _time(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventError(f"{name!r} must be an ISO 8601 time with a zone, e.g. 2026-12-03T14:02:00Z")
    try:
        return parse_date_time(value)
    except ValueError:
        raise EventError(f"{name}={value!r} is not ISO 8601 with a zone, e.g. 2026-12-03T14:02:00Z") from None


def _seconds(body: Mapping[str, Any], name: str, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_ROLL:
        raise EventError(f"{name!r} must be seconds from 0 to {MAX_ROLL:.0f}, not {value!r}")
    return float(value)


def new_event(stream: str, body: object, *, by: str, now: float) -> StreamEvent:
    """The event a POST body asks for: ``type`` (required, a-z 0-9 _ . -), ``label`` (optional
    text), ``time`` or ``start`` and ``end`` (ISO 8601; default: now), ``pre_roll`` and
    ``post_roll`` (seconds, default 10 and 30, widening the footage), ``lock`` (default true: keep
    the footage past retention until the event is deleted). EventError names what is wrong."""
    if not isinstance(body, Mapping):
        raise EventError('the body must be a JSON object, e.g. {"type": "motion", "label": "driveway"}')
    known = {"type", "label", "time", "start", "end", "pre_roll", "post_roll", "lock"}
    if unknown := sorted(set(body) - known):
        raise EventError(f"unknown field(s) {unknown}: expected some of {sorted(known)}")
    kind = body.get("type")
    if not isinstance(kind, str) or TYPE_RE.fullmatch(kind) is None:
        raise EventError(f"'type' must be 1-32 characters of a-z 0-9 _ . - (e.g. motion), not {kind!r}")
    label = body.get("label", "")
    if not isinstance(label, str) or len(label) > MAX_LABEL:
        raise EventError(f"'label' must be text of at most {MAX_LABEL} characters")
    lock = body.get("lock", True)
    if not isinstance(lock, bool):
        raise EventError(f"'lock' must be true or false, not {lock!r}")
    moment, start, end = _time(body, "time"), _time(body, "start"), _time(body, "end")
    if moment is not None and (start is not None or end is not None):
        raise EventError("give 'time', or 'start' and 'end', not both")
    if (start is None) != (end is None):
        raise EventError("'start' and 'end' go together")
    if start is None or end is None:
        start = end = now if moment is None else moment
        moment = start
    elif end < start:
        raise EventError(f"'end' {format_date_time(end)} is before 'start' {format_date_time(start)}")
    start -= _seconds(body, "pre_roll", DEFAULT_PRE_ROLL)
    end += _seconds(body, "post_roll", DEFAULT_POST_ROLL)
    if end - start > MAX_SPAN:
        raise EventError(
            f"an event covers at most {MAX_SPAN} s of footage, rolls included, not {end - start:.0f}"
        )
    event_id = f"{_stamp(start)}-{_stamp(end)}-{secrets.token_hex(3)}"
    start, end = span_of(event_id)  # as the id has them (milliseconds)
    return StreamEvent(event_id, stream, kind, label, moment, start, end, lock, now, by)
