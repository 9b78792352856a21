"""bench/capacity.py's arithmetic on a small fleet, and bench/results.py's file (what the benches write)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import capacity
from bench.capacity import Fleet, rows, table
from bench.results import figure, load, record

PIPELINE = {
    "720p1m_camera_mbps": 1.0,
    "720p1m_cpu_ingest": 0.05,
    "720p1m_cpu_transcode": 0.3,
    "720p1m_cpu_package": 0.04,
    "720p1m_bus_camflow_segments_raw_bytes": 125_000,
    "720p1m_bus_camflow_segments_raw_messages": 0.5,
    "720p1m_bus_camflow_parts_raw_bytes": 125_000,
    "720p1m_bus_camflow_parts_raw_messages": 5,
    "720p1m_kafka_partition_mb_s": 50,
    "720p1m_stored_recording_bytes": 250_000,
    "720p1m_store_put": 30,
    "720p1m_store_transcode_put": 18,  # per service: not counted again
    "720p1m_store_get": 1,
    "720p1m_store_head": 1,
    "720p1m_store_list": 0.5,
    "720p1m_store_delete": 10,
}
EDGE = {"playlist_cpu_us": 20, "segment_cpu_us": 500, "segment_bytes": 500_000}
FLEET = Fleet(
    cameras=1000,
    viewers=0.1,
    viewers_per_watched=2,
    ll_share=1.0,
    part_seconds=0.2,
    segment_seconds=2.0,
    pops=3,
    retention_days=10,
    cell_cameras=400,
)


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "results.json"
    monkeypatch.setenv("CAMFLOW_BENCH_RESULTS", str(path))
    record("pipeline", PIPELINE)
    record("edge", EDGE)
    return path


def test_the_table_multiplies_the_measured_figures(results: Path) -> None:
    got = {name: value for name, value, _, _ in rows(load(results), FLEET, "720p1m")}
    assert got["ingest bandwidth"] == pytest.approx(1.0)  # Gb/s: 1000 cameras x 1 Mb/s
    assert got["ingest cores"] == pytest.approx(50)
    assert got["transcode cores (default ladder)"] == pytest.approx(300)
    assert got["packager cores"] == pytest.approx(40)
    assert got["Kafka in (all topics)"] == pytest.approx(2.0)  # 250 kB/s per camera
    assert got["Kafka messages"] == pytest.approx(5500)
    assert got["Kafka partitions of the media topics, by throughput"] == 5  # 250 MB/s at 50 MB/s each
    assert got["cells"] == 3
    assert got["Kafka in per cell"] == pytest.approx(800)  # Mb/s
    assert got["recording stored per day"] == pytest.approx(21.6)  # TB
    assert got["recording stored, 10 days retention"] == pytest.approx(0.216)  # PB
    assert got["store writes (PUT)"] == pytest.approx(30_000)
    assert got["store reads (GET, HEAD)"] == pytest.approx(2000)
    assert got["store LIST"] == pytest.approx(500)
    assert got["store DELETE, steady state"] == pytest.approx(18_000)  # what transcode creates
    assert got["viewers"] == pytest.approx(100)
    assert got["CDN egress"] == pytest.approx(0.1)
    assert got["viewer requests at the CDN"] == pytest.approx(1000)  # 10 a second on LL-HLS
    # 50 watched streams x 3 PoPs, but no more than the 100 viewers themselves
    assert got["origin (edge) requests"] == pytest.approx(1000)
    # 500 playlists at 20 us, 500 parts of 25 kB at 500 us per 500 kB
    assert got["edge cores"] == pytest.approx(0.0225)


def test_plain_hls_viewers_ask_once_a_second(results: Path) -> None:
    fleet = Fleet(**{**vars(FLEET), "ll_share": 0.0})
    got = {name: value for name, value, _, _ in rows(load(results), fleet, "720p1m")}
    assert got["viewer requests at the CDN"] == pytest.approx(100)


def test_the_script_prints_a_markdown_table(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert capacity.main(["--results", str(results), "--cameras", "1000"]) == 0
    out = capsys.readouterr().out
    assert "| ingest bandwidth | 1 | Gb/s | camera_mbps |" in out
    assert "pipeline: " in out and "edge: " in out  # when and where the figures were measured
    assert table(load(results), FLEET).count("\n") == len(rows(load(results), FLEET, "720p1m")) + 1


def test_a_missing_figure_names_the_bench_to_run(results: Path) -> None:
    doc = load(results)
    with pytest.raises(KeyError, match="make bench BENCH=edge"):
        figure(doc, "edge", "nothing")
    del doc["benches"]["pipeline"]
    with pytest.raises(KeyError, match="BENCH=pipeline"):
        table(doc, FLEET)


def test_a_run_replaces_its_own_entry_only(results: Path) -> None:
    record("edge", {"playlist_cpu_us": 30})
    doc = json.loads(results.read_text())
    assert doc["benches"]["edge"]["figures"] == {"playlist_cpu_us": 30.0}
    assert doc["benches"]["pipeline"]["figures"]["720p1m_cpu_ingest"] == 0.05
    assert set(doc["benches"]["edge"]) == {"figures", "measured", "cores", "load", "commit"}


def test_the_table_is_written_between_the_markers_of_a_page(results: Path, tmp_path: Path) -> None:
    page = tmp_path / "DESIGN.md"
    page.write_text(f"# before\n{capacity.BEGIN}\nold table\n{capacity.END}\nafter\n")
    assert capacity.main(["--results", str(results), "--write", str(page)]) == 0
    text = page.read_text()
    assert text.startswith(f"# before\n{capacity.BEGIN}\n```text\nfleet: Fleet(") and text.endswith(
        f"{capacity.END}\nafter\n"
    )
    assert "old table" not in text and "| ingest cores |" in text
    page.write_text("no markers")
    with pytest.raises(SystemExit, match="no <!-- capacity:begin"):
        capacity.main(["--results", str(results), "--write", str(page)])
