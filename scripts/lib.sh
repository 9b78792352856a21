# Shared by scripts/kafka.sh, minio.sh and helm.sh (sourced, not run).
# Every function takes the calling tool's NAME for its messages.

# True when the PID in PIDFILE is alive AND its command line contains MARKER
# (guards against a recycled PID).   pid_running PIDFILE MARKER
pid_running() {
  [ -f "$1" ] || return 1
  local pid; pid="$(cat "$1" 2>/dev/null)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$2"
}

# True when something accepts TCP connections on 127.0.0.1:PORT.   port_open PORT
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Exit 1 when one of the PORTs is taken by a process this script did not start.
#   ports_free NAME HINT PORT...
ports_free() {
  local name="$1" hint="$2" p; shift 2
  for p in "$@"; do
    if port_open "$p"; then
      echo "$name: port 127.0.0.1:$p is already in use by another process (not started by this script);" \
        "stop it or set $hint" >&2
      exit 1
    fi
  done
}

# SIGTERM the PID in PIDFILE, wait up to TRIES x STEP seconds, then SIGKILL; remove PIDFILE.
#   stop_pid NAME PIDFILE TRIES STEP
stop_pid() {
  local name="$1" pidfile="$2" tries="$3" step="$4" pid
  pid="$(cat "$pidfile")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 "$tries"); do kill -0 "$pid" 2>/dev/null || break; sleep "$step"; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name: pid $pid ignored SIGTERM; SIGKILL" >&2
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  echo "$name: stopped"
}

# `go install MODULE@VERSION` once into BIN (its directory is created; the Go module and build
# caches live under CACHE/go). One build at a time: a second caller waits for the first and
# then finds the binary. BIN never exists half-written (built into a scratch GOBIN, renamed).
#   go_install_cached NAME MODULE VERSION BIN CACHE
go_install_cached() {
  local name="$1" module="$2" version="$3" bin="$4" cache="$5"
  if [ -x "$bin" ]; then return 0; fi
  if ! command -v go >/dev/null 2>&1; then
    echo "$name: needs the Go toolchain (go) on PATH to build it with go install" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$bin")"
  exec 9>"$(dirname "$bin")/../.install.lock"
  if ! flock -n 9; then
    echo "$name: another build of $version is running; waiting for it"
    flock 9
  fi
  if [ -x "$bin" ]; then exec 9>&-; return 0; fi
  echo "$name: building $module@$version with go install (takes a few minutes once)"
  local tmpbin; tmpbin="$(mktemp -d "$(dirname "$bin")/../gobin.XXXXXX")"
  if ! GOBIN="$tmpbin" GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS=-mod=mod \
      go install "$module@$version"; then
    rm -rf "$tmpbin"; echo "$name: go install failed" >&2; exit 1
  fi
  mv -f "$tmpbin/$(basename "$bin")" "$bin"
  rm -rf "$tmpbin"
  exec 9>&-
}

# A test certificate authority in DIR (ca.crt, ca.key), made once: kept while ca.crt exists, so
# clients that trust DIR/ca.crt keep trusting it across restarts. For test brokers and stores
# only (30 days, EC P-256, openssl from Debian).   tls_ca NAME DIR
tls_ca() {
  local name="$1" dir="$2"
  [ -f "$dir/ca.crt" ] && [ -f "$dir/ca.key" ] && return 0
  mkdir -p "$dir"; chmod 700 "$dir"
  command -v openssl >/dev/null 2>&1 || { echo "$name: needs openssl to make test certificates" >&2; exit 1; }
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=camflow test $name CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>"$dir/openssl.log" || { echo "$name: openssl could not make the CA; see $dir/openssl.log" >&2; exit 1; }
  chmod 600 "$dir/ca.key"
}

# A certificate signed by DIR's CA: DIR/LEAF.crt and DIR/LEAF.key (unencrypted PKCS#8), for
# 127.0.0.1 and localhost, usable by a server and a client.   tls_leaf NAME DIR LEAF CN
tls_leaf() {
  local name="$1" dir="$2" leaf="$3" cn="$4" ext
  ext="$(mktemp)"
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth,clientAuth" \
    "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid:always" >"$ext"
  if ! { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$cn" \
          -keyout "$dir/$leaf.key" -out "$dir/$leaf.csr" &&
        openssl x509 -req -in "$dir/$leaf.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
          -days 30 -extfile "$ext" -out "$dir/$leaf.crt"; } 2>"$dir/openssl.log"; then
    rm -f "$ext"; echo "$name: openssl could not make $leaf.crt; see $dir/openssl.log" >&2; exit 1
  fi
  rm -f "$ext" "$dir/$leaf.csr"
  chmod 600 "$dir/$leaf.key"
}
