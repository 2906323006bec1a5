#!/usr/bin/env bash
# The main job: set up, build what the job needs (Release: the lowbit tool and the demo), run the quantizer demo,
# then quantize lowbit's own model -- models/kjv, a LLaMA-architecture model trained from scratch by lowbit on the
# King James Bible (models/README.md) -- at W4 g128 with RTN, AWQ and the AWQ -> OmniQuant workflow of the
# shipped LLMC configs (configs/quantization/combination/awq_comb_omni/w4a16g128, two steps), print the
# perplexity of each on the held-out books, and write the last one as a GGUF for llama.cpp.  When the shared real
# data is present ($LOWBIT_SHARED, default ../shared), stories260K's AWQ W4 g32 follows.
#   bash scripts/main.sh                 outputs in build/main (LOWBIT_MAIN_OUT overrides)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build --target lowbit_cli quantize_demo
./build/examples/quantize_demo

lowbit=./build/examples/lowbit
model=models/kjv
text=models/kjv-text
out="${LOWBIT_MAIN_OUT:-build/main}"
mkdir -p "$out"
eval_opts=(--eval "$text/val.txt" --eval-seq-len 256)
calib_opts=(--calib "$text/calib.txt" --calib-samples 128 --calib-seq-len 256 --calib-sampling sequential)
cfg=configs/quantization/combination/awq_comb_omni/w4a16g128
t0=$(date +%s)
summary=()
row() {  # row LABEL LOG: the quantized perplexity a run printed
  summary+=("$(printf '%-34s %s' "$1" "$(sed -n 's/^quantized: ppl \([0-9.]*\).*/\1/p' "$2")")")
}

echo
echo "== lowbit's own model ($model: trained by examples/train_kjv.sh), W4 g128, held-out books =="
echo "-- fp32 and RTN"
"$lowbit" quantize --model "$model" --method rtn --wbits 4 --group 128 "${eval_opts[@]}" | tee "$out/rtn.log"
fp=$(sed -n 's/^fp32: *ppl \([0-9.]*\).*/\1/p' "$out/rtn.log")
summary+=("$(printf '%-34s %s' "fp32" "$fp")")
row "RTN w4a16g128" "$out/rtn.log"
echo "-- AWQ"
"$lowbit" quantize --model "$model" --method awq --wbits 4 --group 128 "${calib_opts[@]}" "${eval_opts[@]}" \
    --no-fp-eval | tee "$out/awq.log"
row "AWQ w4a16g128" "$out/awq.log"
echo "-- AWQ -> OmniQuant, step 1 ($cfg/step_1_awq.yml): AWQ's scales, the transformed model saved"
"$lowbit" quantize --config "$cfg/step_1_awq.yml" --model "$model" "${calib_opts[@]}" "${eval_opts[@]}" --no-fp-eval \
    --save-trans "$out/awq_trans" | tee "$out/awq_omni_step1.log"
echo "-- AWQ -> OmniQuant, step 2 ($cfg/step_2_omniq.yml): LWC from AWQ's clip search, 5 epochs; GGUF for llama.cpp"
"$lowbit" quantize --config "$cfg/step_2_omniq.yml" --model "$out/awq_trans" --tokenizer "$model/tokenizer.bin" \
    "${calib_opts[@]}" "${eval_opts[@]}" --no-fp-eval --save-gguf "$out/kjv-awq-omniquant-w4g128.gguf" \
    | tee "$out/awq_omni_step2.log"
row "AWQ -> OmniQuant w4a16g128 (5 ep)" "$out/awq_omni_step2.log"
echo "-- the GGUF file, read back by lowbit eval"
"$lowbit" eval --model "$out/kjv-awq-omniquant-w4g128.gguf" --data "$text/val.txt" --seq-len 256 | tee "$out/gguf_eval.log"
summary+=("$(printf '%-34s %s' "  the same as GGUF (Q4_1 blocks)" "$(sed -n 's/^nll [0-9.]*  ppl \([0-9.]*\).*/\1/p' "$out/gguf_eval.log")")")

echo
echo "== summary: perplexity on the held-out books (Ruth, Esther, Lamentations, Jonah, Mark, Philippians,"
echo "   Colossians, Jude; windows of 256), lowbit's own model, $(( $(date +%s) - t0 )) s on $(nproc) cores =="
printf '%s\n' "${summary[@]}"
echo "GGUF for llama.cpp: $out/kjv-awq-omniquant-w4g128.gguf (llama-perplexity -m FILE -f $text/val.txt -c 256)"

shared="${LOWBIT_SHARED:-../shared}"
if [ -f "$shared/models/stories260K/stories260K.bin" ]; then
  echo
  echo "== stories260K (shared data): AWQ W4 g32 under protocol P (docs/results.md) =="
  "$lowbit" quantize --model "$shared/models/stories260K/stories260K.bin" --method awq --wbits 4 \
      --group 32 --ragged --calib "$shared/data/tinystories/tinystories_val.calib.txt" --calib-samples 128 --calib-seq-len 256 \
      --calib-sampling sequential --eval "$shared/data/tinystories/tinystories_val.eval.txt" --eval-seq-len 256 \
      --eval-max-tokens 100352
else
  echo "main: $shared/models/stories260K not found (the shared data directory adds stories260K; set LOWBIT_SHARED)"
fi
