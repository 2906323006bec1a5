#!/usr/bin/env bash
# The main job: set up, build (Release) and run lowbit's demo.
#   bash scripts/main.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build
./build/examples/quantize_demo
