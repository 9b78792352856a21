#!/usr/bin/env bash
# The camflow container image, built without a container engine or a registry: a Debian bookworm
# root file system from Debian's packages (debootstrap + chroot apt-get: python3 3.11, ffmpeg),
# camflow and its dependencies in a venv at /opt/camflow, user camflow (10001), written as an OCI
# image archive by deploy/image/oci.py (entrypoint `camflow`, user 10001; deploy/image/image.json).
#   scripts/image.sh     build, or reuse when nothing it is made of changed; prints the archive's
#                        path and the image (manifest) digest, e.g.
#                          image: build/image/camflow-0.1.0.oci.tar
#                          digest: sha256:...
# The archive is an OCI image layout that skopeo (`oci-archive:PATH`) and `podman load` read, with a
# Docker manifest.json beside it, so `docker load -i` reads it too. docs/deployment.md "Container image".
# Layers: 1. Debian base + packages + user (cached: it only changes with deploy/image/{base.sh,
# packages.txt,dpkg-excludes} or after IMAGE_BASE_MAX_AGE_DAYS, for security updates); 2. the venv.
# Dependencies are pinned to the versions in .venv (`pip freeze`), the ones the tests ran against.
# Needs root, debootstrap, chroot, unshare, overlayfs (scripts/install-system.sh) and .venv.
# Env: IMAGE_REPOSITORY (camflow), IMAGE_TAG (the version in pyproject.toml), IMAGE_REBUILD=1
#      (ignore a finished image; the base stays cached), IMAGE_BASE_MAX_AGE_DAYS (7),
#      IMAGE_MIRROR / IMAGE_SECURITY_MIRROR (default: the ones this machine's apt uses),
#      CAMFLOW_CACHE (~/.cache/camflow: the base, .deb files and wheels live in its image/).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY="$ROOT/.venv/bin/python"
SUITE=bookworm
CACHE="${CAMFLOW_CACHE:-$HOME/.cache/camflow}/image"
OUT_DIR="$ROOT/build/image"

die() { echo "image: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and overlay mounts); run it as root"
for tool in debootstrap chroot unshare mount flock sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "needs $tool on PATH (bash scripts/install-system.sh installs it)"
done
[ -x "$PY" ] || die "needs .venv (make install)"
HLSJS="$ROOT/edge/web/node_modules/hls.js/dist"
[ -f "$HLSJS/hls.min.js" ] || die "needs $HLSJS/hls.min.js for the player page (make install)"

# The Debian mirrors this machine's apt uses (deb822 .sources or one-line lists), else deb.debian.org.
apt_uri() {  # $1: suite to look for, $2: URI suffix (/debian or /debian-security)
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$1" -v suffix="$2" '
      /^URIs:/ { uri = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) s = 1 }
      /^$/ { if (s && uri ~ suffix "/?$") { print uri; exit } uri = ""; s = 0 }
      END { if (s && uri ~ suffix "/?$") print uri }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v suite="$1" -v suffix="$2" '$1 == "deb" && $3 == suite && $2 ~ suffix "/?$" { print $2 }' "$f"
  done
}
MIRROR="${IMAGE_MIRROR:-$(apt_uri "$SUITE" /debian | head -1)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SECURITY="${IMAGE_SECURITY_MIRROR:-$(apt_uri "$SUITE-security" /debian-security | head -1)}"
SECURITY="${SECURITY:-http://deb.debian.org/debian-security}"

VERSION="$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
REF="${IMAGE_REPOSITORY:-camflow}:${IMAGE_TAG:-$VERSION}"
OUT="$OUT_DIR/$(basename "${REF%:*}")-${REF##*:}.oci.tar"
mkdir -p "$CACHE" "$OUT_DIR"

# One build at a time (a second one waits, then finds the first one's image).
exec 9>"$CACHE/.lock"
flock -n 9 || { echo "image: another build is running; waiting for it"; flock 9; }

rm -rf "$CACHE"/build.*  # left by a build that was killed (we hold the lock: none is running)
WORK="$(mktemp -d "$CACHE/build.XXXXXX")"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

# --- keys: what each part is made of ------------------------------------------------------------
BASE_KEY="$(
  { echo "$SUITE $MIRROR $SECURITY"; cat deploy/image/base.sh deploy/image/packages.txt deploy/image/dpkg-excludes; } |
    sha256sum | cut -c1-16
)"
"$ROOT/.venv/bin/pip" freeze --exclude-editable --disable-pip-version-check |
  grep -v -i -E '^(camflow|pip|setuptools|wheel)([ =@]|$)' | grep -v ' @ ' > "$WORK/constraints.txt"
if git rev-parse --git-dir >/dev/null 2>&1; then
  mapfile -t SOURCES < <(git ls-files -co --exclude-standard -- camflow ingest transcode packager edge \
    pyproject.toml README.md deploy/image scripts/image.sh | grep -v -E '(^|/)node_modules/' | sort)
else
  mapfile -t SOURCES < <(find camflow ingest transcode packager edge deploy/image -type f \
    ! -path '*/node_modules/*' ! -path '*/__pycache__/*' | sort; echo pyproject.toml; echo README.md; echo scripts/image.sh)
fi
# What the camflow layer is made of, one line each (kept beside the archive as .inputs, so that a
# rebuild can say what changed).
{ echo "$BASE_KEY $REF (base, tag)"; echo "$(sha256sum < "$HLSJS/hls.min.js" | cut -d' ' -f1) hls.min.js";
  echo "$(sha256sum < "$WORK/constraints.txt" | cut -d' ' -f1) (dependency versions)";
  for f in "${SOURCES[@]}"; do [ ! -f "$f" ] || sha256sum "$f"; done; } > "$WORK/inputs"
IMAGE_KEY="$(sha256sum < "$WORK/inputs" | cut -c1-16)"

report() {
  echo "image: $OUT"
  echo "digest: $("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["digest"])' "$OUT.json")"
}
if [ "${IMAGE_REBUILD:-0}" != 1 ] && [ -f "$OUT" ] && [ -f "$OUT.json" ] &&
   "$PY" -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])).get("key") != sys.argv[2])' "$OUT.json" "$IMAGE_KEY"; then
  echo "image: up to date (source key $IMAGE_KEY)"
  report
  exit 0
fi
if [ -f "$OUT.inputs" ]; then
  echo "image: rebuilding; changed: $(diff "$OUT.inputs" "$WORK/inputs" | sed -n 's/^> [^ ]* *//p' | tr '\n' ' ')"
fi
START=$SECONDS

# --- layer 1: the Debian base (cached) ------------------------------------------------------------
BASE="$CACHE/base-$BASE_KEY"
if [ -d "$BASE/rootfs" ] && [ -f "$BASE/layer.tar.gz.json" ] &&
   [ -z "$(find "$BASE/layer.tar.gz.json" -mtime +"${IMAGE_BASE_MAX_AGE_DAYS:-7}")" ]; then
  echo "image: reusing base $BASE_KEY"
else
  rm -rf "$BASE" "$CACHE"/base-*.part
  bash deploy/image/base.sh "$BASE.part/rootfs" "$SUITE" "$MIRROR" "$SECURITY" "$CACHE/debs"
  "$PY" deploy/image/oci.py layer "$BASE.part/rootfs" "$BASE.part/layer.tar.gz" > "$BASE.part/layer.tar.gz.json"
  mv "$BASE.part" "$BASE"
  find "$CACHE" -maxdepth 1 -name 'base-*' ! -name "base-$BASE_KEY" -exec rm -rf {} +
  echo "image: base $BASE_KEY built"
fi

# --- layer 2: camflow in /opt/camflow, installed by the image's own python3 ----------------------
# The wheels: camflow from this tree, its dependencies at .venv's versions (pip's cache keeps the
# downloads), and pip itself, run from its wheel so that the image carries no pip.
export PIP_DISABLE_PIP_VERSION_CHECK=1
PIP_VERSION="$("$ROOT/.venv/bin/pip" --version | cut -d' ' -f2)"
"$ROOT/.venv/bin/pip" wheel --quiet --wheel-dir "$WORK/wheels" --constraint "$WORK/constraints.txt" . "pip==$PIP_VERSION" \
  > "$WORK/pip-wheel.log" 2>&1 || { tail -30 "$WORK/pip-wheel.log" >&2; die "pip wheel failed"; }
PIP_WHEEL="$(cd "$WORK/wheels" && ls pip-*.whl | head -1)"
[ -n "$PIP_WHEEL" ] || die "pip wheel did not produce a wheel of pip"
mkdir -p "$WORK/upper" "$WORK/ovl" "$WORK/merged"
# overlayfs: the base stays untouched; what the install adds lands in upper/, which becomes layer 2.
unshare --mount --propagation private -- bash -euo pipefail -c '
  BASE=$1 W=$2 PIP_WHEEL=$3 HLSJS=$4
  mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$W/upper,workdir=$W/ovl" "$W/merged"
  M=$W/merged
  mount -t tmpfs tmpfs "$M/tmp"
  mount --rbind /dev "$M/dev"
  mount -t proc proc "$M/proc"
  cp -r "$W/wheels" "$M/tmp/wheels"
  chroot "$M" /usr/bin/python3 -m venv --without-pip /opt/camflow
  chroot "$M" /opt/camflow/bin/python "/tmp/wheels/$PIP_WHEEL/pip" install --quiet --no-index \
    --find-links /tmp/wheels --no-cache-dir --no-warn-script-location camflow
  install -d -m 0755 "$M/opt/camflow/share/hls.js"
  install -m 0644 "$HLSJS/hls.min.js" "$M/opt/camflow/share/hls.js/hls.min.js"
  if [ -f "$HLSJS/../LICENSE" ]; then install -m 0644 "$HLSJS/../LICENSE" "$M/opt/camflow/share/hls.js/LICENSE"; fi
  chroot --userspec=10001:10001 "$M" /opt/camflow/bin/camflow --help > /dev/null
' image-app "$BASE/rootfs" "$WORK" "$PIP_WHEEL" "$HLSJS" > "$WORK/install.log" 2>&1 || {
  tail -30 "$WORK/install.log" >&2
  die "installing camflow into the image failed"
}
"$PY" deploy/image/oci.py layer --overlay-upper "$WORK/upper" "$WORK/app.tar.gz" > "$WORK/app.tar.gz.json"
echo "image: camflow layer built ($(du -sh "$WORK/upper" | cut -f1) in /opt/camflow)"

# --- the archive ------------------------------------------------------------------------------------
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
"$PY" deploy/image/oci.py image "$OUT" --ref "$REF" --config deploy/image/image.json \
  --layer "$BASE/layer.tar.gz.json" --layer "$WORK/app.tar.gz.json" \
  --label "org.opencontainers.image.version=$VERSION" --label "org.opencontainers.image.revision=$REVISION" \
  --label "io.camflow.source-key=$IMAGE_KEY" > "$WORK/image.json"
"$PY" - "$WORK/image.json" "$OUT.json" "$IMAGE_KEY" <<'EOF'
import json, sys
result = json.load(open(sys.argv[1]))
result["key"] = sys.argv[3]
json.dump(result, open(sys.argv[2], "w"), indent=2)
EOF
cp "$WORK/inputs" "$OUT.inputs"
echo "image: built in $((SECONDS - START)) s ($(du -h "$OUT" | cut -f1))"
report
