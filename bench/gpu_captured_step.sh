#!/usr/bin/env bash
# acc::capture_step on one GPU, in one device command: the tiny MLP (512-512-10, batch 64,
# acc::optim::AdamW) in fp32, bf16 and fp16 through plain libtorch, acc's eager loop and acc's
# captured step (bench/captured_step.cpp), against Python Accelerate with its default AdamW, with
# fused=True, and with the whole step captured by torch.cuda.graph (bench/py/mlp_accelerate.py);
# then the GPT-2-small-sized model in bf16, eager against captured (gpt_ddp --capture 1). Runs the
# capture tests first. Prints the tables of bench/results/captured_step.md.
source "$(dirname "$0")/../scripts/lib/device_run.sh"
log_to_out captured_step
ACC_GPU_BUILD_ONLY=1 ACC_GPU_TARGETS="acc_tests captured_step gpt_ddp" scripts/gpu.sh >"$out/build.log" 2>&1 ||
  { tail -40 "$out/build.log"; echo "build failed"; exit 1; }
build=build-gpu
echo "== $(date -u +%F) $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), torch $(python3 -c 'import torch; print(torch.__version__)')"
echo "== capture tests and the optimizer's"
$build/bin/acc_tests -tc='*captur*,*acc::optim*,*step_unless*,CUDA: FP16*' | tail -3
results=/tmp/captured_results.txt
: >$results
for p in no bf16 fp16; do
  $build/bin/captured_step --precision $p --rounds ${ROUNDS:-15} --steps 100 | tee -a $results
  for variant in "" --fused --graph; do
    [[ $p == fp16 && $variant == --graph ]] && continue
    accelerate launch --num_processes 1 --num_machines 1 --mixed_precision $p --dynamo_backend no \
      bench/py/mlp_accelerate.py $variant 2>/dev/null | grep "python mlp" | tee -a $results
  done
done
for capture in 0 1; do
  $build/bin/gpt_ddp --precision bf16 --steps 30 --repeats 3 --capture $capture | grep "ms_per_step" | tee -a $results
done
python3 - "$results" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(pattern):
    m = re.search(pattern + r".*?ms_per_step=([\d.]+)", text)
    return float(m.group(1)) if m else float("nan")
print("| precision | acc captured ms/step | acc eager | plain libtorch | Python Accelerate default / fused / torch.cuda.graph | Python default / acc captured | Python fused / acc captured | Python graph / acc captured | acc eager / acc captured |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for p in ("no", "bf16", "fp16"):
    graphed, eager, plain = (ms(rf"acc mlp precision={p} mode={m}") for m in ("captured", "eager", "plain"))
    default, fused, pygraph = (ms(rf"python mlp precision={p} fused={f} graph={g}") for f, g in ((0, 0), (1, 0), (0, 1)))
    print(f"| {p} | {graphed:.4f} | {eager:.4f} | {plain:.4f} | {default:.4f} / {fused:.4f} / {pygraph:.4f} | "
          f"{default / graphed:.2f} | {fused / graphed:.2f} | {pygraph / graphed:.2f} | {eager / graphed:.2f} |")
tokens = {c: float(m.group(1)) for c, m in ((c, re.search(rf"acc gpt .*tokens_per_s=([\d.]+).*captured={c}", text)) for c in "01") if m}
if len(tokens) == 2:
    print(f"\nGPT-2-small-sized bf16, one GPU: eager {tokens['0']:.0f} tokens/s, captured {tokens['1']:.0f}: "
          f"captured / eager = {tokens['1'] / tokens['0']:.3f}")
PY
