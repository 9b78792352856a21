"""Headless Chromium plays an exported clip of a recording with a reconnect at another resolution
after a gap: streamed from the edge's ``/clip/{stream}.mp4`` into a `<video>` element it plays from
the start; downloaded (curl) and opened as a file, it has its whole duration, and a seek into the
second epoch plays there at the new size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from camflow.hls.dates import format_date_time, parse_date_time
from tests.chromium import chromium, devtools, sample
from tests.process import camflow_run
from tests.test_clip_functional import STREAM, curl, record_with_a_gap
from tests.test_clip_functional import clips as clips  # the fixture

pytestmark = pytest.mark.integration
PROBE = """(() => { const v = document.getElementById('v'); if (!v) return null;
  return JSON.stringify({t: v.currentTime, w: v.videoWidth, d: v.duration, ready: v.readyState,
    error: v.error ? v.error.code : 0}); })()"""


@pytest.mark.timeout(240)
async def test_chromium_plays_a_clip_across_a_reconnect(clips: tuple[Path, Path], tmp_path: Path) -> None:
    with camflow_run(tmp_path, ["--ladder", "source", "--offline-grace", "1"]) as cf:
        ranges = record_with_a_gap(cf, clips)
        view = cf.token("view", STREAM)
        start, end = parse_date_time(ranges[0]["start"]) - 1, parse_date_time(ranges[-1]["end"]) + 1
        src = cf.http_url(
            f"/clip/{STREAM}.mp4?start={format_date_time(start)}&end={format_date_time(end)}&token={view}"
        )
        saved = tmp_path / "clip.mp4"
        assert curl(src, saved)[0] == 200
        streamed = await play(tmp_path / "streamed", src, seek=None)
    downloaded = await play(tmp_path / "downloaded", saved.as_uri(), seek=-3.0)
    print("\nstreamed", streamed[-1], "downloaded", downloaded[-1])
    assert streamed[-1]["error"] == 0 and streamed[-1]["t"] > 2.0 and streamed[-1]["w"] == 640, streamed
    first, after = downloaded[0], downloaded[-1]
    assert 14.0 <= first["d"] <= 18.0, first  # both epochs, closed up over the gap
    assert after["error"] == 0 and after["t"] > after["seek"] + 1.0, downloaded
    assert after["w"] == 320, after  # the second epoch, at its own size


async def play(folder: Path, src: str, seek: float | None) -> list[dict[str, Any]]:
    """Chromium on a page with a muted autoplaying ``<video>`` of ``src``: samples until it played
    2 s; with ``seek``, then seeks that far from the end (negative) and samples until it played 1 s
    more there (each sample says where it sought)."""
    page = folder / "page.html"
    folder.mkdir()
    page.write_text(f'<video id=v src="{src}" autoplay muted></video>')
    with chromium(
        folder / "profile", page.as_uri(), folder / "chromium.log", ["--allow-file-access-from-files"]
    ) as port:
        async with devtools(port) as tools:
            samples = await sample(tools, PROBE, 30, lambda s: s[-1]["t"] > 2.0 or s[-1]["error"] != 0)
            if seek is None or not samples:
                return samples
            at = float(samples[-1]["d"]) + seek
            await tools.evaluate(f"document.getElementById('v').currentTime = {at}")
            more = await sample(tools, PROBE, 20, lambda s: s[-1]["t"] > at + 1.0 or s[-1]["error"] != 0)
            return [*samples, *({**s, "seek": at} for s in more)]
