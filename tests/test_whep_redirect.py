"""WHEP on an edge without live media: the health board names the ingest node that holds a live
stream (its announced ``whep`` URL, while fresh), and the edge's ``/whep/{stream}`` answers 307 there
(with the query string), 404 ``stream_not_live`` when no node does; ``--whep-public-url`` and its
default. Real HTTP on 127.0.0.1 (aiohttp); the deployment on Kafka is in tests/test_whep_functional.py.
"""

from __future__ import annotations

import argparse
import socket

from aiohttp.test_utils import TestClient, TestServer

from camflow.cli.settings import whep_public_url
from camflow.events import HealthSample, StreamStateKind, decode, encode
from camflow.health import HealthBoard
from edge.health import HealthFeed
from edge.whep_redirect import whep_redirects

NOW = 1000.0
LIVE = StreamStateKind.LIVE


def sample(instance: str, at: float, whep: str, state: StreamStateKind = LIVE) -> HealthSample:
    return HealthSample("cam1", "ingest", instance, at, state, "ok", whep=whep)


def test_the_board_names_the_fresh_live_ingest_node_announcing_whep() -> None:
    board = HealthBoard(clock=lambda: NOW)
    assert board.whep_url("cam1") is None
    board.add(sample("ingest-a/1", NOW - 1, "http://a:8080"))
    board.add(HealthSample("cam1", "edge", "edge/1", NOW, viewers=3))  # edges announce nothing
    assert board.whep_url("cam1") == "http://a:8080"
    board.add(sample("ingest-b/1", NOW - 0.5, "http://b:8080"))  # the camera moved: the newest node
    assert board.whep_url("cam1") == "http://b:8080"
    board.add(sample("ingest-b/1", NOW, "", StreamStateKind.OFFLINE))  # its session ended
    assert board.whep_url("cam1") == "http://a:8080"
    assert board.whep_url("cam1", fresh=0.5) is None  # a's sample is 1 s old: a dead node's last word
    board.add(sample("ingest-a/1", NOW, "http://a:8080", StreamStateKind.STALLED))
    assert board.whep_url("cam1") is None  # stalled: play HLS
    board.add(sample("ingest-c/1", NOW, ""))  # live, without WHEP
    assert board.whep_url("cam1") is None and board.whep_url("other") is None


def test_the_whep_url_travels_on_the_wire() -> None:
    got = decode(encode(sample("ingest-a/1", NOW, "https://ingest-a.example:8443")))
    assert isinstance(got, HealthSample) and got.whep == "https://ingest-a.example:8443"


async def test_the_edge_redirects_to_the_node_and_refuses_without_one() -> None:
    feed = HealthFeed(None, interval=1.0)
    async with TestClient(TestServer(whep_redirects(feed), host="127.0.0.1")) as client:
        r = await client.post("/cam1?token=abc", data="v=0", allow_redirects=False)
        assert r.status == 404 and (await r.json())["error"] == "stream_not_live"
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        feed.board = HealthBoard(clock=lambda: NOW)
        feed.add(HealthSample("cam1", "ingest", "ingest-a/1", NOW, LIVE, "ok", whep="http://10.0.0.7:8080"))
        r = await client.post("/cam1?token=abc", data="v=0", allow_redirects=False)
        assert r.status == 307, await r.text()
        assert r.headers["Location"] == "http://10.0.0.7:8080/whep/cam1?token=abc"
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "Location" in r.headers["Access-Control-Expose-Headers"]
        r = await client.post("/cam2", data="v=0", allow_redirects=False)
        assert r.status == 404
        r = await client.post("/..bad", data="v=0", allow_redirects=False)
        assert r.status == 400 and (await r.json())["error"] == "bad_stream"
        r = await client.options("/cam1")
        assert r.status == 204 and "POST" in r.headers["Access-Control-Allow-Methods"]
        assert r.headers["Accept-Post"] == "application/sdp"


def test_the_public_url_is_the_flag_else_scheme_host_and_port() -> None:
    def ns(**kw: object) -> argparse.Namespace:
        return argparse.Namespace(**{"host": "127.0.0.1", "http_port": 8080, "tls_cert": None, **kw})

    assert whep_public_url(ns()) == "http://127.0.0.1:8080"
    assert whep_public_url(ns(tls_cert="c.pem", http_port=8443)) == "https://127.0.0.1:8443"
    assert whep_public_url(ns(host="0.0.0.0")) == f"http://{socket.getfqdn()}:8080"
    assert whep_public_url(ns(host="::1")) == "http://[::1]:8080"
    assert whep_public_url(ns(whep_public_url="https://in-3.example.com/")) == "https://in-3.example.com"
