#!/usr/bin/env bash
# The recipe of lowbit's own model (models/kjv, models/README.md): the King James Bible from Debian's
# bible-kjv-text (public domain; read with the bible-kjv package's `bible` program), split by whole books, a BPE
# tokenizer and a LLaMA-architecture model trained from scratch by build/examples/lowbit-train.
#
#   bash examples/train_kjv.sh text OUT_TEXT_DIR          only the texts: train.txt, val.txt, calib.txt
#   bash examples/train_kjv.sh train OUT_MODEL_DIR [LOG_DIR] [extra lowbit-train options]
#
# Held out (val.txt, never trained on, never used for calibration): Ruth, Esther, Lamentations, Jonah, Mark,
# Philippians, Colossians, Jude -- narrative, poetry, a gospel and letters, 1,356 of the 31,102 verses.
# calib.txt: the Gospel of Luke, from the training part.  One verse per line, the reference ("Ge1:1") removed.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: train_kjv.sh text|train DIR ...}
dir=${2:?usage: train_kjv.sh text|train DIR ...}

make_texts() {
  local out=$1
  if ! command -v bible > /dev/null; then
    echo "train_kjv.sh: needs the King James Bible text: apt-get install bible-kjv (bible-kjv-text)" >&2
    exit 1
  fi
  mkdir -p "$out"
  local all
  all=$(mktemp)
  bible -f "Ge1:1-Rev22:21" > "$all"
  local held='^(Ruth|Est|Lam|Jonah|Mark|Phi|Col|Jude)[0-9]+:'
  grep -Ev "$held" "$all" | sed -E 's/^[0-9]?[A-Za-z]+[0-9]+:[0-9]+ //' > "$out/train.txt"
  grep -E "$held" "$all" | sed -E 's/^[0-9]?[A-Za-z]+[0-9]+:[0-9]+ //' > "$out/val.txt"
  grep -E '^Luke[0-9]+:' "$all" | sed -E 's/^[0-9]?[A-Za-z]+[0-9]+:[0-9]+ //' > "$out/calib.txt"
  rm -f "$all"
  if [ "$(wc -l < "$out/train.txt")" != 29746 ] || [ "$(wc -l < "$out/val.txt")" != 1356 ]; then
    echo "train_kjv.sh: unexpected verse counts (train $(wc -l < "$out/train.txt"), val $(wc -l < "$out/val.txt")):" \
         "a different bible-kjv-text?" >&2
    exit 1
  fi
}

case "$mode" in
  text) make_texts "$dir" ;;
  train)
    logs=${3:-$dir.logs}
    shift 3 || shift $#
    texts=$(mktemp -d)
    make_texts "$texts"
    [ -x build/examples/lowbit-train ] || cmake --build build --target lowbit_train
    mkdir -p "$logs"
    build/examples/lowbit-train --train "$texts/train.txt" --val "$texts/val.txt" --out "$dir" \
      --vocab 2048 --dim 256 --hidden 640 --layers 4 --heads 8 --kv-heads 4 --seq-len 256 --batch 16 \
      --tokens 5000000 --lr 2e-3 --min-lr 2e-4 --warmup 100 --weight-decay 0.1 --clip 1 --seed 1 --eval-every 100 \
      --log "$logs/train_log.csv" --plot "$logs/training_curve.svg" "$@"
    rm -rf "$texts"
    ;;
  *) echo "train_kjv.sh: mode is text or train, not '$mode'" >&2; exit 2 ;;
esac
