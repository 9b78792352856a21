"""Packager partitions move while streams are live, on real Kafka + MinIO: a second packager
joins the group (it takes some streams over), then dies by SIGKILL (they come back). The
first one must not go on from what it held in memory: every playlist ends contiguous, with
no gap and no repeated segment.

The two stream names hash to partitions 1 and 6 of the eight (Kafka's murmur2 partitioner),
so with two members one of them always changes hands, whichever member gets which half.
"""

from __future__ import annotations

import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import m3u8
import pytest
from kafka.partitioner.default import murmur2

from camflow.hls.rules import check_media
from camflow.tokens import Action
from tests.process import ffmpeg_push, free_port, make_clip
from tests.test_packager_sigkill import deployment, fetch, service

pytestmark = pytest.mark.integration
STREAMS = ("cam-a", "cam-b")


def events(path: Path, *names: str) -> list[str]:
    """The log lines of a service (stdout and stderr) that name one of ``names``."""
    text = path.with_suffix(".err").read_text(errors="replace") + path.with_suffix(".out").read_text(
        errors="replace"
    )
    return [ln[:300] for ln in text.splitlines() if any(n in ln for n in names)]


def took_over(
    tmp: Path, second: subprocess.Popen[bytes], pushers: list[threading.Thread], deadline: float
) -> None:
    """Until the second packager restored a stream it was handed; on failure, say how far it got."""
    while not events(tmp / "package-2", "stream restored"):
        if second.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                "the second packager never took a stream over: "
                f"exit={second.poll()} pushers_alive={[p.is_alive() for p in pushers]}\n"
                + "\n".join(events(tmp / "package-2", "partitions", "started", "error", "Error"))
                + "\n-- first packager --\n"
                + "\n".join(events(tmp / "package", "partitions", "reassigned")[-6:])
            )
        time.sleep(0.25)


def test_streams_partitions_land_in_both_halves() -> None:
    parts = sorted((murmur2(s.encode()) & 0x7FFFFFFF) % 8 for s in STREAMS)
    assert parts[0] < 4 <= parts[1], parts


def test_rebalance_back_and_forth_loses_and_repeats_nothing(tmp_path: Path) -> None:
    d = deployment(tmp_path, "r")
    env, common, store, package = d.env, d.common, d.store, d.package
    rtsp_port, http_port = free_port(), free_port()
    # Long enough that both streams are still live after a slow machine took up to a minute to
    # hand the second packager its partitions (the takeover is seen on the moved stream's next event).
    clip = make_clip(tmp_path / "clip48.mp4", 48, size="426x240")
    signer = d.signer

    def playlist(stream: str) -> str | None:
        view = signer.issue(stream, Action.VIEW, 600)
        return fetch(f"http://127.0.0.1:{http_port}/live/{stream}/source.m3u8?token={view}")

    def wait_all(check: object, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        last: dict[str, str | None] = {}
        while time.monotonic() < deadline:
            last = {s: playlist(s) for s in STREAMS}
            if all(t is not None and check(t) for t in last.values()):  # type: ignore[operator]
                return {s: t for s, t in last.items() if t is not None}
            time.sleep(0.5)
        raise AssertionError(f"playlists never got there; last: {last}")

    with ExitStack() as stack:
        stack.enter_context(
            service(tmp_path, "transcode", [*common, *store, "--ladder", "source", "--processes", "1"], env)
        )
        first = stack.enter_context(service(tmp_path, "package", package, env))
        stack.enter_context(service(tmp_path, "edge", [*common, *store, "--http-port", str(http_port)], env))
        stack.enter_context(service(tmp_path, "ingest", [*common, "--rtsp-port", str(rtsp_port)], env))
        results: dict[str, subprocess.CompletedProcess[str]] = {}
        pushers = [
            threading.Thread(
                target=lambda s=s: results.update(
                    {
                        s: ffmpeg_push(
                            clip,
                            f"rtsp://127.0.0.1:{rtsp_port}/{s}?token={signer.issue(s, Action.PUBLISH, 600)}",
                        )
                    }
                )
            )
            for s in STREAMS
        ]
        for p in pushers:
            p.start()
        try:
            wait_all(lambda t: t.count("#EXTINF") >= 2, 60)
            second = stack.enter_context(service(tmp_path, "package", package, env, tag="-2"))
            took_over(tmp_path, second, pushers, deadline=time.monotonic() + 60)
            time.sleep(4)  # the second one moves its stream on
            second.kill()  # SIGKILL: its partitions return to the first after the session timeout
            second.wait(10)
            final = wait_all(lambda t: "#EXT-X-ENDLIST" in t, 150)
        finally:
            for p in pushers:
                p.join(120)
        for s in STREAMS:
            assert results[s].returncode == 0, results[s].stderr
        assert first.poll() is None

    for stream, text in final.items():
        assert check_media(text) == [], (stream, text)
        parsed = m3u8.loads(text)
        uris = [seg.uri.split("?")[0] for seg in parsed.segments]
        assert len(uris) == len(set(uris)), f"{stream}: a segment is repeated"
        assert not any(seg.gap_tag for seg in parsed.segments), f"{stream}: a segment went missing\n{text}"
        epoch = uris[0].split("/")[0]
        assert uris == [f"{epoch}/source/{n:08d}.m4s" for n in range(len(uris))], text
        assert len(uris) >= 22, text  # 48 s of 2 s segments
    log = (tmp_path / "package.err").read_text() + (tmp_path / "package.out").read_text()
    assert "partitions reassigned; streams dropped" in log
