#!/usr/bin/env bash
# The CPU figures of the performance suite (runs here and in CI machines; the GPU ones are
# bench/gpu_suite.sh): step overhead of acc over plain libtorch on the tiny MLP, and 1 vs 2
# Gloo DDP ranks (acc launch --cpu) on the tiny MLP and on examples/char_lm: samples/s and
# scaling efficiency. Every rank runs with one intra-op thread, so that two ranks on two cores
# measure the library's communication, not two thread pools fighting over the cores.
# Writes bench/results/cpu.md and bench/results/cpu.csv (figure,case,metric,value).
#   bench/cpu.sh [BUILD_DIR default build]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
cmake --build "$build" --target step_overhead char_lm acc_cli >/dev/null
machine="$(nproc --all) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
export OMP_NUM_THREADS=1
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT

echo "== step overhead (tiny MLP, fp32, acc::optim::AdamW in both loops)"
"$build/bin/step_overhead" --device cpu --precision no --optimizer acc --rounds 11 --steps 30 | tee -a "$raw"

echo "== tiny MLP, acc::CPU (DDP over Gloo), 1 and 2 ranks"
for n in 1 2; do
  "$build/bin/acc" launch --cpu --num_processes $n --main_process_port 0 "$build/bin/step_overhead" --scaling 1 \
    --rounds 11 --steps 30 | grep "^mlp_ddp" | tee -a "$raw"
done

echo "== char_lm, 1 and 2 ranks, the median of 3 runs each"
for n in 1 2; do
  for run in 1 2 3; do
    "$build/bin/acc" launch --cpu --num_processes $n --main_process_port 0 "$build/bin/char_lm" --max_steps 40 \
      --log_every 40 --batch_size 16 | grep -o "ms/step [0-9.]*" | tail -1 | sed "s/^/char_lm ranks=$n run=$run /" |
      tee -a "$raw"
  done
done

python3 - "$raw" "$machine" <<'PY'
import csv, datetime, re, statistics, sys
text, machine = open(sys.argv[1]).read(), sys.argv[2]
def number(pattern):
    m = re.search(pattern, text)
    if not m:
        sys.exit(f"bench/cpu.sh: no match for {pattern!r} in the benchmarks' output")
    return float(m.group(1))
plain = number(r"plain libtorch\s+([\d.]+) ms/step")
ours = number(r"acc Single\s+([\d.]+) ms/step")
mlp = {n: number(rf"mlp_ddp ranks={n} .*samples_per_s=([\d.]+)") for n in (1, 2)}
char_ms = {n: statistics.median(float(v) for v in re.findall(rf"char_lm ranks={n} run=\d ms/step ([\d.]+)", text))
           for n in (1, 2)}
char = {n: n * 16 / (char_ms[n] / 1000) for n in (1, 2)}
rows = [
    ("cpu_step_overhead", "tiny MLP fp32", "plain_ms_per_step", plain),
    ("cpu_step_overhead", "tiny MLP fp32", "acc_ms_per_step", ours),
    ("cpu_step_overhead", "tiny MLP fp32", "acc_over_plain", ours / plain),
]
for name, values in (("tiny MLP", mlp), ("char_lm", char)):
    rows += [("cpu_gloo_scaling", name, f"samples_per_s_{n}_ranks", values[n]) for n in (1, 2)]
    rows.append(("cpu_gloo_scaling", name, "scaling_efficiency_2_ranks", values[2] / (2 * values[1])))
with open("bench/results/cpu.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["figure", "case", "metric", "value"])
    writer.writerows((a, b, c, f"{v:.4f}") for a, b, c, v in rows)
day = datetime.date.today().isoformat()
lines = [
    "# CPU figures (bench/cpu.sh)", "",
    f"{day}, {machine}, one intra-op thread per rank; medians of 11 rounds (MLP) and of 3 runs (char_lm).", "",
    "| figure | case | plain libtorch | acc | acc / plain |", "| --- | --- | --- | --- | --- |",
    f"| step overhead, ms/step | tiny MLP fp32 | {plain:.4f} | {ours:.4f} | {ours / plain:.3f} |", "",
    "| Gloo DDP | samples/s, 1 rank | samples/s, 2 ranks | scaling efficiency |", "| --- | --- | --- | --- |",
]
for name, values in (("tiny MLP (batch 64 per rank)", mlp), ("char_lm (batch 16 per rank)", char)):
    lines.append(f"| {name} | {values[1]:.0f} | {values[2]:.0f} | {values[2] / (2 * values[1]):.3f} |")
open("bench/results/cpu.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
