"""A test identity provider: RSA, EC and Ed25519 keys made at test time, their JWKS, JWTs signed with
them, and a small HTTP server for the JWKS (a thread of the test process). This module holds no tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://idp.example.test/"
AUDIENCE = "camflow-edge"


class Issuer:
    """Keys by kid: ``rsa1`` (RS256), ``ec1`` (ES256), ``ed1`` (EdDSA); ``published`` are in the JWKS."""

    def __init__(self) -> None:
        self.private: dict[str, tuple[str, Any]] = {
            "rsa1": ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "ec1": ("ES256", ec.generate_private_key(ec.SECP256R1())),
            "ed1": ("EdDSA", ed25519.Ed25519PrivateKey.generate()),
        }
        self.published = set(self.private)
        self.fetches = 0

    def add(self, kid: str) -> None:
        """A new RSA key, published."""
        self.private[kid] = ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))
        self.published.add(kid)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in sorted(self.published):
            alg, key = self.private[kid]
            tool = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[alg]
            entry = tool.to_jwk(key.public_key(), as_dict=True)
            keys.append({**entry, "kid": kid, "use": "sig", "alg": alg})
        return {"keys": keys}

    def token(
        self,
        scope: str = "camflow:view:cam1",
        *,
        kid: str = "rsa1",
        ttl: float = 300,
        claims: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
    ) -> str:
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "viewer-42",
            "iat": now,
            "exp": now + int(ttl),
            "scope": scope,
        }
        body.update(claims or {})
        for name in drop:
            body.pop(name, None)
        alg, key = self.private[kid]
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def unsigned(issuer: Issuer, scope: str = "camflow:view:cam1") -> str:
    """``alg: none``: a JWT with an empty signature."""
    good = issuer.token(scope)
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "kid": "rsa1", "typ": "JWT"}).encode())
    return f"{header.decode()}.{good.split('.')[1]}."


def hs256_with_public_key(issuer: Issuer) -> str:
    """The classic confusion: HS256 with the RSA public key (as its PEM) as the HMAC secret."""
    import base64
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    pem = (
        issuer.private["rsa1"][1]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    good = issuer.token()
    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "kid": "rsa1", "typ": "JWT"}).encode())
    signing_input = f"{header.decode()}.{good.split('.')[1]}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


@contextmanager
def jwks_server(issuer: Issuer) -> Iterator[str]:
    """Serve ``issuer.jwks()`` at http://127.0.0.1:PORT/jwks.json (counting fetches) until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/jwks.json":
                self.send_error(404)
                return
            issuer.fetches += 1
            body = json.dumps(issuer.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="jwks", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
