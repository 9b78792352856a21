"""Where the test Kafka and S3 (MinIO) are, and whether a test may use them.

`make test` (scripts/test.sh) starts both and exports:

    CAMFLOW_TEST_KAFKA=127.0.0.1:19092
    CAMFLOW_TEST_S3=http://127.0.0.1:19000/camflow-test      (endpoint + bucket)
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY                (MinIO root credentials)
    CAMFLOW_REQUIRE_SERVICES=1

A test that needs a backend calls ``require("kafka")`` or ``require("s3")`` first. When services are
required (CAMFLOW_REQUIRE_SERVICES=1 or CI=true) a missing variable or a service that does not accept
a TCP connection is a test failure; otherwise (a developer machine without services) the test is
skipped with instructions. This module holds no tests.
"""

from __future__ import annotations

import os
import socket
from typing import Literal, NoReturn
from urllib.parse import urlsplit

import pytest

ServiceName = Literal["kafka", "s3"]

KAFKA_ENV = "CAMFLOW_TEST_KAFKA"
S3_ENV = "CAMFLOW_TEST_S3"
REQUIRE_ENV = "CAMFLOW_REQUIRE_SERVICES"
CONNECT_TIMEOUT_S = 3.0

_ENV: dict[ServiceName, str] = {"kafka": KAFKA_ENV, "s3": S3_ENV}
_HOW_TO_START = (
    "start them with `make services-up` and export "
    "CAMFLOW_TEST_KAFKA=127.0.0.1:19092 "
    "CAMFLOW_TEST_S3=http://127.0.0.1:19000/camflow-test "
    "AWS_ACCESS_KEY_ID=camflow AWS_SECRET_ACCESS_KEY=camflow-secret "
    "(or just run `make test`, which does all of this)"
)


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def kafka_bootstrap() -> str | None:
    """Kafka bootstrap servers ("host:port[,host:port...]") from CAMFLOW_TEST_KAFKA, or None."""
    return _env(KAFKA_ENV)


def s3_url() -> str | None:
    """S3 endpoint plus bucket ("http://host:port/bucket") from CAMFLOW_TEST_S3, or None."""
    return _env(S3_ENV)


def services_required() -> bool:
    """True in `make test` / CI, where a missing backend must fail rather than skip."""
    return _env(REQUIRE_ENV) == "1" or (_env("CI") or "").lower() == "true"


def _address(name: ServiceName, value: str) -> tuple[str, int]:
    """The first host:port to probe for a service's env value; ValueError when malformed."""
    if name == "kafka":
        first = value.split(",")[0].strip()
        parsed = urlsplit("//" + first)
        default_port = 9092
    else:
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https"):
            raise ValueError(f"expected an http(s):// URL, got {value!r}")
        default_port = 443 if parsed.scheme == "https" else 80
    host = parsed.hostname
    if not host:
        raise ValueError(f"no host in {value!r}")
    port = parsed.port  # raises ValueError on a non-numeric or out-of-range port
    return host, port if port is not None else default_port


def _answers(host: str, port: int) -> str | None:
    """None when host:port accepts a TCP connection within CONNECT_TIMEOUT_S, else the reason."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def _unavailable(message: str) -> NoReturn:
    if services_required():
        pytest.fail(
            f"{message} (services are required here: {REQUIRE_ENV}=1 or CI=true; `make test` starts them)",
            pytrace=False,
        )
    pytest.skip(f"{message}; {_HOW_TO_START}")


def require(name: ServiceName) -> str:
    """Make sure the test backend `name` ("kafka" or "s3") is configured and listening.

    Returns the env value (Kafka bootstrap servers, or the S3 URL with its bucket). When the backend is
    not available: pytest.fail if services are required (CAMFLOW_REQUIRE_SERVICES=1 or CI=true),
    pytest.skip otherwise.
    """
    if name not in _ENV:
        raise ValueError(f"unknown service {name!r}; expected one of {sorted(_ENV)}")
    var = _ENV[name]
    value = kafka_bootstrap() if name == "kafka" else s3_url()
    if value is None:
        _unavailable(f"{name}: {var} is not set")
    try:
        host, port = _address(name, value)
    except ValueError as exc:
        _unavailable(f"{name}: {var}={value!r} is not a valid address: {exc}")
    reason = _answers(host, port)
    if reason is not None:
        _unavailable(
            f"{name}: nothing answers on {host}:{port} ({var}={value}) "
            f"within {CONNECT_TIMEOUT_S:g} s: {reason}"
        )
    return value
