"""The S3 store's TLS settings: which CA bundle an https location trusts (CAMFLOW_S3_CA_FILE, else
AWS_CA_BUNDLE, else the system's) and an untrusted certificate told apart from an outage. The real
MinIO over HTTPS is in test_backends_tls_functional.py."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import urllib3

from camflow.errors import ConfigError
from camflow.store.s3 import S3Location, S3Store, tls_context, untrusted_certificate
from tests.tls_backends import make_certificates

HTTPS = S3Location.parse("https://s3.example:9000/bucket")
HTTP = S3Location.parse("http://s3.example:9000/bucket")


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    one = make_certificates(tmp_path_factory.mktemp("ca-one")) / "ca.crt"
    two = make_certificates(tmp_path_factory.mktemp("ca-two")) / "ca.crt"
    return one, two


def subjects(ctx: ssl.SSLContext | None) -> int:
    assert ctx is not None
    return len(ctx.get_ca_certs())


def test_http_has_no_tls_and_ignores_aws_ca_bundle(cas: tuple[Path, Path]) -> None:
    assert tls_context(HTTP, {"AWS_CA_BUNDLE": str(cas[0])}) is None


def test_camflow_ca_file_on_http_is_refused(cas: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match=r"CAMFLOW_S3_CA_FILE=.* https://"):
        tls_context(HTTP, {"CAMFLOW_S3_CA_FILE": str(cas[0])})


def test_the_ca_bundle_comes_from_camflow_s3_ca_file_then_aws_ca_bundle(cas: tuple[Path, Path]) -> None:
    one, two = cas
    only_aws = tls_context(HTTPS, {"AWS_CA_BUNDLE": str(one)})
    assert subjects(only_aws) == 1 and only_aws is not None and only_aws.check_hostname
    both = tls_context(HTTPS, {"AWS_CA_BUNDLE": str(one), "CAMFLOW_S3_CA_FILE": str(two)})
    assert (
        both is not None
        and both.get_ca_certs() == tls_context(HTTPS, {"AWS_CA_BUNDLE": str(two)}).get_ca_certs()
    )  # type: ignore[union-attr]
    assert both.get_ca_certs() != only_aws.get_ca_certs()


def test_a_bad_ca_bundle_is_a_config_error_naming_the_variable(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("nothing\n")
    with pytest.raises(ConfigError, match=f"AWS_CA_BUNDLE={bad}: not a readable PEM CA bundle"):
        tls_context(HTTPS, {"AWS_CA_BUNDLE": str(bad)})
    with pytest.raises(ConfigError, match="CAMFLOW_S3_CA_FILE=/nonexistent"):
        tls_context(HTTPS, {"CAMFLOW_S3_CA_FILE": "/nonexistent"})


def test_s3_store_refuses_a_bad_ca_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    monkeypatch.setenv("CAMFLOW_S3_CA_FILE", "/nonexistent/ca.pem")
    with pytest.raises(ConfigError, match="CAMFLOW_S3_CA_FILE"):
        S3Store(HTTPS)


def test_untrusted_certificate_is_found_inside_urllib3s_wrapping() -> None:
    failed = ssl.SSLCertVerificationError(1, "certificate verify failed")
    wrapped = urllib3.exceptions.MaxRetryError(None, "/bucket", urllib3.exceptions.SSLError(failed))  # type: ignore[arg-type]
    assert untrusted_certificate(wrapped) is failed
    refused = urllib3.exceptions.MaxRetryError(None, "/bucket", ConnectionRefusedError(111, "refused"))  # type: ignore[arg-type]
    assert untrusted_certificate(refused) is None
