#!/usr/bin/env bash
# lowbit's own model (models/kjv; docs/results.md, "lowbit's own model"): every weight-only method at W4 g128,
# W3 g128 and W2 g64 on the held-out books (models/kjv-text/val.txt, all 50,044 tokens in windows of 256),
# calibrated on 128 windows of 256 of the Gospel of Luke (sequential), each method on its reference grid.
# OmniQuant at the reference scripts' epochs (20; 40 at W2, with aug_loss) beside AWQ-initialised OmniQuant at 5
# (awq+omniquant: both steps in one command); the seconds each took.
#   bash scripts/results_own.sh [output folder]      (after scripts/main.sh built build/)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-build/own}"
LOWBIT="${LOWBIT:-./build/examples/lowbit}"
mkdir -p "$out"
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
common=(--model models/kjv --calib models/kjv-text/calib.txt --calib-samples 128 --calib-seq-len 256
        --calib-sampling sequential --eval models/kjv-text/val.txt --eval-seq-len 256 --threads 2 --quiet --json)
"$LOWBIT" eval --model models/kjv --data models/kjv-text/val.txt --seq-len 256 --json --quiet > "$out/fp.json"
printf '%-9s %-24s %9s %8s\n' spec method ppl seconds
printf '%-9s %-24s %9.4f\n' fp32 - "$(field "$out/fp.json" 'd["ppl"]')"
for spec in "4 128" "3 128" "2 64"; do
  set -- $spec
  b=$1 g=$2
  long=20 aug=()
  [ "$b" = 2 ] && long=40 aug=(--aug-loss)
  for m in rtn awq gptq awq+gptq "omniquant $long" "awq+omniquant 5"; do
    set -- $m
    method=$1 extra=()
    [ -n "${2:-}" ] && extra=(--epochs "$2")
    [ "$method" = omniquant ] && extra+=("${aug[@]}")
    f="$out/w${b}g${g}-${method//+/_}.json"
    "$LOWBIT" quantize "${common[@]}" --no-fp-eval --method "$method" --wbits "$b" --group "$g" "${extra[@]}" > "$f"
    printf '%-9s %-24s %9.4f %8.1f\n' "w${b}g${g}" "$method${2:+ ($2 ep)}" "$(field "$f" 'd["ppl_quant"]')" \
      "$(field "$f" 'd["seconds"]["total"]')"
  done
done
