"""The container image of scripts/image.sh, checked for real without a container runtime.

The fixture runs scripts/image.sh (a cold build takes minutes; it reuses the finished image when no
source changed). skopeo reads the archive as an OCI image (the tool docs/deployment.md "Container image"
pushes it with), umoci unpacks its layers into a runtime bundle (rootfs + config.json, what runc would run),
and the tests run that bundle the way a runtime would: as the image's user (10001), in its working
directory, with its environment, on a read-only root with /tmp writable (the chart's
securityContext), in a private mount namespace with chroot. It shares the host's network, so ffmpeg
on the host pushes RTSP into the image's `camflow run` and ffprobe on the host plays its HLS.

Needs root, debootstrap, umoci and skopeo (scripts/install-system.sh); under `make test` / CI
(CAMFLOW_REQUIRE_SERVICES=1 or CI=true) a missing one is a failure, elsewhere a skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import services
from tests.process import ffmpeg_push, free_port, make_clip, stop_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "camflow"
BUILD_TIMEOUT_S = 1800
FFPROBE_JSON = ("ffprobe", "-v", "error", "-show_entries", "stream=codec_name:format=duration", "-of", "json")
TOOLS = ("debootstrap", "umoci", "skopeo", "unshare", "mount", "ffmpeg", "ffprobe")
# Runs in the host's private mount namespace: the image read-only, /dev, /proc and a writable /tmp
# mounted in it, then the command chrooted as the image's user (what a runtime does, minus cgroups).
ENTER = """
set -eu
R=$1 T=$2 W=$3 U=$4 G=$5; shift 5
mount --bind "$R" "$R"
mount -o remount,bind,ro "$R"
mount --rbind /dev "$R/dev"
mount -t proc proc "$R/proc"
mount --bind "$T" "$R/tmp"
exec unshare --root="$R" --wd="$W" --setgid="$G" --setuid="$U" -- "$@"
"""


@dataclass(frozen=True)
class Image:
    archive: Path
    digest: str
    ref: str


@dataclass(frozen=True)
class Bundle:
    """An unpacked image: rootfs/ and the runtime spec umoci derived from the image config."""

    path: Path
    spec: dict[str, Any]
    tmp: Path

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.spec["process"]["env"])

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the image as its user, in its working directory."""
        user = self.spec["process"]["user"]
        return [
            _tool("unshare"),
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            ENTER,
            "enter",
            str(self.rootfs),
            str(self.tmp),
            self.spec["process"]["cwd"],
            str(user["uid"]),
            str(user["gid"]),
            *argv,
        ]

    def run(self, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(argv), capture_output=True, text=True, timeout=timeout, env=self.env, check=False
        )


def _unavailable(message: str) -> None:
    if services.services_required():
        pytest.fail(f"{message} (scripts/install-system.sh installs the tools)", pytrace=False)
    pytest.skip(message)


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    assert path, f"{name} not found"
    return path


def _chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


@pytest.fixture(scope="module")
def image() -> Image:
    if os.geteuid() != 0:
        _unavailable("building the image needs root (debootstrap, chroot, overlay mounts)")
    missing = [t for t in TOOLS if not (shutil.which(t) or shutil.which(t, path="/usr/sbin:/sbin"))]
    if missing:
        _unavailable(f"building and checking the image needs {', '.join(missing)}")
    built = subprocess.run(
        ["bash", str(ROOT / "scripts" / "image.sh")],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        cwd=ROOT,
        check=False,
    )
    assert built.returncode == 0, f"scripts/image.sh failed:\n{built.stdout[-2000:]}\n{built.stderr[-4000:]}"
    path = re.search(r"^image: (/\S+\.oci\.tar)$", built.stdout, re.M)
    digest = re.search(r"^digest: (sha256:[0-9a-f]{64})$", built.stdout, re.M)
    assert path and digest, built.stdout
    meta = json.loads(Path(path.group(1) + ".json").read_text())
    assert meta["digest"] == digest.group(1)
    return Image(Path(path.group(1)), digest.group(1), meta["ref"])


@pytest.fixture(scope="module")
def layout(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The archive unpacked: an OCI image layout directory (plus Docker's manifest.json)."""
    out = tmp_path_factory.mktemp("layout")
    with tarfile.open(image.archive) as tar:
        tar.extractall(out, filter="data")
    yield out
    shutil.rmtree(out, ignore_errors=True)  # ~300 MB


@pytest.fixture(scope="module")
def bundle(image: Image, layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    base = tmp_path_factory.mktemp("bundle")
    tag = image.ref.rsplit(":", 1)[1]
    unpacked = subprocess.run(
        [_tool("umoci"), "unpack", "--image", f"{layout}:{tag}", str(base / "bundle")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert unpacked.returncode == 0, unpacked.stderr
    tmp = base / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    spec = json.loads((base / "bundle" / "config.json").read_text())
    yield Bundle(base / "bundle", spec, tmp)
    shutil.rmtree(base, ignore_errors=True)  # ~900 MB


def skopeo_inspect(image: Image, *flags: str, transport: str = "oci-archive") -> dict[str, Any]:
    """skopeo's view of the archive: as an OCI archive (by tag), or as `docker load` input."""
    tag = image.ref.rsplit(":", 1)[1]
    name = f"{transport}:{image.archive}" + (f":{tag}" if transport == "oci-archive" else "")
    out = subprocess.run(
        [_tool("skopeo"), "inspect", *flags, name],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# --- the archive and its config -------------------------------------------------------------------


def test_chart_default_image_is_what_make_image_builds(image: Image) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = _chart_values()["image"]
    assert image.ref == f"{values['repository']}:{values['tag'] or chart['appVersion']}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{chart["appVersion"]}"' in pyproject, "Chart appVersion != pyproject version"


def test_skopeo_reads_the_oci_archive(image: Image) -> None:
    inspected = skopeo_inspect(image)
    assert inspected["Digest"] == image.digest
    assert inspected["Os"] == "linux" and inspected["Architecture"] == "amd64"
    assert len(inspected["Layers"]) == 2, inspected["Layers"]  # Debian base, camflow venv


def test_config_entrypoint_user_and_chart_ports(image: Image) -> None:
    config = skopeo_inspect(image, "--config")["config"]
    assert config["Entrypoint"] == ["camflow"]
    assert config["User"] == "10001"
    assert _chart_values()["podSecurityContext"]["runAsUser"] == 10001
    values = _chart_values()
    ingest = values["ingest"]
    udp, whip = ingest["rtsp"]["udp"], ingest["whip"]
    wanted = {
        f"{ingest['rtsp']['port']}/tcp",
        f"{whip['httpPort']}/tcp",
        f"{values['edge']['httpPort']}/tcp",
        f"{values['metrics']['port']}/tcp",
        *(f"{udp['firstPort'] + i}/udp" for i in range(udp["count"])),
        *(f"{whip['firstPort'] + i}/udp" for i in range(whip["count"])),
    }
    assert wanted <= set(config["ExposedPorts"]), sorted(wanted - set(config["ExposedPorts"]))


def test_docker_manifest_names_the_same_blobs(image: Image, layout: Path) -> None:
    """`docker load` reads manifest.json: its config and layers are the OCI manifest's blobs."""
    (docker,) = json.loads((layout / "manifest.json").read_text())
    index = json.loads((layout / "index.json").read_text())
    (entry,) = index["manifests"]
    assert entry["digest"] == image.digest
    manifest = json.loads((layout / "blobs" / "sha256" / image.digest[7:]).read_text())
    assert docker["RepoTags"] == [image.ref]
    assert docker["Config"] == f"blobs/sha256/{manifest['config']['digest'][7:]}"
    assert docker["Layers"] == [f"blobs/sha256/{layer['digest'][7:]}" for layer in manifest["layers"]]
    for blob in [docker["Config"], *docker["Layers"]]:
        assert (layout / blob).is_file(), blob
    # skopeo's docker-archive transport reads the file as `docker load` does: the same config.
    as_docker = skopeo_inspect(image, "--config", transport="docker-archive")
    assert as_docker == skopeo_inspect(image, "--config")
    assert as_docker["config"]["Entrypoint"] == ["camflow"]


# --- the unpacked image, run as a runtime would -------------------------------------------------------


def test_runtime_spec_runs_camflow_as_10001(bundle: Bundle) -> None:
    process = bundle.spec["process"]
    assert process["user"]["uid"] == 10001 and process["user"]["gid"] == 10001  # gid from the image's passwd
    assert process["args"][0] == "camflow"
    assert process["cwd"] == "/home/camflow"
    passwd = (bundle.rootfs / "etc" / "passwd").read_text()
    assert re.search(r"^camflow:x:10001:10001:", passwd, re.M), passwd


def test_commands_run_as_10001_on_a_read_only_root(bundle: Bundle) -> None:
    who = bundle.run(["id", "-u"])
    assert who.returncode == 0 and who.stdout.strip() == "10001", who
    readonly = bundle.run(["touch", "/opt/camflow/x"])
    assert readonly.returncode != 0 and "Read-only file system" in readonly.stderr, readonly

    help_ = bundle.run(["camflow", "--help"])
    assert help_.returncode == 0, help_.stderr
    assert all(sub in help_.stdout for sub in ("ingest", "transcode", "package", "edge", "run")), help_.stdout
    ingest = bundle.run(["camflow", "ingest", "--help"])
    assert ingest.returncode == 0 and "--rtsp-port" in ingest.stdout, ingest.stderr

    for tool in ("ffprobe", "ffmpeg"):
        version = bundle.run([tool, "-version"])
        assert version.returncode == 0 and version.stdout.startswith(f"{tool} version "), version
    python = bundle.run(["/opt/camflow/bin/python", "-c", "import sys, av; print(sys.version_info[:2])"])
    assert python.returncode == 0 and python.stdout.strip() == "(3, 11)", python


def _fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_for_ended(master_url: str, timeout: float = 90.0) -> str:
    """Poll until every media playlist of the master carries ENDLIST (the push ended)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        status, body = _fetch(master_url)
        if status == 200:
            last = body.decode()
            base = master_url.rsplit("/", 1)[0]
            uris = [line for line in last.splitlines() if line and not line.startswith("#")]
            media = [_fetch(f"{base}/{uri}") for uri in uris]
            if uris and all(s == 200 and b"#EXT-X-ENDLIST" in b for s, b in media):
                return last
        time.sleep(0.5)
    raise AssertionError(f"playlists did not end within {timeout} s; last master:\n{last}")


def test_embedded_run_in_the_image_serves_hls_the_host_plays(bundle: Bundle, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", 8, size="640x360")
    rtsp_port, http_port = free_port(), free_port()
    out, err = tmp_path / "camflow.out", tmp_path / "camflow.err"
    argv = ["camflow", "run", "--host", "127.0.0.1", "--rtsp-port", str(rtsp_port)]
    argv += ["--http-port", str(http_port), "--data-dir", "/tmp/data", "--drain-seconds", "1"]
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(bundle.command(argv), stdout=fo, stderr=fe, env=bundle.env)
    try:
        deadline = time.monotonic() + 90
        while "Ctrl-C stops it." not in out.read_text(errors="replace"):
            assert proc.poll() is None, f"camflow run exited {proc.returncode}:\n{err.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"camflow run did not start:\n{err.read_text()[-3000:]}"
            time.sleep(0.2)
        printed = out.read_text()
        push = re.search(r"push to:\s+(rtsp://\S+)", printed)
        watch = re.search(r"watch at:\s+(http://\S+)", printed)
        player = re.search(r"player:\s+http://[^/\s]+(/watch/\S+)", printed)
        assert push and watch and player, printed

        pushed = ffmpeg_push(clip, push.group(1))
        assert pushed.returncode == 0, pushed.stderr
        master = _wait_for_ended(watch.group(1))
        assert 'CODECS="avc1.' in master, master

        probe = subprocess.run(
            [*FFPROBE_JSON, watch.group(1)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        result = json.loads(probe.stdout)
        assert result["streams"] and all(s["codec_name"] == "h264" for s in result["streams"]), result
        assert float(result["format"]["duration"]) >= 6.0, result

        # The player page's files are in the image (package data and hls.js).
        for path in ("/static/hls.min.js", "/static/player.js", player.group(1)):
            status, body = _fetch(f"http://127.0.0.1:{http_port}{path}")
            assert status == 200 and body, (path, status, body[:200])
        # What the service wrote went to the writable /tmp, as the image's user.
        assert (bundle.tmp / "data" / "store").is_dir()
        assert (bundle.tmp / "data").stat().st_uid == 10001
    finally:
        code = stop_process(proc)
    assert code == 0, f"camflow run exited with {code} after SIGTERM:\n{err.read_text()[-3000:]}"
