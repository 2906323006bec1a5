#!/usr/bin/env bash
# GGUF exports for llama.cpp (docs/results.md, "GGUF for llama.cpp"): each method at W4 written as Q4_0
# (symmetric grid) and Q4_1 (asymmetric), with --save-gguf; then the file itself evaluated by `lowbit eval`
# (protocol P's evaluation: the first 100,352 tokens of the eval text in windows of 256), its size, and the
# export's own report (which linears hold the method's codes).
#   stories260K W4 g32 on each method's reference grid and on llama.cpp's grids (--grid ggml: Q4_0 d = max / -8,
#   Q4_1 d = (max - min) / 15, m = min), the 172-wide FFN rows ragged: F16 in the file, of the method's weights, and
#   with --gguf-fallback float of the float weights as llama.cpp's fallback; babyllama-tok105 W4 g32 on llama.cpp's
#   grids; every row is whole blocks.
#   llama.cpp's own RTN is `lowbit convert --gguf-type q4_0|q4_1` (its reference quantizers, bit for bit; a row that
#   is not whole blocks stays F16 of the float weights there, as llama.cpp does);
#   AWQ, GPTQ, AWQ+GPTQ on the grid of the table; awq+omniquant (5 epochs) on the minmax grid (symmetric
#   OmniQuant's own grid has z = 2^(b-1) - 1, no Q4_0).  Calibration as protocol P.
# Prints one line per file: model, method, type, ppl of the method's fake-quantized model (quantize --eval), ppl of
# the GGUF as lowbit eval reads it, the file's size, the linears stored as codes / re-quantized / F16.
#   bash scripts/results_gguf.sh [stories|babyllama|all] [output folder]      (after scripts/main.sh built build/)
set -euo pipefail
cd "$(dirname "$0")/.."
S="${LOWBIT_SHARED:-../shared}"
which="${1:-all}"
out="${2:-build/gguf}"
LOWBIT="${LOWBIT:-./build/examples/lowbit}"
mkdir -p "$out"
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
one() {  # name, model args..., -- , method, type, quantize args...
  local name=$1 method=$2 type=$3
  shift 3
  local f="$out/$name-${method//+/_}-$type${GRID:+-$GRID}${FALLBACK:+-$FALLBACK}.gguf" sym=()
  [ "$type" = q4_0 ] && sym=(--sym)
  "$LOWBIT" quantize --threads 2 --quiet --method "$method" "${sym[@]}" "$@" --save-gguf "$f" --gguf-type "$type" \
    --json > "$f.quantize.json"
  local data=("${EVAL[@]}")
  "$LOWBIT" eval --threads 2 --quiet --model "$f" "${data[@]}" --seq-len 256 --max-tokens 100352 --json > "$f.eval.json"
  printf '%-10s %-14s %-5s %-9s%s fake-quant %s  gguf %s  %s bytes  codes/requant/f16 %s/%s/%s\n' "$name" "$method" "$type" "${GRID:-}" "${FALLBACK:+ ($FALLBACK fallback)}" \
    "$(field "$f.quantize.json" 'round(d["ppl_quant"], 4)')" "$(field "$f.eval.json" 'round(d["ppl"], 4)')" \
    "$(stat -c %s "$f")" \
    "$(field "$f.quantize.json" 'd["outputs"]["gguf"]["linears_codes"]')" \
    "$(field "$f.quantize.json" 'd["outputs"]["gguf"]["linears_requantized"]')" \
    "$(field "$f.quantize.json" 'd["outputs"]["gguf"]["linears_f16"]')"
}
table() {  # name, group, grid ("reference": each method's own; "ggml": llama.cpp's grids), then the model / data
  local name=$1 g=$2 grid=$3
  shift 3
  local how=()
  [ "$grid" = ggml ] && how=(--grid ggml)
  for type in q4_0 q4_1; do
    GRID=$grid one "$name" awq "$type" --wbits 4 --group "$g" "${how[@]}" "$@"
    GRID=$grid one "$name" gptq "$type" --wbits 4 --group "$g" "${how[@]}" "$@"
    GRID=$grid one "$name" awq+gptq "$type" --wbits 4 --group "$g" "${how[@]}" "$@"
    [ "$grid" = ggml ] && [ "$name" = stories ] && continue  # the same OmniQuant rows as the reference table
    GRID=$grid one "$name" awq+omniquant "$type" --wbits 4 --group "$g" --grid minmax "$@"  # OmniQuant trains on minmax / omniquant
  done
}
calib() { echo --calib "$1" --calib-samples 128 --calib-seq-len 256 --calib-sampling sequential; }
if [ "$which" = all ] || [ "$which" = stories ]; then
  EVAL=(--data "$S/data/tinystories/tinystories_val.eval.txt")
  # the float model as GGUF: F32, and how llama-perplexity scores it (llama.cpp measured 5.5686 at 256)
  "$LOWBIT" convert --threads 2 --quiet --model "$S/models/stories260K/stories260K.bin" --save-gguf "$out/stories-f32.gguf" \
    --gguf-type f32 > /dev/null
  for scoring in all llama-perplexity; do
    printf 'stories    F32 GGUF, --scoring %-17s ppl %s\n' "$scoring" "$("$LOWBIT" eval --threads 2 --quiet \
      --model "$out/stories-f32.gguf" "${EVAL[@]}" --seq-len 256 --scoring "$scoring" --json | \
      python3 -c 'import json,sys; print(round(json.load(sys.stdin)["ppl"], 4))')"
  done
  for type in q4_0 q4_1; do
    "$LOWBIT" convert --threads 2 --quiet --model "$S/models/stories260K/stories260K.bin" --save-gguf "$out/stories-rtn-$type.gguf" \
      --gguf-type "$type" > /dev/null
    printf 'stories    llama.cpp RTN  %-5s gguf %s  %s bytes\n' "$type" "$("$LOWBIT" eval --threads 2 --quiet \
      --model "$out/stories-rtn-$type.gguf" "${EVAL[@]}" --seq-len 256 --max-tokens 100352 --json | \
      python3 -c 'import json,sys; print(round(json.load(sys.stdin)["ppl"], 4))')" "$(stat -c %s "$out/stories-rtn-$type.gguf")"
  done
  for grid in reference ggml; do
    # shellcheck disable=SC2046
    table stories 32 "$grid" --ragged --model "$S/models/stories260K/stories260K.bin" \
      $(calib "$S/data/tinystories/tinystories_val.calib.txt") --eval "${EVAL[1]}" --eval-seq-len 256 --eval-max-tokens 100352
  done
  # the 172-wide FFN rows as llama.cpp's own fallback holds them: F16 of the float weights (--gguf-fallback float)
  for type in q4_0 q4_1; do
    for method in gptq awq+gptq; do
      # shellcheck disable=SC2046
      GRID=ggml FALLBACK=float one stories "$method" "$type" --wbits 4 --group 32 --ragged --grid ggml --gguf-fallback float \
        --model "$S/models/stories260K/stories260K.bin" $(calib "$S/data/tinystories/tinystories_val.calib.txt") \
        --eval "${EVAL[1]}" --eval-seq-len 256 --eval-max-tokens 100352
    done
  done
fi
if [ "$which" = all ] || [ "$which" = babyllama ]; then
  EVAL=(--data "$S/data/tinystories/tinystories_val.eval.tok105.i32")
  for type in q4_0 q4_1; do
    "$LOWBIT" convert --threads 2 --quiet --model "$S/models/babyllama-tok105/model5000.bin" \
      --tokenizer "$S/models/babyllama-tok105/tok105.vocab" --save-gguf "$out/babyllama-rtn-$type.gguf" --gguf-type "$type" > /dev/null
    printf 'babyllama  llama.cpp RTN  %-5s gguf %s  %s bytes\n' "$type" "$("$LOWBIT" eval --threads 2 --quiet \
      --model "$out/babyllama-rtn-$type.gguf" "${EVAL[@]}" --seq-len 256 --max-tokens 100352 --json | \
      python3 -c 'import json,sys; print(round(json.load(sys.stdin)["ppl"], 4))')" "$(stat -c %s "$out/babyllama-rtn-$type.gguf")"
  done
  # shellcheck disable=SC2046
  # groups of 32 on llama.cpp's own grids (Q4_0: d = max / -8; Q4_1: d = (max - min) / 15, m = min): the file's
  # blocks are 32 wide whatever the method's group, so that is what the same bytes can hold
  table babyllama 32 ggml --model "$S/models/babyllama-tok105/model5000.bin" --tokenizer "$S/models/babyllama-tok105/tok105.vocab" \
    $(calib "$S/data/tinystories/tinystories_val.calib.tok105.i32") --eval "${EVAL[1]}" --eval-seq-len 256 --eval-max-tokens 100352
fi
