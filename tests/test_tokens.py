from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from camflow.errors import ConfigError, TokenError
from camflow.signing import LEGACY_KID, KeySet, SigningKey
from camflow.tokens import (
    MAX_TOKEN_CHARS,
    SECRET_ENV,
    SECRET_FILE_ENV,
    Action,
    Claims,
    TokenExpired,
    TokenScopeError,
    TokenSigner,
    _signed,
    load_keys,
)

SECRET = b"0123456789abcdef-test-secret"
NOW = 1_795_256_100.0
SIGNER = TokenSigner(SECRET)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token() -> str:
    return SIGNER.issue("cam-1", Action.PUBLISH, ttl=60, now=NOW)


def test_issue_then_verify() -> None:
    claims = SIGNER.verify(token(), "cam-1", Action.PUBLISH, now=NOW + 1)
    assert claims == Claims(stream="cam-1", action=Action.PUBLISH, expires=NOW + 60)


def test_expiry_is_rounded_up_to_a_whole_second() -> None:
    claims = SIGNER.verify(
        SIGNER.issue("cam-1", Action.VIEW, ttl=0.2, now=NOW + 0.5), "cam-1", Action.VIEW, now=NOW
    )
    assert claims.expires == NOW + 1


def test_expired_at_and_after_expiry() -> None:
    SIGNER.verify(token(), "cam-1", Action.PUBLISH, now=NOW + 59.999)
    for now in (NOW + 60, NOW + 3600):
        with pytest.raises(TokenExpired, match="expired"):
            SIGNER.verify(token(), "cam-1", Action.PUBLISH, now=now)


def test_wrong_stream() -> None:
    with pytest.raises(TokenScopeError, match="for stream 'cam-1', not 'cam-2'"):
        SIGNER.verify(token(), "cam-2", Action.PUBLISH, now=NOW)


def test_wrong_action() -> None:
    with pytest.raises(TokenScopeError, match="allows 'publish', not 'view'"):
        SIGNER.verify(token(), "cam-1", Action.VIEW, now=NOW)


def test_other_secret_does_not_verify() -> None:
    with pytest.raises(TokenError, match="signature does not match"):
        TokenSigner(SECRET + b"x").verify(token(), "cam-1", Action.PUBLISH, now=NOW)


def test_tampered_claims() -> None:
    prefix, _, sig = token().split(".")
    forged = b64(json.dumps({"a": "publish", "e": NOW + 10**6, "s": "cam-1"}, separators=(",", ":")).encode())
    with pytest.raises(TokenError, match="signature does not match"):
        SIGNER.verify(f"{prefix}.{forged}.{sig}", "cam-1", Action.PUBLISH, now=NOW)


def test_tampered_signature() -> None:
    prefix, body, sig = token().split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    for bad in (flipped, sig[:-1], sig + "A", ""):
        with pytest.raises(TokenError, match="signature does not match"):
            SIGNER.verify(f"{prefix}.{body}.{bad}", "cam-1", Action.PUBLISH, now=NOW)


def test_signed_but_malformed_claims() -> None:
    # Only a holder of the secret could make these; they are still refused with a TokenError.
    for claims in (b"[]", b"{}", b'{"s":"cam-1","a":"delete","e":1}', b"not json"):
        body = b64(claims)
        forged = _signed(SigningKey(LEGACY_KID, SECRET), body)
        with pytest.raises(TokenError, match="claims are malformed"):
            SIGNER.verify(forged, "cam-1", Action.PUBLISH, now=NOW)


GARBAGE = {
    "empty": "",
    "no dots": "garbage",
    "two parts": "v1.abc",
    "four parts": token() + ".x",
    "other version": "v2." + token().partition(".")[2],
    "non-ASCII signature": token()[:-1] + "é",
    "non-ASCII claims": "v1.é." + token().split(".")[2],
    "lone surrogate": "v1.\ud800.x",
    "NUL": "v1.\x00.\x00",
}


@pytest.mark.parametrize("text", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_is_a_token_error(text: str) -> None:
    with pytest.raises(TokenError):
        SIGNER.verify(text, "cam-1", Action.PUBLISH, now=NOW)


def test_overlong_token_refused_before_any_work() -> None:
    with pytest.raises(TokenError, match=f"at most {MAX_TOKEN_CHARS}"):
        SIGNER.verify(token() + "A" * MAX_TOKEN_CHARS, "cam-1", Action.PUBLISH, now=NOW)


@settings(database=None, max_examples=300)
@given(st.text(max_size=200))
def test_verify_arbitrary_text_raises_only_token_error(text: str) -> None:
    with pytest.raises(TokenError):
        SIGNER.verify(text, "cam-1", Action.PUBLISH, now=NOW)


def test_short_secret_refused() -> None:
    with pytest.raises(ConfigError, match="15 bytes long, expected at least 16"):
        TokenSigner(b"x" * 15)
    TokenSigner(b"x" * 16)


def test_non_positive_ttl_refused() -> None:
    for ttl in (0, -1):
        with pytest.raises(ConfigError, match="ttl"):
            SIGNER.issue("cam-1", Action.VIEW, ttl=ttl)


def test_load_keys_creates_a_private_file_with_one_key_then_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)
    data_dir = tmp_path / "data" / "nested"
    first = load_keys(data_dir).keys()
    path = data_dir / "secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.keys) == 1 and len(first.current.secret) >= 32 and not first.current.legacy
    assert load_keys(data_dir).keys() == first
    assert sorted(p.name for p in data_dir.iterdir()) == ["secret"]  # no temp file left
    assert TokenSigner(first).issue("cam-1", Action.VIEW, 60).startswith(f"v2.{first.current.kid}.")


def test_secret_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)
    from_file = load_keys(tmp_path).keys()
    monkeypatch.setenv(SECRET_ENV, "from-the-environment-0123")
    env = KeySet.single(b"from-the-environment-0123")
    assert load_keys(tmp_path).keys() == env != from_file
    assert load_keys(None).keys() == env


def test_no_env_and_no_data_dir_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)
    with pytest.raises(ConfigError, match=SECRET_ENV):
        load_keys(None)
