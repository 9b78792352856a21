"""Writes OCI image layers and archives without a container engine (standard library only).

    python deploy/image/oci.py layer DIR OUT.tar.gz [--overlay-upper]
        One gzipped layer tar of DIR (sorted, numeric owners); prints {"digest", "diff_id", "size"}.
        --overlay-upper: DIR is an overlayfs upper dir, whose whiteouts (0:0 character devices) and
        opaque directories become OCI `.wh.` entries.
    python deploy/image/oci.py image OUT.tar --ref camflow:0.1.0 --config deploy/image/image.json \
            --layer L1.tar.gz.json --layer L2.tar.gz.json [--label k=v ...]
        An image archive: an OCI image layout (oci-layout, index.json, blobs/sha256/...) that
        `skopeo copy oci-archive:OUT.tar:TAG` and `podman load` read, plus a Docker
        `manifest.json` so that `docker load` reads the same file. Prints {"digest", "config", "ref"}.

scripts/image.sh drives both; tests/test_image.py checks the result with umoci and skopeo.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


class HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to ``target``."""

    def __init__(self, target: BinaryIO | None) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.size += len(view)
        if self.target is not None:
            self.target.write(view)
        return len(view)


class TeeWriter(io.RawIOBase):
    """Writes to two streams at once (the gzip stream and the diff_id hash)."""

    def __init__(self, first: gzip.GzipFile, second: HashingWriter) -> None:
        self.first, self.second = first, second

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.first.write(data)
        return self.second.write(data)


def _is_opaque(path: str) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def _entries(root: Path) -> list[str]:
    """Every path under ``root``, relative, parents before children, sorted for a stable tar."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            out.append(name if rel == "." else f"{rel}/{name}")
    return out


def _tarinfo(tar: tarfile.TarFile, root: Path, rel: str) -> tarfile.TarInfo | None:
    """The entry of ``rel`` (hard links found by inode), numeric owners only; None for a socket."""
    info = tar.gettarinfo(str(root / rel), arcname=rel)
    if info is not None:
        info.uname = info.gname = ""
    return info


def write_layer(root: Path, out: Path, overlay_upper: bool = False) -> dict[str, Any]:
    """Tar ``root`` into gzipped ``out``; returns the layer's digest, diff_id and size."""
    tmp = out.with_name(out.name + ".part")
    diff = HashingWriter(None)
    with tmp.open("wb") as raw:
        packed = HashingWriter(raw)
        with gzip.GzipFile(fileobj=packed, mode="wb", compresslevel=6, mtime=0) as gz:
            tee = TeeWriter(gz, diff)
            with tarfile.open(fileobj=tee, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for rel in _entries(root):
                    path = root / rel
                    st = path.lstat()
                    if overlay_upper and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                        parent, _, name = rel.rpartition("/")
                        whiteout = tarfile.TarInfo(f"{parent}/.wh.{name}" if parent else f".wh.{name}")
                        whiteout.mtime = int(st.st_mtime)
                        tar.addfile(whiteout)
                        continue
                    info = _tarinfo(tar, root, rel)
                    if info is None:
                        continue
                    if info.isreg():
                        with path.open("rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
                    if overlay_upper and info.isdir() and _is_opaque(str(path)):
                        opaque = tarfile.TarInfo(f"{rel}/.wh..wh..opq")
                        opaque.mtime = int(st.st_mtime)
                        tar.addfile(opaque)
    tmp.replace(out)
    return {
        "digest": f"sha256:{packed.sha.hexdigest()}",
        "diff_id": f"sha256:{diff.sha.hexdigest()}",
        "size": packed.size,
    }


def _ports(specs: list[str]) -> dict[str, dict[str, Any]]:
    """["8554/tcp", "20000-20003/udp"] -> {"8554/tcp": {}, "20000/udp": {}, ...}."""
    ports: dict[str, dict[str, Any]] = {}
    for spec in specs:
        numbers, _, proto = spec.partition("/")
        if proto not in ("tcp", "udp"):
            raise SystemExit(f"port {spec!r}: expected PORT[-LAST]/tcp|udp")
        first, _, last = numbers.partition("-")
        for port in range(int(first), int(last or first) + 1):
            ports[f"{port}/{proto}"] = {}
    return ports


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_image(
    out: Path,
    ref: str,
    spec: dict[str, Any],
    layers: list[tuple[Path, dict[str, Any]]],
    labels: dict[str, str],
) -> dict[str, str]:
    """The image archive ``out`` (OCI layout + Docker manifest.json); returns its digests."""
    repository, _, tag = ref.rpartition(":")
    if not repository or not tag or "/" in tag:
        raise SystemExit(f"--ref {ref!r}: expected REPOSITORY:TAG")
    config = {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": spec["user"],
            "Entrypoint": spec["entrypoint"],
            "Cmd": spec["cmd"],
            "Env": [f"{k}={v}" for k, v in spec["env"].items()],
            "WorkingDir": spec["workdir"],
            "ExposedPorts": _ports(spec["ports"]),
            "StopSignal": spec["stop_signal"],
            "Labels": {**spec["labels"], **labels},
        },
        "rootfs": {"type": "layers", "diff_ids": [meta["diff_id"] for _, meta in layers]},
        "history": [{"created_by": f"camflow scripts/image.sh: layer {i}"} for i in range(len(layers))],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [
            {"mediaType": MEDIA_LAYER, "digest": meta["digest"], "size": meta["size"]} for _, meta in layers
        ],
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "annotations": {"org.opencontainers.image.ref.name": tag, "io.containerd.image.name": ref},
            }
        ],
    }
    docker_manifest = [
        {
            "Config": f"blobs/sha256/{config_digest[7:]}",
            "RepoTags": [ref],
            "Layers": [f"blobs/sha256/{meta['digest'][7:]}" for _, meta in layers],
        }
    ]
    tmp = out.with_name(out.name + ".part")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add_bytes(tar, "index.json", json.dumps(index, indent=2).encode())
        _add_bytes(tar, "manifest.json", json.dumps(docker_manifest, indent=2).encode())
        _add_bytes(tar, f"blobs/sha256/{config_digest[7:]}", config_bytes)
        _add_bytes(tar, f"blobs/sha256/{manifest_digest[7:]}", manifest_bytes)
        for path, meta in layers:
            info = tar.gettarinfo(str(path), arcname=f"blobs/sha256/{meta['digest'][7:]}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with path.open("rb") as f:
                tar.addfile(info, f)
    tmp.replace(out)
    return {"digest": manifest_digest, "config": config_digest, "ref": ref}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    layer = sub.add_parser("layer", help="tar.gz one layer of a directory")
    layer.add_argument("dir", type=Path)
    layer.add_argument("out", type=Path)
    layer.add_argument("--overlay-upper", action="store_true")
    image = sub.add_parser("image", help="write the image archive")
    image.add_argument("out", type=Path)
    image.add_argument("--ref", required=True, help="REPOSITORY:TAG")
    image.add_argument("--config", required=True, type=Path, help="deploy/image/image.json")
    image.add_argument(
        "--layer",
        action="append",
        required=True,
        type=Path,
        help="LAYER.tar.gz.json beside LAYER.tar.gz, base first",
    )
    image.add_argument("--label", action="append", default=[], help="extra label KEY=VALUE")
    args = parser.parse_args(argv)
    if args.command == "layer":
        if not args.dir.is_dir():
            raise SystemExit(f"layer: {args.dir} is not a directory")
        result: dict[str, Any] = write_layer(args.dir, args.out, args.overlay_upper)
    else:
        spec = json.loads(args.config.read_text())
        layers = []
        for meta_path in args.layer:
            meta = json.loads(meta_path.read_text())
            layers.append((meta_path.with_name(meta_path.name.removesuffix(".json")), meta))
        labels = dict(item.split("=", 1) for item in args.label)
        result = write_image(args.out, args.ref, spec, layers, labels)
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
