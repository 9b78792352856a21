"""Clip export end to end: two ffmpeg RTSP pushes into `camflow run` (embedded, and on Kafka +
MinIO), the second a reconnect at another resolution after a gap, then `curl` downloads
``/clip/{stream}.mp4`` of ranges over both; ffprobe reads it (both tracks, duration within one
GOP of the range, monotonic timestamps) and ffmpeg decodes it without an error."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from camflow.hls.dates import format_date_time, parse_date_time
from tests.part_clips import make_clip
from tests.process import CAMFLOW, Camflow, camflow_run, ffmpeg_push
from tests.test_pipeline_functional import backend_args, fetch

pytestmark = pytest.mark.integration
STREAM = "yard"
GOP = 2.0  # seconds: make_clip's IDR every 60 pictures at 30 fps
ENTRIES = "stream=codec_type,codec_name:format=duration"
PACKETS = ("-show_entries", "packet=dts_time")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("clips")
    wide = make_clip(folder / "wide.mp4", 8, "640x360", bframes=2)
    small = make_clip(folder / "small.mp4", 8, "320x180")
    return wide, small


def recorded(
    cf: Camflow, view: str, epochs: int, segments: int, timeout: float = 90.0
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    ranges: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        status, body = fetch(cf.http_url(f"/api/streams/{STREAM}/recordings?token={view}"))
        if status == 200:
            ranges = json.loads(body)["ranges"]
            got = sum(int(str(r["segments"])) for r in ranges)
            if len({r["epoch"] for r in ranges}) >= epochs and got >= segments:
                return ranges
        time.sleep(0.5)
    raise AssertionError(f"not recorded within {timeout} s: {ranges}")


def record_with_a_gap(cf: Camflow, clips: tuple[Path, Path]) -> list[dict[str, Any]]:
    """Push both clips, the second after a gap (a reconnect at another resolution); the ranges
    the recordings API lists once both are in."""
    publish, view = cf.token("publish", STREAM), cf.token("view", STREAM)
    for n, clip in enumerate(clips):
        pushed = ffmpeg_push(clip, cf.rtsp_url(STREAM, publish))
        assert pushed.returncode == 0, pushed.stderr
        if n == 0:
            time.sleep(4)  # a gap in the recording before the camera comes back
    return recorded(cf, view, epochs=2, segments=8)


def curl(url: str, out: Path) -> tuple[int, dict[str, str], float]:
    """curl's status, response headers and seconds taken, the body in ``out``."""
    headers = out.with_suffix(".headers")
    started = time.monotonic()
    done = subprocess.run(
        ["curl", "-sS", "-o", str(out), "-D", str(headers), "-w", "%{http_code}", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    fields = (line.partition(":") for line in headers.read_text().splitlines()[1:] if ":" in line)
    return int(done.stdout), {k.strip().lower(): v.strip() for k, _, v in fields}, took


def ffprobe(path: Path, *args: str) -> str:
    done = subprocess.run(
        ["ffprobe", "-v", "error", *args, str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def rows(path: Path, *args: str) -> list[list[str]]:
    """ffprobe's CSV rows (``-of csv=p=0``), empty fields dropped."""
    text = ffprobe(path, *args, "-of", "csv=p=0")
    return [[f for f in line.split(",") if f] for line in text.splitlines() if line.strip(",")]


def decode_errors(path: Path) -> str:
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.strip()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["embedded", "kafka+minio"])
def test_a_clip_across_a_reconnect_and_a_gap_is_one_playable_mp4(
    backend: str, clips: tuple[Path, Path], tmp_path: Path
) -> None:
    extra, env = backend_args(backend)
    with camflow_run(tmp_path, ["--ladder", "source", "--offline-grace", "1", *extra], env) as cf:
        view = cf.token("view", STREAM)
        ranges = record_with_a_gap(cf, clips)
        first, last = parse_date_time(str(ranges[0]["start"])), parse_date_time(str(ranges[-1]["end"]))
        have = sum(parse_date_time(str(r["end"])) - parse_date_time(str(r["start"])) for r in ranges)

        def url(start: float, end: float, token: str = view) -> str:
            return cf.http_url(
                f"/clip/{STREAM}.mp4?start={format_date_time(start)}&end={format_date_time(end)}&token={token}"
            )

        # The whole recording: both epochs, closed up over the gap.
        status, headers, took = curl(url(first - 5, last + 5), tmp_path / "all.mp4")
        assert status == 200, (tmp_path / "all.mp4").read_text(errors="replace")
        assert headers["content-type"] == "video/mp4"
        assert headers["content-disposition"].startswith(f'attachment; filename="{STREAM}_')
        info = json.loads(ffprobe(tmp_path / "all.mp4", "-show_entries", ENTRIES, "-of", "json"))
        kinds = sorted(s["codec_name"] for s in info["streams"])
        assert kinds == ["aac", "h264"], info
        duration = float(info["format"]["duration"])
        assert abs(duration - have) <= GOP, (duration, have, ranges)
        for stream in ("v", "a"):
            dts = [float(r[0]) for r in rows(tmp_path / "all.mp4", "-select_streams", stream, *PACKETS)]
            assert dts and all(b > a for a, b in itertools.pairwise(dts)), stream
        sizes = rows(tmp_path / "all.mp4", "-select_streams", "v", "-show_entries", "frame=width,height")
        assert {f"{r[0]}x{r[1]}" for r in sizes} == {"640x360", "320x180"}
        assert decode_errors(tmp_path / "all.mp4") == ""
        print(f"{backend}: {duration:.1f} s of video exported in {took:.2f} s ({duration / took:.0f}x)")

        # A range from inside the first epoch to inside the second: from the keyframe at or before
        # its start, up to its end; what the range holds of the recording, within one GOP.
        start, end = first + 3.0, last - 3.0
        inside = sum(
            max(0.0, min(parse_date_time(str(r["end"])), end) - max(parse_date_time(str(r["start"])), start))
            for r in ranges
        )
        status, _, _ = curl(url(start, end), tmp_path / "part.mp4")
        assert status == 200
        part = float(
            json.loads(ffprobe(tmp_path / "part.mp4", "-show_entries", ENTRIES, "-of", "json"))["format"][
                "duration"
            ]
        )
        assert inside - 0.1 <= part <= inside + GOP + 0.1, (part, inside)
        assert decode_errors(tmp_path / "part.mp4") == ""

        # `camflow clip` makes the same MP4 from the store, without the edge.
        store = extra[extra.index("--s3") : extra.index("--s3") + 2] if "--s3" in extra else []
        store += ["--data-dir", str(cf.data_dir)]
        times = ["--start", format_date_time(start), "--end", format_date_time(end)]
        made = subprocess.run(
            [*CAMFLOW, "clip", STREAM, *times, "-o", str(tmp_path / "cli.mp4"), *store],
            capture_output=True, text=True, timeout=120, env=cf.env,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert (tmp_path / "cli.mp4").read_bytes() == (tmp_path / "part.mp4").read_bytes()
        for args, code, says in (
            (["--start", format_date_time(end), "--end", format_date_time(start)], 2, "is not after --start"),
            (["--start", format_date_time(last + 60), "--end", format_date_time(last + 90)], 1, "has no"),
        ):
            refused = subprocess.run(
                [*CAMFLOW, "clip", STREAM, *args, "-o", str(tmp_path / "no.mp4"), *store],
                capture_output=True, text=True, timeout=60, env=cf.env,
            )  # fmt: skip
            assert refused.returncode == code and says in refused.stderr, refused.stderr

        # Refusals: the same JSON errors as VOD, and the export limit.
        bodies: dict[str, dict[str, str]] = {}
        for bad, code, error in (
            (url(first, first + 7 * 3600), 400, "range_too_long"),
            (url(last + 3600, last + 7200), 404, "not_recorded"),
            (url(last, first), 400, "bad_range"),
            (cf.http_url(f"/clip/{STREAM}.mp4?start=yesterday&end=today&token={view}"), 400, "bad_time"),
            (url(first, last, token=""), 401, "token_missing"),
        ):
            status, _, _ = curl(bad, tmp_path / "refused.json")
            bodies[error] = json.loads((tmp_path / "refused.json").read_text())
            assert (status, bodies[error]["error"]) == (code, error), bodies[error]
        assert "export limit of 21600 s" in bodies["range_too_long"]["detail"]
