"""What changes when a file is replaced or rewritten: how camflow notices, without a restart, a new
TLS certificate (``camflow.tls``) or a new signing keys file (``camflow.signing``)."""

from __future__ import annotations

import os
from pathlib import Path

Stamp = tuple[int, int, int, int] | None


def file_stamp(path: Path) -> Stamp:
    """Inode, device, size and mtime (ns) of ``path``; None when it cannot be read. Equal stamps:
    the same file, unchanged (a rename over it, as editors and kubelet do, changes the inode)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)
