"""A tiny RTSP publisher for auth tests: one ANNOUNCE (with an H.264 SDP) over a raw socket, plain
or TLS, with no credentials, ``?token=``, Basic, or Digest (RFC 2617, MD5, computed with hashlib on
the nonce of the server's first 401). Fast enough for a matrix of refusals; ffmpeg and GStreamer
are the real clients elsewhere. This module holds no tests.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import ssl
from dataclasses import dataclass

SDP = (
    "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=announce\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n"
    "a=control:trackID=0\r\n"
)
MAX_HEAD = 65536


@dataclass
class RtspReply:
    status: int
    headers: list[tuple[str, str]]
    raw: str  # the whole reply, head and body

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def read_reply(sock: socket.socket) -> RtspReply:
    buf = b""
    while b"\r\n\r\n" not in buf and len(buf) < MAX_HEAD:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return RtspReply(int(lines[0].split()[1]), headers, (head + b"\r\n\r\n" + body).decode(errors="replace"))


def digest_authorization(user: str, password: str, challenge: str, method: str, uri: str) -> str:
    """The ``Authorization: Digest`` answering ``challenge`` (a ``WWW-Authenticate: Digest`` value)."""
    fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    ha1 = hashlib.md5(f"{user}:{fields['realm']}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1}:{fields['nonce']}:{ha2}".encode()).hexdigest()
    return (
        f'Digest username="{user}", realm="{fields["realm"]}", nonce="{fields["nonce"]}", '
        f'uri="{uri}", response="{response}", algorithm="MD5"'
    )


def announce(
    port: int,
    stream: str,
    scheme: str,
    user: str = "",
    password: str = "",
    *,
    tls: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
) -> RtspReply:
    """The server's answer to an ANNOUNCE of ``stream``; ``scheme``: ``none``, ``query``
    (``?token=PASSWORD``), ``basic`` or ``digest`` (a first ANNOUNCE without credentials, then its
    401's nonce answered on the same connection). ``tls``: speak RTSPS with this client context."""
    url = f"{'rtsps' if tls else 'rtsp'}://{host}:{port}/{stream}"
    if scheme == "query":
        url += f"?token={password}"
    with socket.create_connection((host, port), timeout=10) as raw:
        sock = tls.wrap_socket(raw, server_hostname=host) if tls else raw
        try:

            def send(cseq: int, auth: str | None) -> RtspReply:
                head = f"ANNOUNCE {url} RTSP/1.0\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\n"
                head += f"Content-Length: {len(SDP)}\r\n" + (f"Authorization: {auth}\r\n" if auth else "")
                sock.sendall((head + "\r\n" + SDP).encode())
                return read_reply(sock)

            if scheme == "basic":
                return send(1, "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
            first = send(1, None)
            if scheme != "digest" or first.status != 401:
                return first
            challenge = next(v for v in first.values("WWW-Authenticate") if v.startswith("Digest"))
            return send(2, digest_authorization(user, password, challenge, "ANNOUNCE", url))
        finally:
            sock.close()
