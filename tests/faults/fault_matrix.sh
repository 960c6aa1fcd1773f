#!/usr/bin/env bash
# The fault matrix: a short training job (acc_dist_worker elastic: 16 steps, a checkpoint every 4)
# under `acc launch --cpu` with Gloo, and one fault per case. Each case checks that the launcher
# exits within its bound with the right code, names the first failing rank, leaves no process of
# the job behind, and that the newest complete checkpoint loads: a new launch resumes from it and
# (2 ranks) ends with the same losses and parameters, bit for bit, as an uninterrupted run.
#   tests/faults/fault_matrix.sh ACC WORKER WORKDIR [--markdown FILE] CASE...
# CASE: reference (the uninterrupted run the others compare with; run it first), forward,
# allreduce, save, exception, join, launcher, restart, or all (reference, then every case).
# Prints one table row per case; exits 1 if any check failed. ctest runs each case (tests/dist).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/job_processes.sh"

usage() {
  echo "usage: $0 ACC WORKER WORKDIR [--markdown FILE] CASE... (CASE: reference forward allreduce save exception" \
    "join launcher restart all)" >&2
  exit 2
}
(($# >= 4)) || usage
acc=$1 worker=$2 work=$3
shift 3
markdown=
if [[ $1 == --markdown ]]; then
  markdown=$2
  shift 2
fi
cases=("$@")
[[ ${cases[0]:-} == all ]] && cases=(reference forward allreduce save exception join launcher restart)

steps=16 every=4
reference=$work/reference
failures=0
rows=()

fail() {
  echo "FAIL [$case]: $*" >&2
  failures=$((failures + 1))
  case_ok=0
}

# acc launch with R ranks on a fresh port; the rendezvous (and Gloo) timeout is T seconds.
launch_args() { echo --cpu --num_processes "$1" --main_process_port 0 --rdzv_timeout "$2"; }

# A new launch on the case's directory must resume from checkpoint_N at step S and run to the end
# (with 2 ranks, equal to the reference run); sets the checkpoint column.
check_resume() {
  local ranks=$1 expect_checkpoint=$2 expect_step=$3 dir=$work/$case log=$work/$case.resume ref=()
  ((ranks == 2)) && ref=("$reference")
  local newest
  newest=$(ls "$dir/checkpoints" 2>/dev/null | grep -xE 'checkpoint_[0-9]+' | sort -t_ -k2 -n | tail -1)
  [[ $newest == "$expect_checkpoint" ]] || fail "newest complete checkpoint is '${newest:-none}', expected $expect_checkpoint"
  local partial
  partial=$(ls "$dir/checkpoints" 2>/dev/null | grep -c '\.tmp-')
  start_job "resume-$case-$$" "$log" "$acc" launch $(launch_args "$ranks" 30) "$worker" elastic "$dir" $steps $every \
    "${ref[@]}"
  wait_job 90
  local state="$expect_checkpoint (step $expect_step): "
  if [[ $job_code != 0 ]] || ! grep -q "^resumed from $expect_checkpoint at step $expect_step$" "$log.out"; then
    fail "the resumed run exited $job_code without 'resumed from $expect_checkpoint at step $expect_step': $(tail -3 "$log.err")"
    state+="does not load"
  elif ((ranks == 2)); then
    (($(grep -c 'bit for bit' "$log.out") == 2)) || fail "the resumed run differs from the reference: $(cat "$log.err")"
    state+="loads; the resumed run equals the uninterrupted one bit for bit"
  else
    state+="loads; the resumed run trains to step $steps"
  fi
  ((partial > 0)) && state+="; the killed save's temporary directory is left and ignored"
  checkpoint=$state
}

# Runs one case: the job with its fault, then the checks. Columns: case, ranks, fault, bound,
# time from the fault to the end, exit code, first failure reported, processes left, checkpoint.
run_case() {
  local ranks=2 fault= bound=10 expect_code=137 expect_report= rdzv=30 restarts=0 killer=
  local expect_checkpoint=checkpoint_1 expect_step=8 description
  case $case in
  forward) fault=forward@1:10 description="kill -9 rank 1 during forward (step 10)"
    expect_report="rank 1 \(pid [0-9]+\) was killed by signal SIGKILL" ;;
  allreduce) fault=allreduce@0:10 description="kill -9 rank 0 during the gradient all-reduce (step 10)"
    expect_report="rank 0 \(pid [0-9]+\) was killed by signal SIGKILL" ;;
  save) fault=save@0:8 description="kill -9 rank 0 during save_state of checkpoint_1 (step 8)"
    expect_report="rank 0 \(pid [0-9]+\) was killed by signal SIGKILL" expect_checkpoint=checkpoint_0 expect_step=4 ;;
  exception) fault=exception@1:10 description="rank 1 throws an exception (step 10)" expect_code=1
    expect_report="rank [01] \(pid [0-9]+\) exited with code 1" ;;
  join) ranks=4 fault=join@3:0 rdzv=5 bound=15 expect_code=1 description="rank 3 never joins (--rdzv_timeout 5)"
    expect_report="rank [0-2] \(pid [0-9]+\) exited with code 1" expect_checkpoint= ;;
  launcher) ranks=3 fault=stall@2:10 killer=launcher description="acc launch killed with kill -9 (step 10)"
    expect_report= ;;
  restart) fault=forward@1:10 restarts=1 bound=60 expect_code=0
    description="kill -9 rank 1 during forward (step 10), --max_restarts 1"
    expect_report="restart 1 of 1 in 1 s: starting the 2 local rank\(s\) again" ;;
  *) echo "unknown case '$case'" >&2; usage ;;
  esac
  local dir=$work/$case marker=fault-$case-$$ log=$work/$case
  rm -rf "$dir" && mkdir -p "$dir"
  local ref=()
  [[ $case == restart ]] && ref=("$reference")
  ACC_TEST_FAULT=$fault start_job "$marker" "$log" "$acc" launch $(launch_args "$ranks" "$rdzv") \
    --max_restarts $restarts "$worker" elastic "$dir" $steps $every "${ref[@]}"

  local fault_us=
  if [[ $killer == launcher ]]; then  # once the stalled rank says so, the launcher is killed
    for _ in $(seq 600); do grep -q '^fault: ' "$log.err" && break; sleep 0.05; done
    grep -q '^fault: ' "$log.err" || fail "rank 2 did not stall within 30 s: $(tail -3 "$log.err")"
    fault_us=$(now_us)
    kill -9 "$job_pid"
  fi
  wait_job $((bound + 60))
  local left end_us=$job_end_us code=$job_code
  if [[ $killer == launcher ]]; then  # its end: when the last of its ranks is gone
    left=$(count_left_after "$marker" "$bound")
    end_us=$(now_us)
    ((left == 0)) || end_us=
  else
    left=$(job_pids "$marker" | wc -l)
    fault_us=$(sed -n 's/^fault: .* at unix time \([0-9]*\)\.\([0-9]*\)$/\1\2000/p' "$log.err" | head -1)
  fi
  kill_job_pids "$marker"

  [[ -n $fault_us ]] || fail "no fault was announced: $(tail -3 "$log.err")"
  local took=n/a
  if [[ -n $fault_us && -n $end_us ]]; then
    took=$(seconds_between "$fault_us" "$end_us")
    (((end_us - fault_us) <= bound * 1000000)) || fail "took $took s from the fault to the end, bound $bound s"
  fi
  [[ $code == "$expect_code" ]] || fail "exit code $code, expected $expect_code: $(tail -5 "$log.err")"
  ((left == 0)) || fail "$left process(es) of the job left: $(job_pids "$marker" | tr '\n' ' ')"
  local reported=-
  if [[ -n $expect_report ]]; then
    grep -qE "^acc launch: $expect_report" "$log.err" || fail "acc launch did not report '$expect_report'"
    reported=$(grep -m1 -oE "^acc launch: $expect_report" "$log.err" | sed 's/^acc launch: //; s/ (pid [0-9]*)//')
  fi
  [[ $killer == launcher ]] && reported="none: acc launch was killed; its ranks died with it (PR_SET_PDEATHSIG, and its watchdog)"
  # An exception or a rendezvous timeout ends several ranks at nearly the same moment: acc launch
  # names whichever exits first, and the cause is in that rank's message.
  if [[ $case == exception ]]; then
    grep -q "^rank 1: ACC_TEST_FAULT=exception: rank 1 raised at step 10$" "$log.err" ||
      fail "rank 1 did not print its exception"
    reported+="; rank 1 printed its exception"
  fi
  if [[ $case == join ]]; then
    grep -qE "never joined the rendezvous at .* \(missing: ([0-9]+, )*3\)" "$log.err" ||
      fail "rank 0 did not name rank 3 as missing: $(tail -3 "$log.err")"
    reported+="; rank 0: $(grep -m1 -oE '[0-9]+ of 4 ranks never joined[^;]*' "$log.err" | sed 's/ at [0-9.:]*//')"
  fi

  local checkpoint
  if [[ $case == restart ]]; then
    grep -q "^resumed from checkpoint_1 at step 8$" "$log.out" || fail "the restart did not resume from checkpoint_1"
    (($(grep -c 'bit for bit' "$log.out") == 2)) || fail "the restarted run differs from the reference"
    checkpoint="restarted from checkpoint_1 (step 8); the run equals the uninterrupted one bit for bit"
  elif [[ -z $expect_checkpoint ]]; then
    [[ -z $(ls "$dir/checkpoints" 2>/dev/null) ]] || fail "a checkpoint was written"
    checkpoint="none (training never started)"
  else
    check_resume "$ranks" "$expect_checkpoint" "$expect_step"
  fi
  rows+=("| $description | $ranks | $bound | $took | $code | $reported | $left | $checkpoint |")
}

mkdir -p "$work"
for case in "${cases[@]}"; do
  case_ok=1
  if [[ $case == reference ]]; then
    rm -rf "$reference" && mkdir -p "$reference"
    start_job "reference-$$" "$work/reference" "$acc" launch $(launch_args 2 30) "$worker" elastic "$reference" \
      $steps $every
    wait_job 120
    [[ $job_code == 0 && -f $reference/result_1.pt ]] || fail "the reference run failed: $(tail -5 "$work/reference.err")"
    ((case_ok)) && echo "reference: $steps steps on 2 ranks, a checkpoint every $every, in $reference"
    continue
  fi
  before=$failures
  run_case
  echo "${rows[-1]}"
  ((failures == before)) && echo "PASS [$case]"
done

if [[ -n $markdown ]]; then
  {
    echo "# Fault matrix"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -n): $(nproc) CPUs, $(uname -sr); written by"
    echo "\`tests/faults/fault_matrix.sh\` (ctest runs each case as dist/fault_<case>). The job:"
    echo "\`acc_dist_worker elastic\`, $steps steps of a small MLP, a checkpoint every $every steps"
    echo "(\`save_state()\` with automatic naming), under \`acc launch --cpu\` (Gloo on loopback)."
    echo "Time to exit: from the fault (the rank's own announcement, or the kill of acc launch) until"
    echo "acc launch has exited (for a killed acc launch: until its last rank is gone; with a restart: until"
    echo "the restarted run has ended). Orphans: processes"
    echo "holding the job's marker variable after the exit. Checkpoint: the newest complete one, then a"
    echo "new launch that resumes from it (2 ranks: compared with an uninterrupted run)."
    echo
    echo "| case | ranks | bound (s) | time to exit (s) | exit code | first failure reported | orphans | checkpoint after |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Result: $((${#rows[@]})) cases, $failures failed check(s)."
  } >"$markdown"
fi
((failures == 0))
