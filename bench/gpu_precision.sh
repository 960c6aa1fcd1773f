#!/usr/bin/env bash
# Precisions on one GPU, in one device command: acc and Python Accelerate in fp32, fp16 and bf16
# on the tiny MLP (512-512-10, batch 64) and on a 6-layer transformer (d=768, 16 x 256 tokens,
# fused attention, fused AdamW); prints ms/step and Python / acc (how many times faster acc is).
# The MLP runs acc with libtorch's AdamW and with acc::optim::AdamW, Python with its default
# (foreach) AdamW and with fused=True. Also records the GradScaler golden values
# (tests/golden/grad_scaler.py) into $OUT and tests the C++ side against them.
source "$(dirname "$0")/../scripts/lib/device_run.sh"
log_to_out gpu_precision
ACC_GPU_BUILD_ONLY=1 scripts/gpu.sh >/dev/null 2>&1 || { echo "build failed"; exit 1; }
build=build-gpu
echo "== $(date -u +%F) $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), torch $(python3 -c 'import torch; print(torch.__version__)')"
echo "== GradScaler golden values from torch.amp.GradScaler"
python3 tests/golden/grad_scaler.py "$out/grad_scaler_sgd.txt" && cp "$out/grad_scaler_sgd.txt" tests/golden/
echo "== tests on CUDA, golden values, optimizer"
$build/bin/acc_tests -tc='CUDA*,GradScaler*,acc::optim*' | tail -2
results=/tmp/precision_results.txt
: >$results
for p in no fp16 bf16; do
  for optimizer in torch acc; do
    $build/bin/step_overhead --device cuda --precision $p --optimizer $optimizer --rounds 15 --steps 100 |
      sed -n "s/  acc Single *\([0-9.]*\) ms.*/acc mlp precision=$p optimizer=$optimizer ms_per_step=\1/p" | tee -a $results
  done
  for fused in "" --fused; do
    accelerate launch --num_processes 1 --num_machines 1 --mixed_precision $p --dynamo_backend no \
      bench/py/mlp_accelerate.py $fused 2>/dev/null | grep "python mlp" | tee -a $results
  done
  $build/bin/gpt_ddp --precision $p --layers 6 --seq 256 --steps 30 | grep "ms_per_step" | tee -a $results
  accelerate launch --num_processes 1 --num_machines 1 --mixed_precision $p --dynamo_backend no \
    bench/py/gpt_accelerate.py --layers 6 --seq 256 2>/dev/null | grep "python gpt" | tee -a $results
done
python3 - "$results" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(pattern):
    m = re.search(pattern + r".*?ms_per_step=([\d.]+)", text)
    return float(m.group(1)) if m else float("nan")
print("| model | precision | acc ms/step | Python Accelerate ms/step | Python / acc |")
print("| --- | --- | --- | --- | --- |")
for p in ("no", "fp16", "bf16"):
    ours = ms(rf"acc mlp precision={p} optimizer=acc")
    torch_adamw = ms(rf"acc mlp precision={p} optimizer=torch")
    py, py_fused = ms(rf"python mlp precision={p} fused=0"), ms(rf"python mlp precision={p} fused=1")
    print(f"| MLP, acc::optim::AdamW vs default AdamW | {p} | {ours:.3f} | {py:.3f} | {py / ours:.2f} |")
    print(f"| MLP, acc::optim::AdamW vs AdamW(fused=True) | {p} | {ours:.3f} | {py_fused:.3f} | {py_fused / ours:.2f} |")
    print(f"| MLP, torch::optim::AdamW vs default AdamW | {p} | {torch_adamw:.3f} | {py:.3f} | {py / torch_adamw:.2f} |")
for p in ("no", "fp16", "bf16"):
    a, py = ms(rf"acc gpt.*?precision={p} "), ms(rf"python gpt.*?precision={p} ")
    print(f"| transformer | {p} | {a:.3f} | {py:.3f} | {py / a:.2f} |")
PY
