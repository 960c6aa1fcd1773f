#!/usr/bin/env bash
# Soak: N back-to-back launches (default 200) of a short 2-rank job (acc_dist_worker elastic: 12
# steps, a checkpoint every 4, under `acc launch --cpu`, half of them with --max_restarts 1), each
# hit at a random moment by SIGKILL or SIGTERM sent to a random rank or to acc launch itself.
# Counts hangs (acc launch still running 60 s after the start) and leftover processes (any process
# holding the launch's marker variable 5 s after acc launch exited), then SIGKILLs those.
#   tests/faults/soak.sh ACC WORKER WORKDIR [N] [--markdown FILE]
#   tests/faults/soak.sh build/bin/acc build/bin/acc_dist_worker /tmp/soak 200 --markdown bench/results/soak.md
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/job_processes.sh"

(($# >= 3)) || {
  echo "usage: $0 ACC WORKER WORKDIR [N] [--markdown FILE]" >&2
  exit 2
}
acc=$1 worker=$2 work=$3
shift 3
launches=200
[[ ${1:-} =~ ^[0-9]+$ ]] && launches=$1 && shift
markdown=
[[ ${1:-} == --markdown ]] && markdown=$2

bound=60 settle=5
hangs=0 leftovers=0 launches_with_leftovers=0 missed=0 max_exit_after_kill_us=0
declare -A exit_codes=() targets=()
mkdir -p "$work"
start_us=$(now_us)

# The pid of rank R of the job (of its current start), if it is running.
rank_pid() {
  local pid
  for pid in $(job_pids "$1"); do
    grep -qazxF "RANK=$2" /proc/"$pid"/environ 2>/dev/null && echo "$pid" && return
  done
}

for ((i = 1; i <= launches; i++)); do
  marker=soak-$$-$i dir=$work/job
  rm -rf "$dir" && mkdir -p "$dir"
  restarts=$((RANDOM % 2))
  delay_ms=$((RANDOM % 3000))
  signal=$((RANDOM % 2 ? 9 : 15))
  pick=$((RANDOM % 5))  # ranks 0 and 1 twice as often as the launcher
  target=launcher
  ((pick < 4)) && target="rank $((pick % 2))"

  start_job "$marker" "$work/last" "$acc" launch --cpu --num_processes 2 --main_process_port 0 --rdzv_timeout 20 \
    --grace_period 2 --max_restarts $restarts "$worker" elastic "$dir" 12 4
  sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
  pid=$job_pid
  [[ $target != launcher ]] && pid=$(rank_pid "$marker" "${target#rank }")
  kill_us=
  if [[ -n $pid ]] && kill -"$signal" "$pid" 2>/dev/null; then
    kill_us=$(now_us)
  else
    missed=$((missed + 1))  # the job had ended, or the rank was not started yet
  fi
  kind="$target $( ((signal == 9)) && echo SIGKILL || echo SIGTERM)"
  targets[$kind]=$((${targets[$kind]:-0} + 1))

  wait_job $((bound - (delay_ms / 1000)))
  if [[ $job_code == hang ]]; then
    hangs=$((hangs + 1))
    echo "launch $i: HANG ($target, signal $signal after $delay_ms ms); stderr:" >&2
    tail -5 "$work/last.err" >&2
  fi
  exit_codes[$job_code]=$((${exit_codes[$job_code]:-0} + 1))
  if [[ -n $kill_us && $target != launcher && $job_code != hang ]] && ((job_end_us - kill_us > max_exit_after_kill_us)); then
    max_exit_after_kill_us=$((job_end_us - kill_us))
  fi
  left=$(count_left_after "$marker" $settle)
  if ((left > 0)); then
    leftovers=$((leftovers + left))
    launches_with_leftovers=$((launches_with_leftovers + 1))
    echo "launch $i: $left process(es) left ($target, signal $signal after $delay_ms ms): $(job_pids "$marker" | tr '\n' ' ')" >&2
    kill_job_pids "$marker"
  fi
  ((i % 20 == 0)) && echo "after $i launches: $hangs hang(s), $leftovers leftover process(es)"
done
elapsed=$(seconds_between "$start_us" "$(now_us)")

codes=$(for code in "${!exit_codes[@]}"; do echo "$code: ${exit_codes[$code]}"; done | sort -n | paste -sd, | sed 's/,/, /g')
kinds=$(for kind in "${!targets[@]}"; do echo "$kind: ${targets[$kind]}"; done | sort | paste -sd, | sed 's/,/, /g')
summary="$launches launches in $elapsed s: $hangs hang(s), $leftovers leftover process(es) (in $launches_with_leftovers launch(es))"
echo "$summary"
echo "exit codes: $codes"
echo "kills: $kinds; $missed found nothing to kill (job over, or the rank not started yet)"
echo "longest time from a rank's kill to acc launch's exit: $(seconds_between 0 $max_exit_after_kill_us) s"

if [[ -n $markdown ]]; then
  cat >"$markdown" <<EOF
# Soak: random kills

$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -n): $(nproc) CPUs, $(uname -sr), a machine shared with other builds.
Written by \`tests/faults/soak.sh\`: $launches back-to-back launches of \`acc launch --cpu --num_processes 2
--main_process_port 0 --rdzv_timeout 20 --grace_period 2 [--max_restarts 1] acc_dist_worker elastic DIR 12 4\`
(12 training steps, a checkpoint every 4; half the launches with \`--max_restarts 1\`), each hit after a
random 0-3 s by SIGKILL or SIGTERM sent to rank 0, rank 1 or acc launch. A hang: acc launch still
running $bound s after the start. A leftover: a process holding the launch's marker variable $settle s after
acc launch exited.

| measure | result |
| --- | --- |
| launches | $launches, in $elapsed s |
| hangs | **$hangs** |
| leftover processes | **$leftovers** (in $launches_with_leftovers launches) |
| kills sent | $kinds |
| nothing to kill | $missed (the job had ended, or the rank was not started yet) |
| exit codes of acc launch (code: launches) | $codes |
| longest time from a rank's kill to acc launch's exit (with --max_restarts 1: the restarted run included) | $(seconds_between 0 $max_exit_after_kill_us) s |
EOF
fi
((hangs == 0 && leftovers == 0))
