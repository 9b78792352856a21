#!/usr/bin/env bash
# The base root file system of the camflow image: Debian minbase + deploy/image/packages.txt + user
# camflow (10001:10001). Called by scripts/image.sh (which caches the result keyed by this file,
# packages.txt and dpkg-excludes); needs root, debootstrap, chroot and unshare.
#   deploy/image/base.sh ROOTFS SUITE MIRROR SECURITY_MIRROR DEB_CACHE
# ROOTFS must not exist. DEB_CACHE keeps the downloaded .deb files for the next build.
# Mounts (proc, dev, resolv.conf, the .deb cache) live in a private mount namespace: they vanish
# with it, whatever happens, and never land in the image.
set -euo pipefail
if [ $# -ne 5 ]; then
  echo "usage: $0 ROOTFS SUITE MIRROR SECURITY_MIRROR DEB_CACHE" >&2
  exit 2
fi
ROOTFS=$1 SUITE=$2 MIRROR=$3 SECURITY=$4 DEBS=$5
HERE="$(cd "$(dirname "$0")" && pwd)"
UID_GID=10001

mkdir -p "$DEBS" "$(dirname "$ROOTFS")"
echo "image: debootstrap --variant=minbase $SUITE from $MIRROR"
debootstrap --variant=minbase --components=main --cache-dir="$DEBS" "$SUITE" "$ROOTFS" "$MIRROR" \
  > "$ROOTFS.debootstrap.log" 2>&1 || {
  tail -30 "$ROOTFS.debootstrap.log" >&2
  echo "image: debootstrap failed (log: $ROOTFS.debootstrap.log)" >&2
  exit 1
}

cat > "$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main
EOF
install -m 0644 "$HERE/dpkg-excludes" "$ROOTFS/etc/dpkg/dpkg.cfg.d/camflow-excludes"
# No recommends, no apt caches, ever (also for an operator's apt-get in a debug copy of the image).
cat > "$ROOTFS/etc/apt/apt.conf.d/90camflow" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF

mapfile -t PACKAGES < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$HERE/packages.txt")
echo "image: apt-get install ${PACKAGES[*]}"
touch "$ROOTFS/etc/resolv.conf"
unshare --mount --propagation private -- bash -euo pipefail -c '
  R=$1 DEBS=$2; shift 2
  mount -t proc proc "$R/proc"
  mount --rbind /dev "$R/dev"
  mount --bind /etc/resolv.conf "$R/etc/resolv.conf"
  mount --bind "$DEBS" "$R/var/cache/apt/archives"
  export DEBIAN_FRONTEND=noninteractive LC_ALL=C
  chroot "$R" apt-get update -qq
  chroot "$R" apt-get -y -qq -o Dpkg::Options::=--force-confold upgrade
  chroot "$R" apt-get -y -qq install "$@"
  chroot "$R" groupadd --gid '"$UID_GID"' camflow
  chroot "$R" useradd --uid '"$UID_GID"' --gid '"$UID_GID"' --home-dir /home/camflow --create-home \
    --shell /usr/sbin/nologin camflow
  chroot "$R" python3 --version
' image-base "$ROOTFS" "$DEBS" "${PACKAGES[@]}" > "$ROOTFS.apt.log" 2>&1 || {
  tail -30 "$ROOTFS.apt.log" >&2
  echo "image: installing packages failed (log: $ROOTFS.apt.log)" >&2
  exit 1
}

# What a container runtime provides (/dev, /proc, /sys, /run, resolv.conf) or nobody needs.
find "$ROOTFS/dev" "$ROOTFS/proc" "$ROOTFS/sys" "$ROOTFS/run" "$ROOTFS/tmp" "$ROOTFS/var/tmp" \
  "$ROOTFS/var/lib/apt/lists" "$ROOTFS/var/cache/apt" "$ROOTFS/var/log" -mindepth 1 -delete
mkdir -p "$ROOTFS/var/lib/apt/lists/partial" "$ROOTFS/var/cache/apt/archives/partial"
: > "$ROOTFS/etc/resolv.conf"
chmod 1777 "$ROOTFS/tmp" "$ROOTFS/var/tmp"
rm -f "$ROOTFS.debootstrap.log" "$ROOTFS.apt.log"
echo "image: base ready ($(du -sh "$ROOTFS" | cut -f1))"
