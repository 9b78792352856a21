"""The security test matrix of issue 14: every auth path crossed with every refusal that applies.

One `camflow run` with TLS on (a CA made at test time), a JWKS server (``tests.jwks``), a keys
file whose first key (``legacy``) was rotated out and retired with `camflow keys`, and devices
added (one revoked) with `camflow device`, all before it starts, so no cell waits for a reload.

- Accepted, over TLS: ffmpeg pushes ``rtsps://`` as a device by Digest (``rtsps://dev:cred@``)
  and by ``?token=``; FFmpeg's WHIP muxer publishes over HTTPS with ``Bearer``; curl views over
  HTTPS (playlist, segment and player page, ``?token=`` and ``Authorization: Bearer``) with a view
  token and a JWT, and an admin token reads ``/api/streams`` and the stream list ``/``.
- Refused, cell by cell (readable ids ``path-case``): RTSP Digest / Basic / ``?token=`` with a
  raw RTSP client (``tests.rtsp_announce``: ANNOUNCE with an SDP, Digest answered with hashlib) on
  the RTSPS and the plain listener: ``401`` with the Digest and Basic challenges, and
  ``publish_refused`` logged with the reason; WHIP ``POST`` with curl: ``401`` with
  ``WWW-Authenticate: Bearer`` and the reason in its detail; HTTP view, JWT view and admin with
  curl: ``401 token_missing`` or ``403`` naming the reason. Every refusal body is JSON
  ``{"error", "detail"}`` (RTSP: text) holding no part of the credential, and no credential is
  ever logged. Every RTSP path also has accepted control cells (the same client gets ``200``), so
  a refusal is the credential's doing. ffmpeg is refused too (a revoked device's Digest, a view
  token in ``?token=``).
- Nothing published or served: no refused stream has a ``publish_started``, a store directory, an
  entry in ``/api/streams`` or a live health sample; a refused view gets no playlist or segment.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from camflow.signing import KeysFile
from camflow.tokens import Action, TokenSigner
from tests.jwks import AUDIENCE, ISSUER, Issuer, jwks_server
from tests.process import CAMFLOW, Camflow, camflow_run, ffmpeg_push, free_port, make_clip, stop_process
from tests.rtsp_announce import announce
from tests.tls_certs import TestCa

SEGMENT = "????????.m4s"  # a segment's object name (low-latency parts are NNNNNNNN.PPP.m4s)

pytestmark = pytest.mark.integration

PLAIN_SECRET = "matrix-plain-secret-of-before-key-ids-0123456789"
WHIP_OFFER = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"  # refused before it is read
LIVE = "tls-dig"  # published by ffmpeg over RTSPS Digest; the stream the view cells ask for
REFUSED_STREAMS = ("m-dev", "m-pub", "gone", "elsewhere")  # no cell may publish these


@dataclass
class Matrix:
    cf: Camflow
    ca: TestCa
    rtsps_port: int
    cred: dict[str, str]  # credentials by name (see the fixture)
    clip: Path

    def https(self, path: str) -> str:
        return f"https://127.0.0.1:{self.cf.http_port}{path}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def with_claims(token: str, **changes: object) -> str:
    """``token`` (camflow v1/v2 or a JWT) with its claims edited and its signature kept: tampered."""
    parts = token.split(".")
    at = 2 if len(parts) == 4 else 1  # v2.kid.CLAIMS.sig, v1.CLAIMS.sig, header.CLAIMS.sig
    claims = json.loads(_unb64(parts[at]))
    claims.update(changes)
    parts[at] = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return ".".join(parts)


def flip(credential: str) -> str:
    """A device credential with one character of its secret changed."""
    head, _, secret = credential.rpartition(".")
    middle = len(secret) // 2
    return f"{head}.{secret[:middle]}{'A' if secret[middle] != 'A' else 'B'}{secret[middle + 1 :]}"


def run_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([*CAMFLOW, *args], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def add_device(env: dict[str, str], data: Path, name: str, *streams: str) -> str:
    extra = [arg for s in streams for arg in ("--stream", s)]
    return run_cli(env, "device", "add", name, *extra, "--data-dir", str(data)).strip().splitlines()[-1]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    tmp = tmp_path_factory.mktemp("matrix")
    data = tmp / "data"
    data.mkdir()
    (data / "secret").write_text(PLAIN_SECRET + "\n")  # key 'legacy', as before key ids
    env = {"CAMFLOW_SECRET": "", "CAMFLOW_SECRET_FILE": ""}
    full_env = {**os.environ, **env}
    signer = TokenSigner(KeysFile(data / "secret"))
    now = time.time()
    cred = {
        # Signed by 'legacy', retired below.
        "pub_legacy": signer.issue("m-pub", Action.PUBLISH, 3600),
        "pub_legacy_never": signer.issue("m-pub", Action.PUBLISH, None),
        "view_legacy": signer.issue(LIVE, Action.VIEW, 3600),
        "admin_legacy": signer.issue("*", Action.ADMIN, 3600),
    }
    rotated = run_cli(full_env, "keys", "--data-dir", str(data), "rotate", "k2")
    assert "current key k2" in rotated
    assert "retired key legacy" in run_cli(full_env, "keys", "--data-dir", str(data), "retire", "legacy")
    signer = TokenSigner(KeysFile(data / "secret"))
    cred |= {
        "pub": signer.issue("m-pub", Action.PUBLISH, 3600),
        "pub_never": signer.issue("m-pub", Action.PUBLISH, None),
        "pub_other": signer.issue("elsewhere", Action.PUBLISH, 3600),
        "pub_other_never": signer.issue("elsewhere", Action.PUBLISH, None),
        "pub_expired": signer.issue("m-pub", Action.PUBLISH, 60, now=now - 3600),
        "pub_live": signer.issue(LIVE, Action.PUBLISH, 3600),
        "whip": signer.issue("tls-whip", Action.PUBLISH, 3600),
        "view_pub": signer.issue("m-pub", Action.VIEW, 3600),
        "view": signer.issue(LIVE, Action.VIEW, 3600),
        "view_expired": signer.issue(LIVE, Action.VIEW, 60, now=now - 3600),
        "admin": signer.issue("*", Action.ADMIN, 3600),
        "admin_expired": signer.issue("*", Action.ADMIN, 60, now=now - 3600),
    }
    assert cred["pub"].startswith("v2.k2.") and cred["pub_legacy"].startswith("v1.")
    # Tampered: another stream's (or action's) valid token with its claims rewritten, signature kept.
    cred["pub_tampered"] = with_claims(cred["pub_other"], s="m-pub")
    cred["pub_tampered_never"] = with_claims(cred["pub_other_never"], s="m-pub")
    cred["view_tampered"] = with_claims(cred["view_pub"], s=LIVE)
    cred["admin_tampered"] = with_claims(cred["view"], s="*", a="admin")
    cred["cam"] = add_device(full_env, data, "cam", LIVE, "tls-tok")
    cred["mdev"] = add_device(full_env, data, "mdev", "m-dev")
    cred["mdev_tampered"] = flip(cred["mdev"])
    cred["other"] = add_device(full_env, data, "other")
    cred["gone"] = add_device(full_env, data, "gone", "m-dev")
    run_cli(full_env, "device", "revoke", "gone", "--data-dir", str(data))
    issuer = Issuer()
    cred |= {
        "jwt": issuer.token(f"camflow:view:{LIVE}", kid="ec1"),
        "jwt_other": issuer.token("camflow:view:m-pub", kid="rsa1"),
        "jwt_expired": issuer.token(f"camflow:view:{LIVE}", ttl=-120),
        "jwt_everything": issuer.token(
            "camflow:view:* camflow:admin camflow:publish:m-pub camflow:publish:*"
        ),
    }
    cred["jwt_tampered"] = with_claims(cred["jwt_other"], scope=f"camflow:view:{LIVE}")
    stranger = Issuer()  # its keys were never in the JWKS (a retired or foreign key)
    stranger.private["gone1"] = stranger.private["rsa1"]
    cred["jwt_unknown_key"] = stranger.token(f"camflow:view:{LIVE}", kid="gone1")

    ca = TestCa(tmp / "pki")
    served = ca.issue("server")
    clip = make_clip(tmp / "clip3.mp4", 3, size="320x240", gop=30)
    rtsps_port = free_port()
    with jwks_server(issuer) as url:
        extra = [
            *("--ladder", "source", "--segment-duration", "1", "--processes", "1"),
            *("--rtsp-udp-ports", "off", "--webrtc-ports", "43700-43799", "--rtsps-port", str(rtsps_port)),
            *("--tls-cert", str(served.cert), "--tls-key", str(served.key)),
            *("--jwks-url", url, "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE),
        ]
        with camflow_run(tmp, extra, env=env) as cf:
            yield Matrix(cf, ca, rtsps_port, cred, clip)


# --- clients ---------------------------------------------------------------------------------------


def curl(url: str, ca: Path, *extra: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one request by curl (trusting only ``ca``)."""
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", str(ca), "-D", "-", "-o", "-", *extra, url],
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def fetch(m: Matrix, path: str, carrier: str, token: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` over HTTPS with ``token`` in ``?token=`` (carrier ``query``) or ``Authorization:
    Bearer`` (``bearer``); none when it is empty."""
    if carrier == "query":
        return curl(m.https(f"{path}?token={token}" if token else path), m.ca.path)
    return curl(m.https(path), m.ca.path, *(["-H", f"Authorization: Bearer {token}"] if token else []))


def assert_json_refusal(status: int, headers: dict[str, str], body: bytes, token: str) -> dict[str, str]:
    """A JSON ``{"error", "detail"}`` body that holds no part of ``token``."""
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body[:200])
    answer = json.loads(body)
    assert set(answer) == {"error", "detail"}, answer
    for part in [token, *[p for p in re.split(r"[.]", token) if len(p) >= 8]] if token else []:
        assert part not in body.decode(errors="replace"), f"the refusal echoes the token: {answer}"
    return dict(answer)


def refusals(m: Matrix, stream: str, reason: str) -> int:
    """``publish_refused`` lines of ``stream`` whose reason has ``reason`` in it."""
    found = 0
    for line in m.cf.log.splitlines():
        if '"publish_refused"' in line:
            record = json.loads(line)
            found += record.get("stream_id") == stream and reason in str(record.get("reason"))
    return found


def wait_logged(m: Matrix, stream: str, reason: str, before: int) -> None:
    """One more ``publish_refused`` of ``stream`` naming ``reason`` is logged (within 3 s), and no
    credential is in the log."""
    deadline = time.monotonic() + 3
    while refusals(m, stream, reason) <= before:
        assert time.monotonic() < deadline, f"no publish_refused of {stream} with {reason!r} logged"
        time.sleep(0.05)


def published_nothing(m: Matrix, stream: str) -> None:
    """No session of ``stream`` started and no segment of it reached the store."""
    started = [
        line for line in m.cf.log.splitlines() if '"publish_started"' in line and f'"{stream}"' in line
    ]
    assert not started, started
    assert not (m.cf.data_dir / "store" / "streams" / stream).exists()


# --- accepted over TLS -----------------------------------------------------------------------------


def wait_for(url: str, m: Matrix, needle: bytes, *extra: str, timeout: float = 40.0) -> bytes:
    deadline, body = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        status, _, body = curl(url, m.ca.path, *extra)
        if status == 200 and needle in body:
            return body
        time.sleep(0.3)
    raise AssertionError(f"{url}: no {needle!r} within {timeout} s: {body[:300]!r}")


@pytest.fixture(scope="module")
def live(matrix: Matrix) -> str:
    """ffmpeg pushes ``rtsps://`` as device ``cam`` by Digest (and by ?token= at the same time, and
    FFmpeg's WHIP muxer over HTTPS with a Bearer publish token): the segment path of the stream."""
    m = matrix
    token_push = subprocess.Popen(
        ["ffmpeg", "-loglevel", "warning", "-re", "-i", str(m.clip), "-c", "copy", "-f", "rtsp",
         "-rtsp_transport", "tcp", f"rtsps://127.0.0.1:{m.rtsps_port}/tls-tok?token={m.cred['cam']}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    whip = subprocess.Popen(
        [sys.executable, "-m", "tests.whip_publish", m.https("/whip/tls-whip"), m.cred["whip"], "3"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        pushed = ffmpeg_push(m.clip, f"rtsps://cam:{m.cred['cam']}@127.0.0.1:{m.rtsps_port}/{LIVE}")
        assert pushed.returncode == 0, pushed.stderr
        _, token_err = token_push.communicate(timeout=60)
        assert token_push.returncode == 0, token_err
        _, whip_err = whip.communicate(timeout=90)
        assert whip.returncode == 0, whip_err[-3000:]
    finally:
        stop_process(token_push)  # type: ignore[arg-type]
        stop_process(whip)  # type: ignore[arg-type]
    media = wait_for(m.https(f"/live/{LIVE}/source.m3u8?token={m.cred['view']}"), m, b".m4s")
    line = next(x for x in media.decode().splitlines() if ".m4s" in x and not x.startswith("#"))
    return f"/live/{LIVE}/{line.split('?')[0]}"


def test_accepted_cells_work_over_tls(matrix: Matrix, live: str) -> None:
    m = matrix
    log = m.cf.log
    sessions = [json.loads(x) for x in log.splitlines() if '"publish_started"' in x and x.startswith("{")]
    assert {s.get("stream_id") for s in sessions} >= {LIVE, "tls-tok", "tls-whip"}, sessions
    for stream in (LIVE, "tls-tok", "tls-whip"):
        segments = m.cf.data_dir / "store" / "streams" / stream
        assert list(segments.glob(f"*/source/{SEGMENT}")), f"{stream}: no segment in the store"
    # View: a view token and a JWT, in ?token= and as Bearer, for a playlist, a segment, the player.
    for name in ("view", "jwt"):
        token = m.cred[name]
        objects = ((f"/live/{LIVE}/source.m3u8", b"#EXTM3U"), (live, b"moof"), (f"/watch/{LIVE}", b"<video"))
        for path, needle in objects:
            status, _, body = curl(m.https(f"{path}?token={token}"), m.ca.path)
            assert status == 200 and needle in body, (name, path, status, body[:200])
            status, _, body = curl(m.https(path), m.ca.path, "-H", f"Authorization: Bearer {token}")
            assert status == 200 and needle in body, (name, path, status, body[:200])
    # Admin: the API's stream list and the stream list page.
    status, _, body = curl(m.https(f"/api/streams?token={m.cred['admin']}"), m.ca.path)
    assert status == 200 and LIVE in body.decode(), body[:300]
    status, _, body = curl(m.https("/"), m.ca.path, "-H", f"Authorization: Bearer {m.cred['admin']}")
    assert status == 200 and "<h1>Live streams</h1>" in body.decode(), body[:300]  # the pushes ended
    # A real client refused: ffmpeg pushing as the revoked device (Digest) and with a view token.
    refused = ffmpeg_push(m.clip, f"rtsps://gone:{m.cred['gone']}@127.0.0.1:{m.rtsps_port}/m-dev", timeout=30)
    assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr
    refused = ffmpeg_push(m.clip, f"rtsps://127.0.0.1:{m.rtsps_port}/m-pub?token={m.cred['view_pub']}", 30)
    assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr


# --- RTSP: Digest, Basic, ?token= ------------------------------------------------------------------

# (case, credential, stream, Digest/Basic user); Digest with an HMAC token needs the never-expiring one.
RTSP_CASES = [
    ("accepted-device", "mdev", "m-dev", "mdev"),
    ("accepted-token", "pub", "m-pub", "m-pub"),
    ("wrong-stream-device", "other", "m-dev", "other"),
    ("wrong-stream-token", "pub_other", "m-pub", "m-pub"),
    ("expired", "pub_expired", "m-pub", "m-pub"),
    ("tampered-device", "mdev_tampered", "m-dev", "mdev"),
    ("tampered-token", "pub_tampered", "m-pub", "m-pub"),
    ("revoked-device", "gone", "m-dev", "gone"),
    ("retired-key", "pub_legacy", "m-pub", "m-pub"),
    ("view-token", "view_pub", "m-pub", "m-pub"),
    ("admin-token", "admin", "m-pub", "m-pub"),
    ("jwt", "jwt_everything", "m-pub", "m-pub"),
]
NEVER = {"pub", "pub_other", "pub_tampered", "pub_legacy"}  # Digest uses their "--ttl never" twins
# Why each is refused (logged as publish_refused; in WHIP's detail too). Digest hides the password, so
# a wrong HMAC one is only "does not match" (an expired, retired, view, admin token or JWT alike).
REASONS = {
    "wrong-stream-device": "device 'other' may publish other, not 'm-dev'",
    "wrong-stream-token": "token is for stream 'elsewhere', not 'm-pub'",
    "expired": "token expired",
    "tampered-device": "credential of device 'mdev' does not match",
    "tampered-token": "token signature does not match",
    "revoked-device": "device 'gone' is revoked",
    "retired-key": "key 'legacy' was retired",
    "view-token": "token allows 'view', not 'publish'",
    "admin-token": "token is for stream '*', not 'm-pub'",
    "jwt": "token is not of the form v2.",
}
DIGEST_REASONS = {
    "wrong-stream-device": REASONS["wrong-stream-device"],
    "tampered-device": "Digest response does not match device 'mdev'",
    "revoked-device": REASONS["revoked-device"],
}
DIGEST_TOKEN = "Digest response does not match the stream's never-expiring publish token"
RTSP_CELLS = [
    pytest.param(listener, scheme, *case, id=f"{listener}-{scheme}-{case[0]}")
    for listener in ("rtsps", "rtsp")
    for scheme in ("digest", "basic", "query")
    for case in RTSP_CASES
] + [
    pytest.param(listener, scheme, "missing", "", "m-pub", "", id=f"{listener}-{label}")
    for listener in ("rtsps", "rtsp")
    for scheme, label in (("none", "missing"), ("query", "query-empty"))
]


@pytest.mark.parametrize(("listener", "scheme", "case", "cred", "stream", "user"), RTSP_CELLS)
def test_rtsp(
    matrix: Matrix, listener: str, scheme: str, case: str, cred: str, stream: str, user: str
) -> None:
    name = f"{cred}_never" if scheme == "digest" and cred in NEVER else cred
    password = matrix.cred[name] if name else ""
    reason = DIGEST_REASONS.get(case, DIGEST_TOKEN) if scheme == "digest" else REASONS.get(case, "")
    logged = refusals(matrix, stream, reason)
    if listener == "rtsps":
        reply = announce(matrix.rtsps_port, stream, scheme, user, password, tls=matrix.ca.client_context())
    else:  # the plain listener (--rtsp-port) answers alike
        reply = announce(matrix.cf.rtsp_port, stream, scheme, user, password)
    if case.startswith("accepted"):
        assert reply.status == 200, reply.raw
        return
    assert reply.status == 401, reply.raw
    challenges = reply.values("WWW-Authenticate")
    assert any(c.startswith("Digest ") and 'realm="camflow"' in c and "nonce=" in c for c in challenges)
    assert any(c.startswith("Basic ") for c in challenges), challenges
    if password:
        assert password not in reply.raw and password.split(".")[-1] not in reply.raw
        wait_logged(matrix, stream, reason, logged)
    published_nothing(matrix, stream)


# --- WHIP Bearer ----------------------------------------------------------------------------------

WHIP_CELLS = [
    pytest.param(case, cred, stream, id=f"whip-{case}")
    for case, cred, stream in [
        ("missing", "", "m-pub"),
        ("wrong-stream-device", "other", "m-dev"),
        ("wrong-stream-token", "pub_other", "m-pub"),
        ("expired", "pub_expired", "m-pub"),
        ("tampered-device", "mdev_tampered", "m-dev"),
        ("tampered-token", "pub_tampered", "m-pub"),
        ("revoked-device", "gone", "m-dev"),
        ("retired-key", "pub_legacy", "m-pub"),
        ("view-token", "view_pub", "m-pub"),
        ("admin-token", "admin", "m-pub"),
        ("jwt", "jwt_everything", "m-pub"),
    ]
]


@pytest.mark.parametrize(("case", "cred", "stream"), WHIP_CELLS)
def test_whip(matrix: Matrix, case: str, cred: str, stream: str) -> None:
    token = matrix.cred[cred] if cred else ""
    reason = REASONS.get(case, "expected Authorization: Bearer")
    logged = refusals(matrix, stream, reason)
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    status, headers, body = curl(
        matrix.https(f"/whip/{stream}"),
        matrix.ca.path,
        *("-X", "POST", "-H", "Content-Type: application/sdp", "--data-binary", WHIP_OFFER, *auth),
    )
    assert status == 401, (status, body[:300])
    assert headers.get("www-authenticate", "").startswith("Bearer"), headers
    answer = assert_json_refusal(status, headers, body, token)
    assert answer["error"] == "unauthorized" and reason in answer["detail"], answer
    assert "location" not in headers
    if token:
        wait_logged(matrix, stream, reason, logged)
    published_nothing(matrix, stream)


# --- HTTP view (camflow view tokens and JWTs) ------------------------------------------------------

VIEW_CASES = [
    ("missing", "", 401, "token_missing"),
    ("wrong-stream", "view_pub", 403, "token_scope"),
    ("expired", "view_expired", 403, "token_expired"),
    ("tampered", "view_tampered", 403, "token_invalid"),
    ("retired-key", "view_legacy", 403, "token_key_retired"),
    ("publish-token", "pub_live", 403, "token_scope"),
    ("device-credential", "cam", 403, "token_invalid"),
    ("jwt-wrong-stream", "jwt_other", 403, "token_scope"),
    ("jwt-expired", "jwt_expired", 403, "token_expired"),
    ("jwt-tampered", "jwt_tampered", 403, "token_invalid"),
    ("jwt-unknown-key", "jwt_unknown_key", 403, "token_invalid"),
]
VIEW_CELLS = [
    pytest.param(obj, carrier, *case, id=f"view-{obj}-{carrier}-{case[0]}")
    for obj in ("playlist", "segment", "watch", "health")
    for carrier in ("query", "bearer")
    for case in VIEW_CASES
]


@pytest.mark.parametrize(("obj", "carrier", "case", "cred", "status", "error"), VIEW_CELLS)
def test_view(
    matrix: Matrix, live: str, obj: str, carrier: str, case: str, cred: str, status: int, error: str
) -> None:
    token = matrix.cred[cred] if cred else ""
    path = {
        "playlist": f"/live/{LIVE}/source.m3u8",
        "segment": live,
        "watch": f"/watch/{LIVE}",  # the player page
        "health": f"/api/streams/{LIVE}/health",  # the stream's health events
    }[obj]
    got, headers, body = fetch(matrix, path, carrier, token)
    assert got == status, (got, body[:300])
    assert assert_json_refusal(got, headers, body, token)["error"] == error
    assert b"#EXTM3U" not in body and b"moof" not in body and len(body) < 1000  # nothing served
    if status == 401:
        assert headers.get("www-authenticate", "").startswith("Bearer"), headers


# --- admin: /api/streams and the stream list ------------------------------------------------------

ADMIN_CASES = [
    ("missing", "", 401, "token_missing"),
    ("view-token", "view", 403, "token_scope"),
    ("publish-token", "pub_live", 403, "token_scope"),
    ("expired", "admin_expired", 403, "token_expired"),
    ("tampered", "admin_tampered", 403, "token_invalid"),
    ("retired-key", "admin_legacy", 403, "token_key_retired"),
    ("jwt", "jwt_everything", 403, "token_scope"),
    ("device-credential", "cam", 403, "token_invalid"),
]
ADMIN_CELLS = [
    pytest.param(path, carrier, *case, id=f"admin-{label}-{carrier}-{case[0]}")
    for path, label, carrier in (
        ("/api/streams", "api", "query"),
        ("/api/streams", "api", "bearer"),
        ("/", "list", "query"),
        ("/api/health", "health", "bearer"),  # every stream's health events
    )
    for case in ADMIN_CASES
]


@pytest.mark.parametrize(("path", "carrier", "case", "cred", "status", "error"), ADMIN_CELLS)
def test_admin(
    matrix: Matrix, live: str, path: str, carrier: str, case: str, cred: str, status: int, error: str
) -> None:
    token = matrix.cred[cred] if cred else ""
    got, headers, body = fetch(matrix, path, carrier, token)
    assert got == status, (got, body[:300])
    assert assert_json_refusal(got, headers, body, token)["error"] == error  # and no stream list


# --- nothing published, anywhere -------------------------------------------------------------------


def test_refused_streams_are_nowhere(matrix: Matrix, live: str) -> None:
    """After every cell: no refused stream in the store, the log's sessions, /api/streams or a live
    health sample (the health feed's latest sample of each stream and service, over HTTPS)."""
    m = matrix
    for stream in REFUSED_STREAMS:
        published_nothing(m, stream)
    log = m.cf.log
    leaked = [name for name, value in m.cred.items() if value in log or value.split(".")[-1] in log]
    assert not leaked, f"credentials in the log: {leaked}"
    status, _, body = curl(
        m.https("/api/streams"), m.ca.path, "-H", f"Authorization: Bearer {m.cred['admin']}"
    )
    listed = json.loads(body)
    names = json.dumps(listed)
    assert status == 200 and LIVE in names, listed
    assert not [s for s in REFUSED_STREAMS if f'"{s}"' in names], listed
    feed = subprocess.run(
        ["curl", "-sS", "-N", "--max-time", "3", "--cacert", str(m.ca.path), "-H",
         f"Authorization: Bearer {m.cred['admin']}", m.https("/api/health")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    samples = [json.loads(x[5:]) for x in feed.stdout.splitlines() if x.startswith("data:")]
    states = {s.get("state") for s in samples if s.get("stream") == LIVE and s.get("service") == "ingest"}
    assert states & {"live", "offline"}, feed.stdout[-1000:]  # the feed names ingest's publish state
    live_refused = [s for s in samples if s.get("stream") in REFUSED_STREAMS and s.get("state") == "live"]
    assert not live_refused, live_refused
