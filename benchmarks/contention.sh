#!/usr/bin/env bash
# lowbit quantize on a busy machine: OpenMP wait policies x competing busy loops (docs/benchmarks.md, "Threads
# on a shared machine").  Each configuration runs 3 times and prints its quant_seconds.
#   bash benchmarks/contention.sh [gptq|awq]        (after scripts/main.sh has built build/)
# The machine should be otherwise idle: the busy loops are the competing jobs.
set -euo pipefail
cd "$(dirname "$0")/.."
S="${LOWBIT_SHARED:-../shared}"
L="${LOWBIT:-./build/examples/lowbit}"
method="${1:-gptq}"
run() {  # label threads env...
  local label=$1 threads=$2
  shift 2
  for rep in 1 2 3; do
    env "$@" "$L" quantize --model "$S/models/babyllama-tok105/model5000.bin" \
      --calib "$S/data/tinystories/tinystories_val.calib.tok105.i32" --calib-samples 128 --calib-seq-len 256 \
      --calib-sampling sequential --method "$method" --wbits 4 --group 128 --ragged --json --quiet --threads "$threads" |
      grep -o '"quant_seconds":[0-9.]*' | sed "s/^/$label threads=$threads rep=$rep /"
  done
}
for hogs in 0 1 2; do
  pids=()
  for ((h = 0; h < hogs; h++)); do sh -c 'while :; do :; done' & pids+=($!); done
  sleep 0.5
  echo "== $method, $hogs competing busy loops"
  run libgomp-default 2 LOWBIT_NO_REEXEC=1          # OMP_WAIT_POLICY unset: spin 300,000 times, then sleep
  run spin10k 2 GOMP_SPINCOUNT=10000 LOWBIT_NO_REEXEC=1
  run spin100k 2 GOMP_SPINCOUNT=100000 LOWBIT_NO_REEXEC=1
  run passive 2 OMP_WAIT_POLICY=passive              # lowbit's default (the tool sets it unless it is set)
  run one-thread 1 LOWBIT_NO_REEXEC=1
  for p in "${pids[@]}"; do kill "$p"; done
  wait 2>/dev/null || true
done
