# Sourced by the fault scripts (tests/faults/fault_matrix.sh, tests/faults/soak.sh): starts an `acc launch`
# job with a marker in its environment, which every rank inherits, waits for it within a bound,
# and finds the job's processes still alive afterwards by that marker.
#   source tests/faults/job_processes.sh
#   start_job MARKER LOG_PREFIX acc launch ...   # sets job_pid, job_start_us
#   wait_job BOUND_SECONDS                       # sets job_code ("hang" past the bound), job_end_us
#   job_pids MARKER                              # the live processes holding the marker

now_us() { echo "${EPOCHREALTIME/./}"; }

# Seconds between two microsecond times, with 2 decimals.
seconds_between() { printf '%d.%02d' $((($2 - $1) / 1000000)) $(((($2 - $1) % 1000000) / 10000)); }

# Live processes whose environment holds ACC_JOB_MARKER=MARKER (a zombie has no environment left).
job_pids() {
  grep -lsazxF "ACC_JOB_MARKER=$1" /proc/[0-9]*/environ 2>/dev/null | awk -F/ '{print $3}'
}

start_job() {
  local marker=$1 log=$2
  shift 2
  job_start_us=$(now_us)
  ACC_JOB_MARKER=$marker "$@" >"$log.out" 2>"$log.err" &
  job_pid=$!
}

# Waits until the launcher exits; past the bound it is a hang: everything of the job is SIGKILLed.
wait_job() {
  local deadline=$(($(now_us) + $1 * 1000000)) state
  while true; do
    state=gone
    [[ -r /proc/$job_pid/stat ]] && read -r _ _ state _ </proc/"$job_pid"/stat 2>/dev/null
    if [[ $state == Z || $state == gone ]]; then
      job_end_us=$(now_us)
      wait "$job_pid" 2>/dev/null
      job_code=$?
      return 0
    fi
    if (($(now_us) > deadline)); then
      job_end_us=$(now_us)
      job_code=hang
      kill -9 "$job_pid" 2>/dev/null
      wait "$job_pid" 2>/dev/null
      return 1
    fi
    sleep 0.02
  done
}

# Waits up to BOUND seconds for the job's processes to disappear; prints how many are left.
count_left_after() {
  local marker=$1 deadline=$(($(now_us) + $2 * 1000000)) left
  while true; do
    left=$(job_pids "$marker" | wc -l)
    if ((left == 0 || $(now_us) > deadline)); then
      echo "$left"
      return
    fi
    sleep 0.05
  done
}

# SIGKILLs whatever of the job is left, so that a failed check leaves nothing behind.
kill_job_pids() { job_pids "$1" | xargs -r kill -9 2>/dev/null || true; }
