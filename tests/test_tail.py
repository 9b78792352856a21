"""`camflow tail` formatting and filtering, without a feed: lines, colors, JSON, the table, SSE parsing."""

from __future__ import annotations

import asyncio
import io
import json
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from camflow.cli.tail import (
    CLEAR,
    COLORS,
    RESET,
    TailFilter,
    TailOptions,
    format_json,
    format_line,
    parse_sse,
    render_table,
    run_tail,
    use_color,
)
from camflow.events import HealthSample, StreamStateKind, health_sample_from_json
from camflow.health import HealthBoard

AT = 1_795_000_000.0


def ingest(stream: str, state: StreamStateKind, at: float = AT, **figures: object) -> HealthSample:
    return HealthSample(
        stream, "ingest", "host/1", at, state=state, reason=f"because {state.value}", **figures
    )  # type: ignore[arg-type]


def transcode(stream: str, at: float = AT, latency: float = 0.42, lag: int = 3) -> HealthSample:
    return HealthSample(stream, "transcode", "host/2", at, transcode_latency=latency, consumer_lag=lag)


def test_line_has_stream_service_state_figures_and_reason() -> None:
    sample = ingest(
        "cam1", StreamStateKind.LIVE, bitrate=2_100_000.0, fps=30.0, gop_seconds=2.0, packets_lost=4
    )
    line = format_line(sample, color=False)
    assert "cam1" in line and "ingest" in line and "live" in line
    assert "bitrate=2.10Mb/s" in line and "fps=30" in line and "gop=2.00s" in line and "lost=4" in line
    assert line.endswith("(because live)")
    assert "\x1b[" not in line
    assert "lag=" not in line  # figures the sample does not carry are left out


def test_line_is_colored_by_state_only_when_asked() -> None:
    for state in StreamStateKind:
        line = format_line(ingest("cam1", state), color=True)
        assert line.startswith(COLORS[state.value]) and line.endswith(RESET)
    stalled, live = (
        format_line(ingest("c", StreamStateKind.STALLED), color=True),
        format_line(ingest("c", StreamStateKind.LIVE), color=True),
    )
    assert stalled[:5] != live[:5]


def test_a_service_without_state_shows_the_streams_state() -> None:
    line = format_line(transcode("cam1"), color=False, state="stalled")
    assert "transcode" in line and "stalled" in line and "transcode=0.42s" in line and "lag=3" in line


def test_json_is_one_object_that_reads_back() -> None:
    sample = ingest("cam1", StreamStateKind.OFFLINE, segment_age=12.5, timestamp_corrections=2)
    text = format_json(sample)
    assert "\n" not in text
    assert health_sample_from_json(json.loads(text)) == sample
    assert json.loads(text)["state"] == "offline"


def test_filter_by_stream_and_state_uses_the_board_for_stateless_samples() -> None:
    board = HealthBoard(clock=lambda: AT)
    board.add(ingest("cam1", StreamStateKind.STALLED))
    board.add(ingest("cam2", StreamStateKind.LIVE))
    stalled = TailFilter(states=frozenset({"stalled"}))
    assert stalled.keeps(ingest("cam1", StreamStateKind.STALLED), board)
    assert not stalled.keeps(ingest("cam2", StreamStateKind.LIVE), board)
    assert stalled.keeps(transcode("cam1"), board)  # cam1 is stalled on the board
    assert not stalled.keeps(transcode("cam2"), board)
    assert not stalled.keeps(transcode("cam9"), board)  # unknown stream: no state
    only2 = TailFilter(streams=frozenset({"cam2"}))
    assert only2.keeps(transcode("cam2"), board) and not only2.keeps(transcode("cam1"), board)
    assert TailFilter().keeps(transcode("cam9"), board)


def test_board_merges_state_from_ingest_and_figures_from_the_newest_sample() -> None:
    board = HealthBoard(clock=lambda: AT + 1)
    board.add(ingest("cam1", StreamStateKind.LIVE, at=AT, bitrate=1e6, segment_age=0.5))
    board.add(transcode("cam1", at=AT + 0.5, latency=0.8, lag=7))
    board.add(ingest("cam1", StreamStateKind.STALLED, at=AT - 5, bitrate=9e9))  # older: ignored
    row = board.merged("cam1")
    assert row is not None
    assert row["state"] == "live" and row["bitrate"] == 1e6 and row["transcode_latency"] == 0.8
    assert row["consumer_lag"] == 7 and row["services"] == ["ingest", "transcode"]
    assert board.merged("nope") is None
    late = HealthBoard(clock=lambda: AT + 10_000)
    late.add(ingest("old", StreamStateKind.OFFLINE, at=AT))
    late.prune()
    assert late.streams == []


def test_table_has_a_header_and_a_row_per_stream() -> None:
    board = HealthBoard(clock=lambda: AT)
    board.add(ingest("cam1", StreamStateKind.LIVE, bitrate=2e6, fps=25.0))
    board.add(ingest("lobby", StreamStateKind.STALLED, segment_age=9.0))
    board.add(transcode("lobby", lag=12))
    text = render_table(board.table(), color=False, now=AT)
    lines = text.splitlines()
    assert "2 streams" in lines[0]
    assert lines[1].split()[:3] == ["STREAM", "STATE", "BITRATE"]
    assert lines[2].split()[:3] == ["cam1", "live", "2.00Mb/s"]
    assert lines[3].startswith("lobby") and "stalled" in lines[3] and "12" in lines[3] and "9.00s" in lines[3]
    header = lines[1]
    assert lines[2].index("live") == header.index("STATE")  # columns line up
    colored = render_table(board.table(), color=True, now=AT).splitlines()
    assert colored[2].startswith(COLORS["live"]) and colored[3].startswith(COLORS["stalled"])
    assert CLEAR.startswith("\x1b[")
    assert render_table([], color=False, now=AT).splitlines()[0].endswith("0 streams")


def test_table_rows_filtered() -> None:
    rows = [{"stream": "a", "state": "live"}, {"stream": "b", "state": "offline"}]
    kept = [r for r in rows if TailFilter(states=frozenset({"offline"})).keeps_row(r)]
    assert kept == [{"stream": "b", "state": "offline"}]


def test_sse_events_are_parsed_across_chunks() -> None:
    events, rest = parse_sse('retry: 3000\n\nevent: health\ndata: {"a":')
    assert events == [] and rest.startswith("event: health")
    events, rest = parse_sse(rest + "1}\n\nevent: other\ndata: x\n\n")
    assert events == [("health", '{"a":1}'), ("other", "x")] and rest == ""


def test_color_auto_follows_the_terminal() -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    class Pipe:
        def isatty(self) -> bool:
            return False

    assert use_color("auto", Tty()) and not use_color("auto", Pipe())  # type: ignore[arg-type]
    assert use_color("always", Pipe()) and not use_color("never", Tty())  # type: ignore[arg-type]


def test_tail_needs_exactly_one_feed(capsys: object) -> None:
    from camflow.cli.main import main

    assert main(["tail"]) == 2
    assert main(["tail", "--kafka", "127.0.0.1:1", "--edge", "http://127.0.0.1:1"]) == 2
    assert main(["tail", "--edge", "http://127.0.0.1:1"]) == 2  # no operator token
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "give --kafka HOST:PORT or --edge URL" in err and "needs an operator token" in err


def test_corrections_show_in_the_line_the_json_the_board_and_the_table() -> None:
    fixed = {"params_inserted": 14, "reordered": 2, "audio_gaps_filled": 2}
    sample = ingest("cam1", StreamStateKind.LIVE, packets_lost=0, corrections=fixed)
    line = format_line(sample, color=False)
    assert "fixed=params_inserted:14,audio_gaps_filled:2,reordered:2" in line  # most frequent first
    assert health_sample_from_json(json.loads(format_json(sample))).corrections == fixed
    assert "fixed=" not in format_line(ingest("cam1", StreamStateKind.LIVE, corrections={}), color=False)
    board = HealthBoard(clock=lambda: AT + 1)
    board.add(sample)
    board.add(transcode("cam1", at=AT + 0.5))  # measures no corrections: ingest's stay
    row = board.merged("cam1")
    assert row is not None and row["corrections"] == fixed
    lines = render_table(board.table(), color=False, now=AT).splitlines()
    at = lines[1].index("FIXES")
    assert lines[2][at : at + len("FIXES")].strip() == "18"


async def _quiet_edge(sample: HealthSample | None) -> TestServer:
    """An edge whose /api/health sends ``sample`` (if any), then nothing for a minute."""

    async def health(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if sample is not None:
            await resp.write(f"event: health\ndata: {format_json(sample)}\n\n".encode())
        await asyncio.sleep(60)
        return resp

    app = web.Application()
    app.router.add_get("/api/health", health)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.mark.parametrize("first", [None, ingest("cam1", StreamStateKind.LIVE)], ids=["silent", "one-sample"])
async def test_duration_is_honoured_while_the_feed_is_quiet(first: HealthSample | None) -> None:
    server = await _quiet_edge(first)
    out = io.StringIO()
    options = TailOptions(
        kafka=None,
        kafka_prefix="",
        edge=str(server.make_url("/")),
        token="t",
        filter=TailFilter(),
        json=True,
        table=False,
        color=False,
        since=10.0,
        duration=1.0,
    )
    try:
        started = time.monotonic()
        assert await asyncio.wait_for(run_tail(options, out), 10) == 0
        elapsed = time.monotonic() - started
    finally:
        await server.close()
    assert 0.9 < elapsed < 2.0, elapsed  # not the 30 s read timeout of a quiet feed
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["stream"] for line in lines] == ([] if first is None else ["cam1"])
