#!/usr/bin/env bash
# Reproduces the weight-activation tables of docs/results.md under protocol P (calibration: the first 128
# windows of 256 tokens of the calib text; evaluation: the first 100,352 tokens of the eval text in windows of
# 256): W8A8, W6A6 and W4A4 with symmetric per-channel weights and
#   dynamic: symmetric per-token activations, each method with float attention, 8-bit Q/K and 4-bit Q/K;
#   static:  symmetric per-tensor activations with calibrated min-max ranges (PaddleSlim's A8W8 form),
# on stories260K and babyllama-tok105.  Prints one JSON object per run (its "label" field first).
#   bash scripts/results_wa.sh [stories|babyllama|all] [dynamic|static|both]   (after scripts/main.sh built build/)
set -euo pipefail
cd "$(dirname "$0")/.."
S="${LOWBIT_SHARED:-../shared}"
which="${1:-all}"
modes="${2:-both}"
LOWBIT="${LOWBIT:-./build/examples/lowbit}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
methods=(
  "rtn|--method rtn"
  "smoothquant a0.5|--method smoothquant --alpha 0.5"
  "smoothquant a0.8|--method smoothquant --alpha 0.8"
  "shift+smoothquant a0.5|--method smoothquant --alpha 0.5 --shift"
  "pss|--method pss"
  "pss paddlenlp|--method pss --smooth-all-linears --search-piece"
  "shift+pss paddlenlp|--method pss --smooth-all-linears --search-piece --shift --shift-all-linears"
  "os+|--method os+"
  "awq|--method awq"
  "smoothquant a0.8+gptq|--method smoothquant+gptq --alpha 0.8"
)
table() {  # model-args...
  local name=$1
  shift
  "$LOWBIT" quantize --threads 2 --quiet --method rtn --spec w8a8-sym "$@" > "$tmp/fp.json"
  for spec in w8a8-sym w6a6-sym w4a4-sym; do
    for qk in none 8 4 static; do
      if [ "$qk" = static ] && [ "$modes" = dynamic ]; then continue; fi
      if [ "$qk" != static ] && [ "$modes" = static ]; then continue; fi
      for m in "${methods[@]}"; do
        label=${m%%|*}
        read -r -a args <<< "${m#*|}"
        extra=()
        if [ "$qk" = static ]; then extra=(--act-static); elif [ "$qk" != none ]; then extra=(--qk-bits "$qk"); fi
        out=$("$LOWBIT" quantize --threads 2 --quiet --spec "$spec" "${args[@]}" "${extra[@]}" --fp-eval-from "$tmp/fp.json" "$@")
        echo "{\"label\": \"$name $spec qk=$qk $label\", \"run\": $out}"
      done
    done
  done
}
if [ "$which" = all ] || [ "$which" = stories ]; then
  table stories260K --model "$S/models/stories260K/stories260K.bin" \
     --calib "$S/data/tinystories/tinystories_val.calib.txt" --calib-samples 128 --calib-seq-len 256 --calib-sampling sequential \
     --eval "$S/data/tinystories/tinystories_val.eval.txt" --eval-seq-len 256 --eval-max-tokens 100352 --json
fi
if [ "$which" = all ] || [ "$which" = babyllama ]; then
  table babyllama-tok105 --model "$S/models/babyllama-tok105/model5000.bin" \
     --calib "$S/data/tinystories/tinystories_val.calib.tok105.i32" --calib-samples 128 --calib-seq-len 256 --calib-sampling sequential \
     --eval "$S/data/tinystories/tinystories_val.eval.tok105.i32" --eval-seq-len 256 --eval-max-tokens 100352 --json
fi
