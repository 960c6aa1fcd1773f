#!/usr/bin/env bash
# Where the compile time of bench/compile_cost's two files goes, in a configured build: GCC's
# phases (-ftime-report) for the libtorch-only file and the acc::run program, then the program's
# object code grouped by function family, largest first (what each extra combination costs).
#   bench/compile_profile.sh [BUILD_DIR]   (default build/)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

compile_command() {  # the compile command of TARGET's one source, writing $work/TARGET.o
  local commands
  commands=$(ninja -C "$build" -t commands "$1")  # whole: a pipe that grep leaves early fails
  grep -m1 -- "-c .*$2" <<<"$commands" | sed -E "s#^(ccache )?##; s# -o [^ ]+\\.o # -o $work/$1.o #"
}

for target in compile_cost_torch_only:torch_only.cpp compile_cost_with_run:with_run.cpp; do
  name=${target%%:*}
  command=$(compile_command "$name" "${target#*:}")
  echo "== $name"
  (cd "$build" && eval "$command -ftime-report") 2>&1 | grep -E "^ phase (parsing|lang|opt)|^ TOTAL|^ template instantiation"
done

echo "== compile_cost_with_run: object code by function family (bytes)"
nm -C -S --size-sort "$work/compile_cost_with_run.o" | python3 -c '
import collections, re, sys
families = collections.Counter()
for line in sys.stdin:
    fields = line.rstrip("\n").split(" ", 3)
    if len(fields) < 4:
        continue
    name = fields[3]
    while re.search(r"<[^<>]*>", name):  # drop template arguments, innermost first
        name = re.sub(r"<[^<>]*>", "", name)
    name = re.sub(r"\(.*", "", name)  # and the parameters
    families[name] += int(fields[1], 16)
print("total", sum(families.values()))
for name, size in families.most_common(30):
    print(size, name[:160])
'
