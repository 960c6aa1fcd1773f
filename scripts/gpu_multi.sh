#!/usr/bin/env bash
# One device run on a multi-GPU machine: builds (scripts/gpu.sh's build step), runs the
# multi-process tests, the by-feature examples and acc test over NCCL on every GPU, and compares
# all-reduce bus bandwidth through acc's Nccl policy with libtorch's ProcessGroupNCCL
# (torch.distributed) in the same command.
source "$(dirname "$0")/lib/device_run.sh"
log_to_out gpu_multi
gpus=$(gpu_count)
ACC_GPU_BUILD_ONLY=1 scripts/gpu.sh || exit 1
build=build-gpu
status=0

echo "== multi-process tests over NCCL, $gpus GPUs"
ACC_TEST_BACKEND=nccl $build/bin/acc launch --multi_gpu --num_processes "$gpus" --main_process_port 0 \
  --rdzv_timeout 120 $build/bin/acc_dist_worker || status=1
if ((gpus >= 2)); then
  echo "== collective faults over NCCL, 2 GPUs: a skipped all-reduce times out (watchdog, ncclCommAbort); debug mode"
  ACC_TEST_BACKEND=nccl timeout 300 $build/bin/acc launch --multi_gpu --num_processes 2 --main_process_port 0 \
    --rdzv_timeout 120 $build/bin/acc_dist_worker --no-skip -ts=collective_faults || status=1
else
  echo "== collective faults over NCCL: not run, they need 2 GPUs (NCCL allows one rank per GPU)"
fi
echo "== by-feature examples over NCCL, $gpus GPUs (each checks what its Accelerate script shows)"
for example in automatic_gradient_accumulation cross_validation ddp_comm_hook early_stopping gradient_accumulation \
  local_sgd memory multi_process_metrics profiler tracking; do
  timeout 120 $build/bin/acc launch --multi_gpu --num_processes "$gpus" --main_process_port 0 $build/bin/$example |
    tail -1 || status=1
done
echo "== acc test (acc_sanity_check) with DDP and FSDP over NCCL, $gpus GPUs"
printf 'distributed_type: FSDP\nnum_processes: %s\n' "$gpus" >/tmp/acc_fsdp.yaml
for config in "--multi_gpu --num_processes $gpus" "--config_file /tmp/acc_fsdp.yaml"; do
  # shellcheck disable=SC2086 # the flags are words
  timeout 120 $build/bin/acc launch $config --main_process_port 0 $build/bin/acc_sanity_check || status=1
done
echo "== all-reduce bus bandwidth, fp32, $gpus GPUs"
$build/bin/acc launch --multi_gpu --num_processes "$gpus" --main_process_port 0 $build/bin/allreduce_bandwidth |
  tee /tmp/acc_bw.txt || status=1
torchrun --standalone --nproc_per_node "$gpus" bench/py/allreduce_bandwidth.py 2>/dev/null | tee /tmp/torch_bw.txt ||
  status=1
python3 - <<'PY'
import re
def read(path):
    return {int(m[0]): float(m[1]) for m in re.findall(r"size_mib=(\d+) time_us=[\d.]+ busbw_gbps=([\d.]+)", open(path).read())}
ours, theirs = read("/tmp/acc_bw.txt"), read("/tmp/torch_bw.txt")
print("size_mib  acc_busbw_GBps  torch_busbw_GBps  ratio")
for size in sorted(ours):
    if size in theirs:
        ratio = f"{ours[size] / theirs[size]:5.2f}" if theirs[size] > 0 else "  n/a"  # one GPU moves nothing
        print(f"{size:8d}  {ours[size]:14.1f}  {theirs[size]:16.1f}  {ratio}")
PY
exit $status
