#!/usr/bin/env bash
# Installs the Debian packages camflow and its tests use (ffmpeg, GStreamer, nginx, chromium, wrk;
# glib-networking: GStreamer's TLS for rtsps://, a recommends that --no-install-recommends skips).
# Idempotent: does nothing when everything is already there.
set -euo pipefail
pkgs=(ffmpeg gstreamer1.0-tools gstreamer1.0-rtsp gstreamer1.0-plugins-base gstreamer1.0-plugins-good
      gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav nginx chromium wrk
      openssl glib-networking iproute2 procps curl util-linux python3-gi gir1.2-gst-rtsp-server-1.0
      debootstrap umoci skopeo)  # the container image: scripts/image.sh builds it, tests/test_image.py reads it
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm installs hls.js for the edge's player page (make install); any node >= 18 with npm will do.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-system: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-system: done"
