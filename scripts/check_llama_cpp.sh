#!/usr/bin/env bash
# lowbit's GGUF files in llama.cpp's own tools (docs/results.md, "The same files in llama.cpp's own tools").
# Needs a llama.cpp build that you made yourself (this script neither fetches nor builds it): LLAMA_CPP_BIN is the
# folder holding llama-perplexity, llama-quantize and llama-imatrix (and their shared libraries).
#   LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin bash scripts/check_llama_cpp.sh stories|babyllama [FILE.gguf ...]
# Prints the F32 model, llama.cpp's own Q4_0 / Q4_1 (and for stories260K, where llama.cpp refuses those, Q4_K_S /
# Q4_K_M) with and without an importance matrix from the calibration text, then each FILE given (e.g. the files of
# scripts/results_gguf.sh): size, llama-perplexity (-c 256, 392 chunks) and lowbit eval under the same rule.
# babyllama-tok105's vocabulary has no newline and no byte tokens and llama.cpp's tokenizer aborts on characters it
# cannot map, so for it both texts are used with newlines as spaces and the unmapped characters dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
S="${LOWBIT_SHARED:-../shared}"
B="${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN to the folder of your llama.cpp build (llama-perplexity, llama-quantize, llama-imatrix)}"
LOWBIT="${LOWBIT:-./build/examples/lowbit}"
O="${OUT:-build/llama_cpp_check}"
export LD_LIBRARY_PATH="$B${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
model=${1:?stories or babyllama}
shift
mkdir -p "$O"
EV=$S/data/tinystories/tinystories_val.eval.txt
CA=$S/data/tinystories/tinystories_val.calib.txt
if [ "$model" = stories ]; then
  "$LOWBIT" convert --quiet --model "$S/models/stories260K/stories260K.bin" --save-gguf "$O/$model-f32.gguf" --gguf-type f32 > /dev/null
  types="Q4_0 Q4_1 Q4_K_S Q4_K_M"
elif [ "$model" = babyllama ]; then
  for n in eval calib; do
    python3 -c 'import sys
t = open(sys.argv[1], encoding="utf-8").read().replace("\n", " ")
vocab = "".join(l.split("\t")[0] for l in open(sys.argv[3], encoding="utf-8"))
open(sys.argv[2], "w", encoding="utf-8").write("".join(c for c in t if c == " " or c in vocab))' \
      "$S/data/tinystories/tinystories_val.$n.txt" "$O/$n-tok105.txt" "$S/models/babyllama-tok105/tok105.vocab"
  done
  EV=$O/eval-tok105.txt CA=$O/calib-tok105.txt
  "$LOWBIT" convert --quiet --model "$S/models/babyllama-tok105/model5000.bin" --tokenizer "$S/models/babyllama-tok105/tok105.vocab" \
    --save-gguf "$O/$model-f32.gguf" --gguf-type f32 > /dev/null
  types="Q4_0 Q4_1"
else
  echo "check_llama_cpp.sh: unknown model '$model' (stories or babyllama)" >&2
  exit 2
fi
ppl() { "$B/llama-perplexity" -m "$1" -f "$EV" -c 256 --chunks 392 -b 256 -t "$(nproc)" 2>&1 | grep -o "Final estimate: PPL = [0-9.]*" | awk '{print $5}'; }
# lowbit eval under llama-perplexity's rule; "--" for a file lowbit cannot read (llama.cpp's Q5_0 fallbacks)
lev() { "$LOWBIT" eval --quiet --model "$1" --data "$EV" --seq-len 256 --scoring llama-perplexity --max-tokens 100352 --json \
          2> /dev/null | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["ppl"], 4))' 2> /dev/null || echo "--"; }
line() { printf '%-44s %9s bytes  llama-perplexity %s  lowbit eval %s\n' "$1" "$(stat -c %s "$2")" "$(ppl "$2")" "$(lev "$2")"; }
line "$model F32" "$O/$model-f32.gguf"
[ -f "$O/$model-imatrix.dat" ] || "$B/llama-imatrix" -m "$O/$model-f32.gguf" -f "$CA" -c 256 --chunks 128 \
  -o "$O/$model-imatrix.dat" > "$O/$model-imatrix.log" 2>&1
for t in $types; do
  for im in plain imatrix; do
    f=$O/$model-llama-$im-$t.gguf
    args=()
    [ "$im" = imatrix ] && args=(--imatrix "$O/$model-imatrix.dat")
    if "$B/llama-quantize" "${args[@]}" "$O/$model-f32.gguf" "$f" "$t" > "$f.log" 2>&1; then
      line "llama.cpp $t ($im)" "$f"
    else
      echo "llama.cpp $t ($im): llama-quantize refused: $(grep -a -m1 -o 'tensor cols.*' "$f.log" || tail -1 "$f.log")"
    fi
  done
done
for f in "$@"; do line "$(basename "$f")" "$f"; done
