#!/usr/bin/env bash
# Interleaved A/B benchmark of two builds on this machine: for each round, A then B, the queue
# alone (`queue_bench` at concurrency 50, single and bulk adds, then paced at 1,000 jobs/s) and
# the chat end to end (`loadgen --rate 5000` against that build's server). The load generator
# is A's for both sides, so only the server differs. One tagged JSON line per run.
#
#   scripts/ab-bench.sh DIR_A DIR_B [ROUNDS] [SECONDS]
#
# Each DIR holds `courier`, `queue_bench` and `loadgen` (e.g. target/release and
# target/release/examples copied side by side).
set -euo pipefail
a="$1"; b="$2"; rounds="${3:-2}"; seconds="${4:-20}"
loadgen="$a/loadgen"
ulimit -n 20000 || true

chat_run() {
  local dir="$1" tag="$2" data port pid
  data="$(mktemp -d)"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  RATE_LIMIT_AUTH=0 RATE_LIMIT_SEND=0 ARGON2_MEMORY_KIB=8 ARGON2_ITERATIONS=1 \
    RUST_LOG=warn BIND_ADDR=127.0.0.1 PORT="$port" DATA_DIR="$data" "$dir/courier" >"$data.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.05
  done
  "$loadgen" --url "http://127.0.0.1:$port" --server-pid "$pid" --rate 5000 --duration-secs "$seconds" \
    | sed "s/^/$tag chat5000 /"
  kill "$pid"; wait "$pid" || true
  rm -rf "$data" "$data.log"
}

for round in $(seq "$rounds"); do
  for side in A B; do
    if [ "$side" = A ]; then dir="$a"; else dir="$b"; fi
    tag="$side r$round"
    "$dir/queue_bench" --concurrency 50 | sed "s/^/$tag queue /"
    "$dir/queue_bench" --concurrency 50 --rate 1000 | sed "s/^/$tag queue-paced /"
    chat_run "$dir" "$tag"
  done
done
