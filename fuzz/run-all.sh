#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30) on a scratch copy of its corpus, so the
# checked-in seeds stay as they are; a crash leaves its input in fuzz/artifacts/<target>/ and
# fails the script. Needs cargo-fuzz (`cargo install cargo-fuzz`); the stable toolchain runs it
# with RUSTC_BOOTSTRAP=1, as the sanitizer flags are nightly-only.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"
export RUSTC_BOOTSTRAP=1
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
targets=$(cargo fuzz list)
cargo fuzz build -O
for target in $targets; do
  mkdir -p "$scratch/$target"
  echo "== fuzz $target for ${seconds}s"
  if ! cargo fuzz run -O "$target" "$scratch/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$scratch/$target.log" 2>&1; then
    tail -n 60 "$scratch/$target.log"
    echo "fuzz target $target failed: its input is in fuzz/artifacts/$target/"
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|new_units_added)' "$scratch/$target.log" || true
done
