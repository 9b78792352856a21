#!/usr/bin/env bash
# helm, built from source with `go install` into the cache (reused when present), for the chart checks.
#   scripts/helm.sh install   build it once (a few minutes), print nothing else when it is there
#   scripts/helm.sh path      print the binary's path (exit 1 when it is not built)
# Env: HELM_VERSION (v3.21.4), CAMFLOW_CACHE (~/.cache/camflow).
# tests/test_helm_chart.py finds the binary at $CAMFLOW_HELM, else at this path, else on PATH.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
CACHE="${CAMFLOW_CACHE:-$HOME/.cache/camflow}"
BIN="$CACHE/helm-$HELM_VERSION/bin/helm"
# shellcheck source=scripts/lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

install() {
  if [ -x "$BIN" ]; then return 0; fi
  go_install_cached helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "$BIN" "$CACHE"
  "$BIN" version --short
}

case "${1:-}" in
  install) install ;;
  path) if [ -x "$BIN" ]; then echo "$BIN"; else echo "helm: not built; run scripts/helm.sh install" >&2; exit 1; fi ;;
  *) echo "usage: $0 install|path" >&2; exit 2 ;;
esac
