"""camflow.bus.security: the Kafka clients' TLS / SASL settings from the environment, their checks,
and the explanation of a broker's refusal. The real broker is in test_backends_tls_functional.py."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, SaslAuthenticationFailedError
from kafka.protocol.sasl import (
    SaslAuthenticateRequest,
    SaslAuthenticateResponse,
    SaslHandshakeRequest,
    SaslHandshakeResponse,
)

from camflow.bus.kafka import KafkaBus
from camflow.bus.security import KafkaSecurity, connecting, explain, refused_login
from camflow.errors import ConfigError
from tests.tls_backends import make_certificates

SECRET = "pa55-w0rd-never-shown"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certificates(tmp_path_factory.mktemp("kafka-certs"), "client", "other")


def sasl_env(tmp: Path, **extra: str) -> dict[str, str]:
    secret = tmp / "password"
    secret.write_text(SECRET + "\n")
    return {
        "CAMFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CAMFLOW_KAFKA_USERNAME": "camflow",
        "CAMFLOW_KAFKA_PASSWORD_FILE": str(secret),
        **extra,
    }


def refused(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        KafkaSecurity.from_env(env)
    message = str(caught.value)
    assert SECRET not in message
    return message


def test_plaintext_is_the_default_and_adds_nothing_else() -> None:
    security = KafkaSecurity.from_env({})
    assert security.client_config() == {"security_protocol": "PLAINTEXT"}
    assert security.describe() == {"protocol": "PLAINTEXT"}


def test_sasl_ssl_with_a_password_file(tmp_path: Path, certs: Path) -> None:
    env = sasl_env(tmp_path, CAMFLOW_KAFKA_CA_FILE=str(certs / "ca.crt"))
    security = KafkaSecurity.from_env(env)
    config = security.client_config()
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"  # the default mechanism
    assert config["sasl_plain_username"] == "camflow"
    assert config["sasl_plain_password"] == SECRET  # the file's trailing newline dropped
    ctx = config["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "camflow test test CA"),),)]
    # The password is in no repr, str or log description.
    for shown in (repr(security), str(security), repr(security.describe())):
        assert SECRET not in shown
    assert security.describe()["username"] == "camflow"


def test_password_from_the_environment_and_scram_sha_256(tmp_path: Path) -> None:
    env = {
        "CAMFLOW_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        "CAMFLOW_KAFKA_SASL_MECHANISM": "scram-sha-256",
        "CAMFLOW_KAFKA_USERNAME": "svc",
        "CAMFLOW_KAFKA_PASSWORD": SECRET,
    }
    security = KafkaSecurity.from_env(env)
    assert "unencrypted" in security.warnings()[0]
    config = security.client_config()
    assert config == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "svc",
        "sasl_plain_password": SECRET,
    }


def test_mutual_tls_loads_the_client_certificate(certs: Path) -> None:
    env = {
        "CAMFLOW_KAFKA_SECURITY_PROTOCOL": "SSL",
        "CAMFLOW_KAFKA_CA_FILE": str(certs / "ca.crt"),
        "CAMFLOW_KAFKA_CERT_FILE": str(certs / "client.crt"),
        "CAMFLOW_KAFKA_KEY_FILE": str(certs / "client.key"),
        "CAMFLOW_KAFKA_CHECK_HOSTNAME": "false",
    }
    security = KafkaSecurity.from_env(env)
    assert security.client_config()["ssl_context"].check_hostname is False
    assert security.describe()["mutual_tls"] is True
    assert security.warnings() == [
        "CAMFLOW_KAFKA_CHECK_HOSTNAME=false: any certificate the CA signed is taken, whatever host it names"
    ]
    assert "sasl_plain_password" not in security.client_config()


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"CAMFLOW_KAFKA_SECURITY_PROTOCOL": "TLS"}, ["CAMFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"]),
        ({"CAMFLOW_KAFKA_USERNAME": ""}, ["CAMFLOW_KAFKA_USERNAME"]),
        ({"CAMFLOW_KAFKA_PASSWORD_FILE": ""}, ["CAMFLOW_KAFKA_PASSWORD_FILE", "'camflow'"]),
        ({"CAMFLOW_KAFKA_PASSWORD": "x"}, ["CAMFLOW_KAFKA_PASSWORD and CAMFLOW_KAFKA_PASSWORD_FILE"]),
        ({"CAMFLOW_KAFKA_PASSWORD_FILE": "/nonexistent/pw"}, ["CAMFLOW_KAFKA_PASSWORD_FILE=/nonexistent/pw"]),
        ({"CAMFLOW_KAFKA_SASL_MECHANISM": "GSSAPI"}, ["CAMFLOW_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"]),
        ({"CAMFLOW_KAFKA_CA_FILE": "/nonexistent/ca.pem"}, ["CAMFLOW_KAFKA_CA_FILE=/nonexistent/ca.pem"]),
        ({"CAMFLOW_KAFKA_CHECK_HOSTNAME": "maybe"}, ["CAMFLOW_KAFKA_CHECK_HOSTNAME", "true or false"]),
        (
            {"CAMFLOW_KAFKA_SECURITY_PROTOCOL": "SSL"},
            ["CAMFLOW_KAFKA_USERNAME", "SASL_SSL or SASL_PLAINTEXT"],
        ),
    ],
)
def test_mistakes_are_config_errors_naming_the_variable(
    tmp_path: Path, change: dict[str, str], names: list[str]
) -> None:
    message = refused({**sasl_env(tmp_path), **change})
    for name in names:
        assert name in message


def test_tls_files_on_a_plaintext_protocol_are_refused(certs: Path) -> None:
    message = refused({"CAMFLOW_KAFKA_CA_FILE": str(certs / "ca.crt")})
    assert "CAMFLOW_KAFKA_CA_FILE" in message and "SSL or SASL_SSL" in message


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert "is empty" in refused({**sasl_env(tmp_path), "CAMFLOW_KAFKA_PASSWORD_FILE": str(empty)})


def test_bad_certificates_and_keys_are_refused_at_start(tmp_path: Path, certs: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    base = {"CAMFLOW_KAFKA_SECURITY_PROTOCOL": "SSL"}
    assert "not a readable PEM CA bundle" in refused({**base, "CAMFLOW_KAFKA_CA_FILE": str(not_pem)})
    only_cert = {**base, "CAMFLOW_KAFKA_CERT_FILE": str(certs / "client.crt")}
    assert "both CAMFLOW_KAFKA_CERT_FILE and CAMFLOW_KAFKA_KEY_FILE" in refused(only_cert)
    mismatch = {**only_cert, "CAMFLOW_KAFKA_KEY_FILE": str(certs / "other.key")}
    assert "matching key" in refused(mismatch)


def test_kafka_bus_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in sasl_env(tmp_path, CAMFLOW_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT").items():
        monkeypatch.setenv(name, value)
    bus = KafkaBus("127.0.0.1:9")
    assert bus.security.protocol == "SASL_PLAINTEXT" and bus.security.password == SECRET
    monkeypatch.setenv("CAMFLOW_KAFKA_USERNAME", "")
    with pytest.raises(ConfigError, match="CAMFLOW_KAFKA_USERNAME"):
        KafkaBus("127.0.0.1:9")


def test_explain_names_what_was_refused(tmp_path: Path, certs: Path) -> None:
    security = KafkaSecurity.from_env(sasl_env(tmp_path, CAMFLOW_KAFKA_CA_FILE=str(certs / "ca.crt")))
    login = explain(security, "b:9093", "SaslAuthenticationFailedError: invalid credentials")
    assert login and "refused the SCRAM-SHA-512 login of user 'camflow'" in login
    trust = explain(
        security, "b:9093", "KafkaConnectionError: [SSL: CERTIFICATE_VERIFY_FAILED] verify failed"
    )
    assert trust and f"not trusted by CAMFLOW_KAFKA_CA_FILE={certs / 'ca.crt'}" in trust
    client = explain(
        security, "b:9093", "KafkaConnectionError: [SSL: SSLV3_ALERT_BAD_CERTIFICATE] bad certificate"
    )
    assert client and "refused this client's certificate" in client
    other = explain(security, "b:9093", "InvalidReceiveError: Invalid frame length: 352518912")
    assert other and "does not speak TLS" in other
    plain = explain(KafkaSecurity(), "b:9092", "InvalidReceiveError: Invalid frame length: 352518912")
    assert plain and "expected CAMFLOW_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL" in plain
    assert explain(security, "b:9093", "KafkaConnectionError: connection refused") is None


def test_connecting_turns_a_logged_refusal_into_a_config_error(tmp_path: Path) -> None:
    security = KafkaSecurity.from_env(sasl_env(tmp_path))
    kafka_log = logging.getLogger("kafka.net.connection")
    refusal = pytest.raises(ConfigError, match="refused the SCRAM-SHA-512 login")
    with refusal as caught, connecting(security, "b:9093"):
        kafka_log.error("%s: Connection lost: %s", "conn", SaslAuthenticationFailedError("bad login"))
        kafka_log.error("Bootstrap failed: %s", KafkaTimeoutError("Unable to bootstrap"))
        raise KafkaTimeoutError("Unable to bootstrap from b:9093")
    assert SECRET not in str(caught.value)
    # A bootstrap that timed out for another reason (no broker) stays what it was.
    with pytest.raises(KafkaTimeoutError), connecting(security, "b:9093"):
        raise KafkaTimeoutError("Unable to bootstrap from b:9093")


REFUSAL = "Authentication failed during authentication due to invalid credentials with SASL mechanism PLAIN"


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Iterator[str]:
    """A SASL_PLAINTEXT listener that answers one login the way Kafka does: the SaslHandshake, then a
    SaslAuthenticate refused (error 58) with the connection closed right after the answer (the shape
    kafka-python 3.0 loses), or taken when the test asks for it (indirect parameter ``"takes"``)."""
    takes = getattr(request, "param", "refuses") == "takes"
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        with listener, listener.accept()[0] as conn:
            conn.settimeout(10)
            for _ in range(2):  # bounded: the handshake and one SaslAuthenticate
                size = int.from_bytes(conn.recv(4, socket.MSG_WAITALL), "big")
                frame = conn.recv(size, socket.MSG_WAITALL)
                answer: Any
                if int.from_bytes(frame[:2], "big") == SaslHandshakeRequest.API_KEY:
                    asked = SaslHandshakeRequest.decode(frame, version=1, header=True)
                    answer = SaslHandshakeResponse(error_code=0, mechanisms=["PLAIN"])
                else:
                    asked = SaslAuthenticateRequest.decode(frame, version=1, header=True)
                    answer = SaslAuthenticateResponse(
                        error_code=0 if takes else 58,
                        error_message=None if takes else REFUSAL,
                        auth_bytes=b"",
                        session_lifetime_ms=0,
                    )
                answer.API_VERSION = 1
                answer.with_header(correlation_id=asked.header.correlation_id)
                conn.sendall(answer.encode(header=True, framed=True))
        # leaving the with blocks closes the connection right after the refusal

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    thread.join(15)


def plain_login(tmp_path: Path) -> KafkaSecurity:
    return KafkaSecurity.from_env(
        sasl_env(
            tmp_path, CAMFLOW_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", CAMFLOW_KAFKA_SASL_MECHANISM="PLAIN"
        )
    )


def test_a_refusal_kafka_python_lost_is_asked_for_again(tmp_path: Path, broker: str) -> None:
    """The bootstrap logged only bare disconnects (the records kafka-python 3.0 writes when it drops the
    refusal read together with the close): the login of ``refused_login`` gets the broker's answer."""
    security = plain_login(tmp_path)
    transport, connection = (
        logging.getLogger("kafka.net.transport"),
        logging.getLogger("kafka.net.connection"),
    )
    manager = logging.getLogger("kafka.net.manager")
    refusal = pytest.raises(ConfigError, match="refused the PLAIN login of user 'camflow'")
    with refusal as caught, connecting(security, broker):
        lost = KafkaConnectionError("socket disconnected")
        transport.error("%s: socket disconnected", "<KafkaTCPTransport>")
        transport.error("%s: Abort (%s)", "<KafkaTCPTransport>", lost)
        connection.error("%s: Connection lost: %s", "<KafkaConnection>", lost)
        manager.warning(
            "Bootstrap connection to %s failed: %s (backoff %.2f secs)", "bootstrap-0", lost, 0.05
        )
        manager.error("Bootstrap failed: %s", KafkaTimeoutError(f"Unable to bootstrap from {broker}"))
        raise KafkaTimeoutError(f"Unable to bootstrap from {broker}")
    assert f"(broker said: {REFUSAL})" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("broker", ["takes"], indirect=True)
def test_a_login_the_broker_takes_is_no_refusal(tmp_path: Path, broker: str) -> None:
    assert refused_login(plain_login(tmp_path), broker) is None


def test_no_broker_is_no_refusal(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    assert refused_login(plain_login(tmp_path), f"127.0.0.1:{port}", timeout=1.0) is None


def test_a_refusal_kafka_python_raises_is_a_config_error(tmp_path: Path) -> None:
    security = KafkaSecurity.from_env(sasl_env(tmp_path))
    raised = SaslAuthenticationFailedError("SaslAuthenticationFailedError: Authentication failed (invalid)")
    said = r"refused the SCRAM-SHA-512 login .*said: Authentication failed \("
    with pytest.raises(ConfigError, match=said), connecting(security, "b:9093"):
        raise raised
