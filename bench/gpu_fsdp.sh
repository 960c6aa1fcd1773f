#!/usr/bin/env bash
# FSDP on every GPU of the machine, in one device command: the FSDP (and DDP) multi-process tests
# over NCCL, then acc FSDP FULL_SHARD (bf16, one unit per block) vs Python Accelerate FSDP with
# the seeds' YAML (bench/py/fsdp_config.yaml) on the GPT-2-small-sized model and on a larger one
# that nearly fills a GPU under DDP (FSDP_MODELS="small large" chooses); prints tokens/s, peak
# memory per GPU and acc/Python ratios; on the large model also acc FSDP with offload_params (shards
# and AdamW state in host memory). Builds only what it runs, and first runs the checkpoint and
# FSDP/DDP tests (acc_tests' checkpoint suite on this libtorch, the multi-process ones over NCCL).
source "$(dirname "$0")/../scripts/lib/device_run.sh"
log_to_out gpu_fsdp
gpus=$(gpu_count)
ACC_GPU_TARGETS="acc_tests acc_dist_worker gpt_ddp acc_cli" ACC_GPU_BUILD_ONLY=1 scripts/gpu.sh >/tmp/build.log 2>&1 ||
  { tail -40 /tmp/build.log; exit 1; }
build=build-gpu
echo "== $(date -u +%F) $gpus x $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), torch $(python3 -c 'import torch; print(torch.__version__)')"
echo "== acc_tests: checkpoint and safetensors suites"
timeout 120 $build/bin/acc_tests -ts='checkpoint*,safetensors*' 2>&1 | tail -3
echo "== FSDP and DDP tests over NCCL, $gpus ranks"
ACC_TEST_BACKEND=nccl timeout 300 $build/bin/acc launch --multi_gpu --num_processes $gpus --main_process_port 0 \
  $build/bin/acc_dist_worker -ts=fsdp,ddp 2>&1 | grep -E "test cases|assertions|ERROR|FATAL|MESSAGE|rank [0-9]: DDP" | sort | uniq -c
results=/tmp/fsdp_results.txt
: >$results
large="--dim 2048 --heads 16 --layers 80"  # about 4.1 B parameters: about 87% of an H200 under DDP
for model in ${FSDP_MODELS:-small large}; do
  args=""; steps="--steps 20 --warmup 5"
  [[ $model == large ]] && { args=$large; steps="--steps 10 --warmup 3"; }
  $build/bin/acc launch --multi_gpu --num_processes $gpus --main_process_port 0 $build/bin/gpt_ddp --strategy fsdp \
    $args $steps | grep "acc gpt ranks" | sed "s/^/$model /" | tee -a $results
  accelerate launch --config_file bench/py/fsdp_config.yaml --num_processes $gpus \
    bench/py/gpt_accelerate.py $args $steps 2>/dev/null | grep "python gpt ranks" | sed "s/^/$model /" | tee -a $results
  if [[ $model == large ]]; then  # the same model under DDP: how full one GPU is without sharding
    timeout 240 $build/bin/acc launch --multi_gpu --num_processes $gpus --main_process_port 0 $build/bin/gpt_ddp \
      $args --steps 3 --warmup 1 --breakdown 1 | grep "acc gpt ranks" | grep -v step_without | sed "s/^/$model /" | tee -a $results
    # FSDP with the shards, their gradients and AdamW's state in host memory (the step on the CPU).
    timeout 240 $build/bin/acc launch --multi_gpu --num_processes $gpus --main_process_port 0 $build/bin/gpt_ddp \
      --strategy fsdp --offload 1 $args --steps 2 --warmup 1 --breakdown 1 | grep "acc gpt ranks" | sed "s/^/$model /" | tee -a $results
  fi
done
python3 - "$results" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\w+) (acc|python) gpt .*ms_per_step=([\d.]+) tokens_per_s=([\d.]+) peak_gib=([\d.]+) strategy=(\w+)", line)
    if m:
        rows[(m[1], m[2], m[6])] = (float(m[3]), float(m[4]), float(m[5]))
print("| model | run | ms/step | tokens/s | peak GiB per GPU |")
print("| --- | --- | --- | --- | --- |")
for (model, who, strategy), (ms, tps, peak) in rows.items():
    print(f"| {model} | {who} {strategy} | {ms:.1f} | {tps:.0f} | {peak:.2f} |")
for model in ("small", "large"):
    a, p = rows.get((model, "acc", "FSDP")), rows.get((model, "python", "FSDP"))
    if a and p:
        print(f"{model}: acc/Python FSDP tokens/s {a[1] / p[1]:.2f}, peak memory acc/Python {a[2] / p[2]:.2f}")
PY
