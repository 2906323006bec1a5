#!/usr/bin/env bash
# Runs lowbit's libFuzzer targets (tests/fuzz) for a fixed time each, two at a time, with AddressSanitizer +
# UBSan and a 2 GB memory limit.  Any crash, sanitizer report, uncaught exception, time-out or allocation over
# the limit fails the run and leaves the reproducer in build-fuzz/artifacts/ (copy it to
# tests/fuzz/regressions/<target>/ once fixed: the test suite replays that folder).
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET (default 30)] [TARGET ...]
#   LOWBIT_FUZZ_RUNS=1000000 bash scripts/fuzz.sh 0 [TARGET ...]     a fixed number of executions instead (the
#                                                                     campaign in docs/benchmarks.md)
#   LOWBIT_FUZZ_SEED=N                                                libFuzzer's seed (default 1: reproducible)
# Needs clang++ with libFuzzer (Debian: clang, libclang-rt-dev); without them it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(llama2c safetensors gguf hf tokenizer json awq_files)
cxx="${LOWBIT_FUZZ_CXX:-clang++}"
if ! command -v "$cxx" >/dev/null 2>&1 || ! echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' |
     "$cxx" -x c++ -fsanitize=fuzzer - -o /tmp/lowbit-fuzz-probe.$$ 2>/dev/null; then
  echo "fuzz: $cxx with libFuzzer not found; skipping the fuzz run (the reproducers are still replayed by the tests)"
  exit 0
fi
rm -f /tmp/lowbit-fuzz-probe.$$
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" -DLOWBIT_FUZZ=ON \
      -DLOWBIT_BUILD_TESTS=OFF -DLOWBIT_BUILD_BENCHMARKS=OFF -DLOWBIT_BUILD_EXAMPLES=OFF -DLOWBIT_INSTALL=OFF \
      -DLOWBIT_USE_OPENMP=OFF -DLOWBIT_CUDA=OFF > build-fuzz.log 2>&1 || { cat build-fuzz.log; exit 1; }
cmake --build build-fuzz -j "$jobs" --target fuzz_make_seeds $(printf 'fuzz_%s ' "${targets[@]}")
seeds=build-fuzz/seeds
build-fuzz/tests/fuzz/fuzz_make_seeds "$seeds" "${LOWBIT_SHARED:-../shared}" >/dev/null
mkdir -p build-fuzz/artifacts
export LOWBIT_FUZZ_SHARDS="$PWD/$seeds/hf_shards"
run_one() {
  local t=$1 corpus=build-fuzz/corpus/$1
  mkdir -p "$corpus"
  local log=build-fuzz/fuzz_$t.log dirs=("$corpus" "$seeds/$t")
  [ -d tests/fuzz/regressions/"$t" ] && dirs+=(tests/fuzz/regressions/"$t")
  local limit=(-max_total_time="$seconds")
  [ -n "${LOWBIT_FUZZ_RUNS:-}" ] && limit=(-runs="$LOWBIT_FUZZ_RUNS")
  # a fixed seed: a failure in CI is reproduced by the same command
  if build-fuzz/tests/fuzz/fuzz_"$t" "${limit[@]}" -seed="${LOWBIT_FUZZ_SEED:-1}" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=20 \
       -max_len=65536 -print_final_stats=1 -artifact_prefix=build-fuzz/artifacts/"$t"- "${dirs[@]}" >"$log" 2>&1; then
    echo "fuzz $t: $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$') executions," \
         "peak RSS $(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$') MB, no failure"
  else
    echo "fuzz $t: FAILED (see $log; reproducer in build-fuzz/artifacts/)"
    tail -40 "$log"
    return 1
  fi
}
failed=0
pids=()
for t in "${targets[@]}"; do
  run_one "$t" & pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then wait "${pids[0]}" || failed=1; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done
exit $failed
