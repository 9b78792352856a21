"""Kafka client security: TLS, mutual TLS and SASL for every Kafka client camflow makes.

Configured from the environment (never from flags: a secret on a command line is readable by
every user of the machine), read once per ``KafkaBus``:

- ``CAMFLOW_KAFKA_SECURITY_PROTOCOL``: ``PLAINTEXT`` (default), ``SSL``, ``SASL_SSL``, ``SASL_PLAINTEXT``.
- ``CAMFLOW_KAFKA_CA_FILE``: PEM bundle of the CAs that sign the brokers' certificates (default: the
  system's trust store). ``CAMFLOW_KAFKA_CERT_FILE`` + ``CAMFLOW_KAFKA_KEY_FILE``: a client
  certificate and its key, for mutual TLS (``CAMFLOW_KAFKA_KEY_PASSWORD_FILE`` when the key is
  encrypted). ``CAMFLOW_KAFKA_CHECK_HOSTNAME=false`` turns the check that a broker's certificate
  names the host it was reached at off (it is on by default; off, any certificate the CA signed
  is taken).
- ``CAMFLOW_KAFKA_SASL_MECHANISM``: ``SCRAM-SHA-512`` (default), ``SCRAM-SHA-256`` or ``PLAIN``;
  ``CAMFLOW_KAFKA_USERNAME``; ``CAMFLOW_KAFKA_PASSWORD`` or, better, ``CAMFLOW_KAFKA_PASSWORD_FILE``
  (a mounted Secret; its trailing newline is dropped).

Every mistake is a ``ConfigError`` naming the variable. The password is never in a repr, a log
line or an error message. A broker that refuses the login or a certificate, which kafka-python
only logs while it retries until its bootstrap times out, is reported as a ``ConfigError`` saying
which (``connecting``); when the log does not say (kafka-python 3.0 drops a broker's answer that
arrives together with the connection's close, which is how a broker refuses a login), a login of
our own asks the broker (``refused_login``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError, SaslAuthenticationFailedError

from camflow.errors import ConfigError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")

PROTOCOL = "CAMFLOW_KAFKA_SECURITY_PROTOCOL"
CA_FILE = "CAMFLOW_KAFKA_CA_FILE"
CERT_FILE = "CAMFLOW_KAFKA_CERT_FILE"
KEY_FILE = "CAMFLOW_KAFKA_KEY_FILE"
KEY_PASSWORD_FILE = "CAMFLOW_KAFKA_KEY_PASSWORD_FILE"
CHECK_HOSTNAME = "CAMFLOW_KAFKA_CHECK_HOSTNAME"
MECHANISM = "CAMFLOW_KAFKA_SASL_MECHANISM"
USERNAME = "CAMFLOW_KAFKA_USERNAME"
PASSWORD = "CAMFLOW_KAFKA_PASSWORD"
PASSWORD_FILE = "CAMFLOW_KAFKA_PASSWORD_FILE"
_TLS_VARS = (CA_FILE, CERT_FILE, KEY_FILE, KEY_PASSWORD_FILE, CHECK_HOSTNAME)
_SASL_VARS = (MECHANISM, USERNAME, PASSWORD, PASSWORD_FILE)
PROBE_SECONDS = 3.0  # each wait of the probes that explain a failed bootstrap (TLS, SASL login)
_KAFKA_PREFIXES = re.compile(r"^(\[Error \d+\] |\w+Error: )+")
_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


@dataclass(frozen=True)
class KafkaSecurity:
    """How camflow's Kafka clients reach the brokers. ``password``/``key_password`` never show in a repr."""

    protocol: str = "PLAINTEXT"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    key_password: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSecurity:
        """The settings of the ``CAMFLOW_KAFKA_*`` variables in ``environ`` (default: this process's),
        checked: files readable, certificates and keys loadable, nothing set that the protocol ignores."""
        env = {k: v.strip() for k, v in (os.environ if environ is None else environ).items()}
        protocol = (env.get(PROTOCOL) or "PLAINTEXT").upper()
        if protocol not in PROTOCOLS:
            raise ConfigError(f"{PROTOCOL}={env.get(PROTOCOL)!r}: expected one of {', '.join(PROTOCOLS)}")
        tls, sasl = protocol in ("SSL", "SASL_SSL"), protocol.startswith("SASL_")
        stray = [
            name for name in (*(() if tls else _TLS_VARS), *(() if sasl else _SASL_VARS)) if env.get(name)
        ]
        if stray:
            wanted = (
                "SSL or SASL_SSL"
                if any(name in _TLS_VARS for name in stray)
                else "SASL_SSL or SASL_PLAINTEXT"
            )
            raise ConfigError(
                f"{', '.join(stray)} set, but {PROTOCOL} is {protocol}, which does not use it: "
                f"expected {PROTOCOL}={wanted} (or unset {', '.join(stray)})"
            )
        check = env.get(CHECK_HOSTNAME) or "true"
        if check.lower() not in _BOOLEANS:
            raise ConfigError(f"{CHECK_HOSTNAME}={check!r}: expected true or false")
        cert, key = _path(env, CERT_FILE), _path(env, KEY_FILE)
        if (cert is None) != (key is None):
            raise ConfigError(f"mutual TLS needs both {CERT_FILE} and {KEY_FILE}: only one of them is set")
        security = cls(
            protocol=protocol,
            ca_file=_path(env, CA_FILE),
            cert_file=cert,
            key_file=key,
            check_hostname=_BOOLEANS[check.lower()],
            key_password=_read_secret(env, KEY_PASSWORD_FILE) if env.get(KEY_PASSWORD_FILE) else None,
            **(_sasl_settings(env) if sasl else {}),
        )
        if tls:
            security.ssl_context  # noqa: B018 -- loads the files now: a bad one is a ConfigError at start
        return security

    @functools.cached_property
    def ssl_context(self) -> ssl.SSLContext:
        """The client TLS context (TLS 1.2 or later, the broker's certificate and name checked)."""
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{CA_FILE}={self.ca_file}: not a readable PEM CA bundle ({exc})") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = self.check_hostname
        if self.cert_file is not None:
            try:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file), password=self.key_password)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"{CERT_FILE}={self.cert_file} / {KEY_FILE}={self.key_file}: not a readable PEM "
                    f"certificate and its matching key ({type(exc).__name__}: {exc.strerror or exc})"
                ) from None
        return ctx

    def client_config(self) -> dict[str, Any]:
        """The keyword arguments of kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient."""
        config: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            config["ssl_context"] = self.ssl_context
            config["ssl_check_hostname"] = self.check_hostname
        if self.sasl:
            config["sasl_mechanism"] = self.mechanism
            config["sasl_plain_username"] = self.username
            config["sasl_plain_password"] = self.password
        return config

    def describe(self) -> dict[str, Any]:
        """What a log line may say about these settings (no secret)."""
        out: dict[str, Any] = {"protocol": self.protocol}
        if self.tls:
            out.update(ca_file=str(self.ca_file or "system"), mutual_tls=self.cert_file is not None)
            out["check_hostname"] = self.check_hostname
        if self.sasl:
            out.update(mechanism=self.mechanism, username=self.username)
        return out

    def warnings(self) -> list[str]:
        """What these settings leave open that an operator should know (logged at start)."""
        out = []
        if self.protocol == "SASL_PLAINTEXT":
            out.append(
                f"{PROTOCOL}=SASL_PLAINTEXT: the login and every message cross the network unencrypted"
            )
        if self.tls and not self.check_hostname:
            out.append(
                f"{CHECK_HOSTNAME}=false: any certificate the CA signed is taken, whatever host it names"
            )
        return out


def _path(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name)
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"{name}={value}: no such file (expected the path of a PEM file)")
    return path


def _read_secret(env: Mapping[str, str], name: str) -> str:
    path = env.get(name, "")
    try:
        value = Path(path).read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}={path}: cannot be read ({type(exc).__name__})") from None
    if not value:
        raise ConfigError(f"{name}={path}: the file is empty")
    return value


def _sasl_settings(env: Mapping[str, str]) -> dict[str, Any]:
    mechanism = (env.get(MECHANISM) or "SCRAM-SHA-512").upper()
    if mechanism not in MECHANISMS:
        raise ConfigError(f"{MECHANISM}={env.get(MECHANISM)!r}: expected one of {', '.join(MECHANISMS)}")
    protocol = env.get(PROTOCOL, "").upper()
    username = env.get(USERNAME)
    if not username:
        raise ConfigError(f"{PROTOCOL}={protocol} needs {USERNAME} (and {PASSWORD_FILE} or {PASSWORD})")
    if env.get(PASSWORD) and env.get(PASSWORD_FILE):
        raise ConfigError(f"{PASSWORD} and {PASSWORD_FILE} are both set: give one of them")
    if env.get(PASSWORD_FILE):
        password = _read_secret(env, PASSWORD_FILE)
    elif env.get(PASSWORD):
        password = env[PASSWORD]
    else:
        raise ConfigError(
            f"{PROTOCOL}={protocol} needs {PASSWORD_FILE} (or {PASSWORD}) for user {username!r}"
        )
    return {"mechanism": mechanism, "username": username, "password": password}


class _Witness(logging.Handler):
    """Keeps the last connection failures kafka-python logged (it logs them, then retries)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.failures: deque[str] = deque(maxlen=16)

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        found = [
            a
            for a in (*args, record.exc_info[1] if record.exc_info else None)
            if isinstance(a, BaseException)
        ]
        for exc in found:
            if not isinstance(exc, KafkaTimeoutError):  # the bootstrap's own verdict says no more
                self.failures.append(_failure(exc))


def _failure(exc: BaseException) -> str:
    """``Name: text`` of an exception, as ``explain`` reads it."""
    text, name = str(exc), type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def explain(security: KafkaSecurity, bootstrap: str, failure: str) -> str | None:
    """Why a bootstrap that ended in ``failure`` (the last connection error) failed, when it is a
    matter of these settings (a refused login or certificate, a protocol mismatch); None otherwise."""
    where = f"Kafka at {bootstrap} ({PROTOCOL}={security.protocol})"
    if SaslAuthenticationFailedError.__name__ in failure:
        said = _KAFKA_PREFIXES.sub("", failure)  # kafka-python repeats "[Error 58] SaslAuth...Error: "
        return (
            f"{where} refused the {security.mechanism} login of user {security.username!r}: check "
            f"{USERNAME} and {PASSWORD_FILE} / {PASSWORD} (broker said: {said})"
        )
    if "CERTIFICATE_VERIFY_FAILED" in failure:
        trusted = (
            f"{CA_FILE}={security.ca_file}"
            if security.ca_file
            else f"the system trust store ({CA_FILE} unset)"
        )
        return f"{where}: the broker's certificate is not trusted by {trusted}: {failure}"
    if "BAD_CERTIFICATE" in failure or "CERTIFICATE_REQUIRED" in failure or "UNKNOWN_CA" in failure:
        mine = f"{CERT_FILE}={security.cert_file}" if security.cert_file else f"none ({CERT_FILE} unset)"
        return f"{where}: the broker refused this client's certificate, {mine}: {failure}"
    if "WRONG_VERSION_NUMBER" in failure or "Invalid frame length" in failure or "PACKET_LENGTH" in failure:
        if security.tls:
            return f"{where}: the listener does not speak TLS: expected an SSL / SASL_SSL port ({failure})"
        return (
            f"{where}: the listener speaks another protocol (TLS?): expected {PROTOCOL}=SSL or SASL_SSL, "
            f"or the port of a {security.protocol} listener ({failure})"
        )
    return None


def speaks_tls(bootstrap: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether the first of the ``bootstrap`` servers completes a TLS handshake (certificate not checked:
    this only tells a TLS listener from a plaintext one, to explain a failure)."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        raw = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        with raw, context.wrap_socket(raw) as tls:
            return tls.version() is not None
    except (OSError, ValueError):
        return False


def refused_login(security: KafkaSecurity, bootstrap: str, timeout: float = PROBE_SECONDS) -> str | None:
    """``SaslAuthenticationFailedError: <what the broker said>`` when the first of the ``bootstrap`` servers
    refuses these settings' SASL login; None when it takes it or this cannot tell (no answer, TLS failed).

    One login the way kafka-python makes it (SaslHandshake v1, then SaslAuthenticate v1 frames), read
    with blocking calls: a broker sends the refusal and closes the connection at once, and kafka-python
    3.0's transport drops data read together with the close, so its own attempts may all end in a bare
    ``socket disconnected`` (on a loaded machine, every time)."""
    try:  # kafka-python 3.0's protocol classes (2.x has none of these: nothing to tell then)
        from kafka.net.sasl import get_sasl_mechanism
        from kafka.protocol.parser import KafkaProtocol
        from kafka.protocol.sasl import SaslAuthenticateRequest, SaslHandshakeRequest
    except ImportError:
        return None
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    host = host.strip("[]")
    parser = KafkaProtocol(client_id="camflow-login-check")
    deadline = time.monotonic() + 3 * timeout
    try:
        mechanism = get_sasl_mechanism(security.mechanism)(host=host, **security.client_config())
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            sock = security.ssl_context.wrap_socket(raw, server_hostname=host) if security.tls else raw
            with sock:

                def call(request: Any) -> Any:
                    request.API_VERSION = 1
                    parser.send_request(request)
                    sock.sendall(parser.send_bytes())
                    while time.monotonic() < deadline:
                        data = sock.recv(65536)
                        if not data:
                            raise ConnectionError("closed by the broker")
                        if responses := parser.receive_bytes(data):
                            return responses[0][1]
                    raise TimeoutError

                handshake = call(SaslHandshakeRequest(mechanism=security.mechanism))
                if handshake.error_code != 0:
                    return None
                while not mechanism.is_done():
                    response = call(SaslAuthenticateRequest(auth_bytes=mechanism.auth_bytes()))
                    if response.error_code != 0:
                        return f"{SaslAuthenticationFailedError.__name__}: {response.error_message}"
                    mechanism.receive(response.auth_bytes)
    except (OSError, ValueError, KafkaError):
        return None
    return None


@contextlib.contextmanager
def connecting(security: KafkaSecurity, bootstrap: str) -> Iterator[None]:
    """Around a kafka-python client's first contact: a bootstrap that times out because the broker
    refused these settings is raised as a ``ConfigError`` saying so (a retry would not help)."""
    witness = _Witness()
    logger = logging.getLogger("kafka")
    logger.addHandler(witness)
    try:
        yield
    except SaslAuthenticationFailedError as exc:  # kafka-python kept the refusal and raised it
        raise ConfigError(explain(security, bootstrap, _failure(exc)) or str(exc)) from exc
    except KafkaTimeoutError as exc:
        reasons = (explain(security, bootstrap, failure) for failure in reversed(witness.failures))
        reason = next((r for r in reasons if r is not None), None)
        if reason is None and security.sasl and (refusal := refused_login(security, bootstrap)):
            reason = explain(security, bootstrap, refusal)
        if reason is None and not security.tls and speaks_tls(bootstrap):
            # A TLS listener mostly just closes a plaintext connection: nothing in the log says why.
            reason = (
                f"Kafka at {bootstrap} answers with TLS, but {PROTOCOL} is {security.protocol}: "
                f"expected {PROTOCOL}=SSL or SASL_SSL, or the port of a {security.protocol} listener"
            )
        if reason is None:
            raise
        raise ConfigError(reason) from exc
    finally:
        logger.removeHandler(witness)
