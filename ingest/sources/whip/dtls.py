"""DTLS interop for aiortc: accept publishers whose certificate is on P-224.

FFmpeg 8.1's WHIP muxer (GnuTLS) sends a self-signed ECDSA certificate on secp224r1 (P-224) and
offers ``a=setup:passive``, so aiortc is the DTLS client. In TLS 1.2 a client must have the server
certificate's curve in its own supported groups (RFC 8422 5.1), and OpenSSL's default list has no
P-224: it answers with a fatal ``illegal_parameter`` alert ("A TLS fatal alert has been received"
on FFmpeg's side). OpenSSL 4 (bundled by cryptography >= 47) dropped P-224 as a TLS group
altogether, hence the pin on cryptography 46 (OpenSSL 3.5) in pyproject.toml.

Neither pyOpenSSL nor cryptography's bindings expose ``SSL_CTX_set1_groups_list``, so the groups
come from an OpenSSL configuration file (``openssl-dtls.cnf``, ``Groups = ...,P-224``) that the
bundled OpenSSL reads once, when it initialises: ``prepare_openssl()`` points ``OPENSSL_CONF`` at
it, imports pyOpenSSL (which initialises the library) and puts ``OPENSSL_CONF`` back, so child
processes and Python's own ``ssl`` module are not affected. It must run before anything imports
``cryptography``; ``ingest.sources.whip`` calls it on import.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from camflow.log import get_logger

CONFIG = Path(__file__).with_name("openssl-dtls.cnf")
_RUST = "cryptography.hazmat.bindings._rust"
log = get_logger("ingest")


def prepare_openssl() -> bool:
    """Make aiortc's DTLS client offer P-224 too; False (and a warning) when it is too late or overridden."""
    if _RUST in sys.modules:
        log.warning(
            "whip_dtls_p224_unavailable",
            reason="cryptography was imported before ingest.sources.whip: publishers with P-224 certificates"
            " (FFmpeg 8.1's WHIP muxer) will fail the DTLS handshake",
        )
        return False
    if "OPENSSL_CONF" in os.environ:
        log.info("whip_dtls_openssl_conf_kept", path=os.environ["OPENSSL_CONF"])
        importlib.import_module("OpenSSL.SSL")
        return False
    os.environ["OPENSSL_CONF"] = str(CONFIG)
    try:
        importlib.import_module("OpenSSL.SSL")  # initialises cryptography's OpenSSL with CONFIG
    finally:
        del os.environ["OPENSSL_CONF"]
    return True
