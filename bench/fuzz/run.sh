#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (address + undefined sanitizers) and runs each for
# SECONDS (default 600) on a corpus seeded from real configs and small safetensors files.
#   bench/fuzz/run.sh [SECONDS] [BUILD_DIR] [TARGET...]   (targets: config safetensors; needs
#   clang: apt-get install -y clang)
# Prints each target's executions and coverage; exits 1 when a target found something (its
# reproducer is under BUILD_DIR/artifacts/<target>/; rerun it with BUILD_DIR/<target>_fuzzer FILE).
set -uo pipefail
seconds=${1:-600}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(realpath -m "${2:-$root/build-fuzzers}")
shift $(($# < 2 ? $# : 2))
targets=${*:-config safetensors}
command -v clang++ >/dev/null || { echo "run.sh: clang++ not found; apt-get install -y clang" >&2; exit 2; }

CXX=clang++ cmake -S "$root/bench/fuzz" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || exit 2
cmake --build "$build" -j2 --target config_fuzzer safetensors_fuzzer || exit 2

# Seeds: every config in the repository (and the seed configs beside it where present), and
# safetensors files of each dtype, with metadata, empty and scalar tensors.
mkdir -p "$build/seeds/config" "$build/seeds/safetensors"
for f in "$root"/tests/data/*.yaml "$root"/bench/py/*.yaml "$root"/../shared/seeds/configs/*.yaml; do
  [ -f "$f" ] && cp "$f" "$build/seeds/config/"
done
printf '%%3 true\ndistributed_type: MULTI_CPU\nacc: {collective_timeout: 5}\n' >"$build/seeds/config/env_debug.yaml"
printf '%%6 2\nfsdp_config: {fsdp_sharding_strategy: 1}\n' >"$build/seeds/config/env_fsdp.yaml"
python3 - "$build/seeds/safetensors" <<'PY'
import json, struct, sys
def write(name, tensors, metadata=None):
    header, data = {}, b""
    if metadata: header["__metadata__"] = metadata
    for key, (dtype, shape, raw) in tensors.items():
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    open(f"{sys.argv[1]}/{name}.safetensors", "wb").write(struct.pack("<Q", len(text)) + text + data)
sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
write("dtypes", {d: (d, [2, 1], bytes(range(2 * n))) for d, n in sizes.items()}, {"format": "pt"})
write("scalar_and_empty", {"s": ("F32", [], b"\0\0\x80?"), "e": ("I64", [0, 3], b"")})
write("model", {"weight": ("F32", [2, 3], bytes(24)), "bias": ("F32", [3], bytes(12))}, {"format": "pt", "step": "7"})
write("nothing", {})
PY

status=0
for target in $targets; do
  corpus="$build/corpus/$target" artifacts="$build/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  echo "== $target: $seconds s"
  "$build/${target}_fuzzer" "$corpus" "$build/seeds/$target" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts/" \
    >"$build/$target.log" 2>&1
  rc=$?
  grep -E "^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)" "$build/$target.log"
  grep -E "cov: [0-9]+" "$build/$target.log" | tail -1
  if [ $rc -ne 0 ]; then
    status=1
    echo "$target: FINDING (exit $rc); see $build/$target.log:"
    grep -E "ERROR|SUMMARY|uncaught|Test unit written" "$build/$target.log" | head -5
  else
    echo "$target: no finding; corpus $(ls "$corpus" | wc -l) inputs"
  fi
done
exit $status
