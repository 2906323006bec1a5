#!/usr/bin/env bash
# Reproduces docs/results.md: stories260K under protocol P (calibration = the first 128 windows of 256 tokens
# of tinystories_val.calib.txt; evaluation = the first 100,352 tokens of tinystories_val.eval.txt in windows of
# 256), RTN / AWQ / GPTQ / GPTQ+act_order at W4 g32, W3 g32, W2 g32 (shorter last group for the 172-wide
# down projection), W4 and W3 per channel.  Prints one JSON object per run.
#   bash scripts/results.sh            (after scripts/main.sh has built build/)
set -euo pipefail
cd "$(dirname "$0")/.."
S="${LOWBIT_SHARED:-../shared}"
P=(--model "$S/models/stories260K/stories260K.bin"
   --calib "$S/data/tinystories/tinystories_val.calib.txt" --nsamples 128 --seqlen 256 --calib-sampling sequential
   --eval "$S/data/tinystories/tinystories_val.eval.txt" --eval-seq-len 256 --eval-max-tokens 100352 --json)
for spec in "4 32" "3 32" "2 32" "4 -1" "3 -1"; do
  set -- $spec
  for method in rtn awq gptq gptq-act; do
    extra=()
    m=$method
    if [ "$method" = gptq-act ]; then m=gptq; extra=(--act-order); fi
    ./build/examples/lowbit quantize --method "$m" --wbits "$1" --group "$2" --ragged "${extra[@]}" "${P[@]}"
  done
done
