#!/usr/bin/env bash
# Host memory of loading a 1.04 B-parameter GPT-like model (4.2 GB in float32) from safetensors
# into FSDP FULL_SHARD over 2 Gloo ranks, with and without rank-0 loading
# (fsdp_cpu_ram_efficient_loading): each rank's peak resident memory (VmHWM, the whole process)
# over the model's bytes, after loading and after prepare, and the loss of one forward pass (alike
# in both runs when the shards are). Needs about 11 GB of free memory and 4.2 GB of disk in
# $TMPDIR. Writes bench/results/rank0_loading.md.
#   bench/rank0_loading.sh [BUILD_DIR default build]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
cmake --build "$build" --target rank0_loading acc_cli >/dev/null
machine="$(nproc --all) vCPU, $(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo) GiB"
export OMP_NUM_THREADS=1
dir=$(mktemp -d)
raw=$(mktemp)
trap 'rm -rf "$dir" "$raw"' EXIT

"$build/bin/rank0_loading" save "$dir" | tee -a "$raw"
for mode in normal rank0; do
  flag=$([ $mode = rank0 ] && echo --rank0 || true)
  "$build/bin/acc" launch --cpu --num_processes 2 --main_process_port 0 --rdzv_timeout 120 \
    "$build/bin/rank0_loading" load "$dir" $flag | grep "^rank0_loading" | tee -a "$raw"
done

python3 - "$raw" "$machine" <<'PY'
import datetime, re, sys
text, machine = open(sys.argv[1]).read(), sys.argv[2]
rows = {}
for m in re.finditer(r"mode=(\w+) rank=(\d+) of=\d+ model_bytes=(\d+) peak_after_load=([\d.]+) "
                     r"peak_after_prepare=([\d.]+) resident_after_prepare=([\d.]+) loss=([\d.]+)", text):
    rows[(m.group(1), int(m.group(2)))] = m.groups()
if len(rows) != 4:
    sys.exit(f"bench/rank0_loading.sh: expected 4 result lines (2 modes x 2 ranks), got {len(rows)}")
model_bytes = int(rows[("normal", 0)][2])
losses = {r[6] for r in rows.values()}
lines = [
    "# rank0_loading: host memory of loading a model into FSDP, with and without rank-0 loading", "",
    f"{datetime.date.today().isoformat()}, {machine}, libtorch 1.13 (CPU), FSDP FULL_SHARD over 2 Gloo ranks on one "
    f"machine; the GPT-like model of bench/common/gpt.hpp with 18 blocks of d = 2048 "
    f"({model_bytes / 4e9:.2f} B parameters, {model_bytes / 1e9:.2f} GB in float32), loaded from one "
    "model.safetensors (bench/rank0_loading.sh). Figures are each rank's peak resident memory (VmHWM, the "
    "whole process: libtorch and Gloo included) over the model's bytes.", "",
    "| rank-0 loading | rank | peak after loading | peak after prepare | resident after prepare |",
    "| --- | --- | --- | --- | --- |",
]
for mode, label in (("normal", "off"), ("rank0", "on")):
    for rank in (0, 1):
        r = rows[(mode, rank)]
        lines.append(f"| {label} | {rank} | {float(r[3]):.3f} | {float(r[4]):.3f} | {float(r[5]):.3f} |")
node = {mode: sum(float(rows[(mode, rank)][4]) for rank in (0, 1)) for mode in ("normal", "rank0")}
lines += [
    "", f"Both ranks together, at their peaks: {node['normal']:.2f} models without, {node['rank0']:.2f} with "
    f"rank-0 loading. The forward pass after prepare gives the same loss in every run and rank: "
    f"{'yes (' + losses.pop() + ')' if len(losses) == 1 else 'NO: ' + ', '.join(sorted(losses))}.",
]
open("bench/results/rank0_loading.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
