"""WHIP (RFC 9725) ingest: browsers, OBS and FFmpeg publish over WebRTC; aiortc terminates it.

Importing this package first prepares the OpenSSL that aiortc uses (``ingest.sources.whip.dtls``), so it
must be imported before anything imports ``cryptography`` or ``aiortc``.
"""

from ingest.sources.whip.dtls import prepare_openssl

prepare_openssl()
