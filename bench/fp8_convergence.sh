#!/usr/bin/env bash
# FP8's loss against BF16's on real text, in one device command: gpt_ddp learns the fortune files
# (Debian's `fortunes`, carried in .deps/) as bytes, once under acc::FP8 and once under acc BF16,
# from the same initial weights and the same batches; prints both held-out losses (16 fixed batches
# of the last 10% of the text) and their ratio. Log: $OUT/fp8_convergence.log.
#   bench/fp8_convergence.sh ["layers:dim:batch:steps" ...]   (default 12:768:16:3000 24:2048:8:1000)
source "$(dirname "$0")/../scripts/lib/device_run.sh"
log_to_out fp8_convergence
echo "== $(date -u +%F) $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), torch $(python3 -c 'import torch; print(torch.__version__)')"
build=build-gpu
configure_gpu_build $build >/dev/null || exit 1
cmake --build $build -j "$(nproc)" --target gpt_ddp >/dev/null || { cmake --build $build --target gpt_ddp | tail -30; exit 1; }
text=/tmp/fortunes.txt
find $deps/usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.*' | sort | xargs cat >"$text"
echo "== text: $(wc -c <"$text") bytes"
results=$out/fp8_convergence.txt
: >"$results"
for size in "${@:-12:768:16:3000 24:2048:8:1000}"; do
  for one in $size; do
    IFS=: read -r layers dim batch steps <<<"$one"
    for precision in fp8 bf16; do
      $build/bin/gpt_ddp --layers "$layers" --dim "$dim" --heads $((dim / 64)) --batch "$batch" --steps "$steps" \
        --warmup 5 --breakdown 1 --precision $precision --data "$text" | grep "acc gpt ranks" | tee -a "$results"
    done
  done
done
python3 - "$results" <<'PY'
import re, sys
rows = [dict(re.findall(r"(\w+)=(\S+)", line)) for line in open(sys.argv[1])]
print("| layers x dim (batch), steps | eval loss fp8 | eval loss bf16 | fp8 / bf16 | tokens/s fp8 / bf16 |")
print("| --- | --- | --- | --- | --- |")
for dim in dict.fromkeys(r["dim"] for r in rows):
    f8 = next(r for r in rows if r["dim"] == dim and r["precision"].startswith("fp8"))
    b16 = next(r for r in rows if r["dim"] == dim and r["precision"] == "bf16")
    e8, e16 = float(f8["eval_loss"]), float(b16["eval_loss"])
    print(f"| {f8['layers']} x {dim} ({f8['batch']}), {f8['steps']} | {e8:.4f} | {e16:.4f} | {e8 / e16:.4f} | "
          f"{float(f8['tokens_per_s']) / float(b16['tokens_per_s']):.3f} |")
PY
