#!/usr/bin/env bash
# Builds the example's image without a registry and prints the path of its archive (the one
# mycel.toml names): a static musl binary, alone in a `FROM scratch` image tagged
# mycel-hello-container:1.0, written out with `docker save`.
# Needs the musl target (`rustup target add x86_64-unknown-linux-musl`) and a Docker engine.
set -euo pipefail
cd "$(dirname "$0")"

TARGET=x86_64-unknown-linux-musl
IMAGE=mycel-hello-container:1.0

if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$TARGET"; then
  echo "the $TARGET target is missing: run \`rustup target add $TARGET\`" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "no Docker engine answers (is dockerd running, and may this user use its socket?)" >&2
  exit 1
fi

# Its own target dir, whatever the caller's CARGO_TARGET_DIR, so the manifest's path holds.
# Pure-std Rust links statically with the toolchain's own musl: no musl-gcc needed.
CARGO_TARGET_DIR="$PWD/target" cargo build --release --locked --target "$TARGET" "$@" >&2

# A build context holding only the binary, so the engine is not sent target/; its own for each
# run, as are the archive's partial file, so builds running side by side (tests) do not collide.
mkdir -p target
context=$(mktemp -d "$PWD/target/image-context.XXXXXX")
partial="target/hello-container.tar.$$"
trap 'rm -rf "$context" "$partial"' EXIT
cp "target/$TARGET/release/hello-container" "$context/"
# The classic builder: it needs neither BuildKit nor buildx, and never pulls `scratch`.
DOCKER_BUILDKIT=0 docker build --quiet --file Dockerfile --tag "$IMAGE" "$context" >&2
# Written aside and renamed, so a reader never finds half an archive.
docker save --output "$partial" "$IMAGE"
mv "$partial" target/hello-container.tar
echo "$PWD/target/hello-container.tar"
