#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine, then runs every check
# (format, lints, unit and multi-node tests, the demo). `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# One target dir outside the clone, reused between runs: a clean build is minutes, a warm one seconds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mycel/target}"
mkdir -p "$CARGO_TARGET_DIR"
# Incremental caches only help edit-compile loops, and take gigabytes a clean clone never reuses.
export CARGO_INCREMENTAL=0
# A full disk fails a link with "Bus error", not with a word about space: make room first.
free_gb() { df -BG --output=avail "$CARGO_TARGET_DIR" | tail -1 | tr -dc 0-9; }
# Test and bin executables (~280 MB each) are most of the target dir, and every rebuild leaves
# the last ones behind under new hashes. Of each name, keep the newest and whatever was built in
# the last two hours (this run's); cargo relinks anything it still wants.
deps="$CARGO_TARGET_DIR/debug/deps"
if [ -d "$deps" ]; then
  find "$deps" -maxdepth 1 -type f -perm -u+x -regextype posix-extended -regex '.*-[0-9a-f]{16}' \
    -printf '%T@ %p\n' |
    sort -rn |
    awk -v recent="$(($(date +%s) - 7200))" '{
      name = $2; sub(/-[0-9a-f]+$/, "", name)
      if (seen[name]++ && $1 < recent) print $2
    }' | xargs -r rm -f
fi
if [ "$(free_gb)" -lt 15 ]; then
  echo "only $(free_gb) GB free: removing incremental caches and release builds from $CARGO_TARGET_DIR"
  rm -rf "$CARGO_TARGET_DIR/debug/incremental" "$CARGO_TARGET_DIR/release"
fi
if [ "$(free_gb)" -lt 10 ]; then
  echo "still only $(free_gb) GB free: cleaning $CARGO_TARGET_DIR"
  cargo clean
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=
need_package() { # need_package COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

need_deb() { # need_deb PACKAGE: a package with no command to look for (a library)
  dpkg -s "$1" >/dev/null 2>&1 && return
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

# The process runtime: libseccomp to build the sandbox's syscall filter, newuidmap, setpriv, and
# a subordinate id range for root, which sandboxed apps run as.
need_deb libseccomp-dev
need_package newuidmap uidmap
need_package setpriv util-linux
for ids in /etc/subuid /etc/subgid; do
  grep -qs '^root:' "$ids" || echo 'root:100000:65536' | as_root tee -a "$ids" >/dev/null
done

# Volumes: ext4 file systems in files, loop-mounted and frozen for snapshots.
need_package mkfs.ext4 e2fsprogs
need_package fsfreeze util-linux
need_package nsenter util-linux

# Debian's Chromium: the dashboard's test drives it headless over the DevTools protocol.
need_package chromium chromium

# promtool (Debian's prometheus package, its server not started) checks /metrics' text format.
if ! command -v promtool >/dev/null 2>&1; then
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# openapi-spec-validator (PyPI) checks the API's live OpenAPI document, from a venv of its own.
venv="$HOME/.cache/mycel/venv"
if [ ! -x "$venv/bin/openapi-spec-validator" ]; then
  python3 -m venv "$venv" 2>/dev/null || { need_deb python3-venv; python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q openapi-spec-validator
fi

# A Docker engine, so the node's runtime detection is tested against a real one.
need_package curl curl
need_package python3 python3
need_package dockerd docker.io
if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd"
  as_root sh -c 'nohup dockerd >/var/log/mycel-ci-dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start"; tail -20 /var/log/mycel-ci-dockerd.log; exit 1; }
fi

command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# The wasm runtime's tests build examples/hello, a wasi:http component, for wasm32-wasip2; the
# container tests build examples/hello-container, a static binary in a `FROM scratch` image.
for target in wasm32-wasip2 x86_64-unknown-linux-musl; do
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
done

echo "== format"
cargo fmt --all -- --check
echo "== lints"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build"
cargo build --workspace --all-targets --locked
echo "== tests"
cargo nextest run --workspace --locked --no-fail-fast
echo "== service unit"
# bootstrap/mycel.service as systemd reads it (with the binary just built) and its exposure.
need_package systemd-analyze systemd
unit_dir=$(mktemp -d)
sed "s|^ExecStart=/usr/local/bin/mycel|ExecStart=$CARGO_TARGET_DIR/debug/mycel|" \
  bootstrap/mycel.service >"$unit_dir/mycel.service"
systemd-analyze verify "$unit_dir/mycel.service"
systemd-analyze security --offline=true --threshold=60 "$unit_dir/mycel.service" | tail -1
rm -rf "$unit_dir"
echo "== demo"
MYCEL_BIN="$CARGO_TARGET_DIR/debug/mycel" bash bootstrap/demo.sh --check
