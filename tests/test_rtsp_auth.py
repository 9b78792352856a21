"""Publisher authentication: never-expiring tokens, stateless Digest nonces, and the token authorizer
checked against Authorization headers captured from ffmpeg and GStreamer (tests/vectors/rtsp_auth.py)."""

from __future__ import annotations

import pytest

from camflow.errors import ConfigError
from camflow.signing import LEGACY_KID, KeySet, SigningKey
from camflow.tokens import Action, TokenSigner
from ingest.errors import ParseError
from ingest.service import token_authorizer
from ingest.sources.rtsp.auth import AuthScheme, Challenger, DigestNonces, parse_schemes
from ingest.sources.rtsp.headers import DigestCredentials, digest_response, parse_authorization
from ingest.sources.rtsp.session import AuthRequest
from tests.vectors import rtsp_auth as v

SIGNER = TokenSigner(v.SECRET)
BOTH = (AuthScheme.DIGEST, AuthScheme.BASIC)


def nonces_at(now: float) -> DigestNonces:
    return DigestNonces(SIGNER.derive_key("rtsp-digest-nonce"), clock=lambda: now)


def digest_request(method: str, uri: str, header: str, stream: str = v.STREAM) -> AuthRequest:
    creds = parse_authorization(header)
    assert isinstance(creds, DigestCredentials)
    return AuthRequest(stream, {}, None, None, method, creds)


# --- tokens that never expire ---------------------------------------------------------------


def test_never_expiring_token_is_deterministic_and_verifies_forever() -> None:
    token = SIGNER.issue("cam1", Action.PUBLISH, None, now=1.0)
    assert token == SIGNER.issue("cam1", Action.PUBLISH, None, now=2e9) == v.PASSWORD
    claims = SIGNER.verify(token, "cam1", Action.PUBLISH, now=4e9)
    assert claims.permanent and claims.expires == 0
    assert (
        SIGNER.verify(
            SIGNER.issue("cam1", Action.PUBLISH, 60, now=0), "cam1", Action.PUBLISH, now=1
        ).permanent
        is False
    )


def test_never_expiring_token_is_still_scoped_and_tied_to_the_secret() -> None:
    token = SIGNER.issue("cam1", Action.PUBLISH, None)
    with pytest.raises(Exception, match="not 'cam2'"):
        SIGNER.verify(token, "cam2", Action.PUBLISH)
    with pytest.raises(Exception, match="signature"):
        TokenSigner(v.SECRET + b"-rotated").verify(token, "cam1", Action.PUBLISH)


def test_derived_keys_differ_by_purpose_and_secret() -> None:
    assert SIGNER.derive_key("a") != SIGNER.derive_key("b")
    assert TokenSigner(v.SECRET + b"x").derive_key("a") != SIGNER.derive_key("a")


# --- nonces and schemes -----------------------------------------------------------------------


def test_nonce_is_valid_for_its_lifetime_only() -> None:
    nonce = nonces_at(1_800_000_000).issue()
    assert nonces_at(1_800_000_000).check(nonce)
    assert nonces_at(1_800_000_060).check(nonce)
    assert not nonces_at(1_800_000_061).check(nonce)
    assert not nonces_at(1_799_999_999).check(nonce)  # from the future


@pytest.mark.parametrize(
    "nonce",
    [
        "",
        "abc",
        "6b0177f3.",
        ".29811c8c",
        "zz.29811c8c1a253b1732d6ecfc67c5b33e",
        "6b0177f3.é",
        "1" * 40 + ".x",
    ],
)
def test_forged_nonces_are_refused(nonce: str) -> None:
    assert not nonces_at(v.FFMPEG_5_1_NONCE_TIME).check(nonce)


def test_nonce_from_another_key_is_refused() -> None:
    nonce = DigestNonces(b"other" * 8, clock=lambda: 1000.0).issue()
    assert not DigestNonces(b"key!" * 8, clock=lambda: 1000.0).check(nonce)


def test_parse_schemes() -> None:
    assert parse_schemes("digest,basic") == BOTH
    assert parse_schemes(" Basic ") == (AuthScheme.BASIC,)
    for bad in ("", "ntlm", "digest,,"):
        with pytest.raises(ParseError, match="expected digest and/or basic"):
            parse_schemes(bad)


def test_challenger_offers_only_configured_schemes() -> None:
    assert [c.split()[0] for c in Challenger(BOTH, nonces_at(1e9))()] == ["Digest", "Basic"]
    assert Challenger((AuthScheme.BASIC,), None)() == ('Basic realm="camflow"',)
    with pytest.raises(ValueError, match="nonce key"):
        Challenger((AuthScheme.DIGEST,), None)


# --- captured Authorization headers -------------------------------------------------------------

CAPTURED = [
    ("ffmpeg-5.1", v.FFMPEG_5_1_DIGEST, v.FFMPEG_5_1_NONCE_TIME),
    ("gstreamer-1.22", v.GSTREAMER_1_22_DIGEST, v.GSTREAMER_1_22_NONCE_TIME),
]


@pytest.mark.parametrize(("client", "headers", "issued"), CAPTURED, ids=[c[0] for c in CAPTURED])
def test_captured_digest_verifies(client: str, headers: dict[str, tuple[str, str]], issued: int) -> None:
    authorize = token_authorizer(SIGNER, BOTH, nonces_at(issued + 2))
    for method, (uri, header) in headers.items():
        creds = parse_authorization(header)
        assert isinstance(creds, DigestCredentials) and creds.uri == uri
        assert creds.verify(v.PASSWORD, method), (client, method)
        assert authorize(digest_request(method, uri, header)), (client, method)
        assert not creds.verify(v.PASSWORD, "TEARDOWN" if method != "TEARDOWN" else "PLAY")


@pytest.mark.parametrize(("client", "headers", "issued"), CAPTURED, ids=[c[0] for c in CAPTURED])
def test_captured_digest_refused_when_anything_differs(
    client: str, headers: dict[str, tuple[str, str]], issued: int
) -> None:
    uri, header = headers["ANNOUNCE"]
    good = nonces_at(issued + 2)
    assert not token_authorizer(SIGNER, BOTH, nonces_at(issued + 61))(digest_request("ANNOUNCE", uri, header))
    assert not token_authorizer(TokenSigner(v.SECRET + b"x"), BOTH, good)(
        digest_request("ANNOUNCE", uri, header)
    )
    assert not token_authorizer(SIGNER, (AuthScheme.BASIC,), good)(digest_request("ANNOUNCE", uri, header))
    assert not token_authorizer(SIGNER, BOTH, good)(digest_request("ANNOUNCE", uri, header, stream="cam2"))
    response = header.split('response="')[1][:32]
    tampered = header.replace(response, ("f" if response[0] != "f" else "e") + response[1:])
    for bad in (tampered, header.replace('realm="camflow"', 'realm="other"')):
        assert not token_authorizer(SIGNER, BOTH, good)(digest_request("ANNOUNCE", uri, bad))


def test_digest_with_an_expiring_token_as_password_is_refused() -> None:
    # What ffmpeg sends when given an expiring token in rtsp://user:pass@: the server cannot recompute it.
    nonce = nonces_at(1000).issue()
    expiring = SIGNER.issue("cam1", Action.PUBLISH, 3600, now=1000)
    uri = "rtsp://127.0.0.1:8554/cam1"
    response = digest_response(
        username="cam1", password=expiring, realm="camflow", method="ANNOUNCE", uri=uri, nonce=nonce
    )
    header = f'Digest username="cam1", realm="camflow", nonce="{nonce}", uri="{uri}", response="{response}"'
    assert not token_authorizer(SIGNER, BOTH, nonces_at(1001))(digest_request("ANNOUNCE", uri, header))
    never = SIGNER.issue("cam1", Action.PUBLISH, None)
    response = digest_response(
        username="cam1", password=never, realm="camflow", method="ANNOUNCE", uri=uri, nonce=nonce
    )
    header = f'Digest username="cam1", realm="camflow", nonce="{nonce}", uri="{uri}", response="{response}"'
    assert token_authorizer(SIGNER, BOTH, nonces_at(1001))(digest_request("ANNOUNCE", uri, header))


def test_captured_basic_with_an_expiring_token() -> None:
    creds = parse_authorization(v.GSTREAMER_1_22_BASIC)
    assert creds == parse_authorization(v.FFMPEG_5_1_BASIC)
    assert not isinstance(creds, DigestCredentials)
    assert (creds.username, creds.password) == (v.STREAM, v.BASIC_TOKEN)
    claims = SIGNER.verify(creds.password, v.STREAM, Action.PUBLISH, now=v.BASIC_TOKEN_EXPIRES - 10)
    assert claims.expires == v.BASIC_TOKEN_EXPIRES


def test_basic_with_an_expiring_token_unless_basic_is_off() -> None:
    request = AuthRequest("cam1", {}, "cam1", SIGNER.issue("cam1", Action.PUBLISH, 60))
    assert token_authorizer(SIGNER, BOTH)(request)
    assert token_authorizer(SIGNER, (AuthScheme.BASIC,))(request)
    assert not token_authorizer(SIGNER, (AuthScheme.DIGEST,))(request)
    assert not token_authorizer(SIGNER, BOTH)(AuthRequest("cam1", {}, "cam1", "v1.e30.AAAA"))


def test_query_token_works_whatever_the_schemes() -> None:
    token = SIGNER.issue("cam1", Action.PUBLISH, 60)
    for schemes in (BOTH, (AuthScheme.DIGEST,), (AuthScheme.BASIC,)):
        assert token_authorizer(SIGNER, schemes)(AuthRequest("cam1", {"token": token}, None, None))
    assert not token_authorizer(SIGNER, BOTH)(AuthRequest("cam1", {}, None, None))


def test_ingest_flags() -> None:
    from ingest.service import parse_rtsp_flags

    assert parse_rtsp_flags("20000-20999", "digest,basic") == ((20000, 20999), BOTH)
    assert parse_rtsp_flags("off", "basic") == (None, (AuthScheme.BASIC,))
    for ports in ("20000", "20001-20001", "80-90", "a-b", "30000-20000"):
        with pytest.raises(ConfigError, match="UDP port range"):
            parse_rtsp_flags(ports, "basic")
    with pytest.raises(ConfigError, match="auth scheme"):
        parse_rtsp_flags("off", "ntlm")


# --- key rotation -----------------------------------------------------------------------------


def test_captured_digest_of_before_key_ids_verifies_after_a_rotation_until_retirement() -> None:
    # The captured cameras kept the v1 password of the plain secret; the operator rotated since.
    rotated = KeySet.single(v.SECRET).added("k2", current=True)
    signer = TokenSigner(rotated)
    uri, header = v.FFMPEG_5_1_DIGEST["ANNOUNCE"]
    nonces = DigestNonces(
        lambda: signer.derive_keys("rtsp-digest-nonce"), clock=lambda: v.FFMPEG_5_1_NONCE_TIME + 2
    )
    assert nonces.check(parse_authorization(header).nonce)  # type: ignore[union-attr]
    assert token_authorizer(signer, BOTH, nonces)(digest_request("ANNOUNCE", uri, header))
    retired = TokenSigner(rotated.without(LEGACY_KID))
    nonces = DigestNonces(
        lambda: retired.derive_keys("rtsp-digest-nonce"), clock=lambda: v.FFMPEG_5_1_NONCE_TIME + 2
    )
    assert not token_authorizer(retired, BOTH, nonces)(digest_request("ANNOUNCE", uri, header))


def test_digest_with_the_permanent_token_of_an_older_key() -> None:
    keys = KeySet((SigningKey("k1", b"k1-secret-0123456789abcdef"),)).added("k2", current=True)
    signer = TokenSigner(keys)
    nonces = DigestNonces(lambda: signer.derive_keys("rtsp-digest-nonce"), clock=lambda: 1000.0)
    old_password = TokenSigner(keys.promoted("k1")).issue("cam1", Action.PUBLISH, None)
    assert old_password.startswith("v2.k1.") and old_password in signer.permanent_tokens(
        "cam1", Action.PUBLISH
    )
    uri = "rtsp://127.0.0.1:8554/cam1"

    def header(password: str) -> str:
        nonce = nonces.issue()
        response = digest_response(
            username="cam1", password=password, realm="camflow", method="ANNOUNCE", uri=uri, nonce=nonce
        )
        return f'Digest username="cam1", realm="camflow", nonce="{nonce}", uri="{uri}", response="{response}"'

    for password in (old_password, signer.issue("cam1", Action.PUBLISH, None)):
        assert token_authorizer(signer, BOTH, nonces)(digest_request("ANNOUNCE", uri, header(password)))
    retired = TokenSigner(keys.without("k1"))
    assert not token_authorizer(retired, BOTH, nonces)(digest_request("ANNOUNCE", uri, header(old_password)))


def test_nonces_of_an_older_key_check_until_it_is_gone() -> None:
    keys = [b"old-key" * 5]
    old = DigestNonces(lambda: keys, clock=lambda: 1000.0).issue()
    keys.insert(0, b"new-key" * 5)
    nonces = DigestNonces(lambda: keys, clock=lambda: 1000.0)
    assert nonces.check(old) and nonces.check(nonces.issue())
    assert nonces.issue() != old
    keys.pop()
    assert not nonces.check(old)
