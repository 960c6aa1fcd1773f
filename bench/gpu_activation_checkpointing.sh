#!/usr/bin/env bash
# Activation checkpointing on the device, in one command: builds what it runs; the activation
# checkpointing tests on CUDA and over NCCL (every GPU); then the 4.1 B-parameter GPT (bench/common/gpt.hpp,
# dim 2048, 80 blocks) under FSDP FULL_SHARD in bf16 on every GPU, acc and Python Accelerate (the
# seeds' FSDP YAML, bench/py/fsdp_config.yaml) with activation checkpointing off and on at the same
# batch: tokens/s and peak memory per GPU; and on one GPU the largest batch a step fits with acc,
# off and on (gpt_ddp --largest_batch). AC_BATCH sets the batch (default 8); AC_PARTS chooses
# among "tests acc python largest" (default all of them), so that one device command fits in 10 min.
source "$(dirname "$0")/../scripts/lib/device_run.sh"
log_to_out gpu_activation_checkpointing
gpus=$(gpu_count)
ACC_GPU_TARGETS="acc_tests acc_dist_worker gpt_ddp acc_cli" ACC_GPU_BUILD_ONLY=1 scripts/gpu.sh >/tmp/build.log 2>&1 ||
  { tail -40 /tmp/build.log; exit 1; }
build=build-gpu
echo "== $(date -u +%F) $gpus x $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), torch $(python3 -c 'import torch; print(torch.__version__)')"
parts=" ${AC_PARTS:-tests acc python largest} "
if [[ $parts == *" tests "* ]]; then
echo "== acc_tests: activation checkpointing (CPU and CUDA cases)"
timeout 180 $build/bin/acc_tests -tc='*acc::checkpoint*,activation_checkpointing*' 2>&1 | grep -E "MESSAGE|held|ERROR|test cases|assertions"
echo "== activation checkpointing under FSDP and DDP over NCCL, $gpus ranks"
ACC_TEST_BACKEND=nccl timeout 300 $build/bin/acc launch --multi_gpu --num_processes $gpus --main_process_port 0 \
  $build/bin/acc_dist_worker -tc='activation checkpointing*' 2>&1 | grep -E "test cases|assertions|ERROR|FATAL" | sort | uniq -c
fi
large="--dim 2048 --heads 16 --layers 80"
batch=${AC_BATCH:-8}
results=$build/ac_results.txt  # kept across device calls while the machine is warm
touch $results
for ac in 0 1; do
  [[ $parts == *" acc "* ]] && timeout 300 $build/bin/acc launch --multi_gpu --num_processes $gpus --main_process_port 0 $build/bin/gpt_ddp \
    --strategy fsdp $large --batch $batch --steps 5 --warmup 2 --breakdown 1 --activation_checkpointing $ac |
    grep "acc gpt ranks" | sed "s/^/ac=$ac /" | tee -a $results
  [[ $parts == *" python "* ]] || continue
  flag=$([[ $ac == 1 ]] && echo true || echo false)
  sed "s/^  fsdp_offload_params: false/  fsdp_activation_checkpointing: $flag\n  fsdp_offload_params: false/" \
    bench/py/fsdp_config.yaml >/tmp/fsdp_ac_$ac.yaml
  timeout 300 accelerate launch --config_file /tmp/fsdp_ac_$ac.yaml --num_processes $gpus bench/py/gpt_accelerate.py \
    $large --batch $batch --steps 5 --warmup 2 2>/dev/null | grep "python gpt ranks" | sed "s/^/ac=$ac /" | tee -a $results
done
[[ $parts == *" largest "* ]] && echo "== the largest batch a step fits with, one GPU"
for ac in 0 1; do
  [[ $parts == *" largest "* ]] || continue
  CUDA_VISIBLE_DEVICES=0 timeout 400 $build/bin/acc launch --num_processes 1 --main_process_port 0 $build/bin/gpt_ddp \
    --strategy fsdp $large --batch 8 --steps 1 --warmup 1 --breakdown 1 --activation_checkpointing $ac --largest_batch 1 |
    grep "largest_batch"
done
python3 - "$results" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"ac=(\d) (acc|python) gpt .*ms_per_step=([\d.]+) tokens_per_s=([\d.]+) peak_gib=([\d.]+)", line)
    if m:
        rows[(m[1], m[2])] = (float(m[3]), float(m[4]), float(m[5]))
print("| activation checkpointing | run | ms/step | tokens/s | peak GiB per GPU |")
print("| --- | --- | --- | --- | --- |")
for (ac, who), (ms, tps, peak) in sorted(rows.items()):
    print(f"| {'on' if ac == '1' else 'off'} | {who} FSDP | {ms:.1f} | {tps:.0f} | {peak:.2f} |")
for ac in ("0", "1"):
    a, p = rows.get((ac, "acc")), rows.get((ac, "python"))
    if a and p:
        print(f"checkpointing {'on' if ac == '1' else 'off'}: acc/Python tokens/s {a[1] / p[1]:.2f}, peak memory acc/Python {a[2] / p[2]:.2f}")
PY
cp $results $out/ 2>/dev/null || true
