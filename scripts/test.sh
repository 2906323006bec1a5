#!/usr/bin/env bash
# All tests: set up, build (Release) and run every test, then again under AddressSanitizer +
# UndefinedBehaviorSanitizer in a second build directory; between the two, a short run of every libFuzzer target
# (scripts/fuzz.sh, 30 s each; the saved reproducers are replayed by the tests in both builds).
#   bash scripts/test.sh
# Tests that need ../shared (or $LOWBIT_SHARED) skip with a message when it is absent; under CI
# (CI=true) a missing file fails them instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${CI:-}" = "true" ]; then export LOWBIT_REQUIRE_SHARED=1; fi
jobs=$(nproc 2>/dev/null || echo 2)

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"
(cd build && ctest -j "$jobs" --output-on-failure)

# Fuzzing: each target for a short fixed time (clang + libFuzzer; skipped with a message when they are missing).
bash scripts/fuzz.sh "${LOWBIT_FUZZ_SECONDS:-30}"

# The sanitizer build: -O1 -g1 (ASan's advice; line numbers stay in reports).  Left to the Release build: the
# scalar-only quantizer tests (the same code without SIMD), and the fuzz replays when scripts/fuzz.sh has just run
# every seed and reproducer under ASan + UBSan with clang.  Measured on a clean clone, 2 cores, 2026-12-01: the
# sanitizer build took 1616 s with -O2 -g and those targets, 685 s now; the whole script 52 min before, 34 min now.
# 2026-12-02, clean clone on a 2-core AVX-512 machine: 29.7 min (Release build 695 s, ASan build 648 s, ASan
# ctest 164 s), after test_algorithms became two units and the command line's model pass two files.
replay=ON
if [ -x build-fuzz/tests/fuzz/fuzz_json ]; then replay=OFF; fi
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
      -DLOWBIT_SANITIZE=ON -DLOWBIT_BUILD_BENCHMARKS=OFF -DLOWBIT_BUILD_EXAMPLES=OFF -DLOWBIT_INSTALL=OFF \
      -DLOWBIT_BUILD_SCALAR_TESTS=OFF -DLOWBIT_BUILD_FUZZ_REPLAY=$replay
cmake --build build-asan -j "$jobs"
# The figure tests (perplexity over the eval text, greedy generation of known text without a KV cache, AWQ's
# block-0 fixture with its 20-point grid over every linear) repeat the forward thousands of times: they run in the
# Release build only (the AWQ code itself runs under the sanitizers in the pipeline tests), and so does the W3
# comparison on lowbit's own model (three methods and four evaluations of a 3.3 M-parameter model).
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
   ctest -j "$jobs" --output-on-failure \
     -E "perplexity matches|generate their known text|reloads with the same perplexity|reproduces llm-awq|beat RTN on the held-out books")
