#!/usr/bin/env bash
# DDP on the GPT-2-small-sized model, in one device command: acc (C++) and Python Accelerate on
# 1 GPU and on every GPU, same model, data and hyperparameters; prints tokens/s, scaling
# efficiency, acc/Python ratios and how much all-reduce time backward hides.
source "$(dirname "$0")/../scripts/lib/device_run.sh"
log_to_out gpu_ddp
gpus=$(gpu_count)
ACC_GPU_BUILD_ONLY=1 scripts/gpu.sh >/dev/null 2>&1 || { echo "build failed"; ACC_GPU_BUILD_ONLY=1 scripts/gpu.sh | tail -30; exit 1; }
build=build-gpu
echo "== $(date -u +%F) $gpus x $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
results=/tmp/gpt_results.txt
: >$results
for n in 1 $gpus; do
  $build/bin/acc launch --multi_gpu --num_processes $n --main_process_port 0 $build/bin/gpt_ddp | tee -a $results
  multi=""; [[ $n -gt 1 ]] && multi="--multi_gpu"
  accelerate launch $multi --num_processes $n --num_machines 1 --mixed_precision bf16 --dynamo_backend no \
    bench/py/gpt_accelerate.py 2>/dev/null | grep "python gpt" | tee -a $results
done
python3 - "$results" "$gpus" <<'PY'
import re, sys
text, gpus = open(sys.argv[1]).read(), int(sys.argv[2])
def tps(who, n):
    m = re.search(rf"{who} gpt ranks={n} precision=\S+ layers=\S+ ms_per_step=\S+ tokens_per_s=([\d.]+)", text)
    return float(m.group(1)) if m else float("nan")
# Model FLOPs per token of a training step (PaLM's count: 6 per parameter of the matrix products,
# plus attention's 12 * layers * seq * dim), for the default model: 12 layers, dim 768, vocab 32768,
# seq 512. MFU: model FLOPs per second over the H200's dense bf16 peak, 989 TFLOP/s.
layers, dim, vocab, seq = 12, 768, 32768, 512
flops_per_token = 6 * (12 * layers * dim * dim + vocab * dim) + 12 * layers * seq * dim
def mfu(tokens_per_s, n):
    return tokens_per_s * flops_per_token / (n * 989e12)
for who in ("acc", "python"):
    print(f"{who}: 1 GPU {tps(who, 1):.0f} tokens/s (MFU {mfu(tps(who, 1), 1):.3f}), {gpus} GPUs "
          f"{tps(who, gpus):.0f} tokens/s (MFU {mfu(tps(who, gpus), gpus):.3f}), "
          f"scaling efficiency {tps(who, gpus) / (gpus * tps(who, 1)):.3f}")
print(f"acc/python tokens/s: 1 GPU {tps('acc', 1) / tps('python', 1):.3f}, {gpus} GPUs {tps('acc', gpus) / tps('python', gpus):.3f}")
PY
