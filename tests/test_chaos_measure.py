"""The chaos suite's arithmetic (tests/chaos): what counts as recorded, repeated, lost, and when a
scenario fails, on hand-written VOD playlists; the suite itself runs in test_chaos_functional.py
and `make chaos`."""

from __future__ import annotations

import signal

from tests.chaos.__main__ import markdown, table
from tests.chaos.measure import Recording, entries, iso
from tests.chaos.scenarios import Result

T0 = 1_795_000_000.0


def vod(*segments: tuple[str, float, float], gap_at: float | None = None) -> str:
    """A VOD playlist of (uri, start, duration); ``gap_at``: one EXT-X-GAP entry starting there."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:3", "#EXT-X-PLAYLIST-TYPE:VOD"]
    for uri, start, duration in segments:
        lines += [f"#EXT-X-PROGRAM-DATE-TIME:{iso(start)}", f"#EXTINF:{duration:.3f},", f"{uri}?token=x"]
    if gap_at is not None:
        lines += [f"#EXT-X-PROGRAM-DATE-TIME:{iso(gap_at)}", "#EXT-X-GAP", "#EXTINF:2.000,", "gap.m4s"]
    return "\n".join([*lines, "#EXT-X-ENDLIST", ""])


def test_each_stretch_of_media_counts_once_and_a_repeat_is_counted() -> None:
    text = vod(
        ("a/0.m4s", T0, 2.0), ("a/1.m4s", T0 + 2, 2.0), ("a/1.m4s", T0 + 2, 2.0), ("b/0.m4s", T0 + 3, 2.0)
    )
    rec = Recording(tuple(entries(text)))
    assert rec.repeated == 2  # a/1 listed twice; b/0 starts inside a/1
    assert rec.seconds == 4.0


def test_gap_entries_are_not_media_and_holes_are_listed() -> None:
    text = vod(("a/0.m4s", T0, 2.0), ("a/2.m4s", T0 + 6, 2.0), gap_at=T0 + 2)
    rec = Recording(tuple(entries(text)))
    assert rec.seconds == 4.0 and rec.repeated == 0
    assert rec.gaps(2.0) == ((iso(T0 + 2), 4.0),)
    assert rec.gaps(5.0) == ()


def result(
    pushed: float,
    recorded: float,
    *,
    allowed: int = 0,
    duplicated: int = 0,
    exit_codes: dict[str, int] | None = None,
    error: str = "",
) -> Result:
    codes = {"ingest#1": 0} if exit_codes is None else exit_codes
    return Result("s", pushed, recorded, duplicated, 1.0, allowed, 1, (), codes, error)


def test_a_shortfall_counts_in_whole_segments_beyond_the_slack() -> None:
    assert result(60.0, 59.6).lost == 0  # ffmpeg's progress runs a little ahead
    assert result(60.0, 59.3).lost == 1  # part of the segment in hand: it counts whole
    assert result(90.0, 14.0).lost == 38
    assert result(60.0, 60.2).lost == 0
    assert (result(60.0, 60.0).pushed, result(60.0, 60.0).recorded) == (30, 30)


def test_a_scenario_fails_on_loss_beyond_its_allowance_a_repeat_or_an_unclean_drain() -> None:
    assert result(60.0, 59.3, allowed=1).passed
    assert not result(60.0, 59.3).passed
    assert not result(60.0, 60.0, duplicated=1).passed
    assert result(60.0, 60.0, exit_codes={"ingest#1": -signal.SIGKILL, "ingest#2": 0}).passed
    assert not result(60.0, 60.0, exit_codes={"package#1": 1}).passed
    assert not result(60.0, 60.0, error="Traceback ...\nRuntimeError: camflow edge did not start").passed
    rows = table([result(60.0, 59.3), result(60.0, 60.0, exit_codes={"package#1": 1})]).splitlines()
    assert rows[0].split()[:6] == ["scenario", "pushed", "recorded", "lost", "duplicated", "recovery"]
    assert rows[2].split()[1:4] == ["30", "30", "1"] and rows[2].endswith("FAIL")
    assert "exits {'package#1': 1}" in rows[3]
    md = markdown([result(60.0, 60.0)]).splitlines()
    assert md[0].startswith("| scenario | pushed |") and md[1].count("---") == md[0].count("|") - 1
    assert md[2].startswith("| s | 30 | 30 | 0 | 0 | 1.0 |") and md[2].endswith("| ok |")
