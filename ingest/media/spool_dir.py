"""The ingest spool on disk: one directory per ingest process, locked for its life, adopted after it.

Layout under the spool root (``--spool-dir``)::

    p-<time>-<pid>-<random>/lock            flock'ed by the process that writes there
    p-<time>-<pid>-<random>/000000000042.rec   one record (``ingest.media.spool.SpoolRecord``)
    quarantine/<dir>-<file>                 records that did not check, kept for a post-mortem

A record is written to ``NAME.tmp``, fsync'ed, renamed to ``NAME.rec`` (and the directory
fsync'ed): after a crash, or a power loss, a ``.rec`` file is whole or absent, and a left-over
``.tmp`` is a write that never completed (its publish call never returned). A directory whose
lock nobody holds belongs to a process that ended (crashed, SIGKILLed, or stopped with records
left): another ingest on the same root takes its lock and delivers its records (``adopt``), so
two processes never deliver the same record, and nothing waits for the dead one to come back.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from camflow.log import get_logger
from ingest.media.spool import RecordHeader, SpoolCorrupt, SpoolRecord

RECORD = ".rec"
PARTIAL = ".tmp"
PROCESS_PREFIX = "p-"
QUARANTINE = "quarantine"
log = get_logger("ingest.spool")


def record_name(order: int) -> str:
    return f"{order:012d}{RECORD}"


@dataclass
class Recovered:
    """What ``SpoolDirectory.recover`` found: records in order, and what it set aside."""

    records: list[tuple[str, RecordHeader, int]] = field(default_factory=list)  # (name, header, size)
    quarantined: int = 0
    partial: int = 0


class SpoolDirectory:
    """One locked directory of the spool. Its methods touch one record each: threads may write,
    read and remove different records at once."""

    def __init__(self, path: Path, lock_fd: int, *, fsync: bool = True) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self._fsync = fsync

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def create(cls, root: Path, *, fsync: bool = True) -> SpoolDirectory:
        """A new directory of this process under ``root``, locked. It is made under a dot name and
        renamed once locked, so no other process ever sees it unlocked."""
        root.mkdir(parents=True, exist_ok=True)
        name = f"{PROCESS_PREFIX}{time.time_ns():x}-{os.getpid()}-{secrets.token_hex(3)}"
        work = root / f".{name}"
        work.mkdir()
        fd = os.open(work / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        final = root / name
        work.rename(final)
        if fsync:
            _fsync_dir(root)
        return cls(final, fd, fsync=fsync)

    @classmethod
    def adopt(cls, path: Path, *, fsync: bool = True) -> SpoolDirectory | None:
        """Take the directory of a process that ended: None when its owner still holds the lock
        (or the directory went away meanwhile, adopted and emptied by another process)."""
        try:
            fd = os.open(path / "lock", os.O_RDWR | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if not path.exists():  # emptied and removed between our open and our lock
            os.close(fd)
            return None
        return cls(path, fd, fsync=fsync)

    def recover(self, root: Path) -> Recovered:
        """The records here, oldest first, by header only (the body is checked when read).
        Torn or damaged ones are quarantined, left-over partial writes removed; both logged."""
        found = Recovered()
        for path in sorted(self.path.iterdir()):
            if path.suffix == PARTIAL:
                path.unlink(missing_ok=True)
                found.partial += 1
                log.warning("spool_partial_removed", file=str(path), reason="a write that never completed")
            elif path.suffix == RECORD:
                try:
                    header, size = self._read_header(path)
                except (SpoolCorrupt, OSError) as exc:
                    self.quarantine(root, path.name, str(exc))
                    found.quarantined += 1
                    continue
                found.records.append((path.name, header, size))
        return found

    def _read_header(self, path: Path) -> tuple[RecordHeader, int]:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(SpoolRecord.prefix_size())
            head = prefix + f.read(SpoolRecord.header_length(prefix))
        header = SpoolRecord.parse_header(head)
        if size != len(head) + header.body_len:
            raise SpoolCorrupt(f"{size} bytes: expected {len(head) + header.body_len} (torn write)")
        return header, size

    def write(self, name: str, data: bytes, *, durable: bool = True) -> None:
        """``data`` as record ``name``, whole or not at all; ``durable``: on disk when this returns
        (the file's data, then the rename: the directory), not only in the page cache."""
        partial = self.path / (name.removesuffix(RECORD) + PARTIAL)
        sync = durable and self._fsync
        with partial.open("wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        partial.rename(self.path / name)
        if sync:
            _fsync_dir(self.path)

    def write_record(self, name: str, record: SpoolRecord, *, durable: bool = True) -> None:
        """``record``, encoded here (its CRCs computed on this thread), as ``write`` does."""
        self.write(name, record.encode(), durable=durable)

    def read(self, name: str) -> SpoolRecord:
        return SpoolRecord.decode((self.path / name).read_bytes())

    def remove(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)

    def quarantine(self, root: Path, name: str, reason: str) -> None:
        """Move record ``name`` aside, under ``root/quarantine``; logged with the reason."""
        target = root / QUARANTINE / f"{self.name}-{name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            (self.path / name).rename(target)
        log.error("spool_record_quarantined", file=str(target), reason=reason)

    def close(self, *, remove_if_empty: bool) -> None:
        """Release the lock; an empty directory is removed first (while still locked)."""
        if remove_if_empty and not any(p.suffix == RECORD for p in self.path.iterdir()):
            for leftover in self.path.iterdir():
                leftover.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.path.rmdir()
        os.close(self._lock_fd)


def orphan_candidates(root: Path, own: set[str]) -> list[Path]:
    """Other processes' directories under ``root`` (whether their owner lives is for ``adopt``)."""
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.iterdir() if p.name.startswith(PROCESS_PREFIX) and p.name not in own and p.is_dir()
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
