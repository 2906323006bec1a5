#!/usr/bin/env bash
# Reproduces docs/results.md under protocol P: calibration = the first 128 windows of 256 tokens of the calib
# text; evaluation = the first 100,352 tokens of the eval text in windows of 256.
#   stories260K (tok512 ids of the text): RTN / AWQ (fast scoring, the default) / AWQ (reference scoring, awq-ref) /
#     GPTQ / GPTQ+act_order / AWQ+GPTQ at W4 g32, W3 g32, W2 g32
#     (shorter last group for the 172-wide down projection), W4 and W3 per channel;
#   babyllama-tok105 (its reference .tok105.i32 ids): RTN / AWQ / AWQ reference scoring / GPTQ / AWQ+GPTQ at W4 g128,
#     W3 g128, W2 g64
#     (the 352-wide down projection: two groups of 128 and one of 96 at g128).
# Prints one JSON object per run.
#   bash scripts/results.sh [stories|babyllama]      (after scripts/main.sh has built build/)
set -euo pipefail
cd "$(dirname "$0")/.."
S="${LOWBIT_SHARED:-../shared}"
which="${1:-all}"
run() { "${LOWBIT:-./build/examples/lowbit}" quantize --threads 2 "$@"; }
if [ "$which" = all ] || [ "$which" = stories ]; then
  P=(--model "$S/models/stories260K/stories260K.bin"
     --calib "$S/data/tinystories/tinystories_val.calib.txt" --calib-samples 128 --calib-seq-len 256 --calib-sampling sequential
     --eval "$S/data/tinystories/tinystories_val.eval.txt" --eval-seq-len 256 --eval-max-tokens 100352 --json)
  for spec in "4 32" "3 32" "2 32" "4 -1" "3 -1"; do
    set -- $spec
    for method in rtn awq awq-ref gptq gptq-act awq+gptq; do
      extra=()
      m=$method
      if [ "$method" = gptq-act ]; then m=gptq; extra=(--act-order); fi
      if [ "$method" = awq-ref ]; then m=awq; extra=(--awq-scoring module); fi
      run --method "$m" --wbits "$1" --group "$2" --ragged "${extra[@]}" "${P[@]}"
    done
  done
fi
if [ "$which" = all ] || [ "$which" = babyllama ]; then
  B=(--model "$S/models/babyllama-tok105/model5000.bin"
     --calib "$S/data/tinystories/tinystories_val.calib.tok105.i32" --calib-samples 128 --calib-seq-len 256 --calib-sampling sequential
     --eval "$S/data/tinystories/tinystories_val.eval.tok105.i32" --eval-seq-len 256 --eval-max-tokens 100352 --json)
  for spec in "4 128" "3 128" "2 64"; do
    set -- $spec
    for method in rtn awq awq-ref gptq awq+gptq; do
      extra=()
      m=$method
      if [ "$method" = awq-ref ]; then m=awq; extra=(--awq-scoring module); fi
      run --method "$m" --wbits "$1" --group "$2" --ragged "${extra[@]}" "${B[@]}"
    done
  done
fi
