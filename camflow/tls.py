"""Server-side TLS of every camflow listener (HTTPS edge and WHIP, RTSPS): one certificate and key
from files, reloaded without a restart.

``ServerTls`` loads ``--tls-cert`` (PEM, the leaf first, then its chain) and ``--tls-key`` (PEM) into
an ``ssl.SSLContext`` (server side, TLS 1.2 or newer, the standard library's default ciphers). Its
``context`` is what the listeners get. A new certificate is loaded into a *new* context, and the
listeners' context hands each new connection to the newest good one from its ClientHello callback
(``sni_callback``, called with or without SNI), so:

- a renewal is seen by every new connection, while open connections keep the certificate they
  started with;
- a reload that fails (a half-written file, a key that does not match the certificate, not PEM)
  changes nothing: the old certificate stays, ``tls_reload_failed`` is logged with the reason and
  ``camflow_tls_reloads_total{result="failed"}`` counted. A half-written pair is retried at the
  next change of either file, so a renewal tool writing the certificate, then the key, ends well.

Reloads happen when either file changes (size, mtime or inode, polled every ``POLL_SECONDS`` by a
task the service owns: ``start``/``stop``) and on SIGHUP. The served certificate's ``notAfter`` is
the gauge ``camflow_tls_certificate_expiry_timestamp_seconds``, for an expiry alert.

Every TLS listener closes a connection whose handshake is not done within its deadline
(``HANDSHAKE_TIMEOUT``, or RTSP's ``--rtsp-handshake-timeout``): a client that connects and says
nothing cannot hold a connection open. A handshake that fails (plain HTTP on the HTTPS port, no
common TLS version) is counted by OpenSSL's reason, ``camflow_tls_handshake_failures_total``, and
logged as ``tls_handshakes_failed`` at most once per ``FAILURE_LOG_SECONDS`` with the counts since
the last line (the listeners' context makes its connections' ``SSLObject`` a ``CountedSSLObject``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from camflow.errors import ConfigError
from camflow.filestamp import Stamp, file_stamp
from camflow.log import get_logger
from camflow.metrics import TLS_CERTIFICATE_EXPIRY, TLS_HANDSHAKE_FAILURES, TLS_RELOADS

POLL_SECONDS = 2.0
FAILURE_LOG_SECONDS = 10.0
HANDSHAKE_TIMEOUT = 10.0  # seconds a TLS client has to finish its handshake (HTTPS; RTSPS uses its own)
log = get_logger("tls")


@dataclass(frozen=True)
class TlsFiles:
    """A PEM certificate chain and its private key, as files."""

    cert: Path
    key: Path

    @classmethod
    def from_flags(cls, cert: str | None, key: str | None) -> TlsFiles | None:
        """``--tls-cert`` and ``--tls-key``: both (TLS on) or neither (plain); one alone is an error."""
        if not cert and not key:
            return None
        if not cert or not key:
            given, missing = ("--tls-cert", "--tls-key") if cert else ("--tls-key", "--tls-cert")
            raise ConfigError(
                f"{given} without {missing}: TLS needs both a certificate chain and its private key "
                "(PEM files; env CAMFLOW_TLS_CERT, CAMFLOW_TLS_KEY)"
            )
        return cls(Path(cert), Path(key))

    def stamp(self) -> tuple[Stamp, Stamp]:
        """What changes when either file is replaced or rewritten (``camflow.filestamp``)."""
        return (file_stamp(self.cert), file_stamp(self.key))


@dataclass(frozen=True)
class Certificate:
    """A loaded certificate: the context that serves it, and what logs and metrics say about it."""

    context: ssl.SSLContext
    serial: int
    sha256: str  # of the leaf certificate's DER, hex
    subject: str
    not_after: datetime


class _HandshakeFailures:
    """Failed handshakes: counted each, logged at most once per ``FAILURE_LOG_SECONDS``."""

    def __init__(self) -> None:
        self.pending: dict[str, int] = {}
        self.logged_at = float("-inf")

    def record(self, reason: str) -> None:
        TLS_HANDSHAKE_FAILURES.labels(reason=reason).inc()
        self.pending[reason] = self.pending.get(reason, 0) + 1
        now = time.monotonic()
        if now - self.logged_at >= FAILURE_LOG_SECONDS:
            log.warning("tls_handshakes_failed", failed=sum(self.pending.values()), reasons=self.pending)
            self.pending, self.logged_at = {}, now


HANDSHAKE_FAILURES = _HandshakeFailures()


class CountedSSLObject(ssl.SSLObject):
    """An ``SSLObject`` whose failed server handshakes are counted (``HANDSHAKE_FAILURES``)."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            HANDSHAKE_FAILURES.record(str(exc.reason or type(exc).__name__))
            raise


def server_context() -> ssl.SSLContext:
    """A server-side context: TLS 1.2 or newer, the standard library's default ciphers and options."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def load_certificate(files: TlsFiles) -> Certificate:
    """Load ``files`` into a new server context; a ConfigError says what is wrong with them."""
    from cryptography import x509  # here, not at import: ingest.sources.whip must import it first

    try:
        pem = files.cert.read_bytes()
        files.key.stat()
    except OSError as exc:
        raise ConfigError(f"TLS file {exc.filename}: {exc.strerror}; expected a readable PEM file") from None
    try:
        leaf = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise ConfigError(
            f"--tls-cert {files.cert}: no PEM certificate at its start; expected the server certificate "
            "(-----BEGIN CERTIFICATE-----), then its chain"
        ) from None
    context = server_context()
    try:
        context.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"--tls-cert {files.cert} / --tls-key {files.key}: {exc.reason or exc}; expected a PEM "
            "certificate chain and the unencrypted PEM private key of its first certificate"
        ) from None
    except OSError as exc:
        raise ConfigError(f"TLS file {exc.filename}: {exc.strerror}; expected a readable PEM file") from None
    from cryptography.hazmat.primitives.serialization import Encoding

    return Certificate(
        context=context,
        serial=leaf.serial_number,
        sha256=hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest(),
        subject=leaf.subject.rfc4514_string(),
        not_after=leaf.not_valid_after_utc,
    )


class ServerTls:
    """The certificate every TLS listener of this process serves, reloaded when its files change."""

    def __init__(self, files: TlsFiles, *, poll_interval: float = POLL_SECONDS) -> None:
        """Load the files now (a ConfigError when they are not a usable certificate and key)."""
        self.files = files
        self.poll_interval = poll_interval
        self._stamp = files.stamp()
        self.current = load_certificate(files)
        self.reloads = 0
        self.failures = 0
        # The listeners' context: it serves the first certificate (also to a TLS stack that never calls
        # the ClientHello callback) and switches each new connection to the newest good one.
        self.context = server_context()
        self.context.load_cert_chain(files.cert, files.key)
        self.context.sni_callback = self._select
        self.context.sslobject_class = CountedSSLObject
        self._poller: asyncio.Task[None] | None = None
        self._sighup = False
        self._loaded(self.current, "start")

    def _select(self, conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
        conn.context = self.current.context

    def _loaded(self, cert: Certificate, trigger: str) -> None:
        TLS_CERTIFICATE_EXPIRY.set(cert.not_after.timestamp())
        log.info(
            "tls_certificate_loaded",
            trigger=trigger,
            cert=str(self.files.cert),
            subject=cert.subject,
            serial=f"{cert.serial:x}",
            sha256=cert.sha256,
            not_after=cert.not_after.isoformat(),
        )
        if cert.not_after < datetime.now(UTC):
            log.warning(
                "tls_certificate_expired", cert=str(self.files.cert), not_after=cert.not_after.isoformat()
            )

    def reload(self, trigger: str = "manual") -> bool:
        """Load the files again; True when the new certificate now serves new connections."""
        self._stamp = self.files.stamp()  # taken first: a change during the load is seen by the next poll
        try:
            cert = load_certificate(self.files)
        except ConfigError as exc:
            self.failures += 1
            TLS_RELOADS.labels(result="failed").inc()
            log.warning(
                "tls_reload_failed",
                trigger=trigger,
                reason=str(exc),
                kept_serial=f"{self.current.serial:x}",
                kept_not_after=self.current.not_after.isoformat(),
            )
            return False
        self.current = cert
        self.reloads += 1
        TLS_RELOADS.labels(result="ok").inc()
        self._loaded(cert, trigger)
        return True

    def changed(self) -> bool:
        return self.files.stamp() != self._stamp

    async def start(self) -> None:
        """Poll the files (a task this object owns) and reload on SIGHUP, until ``stop``."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(signal.SIGHUP, self.reload, "sighup")
            self._sighup = True
        self._poller = asyncio.create_task(self._poll(), name="tls-reload-poll")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            if self.changed():
                self.reload("files changed")

    async def stop(self) -> None:
        if self._sighup:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup = False
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller


def client_context(ca_file: Path | None, *, insecure: bool) -> ssl.SSLContext:
    """A client context: the system CA store (plus ``ca_file``, a camera's own CA), host names checked;
    ``insecure`` checks nothing (self-signed cameras; the caller logs a warning)."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"CA file {ca_file}: {exc}; expected PEM CA certificates") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
