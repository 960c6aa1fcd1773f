#!/usr/bin/env bash
# The performance suite, in one device command: builds the benchmarks, then runs side by side on
# the same GPUs, model, data and hyperparameters plain libtorch C++, acc and Python Accelerate:
#   1. step overhead on the tiny MLP in fp32/bf16/fp16: acc / plain libtorch, and Python / acc;
#   2. the GPT-2-small-sized model in bf16 on 1 GPU and with DDP on 2 (and 4) GPUs: tokens/s,
#      scaling efficiency, acc / Python;
#   3. FSDP FULL_SHARD (bf16, one unit per block) on every GPU: tokens/s and peak memory per GPU;
#   4. all-reduce bus bandwidth through acc's Nccl policy vs torch.distributed, 1-256 MiB;
#   5. the CPU figures of bench/cpu.sh (bench/results/cpu.csv), measured off the device.
# Every figure is a median over repeated windows after warm-up. Writes to $OUT: suite.md,
# suite.csv, suite-scaling.png, suite-ratios.png, suite-raw.txt and the log; they belong in
# bench/results/ (bench/py/suite_report.py redraws the tables from suite-raw.txt anywhere).
#   run on nvidia-h200-x4 (or -x2) with `.deps` carried: bench/gpu_suite.sh
source "$(dirname "$0")/../scripts/lib/device_run.sh"
log_to_out gpu_suite
start=$(date +%s)
elapsed() { echo "== $1 ($(($(date +%s) - start)) s)"; }
gpus=$(gpu_count)
ACC_GPU_TARGETS="gpt_ddp step_overhead allreduce_bandwidth acc_cli" ACC_GPU_BUILD_ONLY=1 scripts/gpu.sh >/tmp/build.log 2>&1 ||
  { tail -40 /tmp/build.log; exit 1; }
build=build-gpu
raw=$out/suite-raw.txt
: >"$raw"
{
  echo "date $(date -u +%F)"
  echo "machine $gpus x $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
  echo "versions torch $(python3 -c 'import torch; print(torch.__version__)'), accelerate $(python3 -c 'import accelerate; print(accelerate.__version__)'), CUDA $(python3 -c 'import torch; print(torch.version.cuda)'), NCCL $(python3 -c 'import torch; print(".".join(map(str, torch.cuda.nccl.version())))')"
} | tee -a "$raw"
elapsed "built"
py_launch() {  # accelerate launch on N GPUs with the given precision, then the script and its args
  local n=$1 precision=$2
  shift 2
  local multi=""
  [[ $n -gt 1 ]] && multi="--multi_gpu"
  accelerate launch $multi --num_processes "$n" --num_machines 1 --mixed_precision "$precision" --dynamo_backend no "$@" 2>/dev/null
}
acc_launch() {  # acc launch on N GPUs
  local n=$1
  shift
  $build/bin/acc launch --multi_gpu --num_processes "$n" --main_process_port 0 "$@"
}

# 1. The tiny MLP: plain libtorch and acc in one process (rotating rounds), Python Accelerate with
# PyTorch's default AdamW and with fused=True (acc's loops use acc::optim::AdamW, fused on CUDA).
for p in no bf16 fp16; do
  $build/bin/step_overhead --device cuda --precision $p --optimizer acc --rounds 15 --steps 100 |
    sed -n "s/^ *plain libtorch *\([0-9.]*\) ms.*/mlp precision=$p who=plain ms_per_step=\1/p; s/^ *acc Single *\([0-9.]*\) ms.*/mlp precision=$p who=acc ms_per_step=\1/p" |
    tee -a "$raw"
  for fused in "" --fused; do
    py_launch 1 $p bench/py/mlp_accelerate.py $fused | grep "python mlp" | tee -a "$raw"
  done
done
elapsed "MLP done"

# 2. GPT-2-small-sized, bf16: 1 GPU (Single), then DDP on 2 and 4.
counts="1"
for n in 2 4; do [[ $gpus -ge $n ]] && counts="$counts $n"; done
gpt_args="--steps 10 --repeats 5 --warmup 5"
for n in $counts; do
  acc_launch "$n" $build/bin/gpt_ddp $gpt_args | grep "acc gpt ranks" | grep -v step_without | tee -a "$raw"
  py_launch "$n" bf16 bench/py/gpt_accelerate.py $gpt_args | grep "python gpt ranks" | tee -a "$raw"
done
elapsed "GPT done"

# 3. FSDP FULL_SHARD on every GPU, the seeds' YAML for Python.
if [[ $gpus -ge 2 ]]; then
  acc_launch "$gpus" $build/bin/gpt_ddp --strategy fsdp $gpt_args | grep "acc gpt ranks" | tee -a "$raw"
  accelerate launch --config_file bench/py/fsdp_config.yaml --num_processes "$gpus" bench/py/gpt_accelerate.py \
    $gpt_args 2>/dev/null | grep "python gpt ranks" | tee -a "$raw"
fi
elapsed "FSDP done"

# 4. All-reduce bus bandwidth, fp32.
if [[ $gpus -ge 2 ]]; then
  acc_launch "$gpus" $build/bin/allreduce_bandwidth | tee -a "$raw"
  torchrun --standalone --nproc_per_node "$gpus" bench/py/allreduce_bandwidth.py 2>/dev/null | tee -a "$raw"
fi
elapsed "all-reduce done"

python3 bench/py/suite_report.py "$raw" bench/results/cpu.csv "$out"
elapsed "report written"
