#!/usr/bin/env bash
# The main job: set up, build (Release), run the quantizer demo, then -- when the shared real data is
# present ($LOWBIT_SHARED, default ../shared) -- quantize stories260K with AWQ (W4 g32) and print the
# perplexity before and after.
#   bash scripts/main.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
./build/examples/quantize_demo
shared="${LOWBIT_SHARED:-../shared}"
if [ -f "$shared/models/stories260K/stories260K.bin" ]; then
  # AWQ W4 g32 on stories260K under protocol P (docs/results.md), perplexity before and after
  ./build/examples/lowbit quantize --model "$shared/models/stories260K/stories260K.bin" --method awq --wbits 4 \
      --group 32 --ragged --calib "$shared/data/tinystories/tinystories_val.calib.txt" --calib-samples 128 --calib-seq-len 256 \
      --calib-sampling sequential --eval "$shared/data/tinystories/tinystories_val.eval.txt" --eval-seq-len 256 \
      --eval-max-tokens 100352
else
  echo "main: $shared/models/stories260K not found; real models come from the shared/ data directory"
  echo "      (set LOWBIT_SHARED), see README.md."
fi
