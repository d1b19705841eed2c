#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after the other, and prints a table:
# target, executions, executions per second, result.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]
#
# cargo-fuzz drives libFuzzer with nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain
# take them. Builds go to ~/.cache/mycel/fuzz-target (never the workspace's target dir); each
# target's working corpus, logs and crash artifacts to ~/.cache/mycel/fuzz/. The committed corpus
# (tests/fuzz/corpus/<target>/) is read, never written: an input worth keeping (a crash that was
# fixed) is copied there by hand, and `tests/tests/fuzz_corpus.rs` replays it in CI.
#
# A target fails on a panic, an abort, a leak or memory error (AddressSanitizer), an input that
# takes over 10 s, more than 2 GiB of memory, or one allocation over 512 MiB.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
shift || true
export RUSTC_BOOTSTRAP=1
target_dir="${MYCEL_FUZZ_TARGET_DIR:-$HOME/.cache/mycel/fuzz-target}"
work="${MYCEL_FUZZ_WORK:-$HOME/.cache/mycel/fuzz}"
sanitizer="${MYCEL_FUZZ_SANITIZER:-address}"

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir .)
fi

# Built once, then run as built: `cargo fuzz run` would rebuild whatever changed in between.
echo "building ${#targets[@]} targets (sanitizer: $sanitizer)"
cargo fuzz build --fuzz-dir . --target-dir "$target_dir" --sanitizer "$sanitizer"
bin_dir="$target_dir/$(rustc -vV | awk '/^host:/ {print $2}')/release"

rows=()
failed=0
for target in "${targets[@]}"; do
  corpus="$work/corpus/$target"
  artifacts="$work/artifacts/$target"
  log="$work/$target.log"
  mkdir -p "$corpus" "$artifacts"
  echo "fuzzing $target for ${seconds} s"
  status=0
  "$bin_dir/$target" "$corpus" "corpus/$target" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -1)
  rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log" | tail -1)
  found=$(grep -Eo '(crash|leak|oom|timeout|slow-unit)-[0-9a-f]+' "$log" | head -1 || true)
  if [ "$status" -eq 0 ] && [ -z "$found" ]; then
    result="ok"
  else
    result="FAILED ${found:-exit $status} (see $log)"
    failed=1
  fi
  rows+=("$(printf '%-16s %14s %10s   %s' "$target" "${runs:-?}" "${rate:-?}" "$result")")
done

echo
printf '%-16s %14s %10s   %s\n' target executions exec/s result
for row in "${rows[@]}"; do
  echo "$row"
done
exit "$failed"
