from __future__ import annotations

import pytest

from ingest.errors import ParseError
from ingest.sources.rtsp.message import Request
from ingest.sources.rtsp.url import RtspUrl, SetupTarget, parse_query, split_setup_url
from tests.vectors.rtsp_publish import FFMPEG_5_1_SETUP, GSTREAMER_1_22_SETUP


def test_parse_plain() -> None:
    url = RtspUrl.parse("rtsp://127.0.0.1:8554/cam1")
    assert (url.scheme, url.host, url.port, url.path) == ("rtsp", "127.0.0.1", 8554, "cam1")
    assert url.query == {}
    assert url.username is None and url.password is None
    assert str(url) == "rtsp://127.0.0.1:8554/cam1"


def test_parse_userinfo_query_and_default_port() -> None:
    url = RtspUrl.parse("RTSP://admin:p%40ss%3Aword@Cam.Example/site/cam1/?token=a+b%2F&x=&y")
    assert url.scheme == "rtsp"
    assert url.host == "cam.example"
    assert url.port is None
    assert url.effective_port == 554
    assert url.username == "admin"
    assert url.password == "p@ss:word"
    assert url.path == "site/cam1"
    assert url.query == {"token": "a+b/", "x": "", "y": ""}
    assert RtspUrl.parse(str(url)) == url


def test_parse_ipv6() -> None:
    url = RtspUrl.parse("rtsp://[::1]:8554/cam")
    assert (url.host, url.port, url.path) == ("::1", 8554, "cam")
    assert str(url) == "rtsp://[::1]:8554/cam"


@pytest.mark.parametrize(
    "value",
    ["http://h/cam", "rtsp:///cam", "rtsp://h:99999/cam", "rtsp://h:port/cam", "cam1", "rtsp://[::1/cam"],
)
def test_parse_rejects(value: str) -> None:
    with pytest.raises(ParseError, match="RTSP URL"):
        RtspUrl.parse(value)


def test_parse_query_keeps_plus() -> None:
    assert parse_query("token=abc+/=&a=1&a=2") == {"token": "abc+/=", "a": "2"}


def setup_uri(data: bytes) -> str:
    return Request.parse(data).uri


def test_ffmpeg_setup_without_query() -> None:
    target = split_setup_url(setup_uri(FFMPEG_5_1_SETUP), "cam1", ["streamid=0"])
    assert target == SetupTarget("cam1", {}, "streamid=0")
    assert target.matched


def test_gstreamer_setup_without_query() -> None:
    target = split_setup_url(setup_uri(GSTREAMER_1_22_SETUP), "/cam2", ["stream=0"])
    assert target == SetupTarget("cam2", {}, "stream=0")


@pytest.mark.parametrize(
    ("url", "control"),
    [
        ("rtsp://h:8554/cam1?token=T/streamid=0", "streamid=0"),  # ffmpeg: query, then control
        ("rtsp://h:8554/cam1/stream=0?token=T", "stream=0"),  # GStreamer: control, then query
        ("rtsp://h:8554/cam1/streamid=1?token=T", "streamid=1"),
        ("rtsp://h:8554/cam1?token=T/streamid=1", "streamid=1"),
    ],
)
def test_setup_query_in_either_order(url: str, control: str) -> None:
    target = split_setup_url(url, "cam1", ["streamid=0", "streamid=1", "stream=0"])
    assert target.path == "cam1"
    assert target.query == {"token": "T"}
    assert target.control == control


def test_setup_multi_segment_path_and_multiple_query_params() -> None:
    target = split_setup_url("rtsp://h/site/a/cam1?token=T&user=u/trackID=2", "site/a/cam1", ["trackID=2"])
    assert target == SetupTarget("site/a/cam1", {"token": "T", "user": "u"}, "trackID=2")
    assert target.query == {"token": "T", "user": "u"}


def test_setup_absolute_control() -> None:
    controls = ["rtsp://127.0.0.1:8554/cam1/trackID=1"]
    target = split_setup_url("rtsp://127.0.0.1:8554/cam1/trackID=1?token=T", "cam1", controls)
    assert target.control == controls[0]
    assert (target.path, target.query) == ("cam1", {"token": "T"})
    other_host = split_setup_url("rtsp://10.0.0.1:8554/cam1/trackID=1", "cam1", controls)
    assert other_host.control is None


def test_setup_aggregate_and_unknown_control() -> None:
    aggregate = split_setup_url("rtsp://h/cam1?token=T", "cam1", ["streamid=0"])
    assert aggregate == SetupTarget("cam1", {"token": "T"}, None)
    assert aggregate.query == {"token": "T"}
    unknown = split_setup_url("rtsp://h/cam1/streamid=9", "cam1", ["streamid=0"])
    assert (unknown.path, unknown.control) == ("cam1/streamid=9", None)
    other_stream = split_setup_url("rtsp://h/cam2/streamid=0", "cam1", ["streamid=0"])
    assert (other_stream.path, other_stream.control) == ("cam2/streamid=0", None)
