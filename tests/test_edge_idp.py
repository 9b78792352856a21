"""edge.idp and edge.auth: JWT view tokens of an identity provider, and the memo forgetting keys."""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from camflow.errors import ConfigError, TokenError
from camflow.signing import LEGACY_KID, KeySet, SigningKey
from camflow.tokens import Action, TokenExpired, TokenKeyRetired, TokenScopeError, TokenSigner
from edge.auth import OPERATOR_SCOPE, Authorizer
from edge.idp import IdentityProvider, JwtSettings, UnknownJwtKey, looks_like_jwt, parse_jwks
from tests.jwks import AUDIENCE, ISSUER, Issuer, hs256_with_public_key, unsigned

SECRET = b"edge-idp-secret-0123456789"
URL = "https://idp.example.test/jwks.json"


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()


def provider(issuer: Issuer, **kwargs: float) -> tuple[IdentityProvider, list[int]]:
    calls = [0]

    async def fetch(url: str) -> bytes:
        assert url == URL
        calls[0] += 1
        return json.dumps(issuer.jwks()).encode()

    settings = JwtSettings.parse(URL, ISSUER, AUDIENCE, 300.0)
    return IdentityProvider(settings, fetch=fetch, **kwargs), calls  # type: ignore[arg-type]


async def test_each_algorithm_verifies_and_grants_its_streams(issuer: Issuer) -> None:
    idp, _ = provider(issuer)
    assert await idp.refresh() and sorted(idp.keys) == ["ec1", "ed1", "rsa1"]
    for kid in ("rsa1", "ec1", "ed1"):
        grant = idp.verify(issuer.token("openid camflow:view:cam1 camflow:view:cam2 other", kid=kid))
        assert grant.streams == {"cam1", "cam2"} and not grant.every_stream
    assert idp.verify(issuer.token("camflow:view:*")).every_stream


REFUSED = {
    "expired": (lambda i: i.token(ttl=-120), TokenExpired, "JWT expired"),
    "wrong audience": (lambda i: i.token(claims={"aud": "other-app"}), TokenError, "audience is not"),
    "wrong issuer": (lambda i: i.token(claims={"iss": "https://evil/"}), TokenError, "issuer is not"),
    "no exp": (lambda i: i.token(drop=("exp",)), TokenError, "no 'exp' claim"),
    "no aud": (lambda i: i.token(drop=("aud",)), TokenError, "no 'aud' claim"),
    "not yet valid": (lambda i: i.token(claims={"nbf": 2**40}), TokenError, "not valid yet"),
    "alg none": (unsigned, TokenError, "alg 'none' is not allowed"),
    "HS256 with the public key": (hs256_with_public_key, TokenError, "alg 'HS256' is not allowed"),
    "no scope": (lambda i: i.token(scope="openid profile"), TokenScopeError, "grants no stream"),
    "publish scope": (lambda i: i.token(scope="camflow:publish:cam1"), TokenScopeError, "grants no stream"),
}


@pytest.mark.parametrize(("make", "error", "reason"), REFUSED.values(), ids=REFUSED.keys())
async def test_refused_jwts_name_why_without_echoing_the_token(
    issuer: Issuer, make: object, error: type[Exception], reason: str
) -> None:
    idp, _ = provider(issuer)
    await idp.refresh()
    token = make(issuer)  # type: ignore[operator]
    with pytest.raises(error, match=reason) as caught:
        idp.verify(token)
    assert token not in str(caught.value) and token.split(".")[1] not in str(caught.value)


async def test_a_tampered_or_resigned_jwt_is_refused(issuer: Issuer) -> None:
    idp, _ = provider(issuer)
    await idp.refresh()
    header, body, sig = issuer.token().split(".")
    other_body = issuer.token("camflow:view:*").split(".")[1]
    with pytest.raises(TokenError, match="signature does not match key 'rsa1'"):
        idp.verify(f"{header}.{other_body}.{sig}")
    ec_header = issuer.token(kid="ec1").split(".")[0]
    with pytest.raises(TokenError, match="does not fit key"):  # an RSA key named in an ES256 header
        swapped = jwt.utils.base64url_encode(json.dumps({"alg": "ES256", "kid": "rsa1"}).encode()).decode()
        idp.verify(f"{swapped}.{body}.{sig}")
    with pytest.raises(TokenError):
        idp.verify(f"{ec_header}.{body}.{sig}")


async def test_an_unknown_kid_fetches_the_jwks_again_at_most_once_per_interval(issuer: Issuer) -> None:
    now = [1000.0]
    idp, calls = provider(issuer, clock=lambda: now[0])
    await idp.refresh()
    issuer.add("rsa2")
    token = issuer.token(kid="rsa2")
    with pytest.raises(UnknownJwtKey, match="'rsa2' is not in the identity provider's JWKS"):
        idp.verify(token)
    assert await idp.learn("rsa2") and calls[0] == 2
    assert idp.verify(token).streams == {"cam1"}
    assert not await idp.learn("nope") and calls[0] == 2  # rate-limited: a fetch 0 s ago
    now[0] += 31
    assert not await idp.learn("nope") and calls[0] == 3
    assert not await idp.learn("nope2") and calls[0] == 3


def test_jwks_parsing_keeps_only_asymmetric_signing_keys(issuer: Issuer) -> None:
    good = issuer.jwks()["keys"]
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    weak_rsa = {**RSAAlgorithm.to_jwk(small, as_dict=True), "kid": "weak"}
    extra = [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
        {**good[0], "kid": "enc", "use": "enc"},
        {**good[0], "kid": "lying-alg", "alg": "HS256"},
        weak_rsa,
        "not an object",
    ]
    assert sorted(parse_jwks({"keys": good + extra})) == ["ec1", "ed1", "rsa1"]
    for bad in ([], {"keys": "x"}, None):
        with pytest.raises(ValueError):
            parse_jwks(bad)


def test_jwt_settings_require_issuer_audience_and_https() -> None:
    assert JwtSettings.parse("http://127.0.0.1:9/jwks.json", "i", "a", 300).jwks_url.startswith("http:")
    with pytest.raises(ConfigError, match="expected https://"):
        JwtSettings.parse("http://idp.example.test/jwks.json", "i", "a", 300)
    for issuer, audience in ((None, "a"), ("i", None), ("", "")):
        with pytest.raises(ConfigError, match="--jwt-issuer and --jwt-audience"):
            JwtSettings.parse(URL, issuer, audience, 300)
    with pytest.raises(ConfigError):
        JwtSettings.parse("ftp://x/", "i", "a", 300)


def test_looks_like_jwt() -> None:
    assert looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJ9.sig")
    assert not looks_like_jwt("v2.k1.eyJ9.sig") and not looks_like_jwt("eyJ.x")


# --- edge.auth: the memo --------------------------------------------------------------------------


async def test_a_jwt_is_a_view_token_only_and_is_remembered_with_its_exp(issuer: Issuer) -> None:
    idp, _ = provider(issuer)
    await idp.refresh()
    auth = Authorizer(TokenSigner(SECRET), identity=idp)
    token = issuer.token("camflow:view:cam1", ttl=60)
    claims = auth.verify_viewer(token, "cam1")
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert claims.action is Action.VIEW and claims.expires == exp + 30  # exp and the leeway
    with pytest.raises(TokenScopeError, match="grants streams \\['cam1'\\], not 'cam2'"):
        auth.verify_viewer(token, "cam2")
    with pytest.raises(TokenScopeError, match="'view' only, not 'admin'"):
        auth.verify_operator(issuer.token("camflow:view:*"))
    with pytest.raises(TokenScopeError):
        auth.verify(token, "cam1", Action.PUBLISH)
    assert auth.verify_viewer(issuer.token("camflow:view:*"), "any-stream").stream == "any-stream"


async def test_a_remembered_jwt_is_refused_once_past_its_exp_and_the_leeway(issuer: Issuer) -> None:
    idp, _ = provider(issuer)
    await idp.refresh()
    auth = Authorizer(TokenSigner(SECRET), identity=idp)
    token = issuer.token(ttl=-28)  # past exp, still in the 30 s leeway for 1-2 s
    expires = auth.verify_viewer(token, "cam1").expires
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.05)
    with pytest.raises(TokenExpired):
        auth.verify_viewer(token, "cam1")


async def test_jwts_are_refused_without_an_identity_provider(issuer: Issuer) -> None:
    auth = Authorizer(TokenSigner(SECRET))
    with pytest.raises(TokenError, match="takes none"):
        auth.verify_viewer(issuer.token(), "cam1")


async def test_verify_viewer_learning_fetches_a_new_kid(issuer: Issuer) -> None:
    idp, calls = provider(issuer)
    await idp.refresh()
    auth = Authorizer(TokenSigner(SECRET), identity=idp)
    issuer.add("rsa3")
    assert (await auth.verify_viewer_learning(issuer.token(kid="rsa3"), "cam1")).stream == "cam1"
    assert calls[0] == 2
    epoch = auth.refresh()
    await idp.refresh()
    assert auth.refresh() == epoch  # the same JWKS fetched again: nothing forgotten
    issuer.published.discard("rsa3")
    await idp.refresh()
    assert auth.refresh() == epoch + 1  # a new JWKS: every remembered grant is forgotten
    with pytest.raises(UnknownJwtKey):
        auth.verify_viewer(issuer.token(kid="rsa3"), "cam1")


class Keys:
    def __init__(self, keys: KeySet) -> None:
        self.current = keys

    def keys(self) -> KeySet:
        return self.current


def test_the_memo_forgets_a_token_of_a_key_retired_since() -> None:
    source = Keys(KeySet.single(SECRET).added("k2", current=True))
    signer = TokenSigner(source)
    auth = Authorizer(signer)
    old = TokenSigner(SECRET).issue("cam1", Action.VIEW, 600)
    admin = TokenSigner(SECRET).issue(OPERATOR_SCOPE, Action.ADMIN, 600)
    assert auth.verify_viewer(old, "cam1").expires > 0
    assert auth.verify_viewer(admin, "cam9").action is Action.ADMIN
    epoch = auth.epoch
    source.current = source.current.without(LEGACY_KID)
    with pytest.raises(TokenKeyRetired, match="'legacy' was retired"):
        auth.verify_viewer(old, "cam1")
    with pytest.raises(TokenKeyRetired):
        auth.verify_operator(admin)
    assert auth.epoch == epoch + 1
    new = signer.issue("cam1", Action.VIEW, 600)
    assert auth.verify_viewer(new, "cam1").stream == "cam1"
    source.current = KeySet((SigningKey("k3", b"k3-secret-0123456789abcdef"),))  # k2 dropped outright
    with pytest.raises(TokenError, match="'k2' is not one of this deployment's signing keys"):
        auth.verify_viewer(new, "cam1")


async def test_requests_arriving_during_a_fetch_for_a_new_kid_wait_for_it(issuer: Issuer) -> None:
    calls = [0]

    async def slow_fetch(url: str) -> bytes:
        calls[0] += 1
        await asyncio.sleep(0.2)
        return json.dumps(issuer.jwks()).encode()

    idp = IdentityProvider(JwtSettings.parse(URL, ISSUER, AUDIENCE, 300.0), fetch=slow_fetch)
    await idp.refresh()
    issuer.add("rsa4")
    first = asyncio.create_task(idp.learn("rsa4"))
    await asyncio.sleep(0.05)
    assert await asyncio.gather(first, idp.learn("rsa4"), idp.learn("rsa4")) == [True, True, True]
    assert calls[0] == 2


async def test_a_failed_fetch_keeps_the_keys(issuer: Issuer) -> None:
    answers = [json.dumps(issuer.jwks()).encode(), b"<html>oops", b'{"keys": []}']

    async def fetch(url: str) -> bytes:
        return answers.pop(0)

    idp = IdentityProvider(JwtSettings.parse(URL, ISSUER, AUDIENCE, 300.0), fetch=fetch)
    assert await idp.refresh()
    kept = idp.keys
    assert not await idp.refresh() and idp.keys is kept
    assert await idp.refresh() and idp.keys == {}  # an answer with no usable key is an answer
