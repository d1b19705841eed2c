#!/usr/bin/env bash
# Builds the example component and prints the path of its .wasm (the module mycel.toml names).
# Needs the wasm32-wasip2 target: `rustup target add wasm32-wasip2`.
set -euo pipefail
cd "$(dirname "$0")"

if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "the wasm32-wasip2 target is missing: run \`rustup target add wasm32-wasip2\`" >&2
  exit 1
fi

# Its own target dir, whatever the caller's CARGO_TARGET_DIR, so the manifest's path holds.
CARGO_TARGET_DIR="$PWD/target" cargo build --release --locked --target wasm32-wasip2 "$@" >&2
echo "$PWD/target/wasm32-wasip2/release/hello.wasm"
