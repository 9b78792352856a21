"""Token signing keys: key ids, the key set a deployment signs and verifies with, and where it lives.

A key set is an ordered list of keys, each ``(kid, secret)``: the first signs new tokens (the
*current* key), the others still verify tokens signed with them until they are *retired*. A retired
key keeps only its id (``KID retired``), so a token signed with it is refused naming why.

Forms (``camflow.tokens.load_keys`` picks one):

- ``CAMFLOW_SECRET``: one plain secret (the form of every release before key ids), or
  ``KID:SECRET,KID:SECRET,...`` (first = current; ``KID:retired`` for a retired key);
- a keys file (``CAMFLOW_SECRET_FILE``, else ``<data-dir>/secret``): one plain secret alone, or one
  ``KID SECRET`` (or ``KID retired``) per line, first = current; ``#`` comments and blank lines
  are skipped. ``KeysFile`` re-reads it when it changes (a ``stat`` at most every 2 s), so keys are
  added, promoted and retired without a restart.

A plain secret is the key ``legacy``: the key of ``v1`` tokens (which carry no key id). While it
is current, tokens are issued as ``v1``, byte for byte as before key ids; after a rotation it keeps
verifying them until ``camflow keys retire legacy``.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from camflow.errors import ConfigError
from camflow.filestamp import file_stamp
from camflow.log import get_logger

LEGACY_KID = "legacy"  # the key of a plain secret, and of v1 tokens
RETIRED = "retired"  # a key's secret field once retired
KID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MIN_SECRET_BYTES = 16
MAX_KEYS = 8  # keys that verify (current included): RTSP Digest tries each one
RELOAD_INTERVAL = 2.0  # seconds between two stat() of a keys file
HEADER = "# camflow token signing keys: KID SECRET per line, the first signs; `camflow keys --help`\n"

log = get_logger("keys")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: bytes = b""  # b"" once retired

    @property
    def legacy(self) -> bool:
        return self.kid == LEGACY_KID


@dataclass(frozen=True)
class KeySet:
    """Keys that verify, current (signing) key first, and the ids of retired keys."""

    keys: tuple[SigningKey, ...]
    retired: tuple[str, ...] = ()
    plain: bool = False  # read from one plain secret (written back as such until a rotation)

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigError("the token key set has no key that signs: expected at least one `KID SECRET`")
        if len(self.keys) > MAX_KEYS:
            raise ConfigError(
                f"the token key set has {len(self.keys)} keys that verify, at most {MAX_KEYS} expected: "
                "retire old ones (camflow keys retire KID)"
            )
        kids = [k.kid for k in self.keys] + list(self.retired)
        for kid in kids:
            if KID_RE.fullmatch(kid) is None:
                raise ConfigError(
                    f"key id {kid[:40]!r} is not valid: expected 1-32 characters of A-Z a-z 0-9 _ -"
                )
        dup = sorted({k for k in kids if kids.count(k) > 1})
        if dup:
            raise ConfigError(f"key id {dup[0]!r} appears twice in the token key set")
        for key in self.keys:
            if len(key.secret) < MIN_SECRET_BYTES:
                raise ConfigError(
                    f"token secret of key {key.kid!r} is {len(key.secret)} bytes long, "
                    f"expected at least {MIN_SECRET_BYTES}"
                )

    @classmethod
    def single(cls, secret: bytes) -> KeySet:
        """One plain secret: the ``legacy`` key, which signs and verifies v1 tokens."""
        return cls((SigningKey(LEGACY_KID, secret),), plain=True)

    @property
    def current(self) -> SigningKey:
        return self.keys[0]

    def find(self, kid: str) -> SigningKey | None:
        for key in self.keys:
            if key.kid == kid:
                return key
        return None

    # --- edits (camflow keys) ---------------------------------------------------------

    def added(self, kid: str | None = None, *, current: bool) -> KeySet:
        """This set with a new random key (first when ``current``, else last)."""
        taken = {*self.kids(), *self.retired}
        kid = kid or next((k for k in (new_kid() for _ in range(1000)) if k not in taken), new_kid())
        key = SigningKey(kid, secrets.token_urlsafe(32).encode())
        keys = (key, *self.keys) if current else (*self.keys, key)
        return KeySet(keys, self.retired)

    def promoted(self, kid: str) -> KeySet:
        """This set with ``kid`` (a key that verifies) made current."""
        key = self.find(kid)
        if key is None:
            raise ConfigError(f"no key {kid!r} to make current: expected one of {self.kids()}")
        return KeySet((key, *(k for k in self.keys if k.kid != kid)), self.retired)

    def without(self, kid: str) -> KeySet:
        """This set with ``kid`` retired: its secret forgotten, its id kept."""
        if kid in self.retired:
            raise ConfigError(f"key {kid!r} is already retired")
        if self.find(kid) is None:
            raise ConfigError(f"no key {kid!r} to retire: expected one of {self.kids()}")
        if self.current.kid == kid:
            raise ConfigError(
                f"key {kid!r} is the current (signing) key: make another one current first "
                "(camflow keys rotate)"
            )
        return KeySet(tuple(k for k in self.keys if k.kid != kid), (*self.retired, kid))

    def kids(self) -> list[str]:
        return [k.kid for k in self.keys]

    def render_file(self) -> str:
        if self.plain:
            return self.current.secret.decode() + "\n"
        lines = [f"{k.kid} {k.secret.decode()}\n" for k in self.keys]
        return HEADER + "".join(lines) + "".join(f"{kid} {RETIRED}\n" for kid in self.retired)


def new_kid(now: float | None = None) -> str:
    """A key id naming the day it was made: ``k261203-3f`` (short: it is part of every token, and
    cameras keep tokens as passwords of a bounded length)."""
    day = time.strftime("%y%m%d", time.gmtime(time.time() if now is None else now))
    return f"k{day}-{secrets.token_hex(1)}"


def _entries(pairs: list[tuple[str, str]], where: str) -> KeySet:
    keys: list[SigningKey] = []
    retired: list[str] = []
    for kid, secret in pairs:
        if secret == RETIRED:
            retired.append(kid)
        else:
            keys.append(SigningKey(kid, secret.encode()))
    try:
        return KeySet(tuple(keys), tuple(retired))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


LIST_ITEM = re.compile(r"^[A-Za-z0-9_-]{1,32}:\S")


def parse_env(value: str, where: str) -> KeySet:
    """``CAMFLOW_SECRET``: a plain secret, or ``KID:SECRET,KID:SECRET`` (first = current)."""
    value = value.strip()
    items = [item.strip() for item in value.split(",")]
    if not all(LIST_ITEM.match(item) for item in items):
        if "," in value:
            raise ConfigError(
                f"{where} has ',' but is not a list of KID:SECRET: expected one plain secret or "
                "KID:SECRET,KID:SECRET,... (KID: 1-32 of A-Z a-z 0-9 _ -)"
            )
        return _plain(value.encode(), where)
    pairs = [item.split(":", 1) for item in items]
    return _entries([(kid, secret) for kid, secret in pairs], where)


def parse_file(text: str, where: str) -> KeySet:
    """A keys file: ``KID SECRET`` / ``KID retired`` per line, or one line alone in the form of
    ``CAMFLOW_SECRET`` (a plain secret, or ``KID:SECRET,KID:SECRET``), so that a Kubernetes Secret
    written for the variable reads the same when it is mounted as a file."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) == 1 and len(lines[0].split()) == 1:
        return parse_env(lines[0], where)
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if len(fields) != 2:
            raise ConfigError(
                f"{where}: key line {number} has {len(fields)} fields, expected `KID SECRET` or `KID retired`"
            )
        pairs.append((fields[0], fields[1]))
    return _entries(pairs, where)


def _plain(secret: bytes, where: str) -> KeySet:
    try:
        return KeySet.single(secret)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def read_file(path: Path) -> KeySet:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the token keys file {str(path)!r}: {exc.strerror}") from None
    return parse_file(text, f"token keys file {str(path)!r}")


def _write_beside(path: Path, keys: KeySet, suffix: str) -> Path:
    """``keys`` written (mode 0600) to a file of this process beside ``path``; its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{suffix}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(keys.render_file())
    return tmp


def write_file(path: Path, keys: KeySet) -> None:
    """Replace the keys file atomically (mode 0600): a reader sees the old set or the new one."""
    os.replace(_write_beside(path, keys, "tmp"), path)


def create_file(path: Path, keys: KeySet) -> None:
    """Make the keys file unless it exists: of processes starting together, one writes it, all read it."""
    tmp = _write_beside(path, keys, "new")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


class KeysFile:
    """A keys file, re-read when its ``stat`` changes (checked at most every ``interval`` seconds).

    A file that becomes unreadable or malformed keeps the last good set (logged once per change).
    """

    def __init__(
        self,
        path: Path,
        *,
        interval: float = RELOAD_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.interval = interval
        self._clock = clock
        self._stat = file_stamp(self.path)
        self._keys = read_file(path)
        self._checked = clock()

    def keys(self) -> KeySet:
        now = self._clock()
        if now - self._checked >= self.interval:
            self._checked = now
            self.reload()
        return self._keys

    def reload(self) -> bool:
        """Re-read the file if its stat changed; True when the key set changed."""
        signature = file_stamp(self.path)
        if signature == self._stat:
            return False
        self._stat = signature
        try:
            keys = read_file(self.path)
        except ConfigError as exc:
            log.error("keys_reload_failed", path=str(self.path), reason=str(exc), kept=self._keys.kids())
            return False
        if keys == self._keys:
            return False
        self._keys = keys
        log.info("keys_reloaded", path=str(self.path), current=keys.current.kid, verifying=keys.kids())
        return True
