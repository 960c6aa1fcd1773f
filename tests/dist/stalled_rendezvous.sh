#!/usr/bin/env bash
# Peers that stall instead of dying, during the rendezvous of an `acc launch --cpu` job
# (acc_dist_worker rendezvous; ranks other than 0 join only once the script lets them):
#   server_stopped: 2 ranks; rank 0 is stopped (SIGSTOP) once it serves the store, then rank 1
#                   joins: rank 1 must fail within the rendezvous timeout naming rank 0 and the
#                   address, and the launcher must end the job, the stopped rank included.
#   rank_stopped:   3 ranks; rank 1 is stopped before it joins: rank 0 must name it as missing and
#                   the job must end, the stopped rank included.
#   tests/dist/stalled_rendezvous.sh ACC WORKER WORKDIR CASE
# Prints one row: case | outcome | time from the fault to the launcher's exit | processes left.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../faults/job_processes.sh"

(($# == 4)) || {
  echo "usage: $0 ACC WORKER WORKDIR server_stopped|rank_stopped" >&2
  exit 2
}
acc=$1 worker=$2 work=$3 case=$4
rdzv=3 grace=2
# The rendezvous timeout, then the launcher's SIGTERM grace period before SIGKILL (a stopped
# process only dies of SIGKILL), and 5 s for starting and reaping processes on a loaded machine.
bound=$((rdzv + grace + 5))
mkdir -p "$work"
log=$work/$case
go=$work/$case.go
marker=stalled-$case-$$
rm -f "$go"
failures=0
fail() {
  echo "FAIL [$case]: $*" >&2
  failures=$((failures + 1))
}

# The live process of the job with RANK=$1 (the launcher and its watchdog have no RANK).
rank_pid() {
  local pid
  for pid in $(job_pids "$marker"); do
    if grep -qazx "RANK=$1" /proc/"$pid"/environ 2>/dev/null; then
      echo "$pid"
      return
    fi
  done
}

# Waits (up to 60 s) for the process of rank $1 to exist; prints its pid.
wait_rank_pid() {
  local pid deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    pid=$(rank_pid "$1")
    [[ -n $pid ]] && echo "$pid" && return
    sleep 0.02
  done
}

# Waits (up to 60 s) for a listening TCP socket on port $1 (IPv4 or IPv6).
wait_listening() {
  local hex deadline=$((SECONDS + 60))
  hex=$(printf ':%04X' "$1")
  while ((SECONDS < deadline)); do
    awk -v port="$hex" '$4 == "0A" && substr($2, length($2) - 4) == port { found = 1 } END { exit !found }' \
      /proc/net/tcp /proc/net/tcp6 2>/dev/null && return 0
    sleep 0.02
  done
  return 1
}

case $case in
server_stopped) ranks=2 stopped=0 expect="rank 1: the rendezvous store at 127\.0\.0\.1:[0-9]+ did not answer within $rdzv s" ;;
rank_stopped) ranks=3 stopped=1 expect="1 of 3 ranks never joined the rendezvous at 127\.0\.0\.1:[0-9]+ within $rdzv s \(missing: 1\)" ;;
*) echo "unknown case '$case'" >&2 && exit 2 ;;
esac

ACC_TEST_JOIN_WHEN=$go start_job "$marker" "$log" "$acc" launch --cpu --num_processes "$ranks" --main_process_port 0 \
  --rdzv_timeout "$rdzv" --grace_period "$grace" "$worker" rendezvous
victim=$(wait_rank_pid "$stopped")
server=$(wait_rank_pid 0)
port=$(tr '\0' '\n' <"/proc/$server/environ" | sed -n 's/^MASTER_PORT=//p')
if [[ -z $victim || -z $port ]] || ! wait_listening "$port"; then
  fail "rank 0 never served the rendezvous: $(cat "$log.err")"
else
  kill -STOP "$victim"
  fault_us=$(now_us)
  touch "$go"
  wait_job 60
  took=$(seconds_between "$fault_us" "$job_end_us")
  left=$(count_left_after "$marker" 2)
  [[ $job_code == 1 ]] || fail "acc launch exited '$job_code', expected 1"
  grep -qE "$expect" "$log.err" || fail "no line matching '$expect' in: $(cat "$log.err")"
  ((${took%.*} < bound)) || fail "the job ended ${took} s after the fault, over the ${bound} s bound"
  ((left == 0)) || fail "$left process(es) of the job left: $(job_pids "$marker" | xargs -r ps -o pid,stat,args -p)"
  echo "$case | exit $job_code: $(grep -m1 -oE "$expect" "$log.err") | ${took} s | $left left"
fi
kill_job_pids "$marker"
((failures == 0))
