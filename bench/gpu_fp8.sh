#!/usr/bin/env bash
# One device run for acc::FP8: builds against the GPU machine's libtorch with the fp8 kernels, runs
# the fp8 tests, then (unless ACC_FP8_TESTS_ONLY is set) the fp8 benchmark: tokens/s of a GPT at
# three sizes under acc FP8, acc BF16 and Python Accelerate bf16, and their final losses.
# Log: $OUT/fp8.log.
source "$(dirname "$0")/../scripts/lib/device_run.sh"
log_to_out fp8
echo "== $(date -u +%F) $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), torch $(python3 -c 'import torch; print(torch.__version__)')"
build=build-gpu
start=$(date +%s)
configure_gpu_build $build >/dev/null || exit 1
grep -h "accelerate-cpp: fp8" $build/CMakeFiles/CMakeConfigureLog.yaml 2>/dev/null | head -1
cmake --build $build -j "$(nproc)" --target acc_tests gpt_ddp || exit 1
echo "== built in $(($(date +%s) - start)) s"
status=0
$build/bin/acc_tests -tc='*fp8*,*FP8*,*acc::nn::Linear*' || status=1
[[ -n ${ACC_FP8_TESTS_ONLY:-} ]] && exit $status

# GPT at three sizes (ACC_FP8_SIZES: "layers:dim:batch ..."), 300 steps each after 5 warm-up, one GPU.
# ACC_FP8_SCALING=delayed: TransformerEngine's recipe instead of torchao's.
results=$out/fp8_results.txt
: >"$results"
steps=${ACC_FP8_STEPS:-300}
for size in ${ACC_FP8_SIZES:-12:768:16 24:2048:8 16:4096:8}; do
  IFS=: read -r layers dim batch <<<"$size"
  heads=$((dim / 64))
  common=(--layers "$layers" --dim "$dim" --heads "$heads" --batch "$batch" --steps "$steps" --warmup 5)
  for precision in fp8 bf16; do
    $build/bin/gpt_ddp "${common[@]}" --precision $precision --fp8_scaling "${ACC_FP8_SCALING:-tensorwise}" \
      --breakdown 3 | grep "acc gpt ranks" | tee -a "$results"
  done
  accelerate launch --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no \
    bench/py/gpt_accelerate.py "${common[@]}" 2>/dev/null | grep "python gpt ranks" | tee -a "$results"
done
python3 - "$results" <<'PY'
import os, re, sys
rows = [dict(re.findall(r"(\w+)=(\S+)", line)) | {"who": line.split()[0]} for line in open(sys.argv[1])]
print("| layers x dim | acc fp8 tokens/s | acc bf16 | Python bf16 | fp8/bf16 | fp8/Python | loss fp8 / bf16 / Python |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for dim in dict.fromkeys(r["dim"] for r in rows):
    def get(who, precision=None):
        return next(r for r in rows if r["dim"] == dim and r["who"] == who and (precision is None or r["precision"] == precision))
    f8, b16, py = get("acc", "fp8_" + os.environ.get("ACC_FP8_SCALING", "tensorwise")), get("acc", "bf16"), get("python")
    t = lambda r: float(r["tokens_per_s"])
    print(f"| {f8['layers']} x {dim} | {t(f8):,.0f} | {t(b16):,.0f} | {t(py):,.0f} | {t(f8) / t(b16):.3f} | {t(f8) / t(py):.3f} | "
          f"{float(f8['final_loss']):.4f} / {float(b16['final_loss']):.4f} / {float(py['final_loss']):.4f} |")
PY
exit $status
