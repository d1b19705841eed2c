#!/usr/bin/env bash
# A local three-node mesh in a temporary directory, serving the example app examples/hello.
#   bash bootstrap/demo.sh          builds mycel and the app, starts the mesh, deploys the app,
#                                   prints the curl line; Ctrl-C stops everything
#   bash bootstrap/demo.sh --check  the same, checks every node's gateway answers, stops, exits 0
# MYCEL_BIN=path/to/mycel skips the build.
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
[ "${1:-}" = "--check" ] && check=true

# Build output goes to a log file, named (with its last lines) only when a step fails.
build_log=$(mktemp -t mycel-demo-build.XXXXXX)
quietly() { # quietly WHAT COMMAND...
  echo "$1…"
  shift
  if ! "$@" >>"$build_log" 2>&1; then
    echo "failed; the last lines of $build_log:" >&2
    tail -20 "$build_log" >&2
    exit 1
  fi
}

if [ -z "${MYCEL_BIN:-}" ]; then
  # The process runtime's sandbox filter links libseccomp.
  if command -v dpkg >/dev/null 2>&1 && ! dpkg -s libseccomp-dev >/dev/null 2>&1; then
    sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    quietly "installing libseccomp-dev (the process sandbox's syscall filter links it)" \
      sh -c "$sudo apt-get update -qq && $sudo apt-get install -y -qq libseccomp-dev"
  fi
  quietly "building mycel (release, a few minutes the first time)" cargo build --release -p mycel
  MYCEL_BIN="${CARGO_TARGET_DIR:-target}/release/mycel"
fi

if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-wasip2; then
  quietly "adding the wasm32-wasip2 target (the example app is a wasm component)" \
    rustup target add wasm32-wasip2
fi
quietly "building the example app" bash examples/hello/build.sh
rm -f "$build_log"

work=$(mktemp -d -t mycel-demo.XXXXXX)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "${MYCEL_DEMO_KEEP:-}" ] || rm -rf "$work"
}
trap stop EXIT
trap 'exit 130' INT TERM

json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$1)" "$2"; } # json EXPR FILE

wait_for() { # wait_for FILE PID
  for _ in $(seq 1 300); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "mycel exited:"; tail -5 "$(dirname "$1")/log"; exit 1; }
    sleep 0.1
  done
  echo "timed out waiting for $1"; exit 1
}

start_node() { # start_node NAME [JOIN_TICKET]
  local dir="$work/$1"
  mkdir -p "$dir"
  # A private mesh (the default) speaks TCP only: QUIC cannot carry its secret.
  "$MYCEL_BIN" up --data-dir "$dir" --name "$1" \
    --listen /ip4/127.0.0.1/tcp/0 \
    --api 127.0.0.1:0 --gateway 127.0.0.1:0 ${2:+--join "$2"} \
    >"$dir/log" 2>&1 &
  pids+=($!)
  wait_for "$dir/node.json" $!
}

start_node node-1
# node-1 started a new private mesh; the others join with its ticket (node.json's "join", or
# `mycel join-ticket` against it).
ticket=$(json '["join"]' "$work/node-1/node.json")
start_node node-2 "$ticket"
start_node node-3 "$ticket"

api=$(json '["api"]' "$work/node-1/node.json")
echo "waiting for the three nodes to see each other…"
for _ in $(seq 1 100); do
  alive=$("$MYCEL_BIN" nodes --json --node "$api" | python3 -c 'import json,sys; print(sum(n["status"]=="alive" for n in json.load(sys.stdin)["nodes"]))')
  [ "$alive" = 3 ] && break
  sleep 0.1
done
"$MYCEL_BIN" nodes --node "$api"

echo "deploying examples/hello (two replicas) through node-2…"
api2=$(json '["api"]' "$work/node-2/node.json")
"$MYCEL_BIN" deploy --node "$api2" examples/hello/mycel.toml --wait --timeout 60
"$MYCEL_BIN" status --node "$api" hello

if $check; then
  for n in node-1 node-2 node-3; do
    gateway=$(json '["gateway"]' "$work/$n/node.json")
    body=$(curl -s -H 'Host: hello.localhost' "$gateway/")
    [ "$body" = "hello from mycel: hi" ] || { echo "gateway of $n answered: $body"; exit 1; }
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: nope.localhost' "$gateway/")
    [ "$code" = 404 ] || { echo "gateway of $n answered $code for an unknown app"; exit 1; }
    napi=$(json '["api"]' "$work/$n/node.json")
    seen=$("$MYCEL_BIN" nodes --json --node "$napi" | python3 -c 'import json,sys; print(sum(n["status"]=="alive" for n in json.load(sys.stdin)["nodes"]))')
    [ "$seen" = 3 ] || { echo "$n sees $seen alive nodes, not 3"; exit 1; }
  done
  echo "demo check passed: three nodes see each other and every gateway serves hello"
  exit 0
fi

gateway=$(json '["gateway"]' "$work/node-1/node.json")
cat <<MSG

A three-node mesh is running (data in $work), serving examples/hello.
  curl -H 'Host: hello.localhost' $gateway/
  mycel status --node $api hello
  mycel nodes --node $api
Press Ctrl-C to stop every node.
MSG
wait
