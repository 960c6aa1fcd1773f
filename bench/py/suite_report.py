# The performance suite's report (bench/gpu_suite.sh): reads the benchmarks' output lines and
# the CPU figures (bench/results/cpu.csv, from bench/cpu.sh), checks every figure against
# its goal, and writes suite.md, suite.csv, suite-scaling.png and suite-ratios.png into the output folder.
#   python3 bench/py/suite_report.py RAW CPU_CSV OUT_DIR
import csv
import os
import re
import sys

raw_path, cpu_csv, out_dir = sys.argv[1:4]
text = open(raw_path).read()


def header(key):
    m = re.search(rf"^{key} (.*)$", text, re.M)
    return m.group(1) if m else "?"


def value(pattern):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


rows = []  # figure, case, acc, baseline name, baseline, ratio name, ratio, goal, met


def add(figure, case, acc, baseline_name, baseline, ratio_name, ratio, goal=None, higher_is_better=True):
    met = ""
    if goal is not None and ratio is not None:
        met = "yes" if (ratio >= goal if higher_is_better else ratio <= goal) else "no"
    goal_text = "" if goal is None else (">= " if higher_is_better else "<= ") + f"{goal:g}"
    rows.append((figure, case, acc, baseline_name, baseline, ratio_name, ratio, goal_text, met))


def div(a, b):
    return a / b if a is not None and b else None


# 1. Tiny MLP: overhead over plain libtorch, steps/s against Python Accelerate.
for p in ("no", "bf16", "fp16"):
    plain = value(rf"mlp precision={p} who=plain ms_per_step=([\d.]+)")
    ours = value(rf"mlp precision={p} who=acc ms_per_step=([\d.]+)")
    name = {"no": "fp32"}.get(p, p)
    add("1 step overhead", f"tiny MLP {name}", ours, "plain libtorch ms/step", plain, "acc / plain", div(ours, plain),
        1.02, higher_is_better=False)
    for fused, label in (("0", "default AdamW"), ("1", "AdamW(fused=True)")):
        py = value(rf"python mlp precision={p} fused={fused} ms_per_step=([\d.]+)")
        add("1 step overhead", f"tiny MLP {name} vs Python {label}", ours, "Python ms/step", py,
            "Python / acc (steps/s ratio)", div(py, ours), 1.9)

# 2. GPT-2-small-sized bf16, DDP scaling.
def gpt(who, ranks, strategy=None):
    pattern = rf"{who} gpt ranks={ranks} .*?tokens_per_s=([\d.]+) peak_gib=([\d.]+) strategy=(\w+)"
    for m in re.finditer(pattern, text):
        if strategy is None or m.group(3) == strategy:
            return float(m.group(1)), float(m.group(2))
    return None, None


scaling = {}
for n in (1, 2, 4):
    strategy = "NO" if n == 1 else "MULTI_GPU"
    acc_tps, _ = gpt("acc", n, strategy)
    py_tps, _ = gpt("python", n, strategy)
    if acc_tps is None and py_tps is None:
        continue
    scaling[n] = (acc_tps, py_tps)
    add("2 GPT-2-small bf16", f"{n} GPU{'s' if n > 1 else ''} tokens/s", acc_tps, "Python tokens/s", py_tps,
        "acc / Python", div(acc_tps, py_tps), 1.05 if n == 1 else 1.25)
for n in (2, 4):
    if n in scaling and 1 in scaling:
        for i, who in enumerate(("acc", "Python")):
            eff = div(scaling[n][i], n * scaling[1][i]) if scaling[n][i] and scaling[1][i] else None
            add("2 GPT-2-small bf16", f"{who} DDP scaling efficiency, {n} GPUs", eff, "", None, "efficiency", eff,
                0.95 if who == "acc" else None)

# 3. FSDP.
fsdp_ranks = re.search(r"acc gpt ranks=(\d+) .*strategy=FSDP", text)
if fsdp_ranks:
    n = int(fsdp_ranks.group(1))
    acc_tps, acc_mem = gpt("acc", n, "FSDP")
    py_tps, py_mem = gpt("python", n, "FSDP")
    add("3 FSDP FULL_SHARD bf16", f"GPT-2-small, {n} GPUs, tokens/s", acc_tps, "Python tokens/s", py_tps, "acc / Python",
        div(acc_tps, py_tps), 1.5)
    # Python prints its peak to 0.01 GiB: compare both at that precision.
    acc_mem, py_mem = (round(m, 2) if m is not None else None for m in (acc_mem, py_mem))
    add("3 FSDP FULL_SHARD bf16", f"GPT-2-small, {n} GPUs, peak GiB per GPU", acc_mem, "Python peak GiB", py_mem,
        "acc / Python", div(acc_mem, py_mem), 1.0, higher_is_better=False)

# 4. All-reduce.
ours = {int(m[0]): float(m[1]) for m in re.findall(r"acc_nccl size_mib=(\d+) time_us=[\d.]+ busbw_gbps=([\d.]+)", text)}
theirs = {int(m[0]): float(m[1]) for m in re.findall(r"torch_nccl size_mib=(\d+) time_us=[\d.]+ busbw_gbps=([\d.]+)", text)}
for size in sorted(ours):
    add("4 all-reduce busbw GB/s", f"{size} MiB fp32", ours[size], "torch.distributed NCCL", theirs.get(size),
        "acc / NCCL", div(ours[size], theirs.get(size)), 0.85 if size == 25 else None)

# 5. CPU figures, measured by bench/cpu.sh.
cpu_note = "not measured (run bench/cpu.sh)"
if os.path.exists(cpu_csv):
    cpu = {(r["figure"], r["case"], r["metric"]): float(r["value"]) for r in csv.DictReader(open(cpu_csv))}
    key = ("cpu_step_overhead", "tiny MLP fp32")
    if key + ("acc_over_plain",) in cpu:
        add("5 CPU", "tiny MLP fp32 step overhead", cpu[key + ("acc_ms_per_step",)], "plain libtorch ms/step",
            cpu[key + ("plain_ms_per_step",)], "acc / plain", cpu[key + ("acc_over_plain",)], 1.02,
            higher_is_better=False)
    for case in ("tiny MLP", "char_lm"):
        k = ("cpu_gloo_scaling", case)
        if k + ("scaling_efficiency_2_ranks",) in cpu:
            add("5 CPU", f"{case} Gloo DDP 2 ranks samples/s", cpu[k + ("samples_per_s_2_ranks",)],
                "1 rank samples/s", cpu[k + ("samples_per_s_1_ranks",)], "scaling efficiency",
                cpu[k + ("scaling_efficiency_2_ranks",)])
    cpu_note = open(os.path.join(os.path.dirname(cpu_csv), "cpu.md")).read().splitlines()[2] \
        if os.path.exists(os.path.join(os.path.dirname(cpu_csv), "cpu.md")) else "bench/results/cpu.csv"


def fmt(x):
    return "n/a" if x is None else (f"{x:.3f}" if abs(x) < 10 else f"{x:,.0f}")


with open(os.path.join(out_dir, "suite.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["figure", "case", "acc", "baseline", "baseline_value", "ratio", "ratio_value", "goal", "met"])
    for r in rows:
        w.writerow([r[0], r[1], "" if r[2] is None else f"{r[2]:.4f}", r[3], "" if r[4] is None else f"{r[4]:.4f}",
                    r[5], "" if r[6] is None else f"{r[6]:.4f}", r[7], r[8]])

md = [
    "# Performance suite (bench/gpu_suite.sh)",
    "",
    f"{header('date')}, {header('machine')}; {header('versions')}. CPU rows: {cpu_note}",
    "",
    "Each figure is a median over repeated windows after warm-up. `ratio` compares acc with the baseline named "
    "in its row; `goal` is the issue's.",
    "",
    "| figure | case | acc | baseline | baseline value | ratio | value | goal | met |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]
md += [f"| {r[0]} | {r[1]} | {fmt(r[2])} | {r[3]} | {fmt(r[4])} | {r[5]} | {fmt(r[6])} | {r[7]} | {r[8]} |" for r in rows]
open(os.path.join(out_dir, "suite.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))

try:
    import matplotlib  # noqa: E402  (only the plots need it; the GPU machines have it)
except ImportError:
    print("suite_report: no matplotlib here, so no plots; the tables are written")
    sys.exit(0)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if scaling:
    counts = sorted(scaling)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (who, style) in enumerate((("acc", "o-"), ("Python Accelerate", "s--"))):
        ys = [scaling[n][i] / 1e3 if scaling[n][i] else float("nan") for n in counts]
        ax.plot(counts, ys, style, label=who)
    if scaling[1][0]:
        ax.plot(counts, [n * scaling[1][0] / 1e3 for n in counts], ":", color="gray", label="acc, linear")
    ax.set_xlabel("GPUs (DDP)")
    ax.set_ylabel("thousand tokens/s")
    ax.set_xticks(counts)
    ax.set_title(f"GPT-2-small-sized, bf16 - {header('machine')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "suite-scaling.png"), dpi=120)

ratio_rows = [r for r in rows if r[6] is not None and r[7]]
if ratio_rows:
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(ratio_rows) + 1.2))
    labels = [f"{r[1]} ({r[5]})" for r in ratio_rows]
    values = [r[6] for r in ratio_rows]
    colors = ["tab:green" if r[8] == "yes" else "tab:red" for r in ratio_rows]
    ax.barh(range(len(values)), values, color=colors)
    for i, r in enumerate(ratio_rows):
        goal = float(r[7].split()[-1])
        ax.plot([goal, goal], [i - 0.4, i + 0.4], color="black")
    ax.set_yticks(range(len(values)))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ratio (black tick: goal; green: met)")
    ax.set_title(f"acc vs baselines - {header('date')}, {header('machine')}")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "suite-ratios.png"), dpi=120)
