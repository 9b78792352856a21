"""Signing keys that rotate and identity-provider JWTs, against a running `camflow run`.

The deployment starts as one from before key ids (a plain secret in ``<data-dir>/secret``), with a
test identity provider (RSA, EC and Ed25519 keys made at test time, its JWKS served by a thread
of this process). curl, ffmpeg and ffprobe are the clients.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services
from tests.jwks import AUDIENCE, ISSUER, Issuer, hs256_with_public_key, jwks_server, unsigned
from tests.process import CAMFLOW, Camflow, camflow_run, camflow_service, ffmpeg_push, free_port, make_clip
from tests.test_rtsp_functional import wait_for_segments

pytestmark = pytest.mark.integration

PLAIN_SECRET = "a-plain-secret-of-before-key-ids-0123456789"
RELOAD_WAIT = 6.0  # seconds a running service may take to see a changed keys file (2 s poll)


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture(scope="module")
def camflow(tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> Iterator[Camflow]:
    tmp = tmp_path_factory.mktemp("keys")
    (tmp / "data").mkdir()
    (tmp / "data" / "secret").write_text(PLAIN_SECRET + "\n")
    with jwks_server(issuer) as url:
        jwt_flags = ["--jwks-url", url, "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE]
        with camflow_run(tmp, jwt_flags, env={"CAMFLOW_SECRET": "", "CAMFLOW_SECRET_FILE": ""}) as cf:
            yield cf


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip4.mp4", 4, size="320x240", gop=30)


def keys(cf: Camflow, *args: str) -> str:
    done = subprocess.run(
        [*CAMFLOW, "keys", "--data-dir", str(cf.data_dir), *args], capture_output=True, text=True, env=cf.env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def curl(url: str, *headers: str) -> tuple[int, str]:
    args = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10", url]
    for header in headers:
        args += ["-H", header]
    out = subprocess.run(args, capture_output=True, text=True, timeout=20).stdout
    body, _, status = out.rpartition("\n")
    return int(status), body


def wait_for_status(url: str, status: int, timeout: float = RELOAD_WAIT) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    got = curl(url)
    while got[0] != status and time.monotonic() < deadline:
        time.sleep(0.2)
        got = curl(url)
    return got


def test_rotation_keeps_old_tokens_until_their_key_is_retired(camflow: Camflow, clip: Path) -> None:
    assert "legacy" in keys(camflow, "list") and PLAIN_SECRET not in keys(camflow, "list")
    camera = camflow.token("publish", "cam7", "never")  # a camera's Digest password, as before key ids
    view_before = camflow.token("view", "cam7")
    assert camera.startswith("v1.") and view_before.startswith("v1.")

    rotated = keys(camflow, "rotate", "k2")
    assert "current key k2" in rotated and PLAIN_SECRET not in rotated
    time.sleep(RELOAD_WAIT / 2)  # the services re-read the keys file (2 s poll)
    view_after = camflow.token("view", "cam7")
    assert view_after.startswith("v2.k2.")

    # RTSP Digest with the permanent token of the previous key (ffmpeg answers the Digest challenge).
    pushed = ffmpeg_push(clip, f"rtsp://cam7:{camera}@127.0.0.1:{camflow.rtsp_port}/cam7")
    assert pushed.returncode == 0, pushed.stderr
    wait_for_segments(camflow, "cam7", 1)
    master = "/live/cam7/master.m3u8?token="
    for token in (view_before, view_after):
        status, body = curl(camflow.http_url(master + token))
        assert status == 200 and f"token={token}" in body, body[:300]

    retired = keys(camflow, "retire", "legacy")
    assert "retired key legacy" in retired
    status, body = wait_for_status(camflow.http_url(master + view_before), 403)
    assert status == 403, body
    error = json.loads(body)
    assert error["error"] == "token_key_retired" and "'legacy' was retired" in error["detail"]
    assert view_before not in body
    assert curl(camflow.http_url(master + view_after))[0] == 200
    listing = keys(camflow, "list")
    assert "k2" in listing and "retired" in listing and "current" in listing

    refused = ffmpeg_push(clip, f"rtsp://cam7:{camera}@127.0.0.1:{camflow.rtsp_port}/cam7", timeout=30)
    assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr
    new_camera = camflow.token("publish", "cam7", "never")
    assert new_camera.startswith("v2.k2.")


@pytest.fixture(scope="module")
def jwt_stream(camflow: Camflow, clip: Path) -> str:
    pushed = ffmpeg_push(clip, camflow.rtsp_url("jw1", camflow.token("publish", "jw1")))
    assert pushed.returncode == 0, pushed.stderr
    wait_for_segments(camflow, "jw1", 1)
    return "jw1"


def test_jwts_of_each_algorithm_fetch_hls_with_curl_and_ffprobe(
    camflow: Camflow, issuer: Issuer, jwt_stream: str
) -> None:
    master = camflow.http_url(f"/live/{jwt_stream}/master.m3u8")
    rsa = issuer.token(f"openid camflow:view:{jwt_stream}", kid="rsa1")
    status, body = curl(f"{master}?token={rsa}")
    assert status == 200 and f"token={rsa}" in body  # carried into the playlist's URIs
    for kid in ("ec1", "ed1"):
        token = issuer.token(f"camflow:view:{jwt_stream}", kid=kid)
        status, body = curl(master, f"Authorization: Bearer {token}")
        assert status == 200 and "token=" not in body and ".m3u8" in body  # the client sends it again
        media = camflow.http_url(f"/live/{jwt_stream}/source.m3u8")
        status, body = curl(media, f"Authorization: Bearer {token}")
        assert status == 200 and ".m4s" in body
    every = issuer.token("camflow:view:*", kid="ec1")
    assert curl(f"{master}?token={every}")[0] == 200
    probe = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-show_entries", "stream=codec_type,width"),
            *("-of", "json", f"{master}?token={rsa}"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    streams = json.loads(probe.stdout)["streams"]
    assert any(s["codec_type"] == "video" and s.get("width") for s in streams), streams


def test_a_key_the_identity_provider_adds_later_is_fetched(
    camflow: Camflow, issuer: Issuer, jwt_stream: str
) -> None:
    issuer.add("rsa2")
    token = issuer.token(f"camflow:view:{jwt_stream}", kid="rsa2")
    status, body = curl(camflow.http_url(f"/live/{jwt_stream}/master.m3u8?token={token}"))
    assert status == 200, body


def test_bad_jwts_are_refused_with_403_naming_why(camflow: Camflow, issuer: Issuer, jwt_stream: str) -> None:
    scope = f"camflow:view:{jwt_stream}"
    cases = {
        "expired": (issuer.token(scope, ttl=-120), "token_expired", "JWT expired"),
        "wrong audience": (issuer.token(scope, claims={"aud": "other"}), "token_invalid", "audience is not"),
        "wrong issuer": (issuer.token(scope, claims={"iss": "https://x/"}), "token_invalid", "issuer is not"),
        "alg none": (unsigned(issuer, scope), "token_invalid", "alg 'none' is not allowed"),
        "HS256 with the public key": (hs256_with_public_key(issuer), "token_invalid", "alg 'HS256'"),
        "other stream": (issuer.token("camflow:view:cam7"), "token_scope", "not 'jw1'"),
    }
    unknown = Issuer()
    unknown.private["nokey"] = unknown.private["rsa1"]
    cases["unknown kid"] = (unknown.token(scope, kid="nokey"), "token_invalid", "'nokey' is not in the")
    cases["right kid, other key"] = (unknown.token(scope, kid="rsa1"), "token_invalid", "signature does not")
    master = camflow.http_url(f"/live/{jwt_stream}/master.m3u8")
    for name, (token, error, reason) in cases.items():
        for headers in ((), (f"Authorization: Bearer {token}",)):
            url = master if headers else f"{master}?token={token}"
            status, body = curl(url, *headers)
            assert status == 403, (name, status, body)
            answer = json.loads(body)
            assert answer["error"] == error and reason in answer["detail"], (name, answer)
            assert token not in body and token.split(".")[1] not in body, name


def test_jwts_never_grant_admin_or_publish(camflow: Camflow, issuer: Issuer, clip: Path) -> None:
    every = issuer.token("camflow:view:* camflow:admin camflow:publish:jw2")
    status, body = curl(camflow.http_url(f"/api/streams?token={every}"))
    assert status == 403 and json.loads(body)["error"] == "token_scope", body
    pushed = ffmpeg_push(clip, camflow.rtsp_url("jw2", every), timeout=30)
    assert pushed.returncode != 0, "a JWT published"
    assert curl(camflow.http_url(f"/live/jw2/master.m3u8?token={every}"))[0] == 404


def test_a_separate_ingest_follows_a_shared_keys_file_without_a_restart(tmp_path: Path, clip: Path) -> None:
    kafka = services.require("kafka")
    keys_file = tmp_path / "keys"
    keys_file.write_text(PLAIN_SECRET + "\n")  # a deployment from before key ids
    env = {"CAMFLOW_SECRET": "", "CAMFLOW_SECRET_FILE": str(keys_file)}
    full_env = {**os.environ, **env}

    def camflow(*args: str) -> str:
        done = subprocess.run([*CAMFLOW, *args], capture_output=True, text=True, env=full_env, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    rtsp_port, http_port = free_port(), free_port()
    args = [
        *("ingest", "--host", "127.0.0.1", "--kafka", kafka, "--kafka-prefix", f"k{uuid.uuid4().hex[:10]}."),
        *("--rtsp-port", str(rtsp_port), "--http-port", str(http_port), "--data-dir", str(tmp_path / "d")),
    ]
    with camflow_service(tmp_path, "ingest", args, env):
        old = camflow("token", "publish", "cam3")
        assert old.startswith("v1.")
        assert "current key k2" in camflow("keys", "rotate", "k2")
        assert camflow("keys", "retire", "legacy").startswith("retired key legacy")
        url = f"rtsp://127.0.0.1:{rtsp_port}/cam3?token="
        deadline = time.monotonic() + RELOAD_WAIT
        refused = ffmpeg_push(clip, url + old, timeout=30)
        while refused.returncode == 0 and time.monotonic() < deadline:  # published before the re-read
            refused = ffmpeg_push(clip, url + old, timeout=30)
        assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr
        new = camflow("token", "publish", "cam3")
        assert new.startswith("v2.k2.")
        pushed = ffmpeg_push(clip, url + new)
        assert pushed.returncode == 0, pushed.stderr
        log = (tmp_path / "ingest.err").read_text()
        assert "keys_reloaded" in log and "'legacy' was retired" in log
        assert PLAIN_SECRET not in log and old not in log
