"""Live latency in headless Chromium (camflow's player, hls.js in low-latency mode), as wall clock minus
the program date-time of the frame on screen, sampled every 250 ms (tests/latency_probe.py) while ffmpeg
pushes 640x360 at 30 fps over RTSP with a 2 s GOP: embedded, through nginx (deploy/cdn/nginx.conf) and on
Kafka + MinIO. The bench's camera is 720p30; here the picture is smaller because the camera (libx264
in real time), Chromium's decoder, Kafka, MinIO and four camflow services share a 2-core CI machine,
and a camera that falls behind real time stamps its frames late (RTCP sender reports carry its wall
clock): at 720p on a loaded CI run ffmpeg sent 26 s of media in 52 s and the "latency" was its backlog.

The test asserts that playback runs and the latency is measured and sane, with a bound a broken
pipeline fails; the targets of issue 15 are held by `make bench BENCH=latency` (timed assertions
belong in benches).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chromium import DevTools
from tests.latency_probe import Latency, measure, pushing, returns_after_a_stall, returns_to_the_live_edge
from tests.latency_targets import (
    camflow_playlist,
    camflow_publish,
    camflow_watch,
    cdn,
    embedded,
    kafka_minio,
    via,
    wait_playlist,
)

pytestmark = pytest.mark.integration
SECONDS = 20.0
SIZE = "640x360"  # the camera's picture (see above)
# LL-HLS plays ~1-1.5 s behind here; plain HLS 12.5-14 s (hls.js holds 3 x TARGETDURATION 4 s behind
# the playlist's end), so this fails when the low-latency path breaks. The bench holds the 1.0 / 1.5 s
# targets (timed assertions belong in benches); this bound leaves room for a loaded 2-core machine.
P50_BOUND_S = 3.0
MAX_STALLS = 8  # in 20 s; a loaded 2-core machine (load 10+) stalls a few times even 13 s behind
MIN_PLAYING = 0.7  # of the sampling ticks


def check(result: Latency) -> None:
    print("\n" + result.summary())
    assert result.samples, result.summary()
    assert result.playing_share >= MIN_PLAYING, result.summary()
    assert 0.0 < result.p50 < P50_BOUND_S, result.summary()  # > 0: the date on screen is not in the future
    assert result.stalls <= MAX_STALLS, result.summary()


async def test_latency_embedded_and_through_nginx(tmp_path: Path) -> None:
    returned: dict[str, Any] = {}

    async def fall_behind(tools: DevTools) -> None:
        returned.update(await returns_to_the_live_edge(tools))
        returned["stall"] = await returns_after_a_stall(tools)

    camera = tmp_path / "push.log"
    with embedded(tmp_path / "camflow", "source") as cf, pushing(camflow_publish(cf), camera, SIZE):
        wait_playlist(camflow_playlist(cf))
        page = camflow_watch(cf)
        direct = await measure(page, SECONDS, tmp_path / "direct", target="embedded", after=fall_behind)
        with cdn(tmp_path, cf.http_port) as port:
            through = await measure(via(page, port), SECONDS, tmp_path / "nginx", target="nginx")
    check(direct)
    check(through)
    # Put 3x the target latency behind, or stalled for lack of data (offline), the page jumped back
    # to the live edge by itself.
    print("returned to the live edge:", returned)
    assert returned["seeks"][-1]["reason"] == "behind" and returned["behind"] > 0, returned
    assert returned["stall"]["seeks"][0]["to"] > returned["stall"]["seeks"][0]["from"], returned


async def test_latency_on_kafka_and_minio(tmp_path: Path) -> None:
    with kafka_minio(tmp_path / "services") as d, pushing(d.publish_url(), tmp_path / "push.log", SIZE):
        wait_playlist(d.http(f"/live/{d.stream}/source.m3u8"))
        result = await measure(
            d.http(f"/watch/{d.stream}?rendition=source&transport=hls"),
            SECONDS,
            tmp_path / "kafka",
            target="kafka+minio",
        )
    check(result)
