#!/usr/bin/env bash
# Big-model inference on one GPU machine, in one device command: a 1.3 B-parameter GPT in bf16
# (24 blocks of d = 2048, vocabulary 32000), written by acc as a sharded safetensors checkpoint in
# Hugging Face's layout, loaded by acc (acc::load_checkpoint_and_dispatch) and by Python
# (accelerate.load_checkpoint_and_dispatch) with the same device map: half the blocks on the GPUs
# (2 when the machine has them), half offloaded to the CPU; greedy decoding with a KV cache.
# Prints, for each side, the decoding tokens/s, the time to first token from a cold start (the
# program's start, its checkpoint evicted from the page cache) and the peak host memory, then
# acc/Python ratios and whether both generated the same tokens.
#   bench/big_inference.sh [LAYERS default 24] [NEW_TOKENS default 64] [DIM default 2048] [GPU_BUDGET]
# With GPU_BUDGET (e.g. 20GiB) the map is infer_auto_device_map's: GPU 0 up to the budget, the rest
# offloaded to the CPU; heads are DIM / 128.
source "$(dirname "$0")/../scripts/lib/device_run.sh"
log_to_out big_inference
layers=${1:-24}
new_tokens=${2:-64}
dim=${3:-2048}
gpu_budget=${4:-}
gpus=$(gpu_count)
((gpus > 2)) && gpus=2
ACC_GPU_BUILD_ONLY=1 ACC_GPU_TARGETS=big_inference scripts/gpu.sh >/dev/null 2>&1 ||
  { echo "build failed"; ACC_GPU_BUILD_ONLY=1 ACC_GPU_TARGETS=big_inference scripts/gpu.sh | tail -30; exit 1; }
build=build-gpu
echo "== $(date -u +%F) $gpus x $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)," \
  "torch $(python3 -c 'import torch; print(torch.__version__)'), accelerate $(python3 -c 'import accelerate; print(accelerate.__version__)')"
dir=$(mktemp -d /tmp/big_inference.XXXXXX)
trap 'rm -rf "$dir"' EXIT
$build/bin/big_inference save "$dir" --layers "$layers" --dim "$dim" --heads $((dim / 128)) --vocab 32000 --dtype bf16 \
  --gpus "$gpus" --offload 0.5 ${gpu_budget:+--gpu_budget "$gpu_budget"} || exit 1

# A cold start: the checkpoint's pages dropped from the page cache (POSIX_FADV_DONTNEED needs no root).
evict() {
  python3 - "$dir" <<'PY'
import os, sys
for name in os.listdir(sys.argv[1]):
    path = os.path.join(sys.argv[1], name)
    if os.path.isfile(path):
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
PY
}
results=$dir/results.txt
status=0
for round in 1 2; do
  evict
  $build/bin/big_inference run "$dir" --new_tokens "$new_tokens" | tee -a "$results" || status=1
  evict
  python3 bench/py/big_inference_accelerate.py "$dir" --new_tokens "$new_tokens" 2>"$dir/python.err" |
    tee -a "$results" || { status=1; tail -20 "$dir/python.err"; }
done
python3 - "$results" <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
runs = {}
for who in ("acc", "python"):
    runs[who] = [dict(re.findall(r"(\w+)=(\S+)", line)) for line in text.splitlines()
                 if line.startswith(f"{who} big_inference ttft_s=")]
    if not runs[who]:
        sys.exit(f"no result line from {who}")
def median(who, key):
    return statistics.median(float(r[key]) for r in runs[who])
for who in ("acc", "python"):
    print(f"{who}: {median(who, 'tokens_per_s'):.2f} tokens/s, time to first token {median(who, 'ttft_s'):.2f} s "
          f"(loading {median(who, 'load_s'):.2f} s), peak host memory {median(who, 'peak_host_bytes') / 2**30:.2f} GiB "
          f"for a {median(who, 'model_bytes') / 2**30:.2f} GiB model (median of {len(runs[who])} runs)")
print(f"acc/python: tokens/s {median('acc', 'tokens_per_s') / median('python', 'tokens_per_s'):.3f}, "
      f"time to first token {median('acc', 'ttft_s') / median('python', 'ttft_s'):.3f}, "
      f"peak host memory {median('acc', 'peak_host_bytes') / median('python', 'peak_host_bytes'):.3f}")
a, p = runs["acc"][0]["tokens"].split(","), runs["python"][0]["tokens"].split(",")
same = next((i for i, (x, y) in enumerate(zip(a, p)) if x != y), None)
print("same tokens: " + ("yes, all " + str(len(a)) if same is None else f"the first {same} of {len(a)} (bf16 kernels differ)"))
PY
exit $status
