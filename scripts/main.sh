#!/usr/bin/env bash
# The main job: set up, build (Release), run the quantizer demo, then -- when the shared real data is
# present ($LOWBIT_SHARED, default ../shared) -- evaluate stories260K's perplexity with `lowbit eval`.
#   bash scripts/main.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
./build/examples/quantize_demo
shared="${LOWBIT_SHARED:-../shared}"
if [ -f "$shared/models/stories260K/stories260K.bin" ]; then
  ./build/examples/lowbit eval --model "$shared/models/stories260K/stories260K.bin" \
      --data "$shared/data/tinystories/tinystories_val.eval.txt" --seq-len 512
else
  echo "main: $shared/models/stories260K not found; real models come from the shared/ data directory"
  echo "      (set LOWBIT_SHARED), see README.md."
fi
