#!/usr/bin/env bash
# OmniQuant (LWC; LWC + LET for weight-activation) under protocol P (docs/results.md: calibration = the first 128
# windows of 256 tokens of the calib text; evaluation = the first 100,352 tokens of the eval text in windows of
# 256), beside RTN and AWQ at the same settings:
#   weight-only  stories260K W4 g32, W3 g32, W2 g32; babyllama-tok105 W4 g128, W3 g128, W2 g64 (20 epochs, as the
#                reference scripts; 40 + aug_loss at W2), asymmetric omniquant grid, ragged last group where a
#                group does not divide a row;
#   W-A          W8A8, W6A6, W4A4: symmetric per-channel weights, symmetric per-token activations (the rows of the
#                weight-activation table), LWC + LET, 20 epochs (W4A4 + aug_loss, as LLaMA-7B's script).
# Each OmniQuant row beside the AWQ -> OmniQuant workflow at its 5 epochs (--method awq+omniquant).
# Prints one JSON object per run (its "label" first; the run's train_loss holds each block's epoch losses).
#   bash scripts/results_omniquant.sh [stories|babyllama|all] [weight|wa|both] [weight bits, e.g. "2" or "4 3 2"]
# (after scripts/main.sh built build/)
set -euo pipefail
cd "$(dirname "$0")/.."
S="${LOWBIT_SHARED:-../shared}"
which="${1:-stories}"
modes="${2:-both}"
bits="${3:-4 3 2}"
LOWBIT="${LOWBIT:-./build/examples/lowbit}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() {  # label, then the arguments
  local label=$1
  shift
  echo "{\"label\": \"$label\", \"run\": $("$LOWBIT" quantize --threads 2 --quiet --fp-eval-from "$tmp/fp.json" "$@")}"
}
table() {  # name, the weight-only groups for W4 W3 W2, then the arguments
  local name=$1 groups=$2
  shift 2
  "$LOWBIT" quantize --threads 2 --quiet --method rtn --spec w4a16g32-ragged "$@" > "$tmp/fp.json"
  if [ "$modes" != wa ]; then
    local i=0
    for w in 4 3 2; do
      g=$(echo "$groups" | cut -d, -f$((i + 1)))
      i=$((i + 1))
      case " $bits " in *" $w "*) ;; *) continue ;; esac
      ep=20 aug=()
      if [ "$w" = 2 ]; then ep=40 aug=(--aug-loss); fi
      for m in rtn awq; do run "$name w${w}g$g $m" --method $m --wbits $w --group $g --ragged "$@"; done
      run "$name w${w}g$g omniquant lwc e$ep" --method omniquant --wbits $w --group $g --ragged --epochs $ep "${aug[@]}" "$@"
      run "$name w${w}g$g awq+omniquant lwc e5" --method awq+omniquant --wbits $w --group $g --ragged "${aug[@]}" "$@"
    done
  fi
  if [ "$modes" != weight ]; then
    for spec in w8a8-sym w6a6-sym w4a4-sym; do
      aug=()
      if [ "$spec" = w4a4-sym ]; then aug=(--aug-loss); fi
      run "$name $spec rtn" --method rtn --spec $spec "$@"
      run "$name $spec omniquant lwc+let e20" --method omniquant --spec $spec --let --epochs 20 "${aug[@]}" "$@"
      run "$name $spec awq+omniquant lwc+let e5" --method awq+omniquant --spec $spec --let "${aug[@]}" "$@"
    done
  fi
}
if [ "$which" = all ] || [ "$which" = stories ]; then
  table stories260K 32,32,32 --model "$S/models/stories260K/stories260K.bin" \
     --calib "$S/data/tinystories/tinystories_val.calib.txt" --calib-samples 128 --calib-seq-len 256 --calib-sampling sequential \
     --eval "$S/data/tinystories/tinystories_val.eval.txt" --eval-seq-len 256 --eval-max-tokens 100352 --json
fi
if [ "$which" = all ] || [ "$which" = babyllama ]; then
  table babyllama-tok105 128,128,64 --model "$S/models/babyllama-tok105/model5000.bin" \
     --calib "$S/data/tinystories/tinystories_val.calib.tok105.i32" --calib-samples 128 --calib-seq-len 256 --calib-sampling sequential \
     --eval "$S/data/tinystories/tinystories_val.eval.tok105.i32" --eval-seq-len 256 --eval-max-tokens 100352 --json
fi
