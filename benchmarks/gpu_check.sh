#!/usr/bin/env bash
# One run for a machine that has a GPU briefly and no network: the test suite on CUDA (the thorough hypothesis
# profile, capped per test), the kernel and model benchmarks at batch 128 (fewer repetitions), and the compile
# report, within 8 minutes in all. Uses the torch/triton already installed; installs nothing.
#
#   bash benchmarks/gpu_check.sh OUTDIR            # on the GPU machine
#   bash benchmarks/gpu_check.sh --smoke OUTDIR    # every stage at smoke size, on a CPU (tests/test_benchmarks.py)
#
# Each stage runs under `timeout` (SIGINT first, so pytest and the benchmarks report what they measured; the
# benchmarks rewrite their JSON after every case) and the next stage runs whatever the last one's exit status.
# OUTDIR gets 7 files: summary.md (machine, versions, each stage's exit status, goals, key ratios), kernels.json,
# kernels.png, model.json, model.png, compile.json, logs.tar.gz (every stage's log and the stage table).
#
# Environment: PYTHON (python3), GPU_CHECK_BUDGET_S (480: the whole run), TRITONNET_MAX_EXAMPLES (40 examples per
# property test, at most).
set -u
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
if [ $# -ne 1 ]; then
    echo "usage: $0 [--smoke] OUTDIR" >&2
    exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1" && OUTDIR=$(cd "$1" && pwd) || exit 2
cd "$ROOT" || exit 2
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
WORK=$(mktemp -d)
LOGS=$WORK/logs
STAGES=$LOGS/stages.tsv
mkdir -p "$LOGS" && : > "$STAGES"
BUDGET=${GPU_CHECK_BUDGET_S:-480}
RESERVE=20  # seconds kept for the summary and the tarball
START=$SECONDS

# run_stage NAME LIMIT_S SIGNAL COMMAND...: run COMMAND with a time limit (cut to what the budget has left), sent
# SIGNAL at the limit and KILL 20 s later, its output to LOGS/NAME.log; record NAME, exit status, seconds and limit
# in the stage table. SIGINT lets pytest and the benchmarks report what they have; a stage started with `&` must
# use TERM, because a background job of a script ignores SIGINT.
run_stage() {
    local name=$1 limit=$2 signal=$3 left started status
    shift 3
    left=$((BUDGET - RESERVE - (SECONDS - START)))
    if [ "$limit" -gt "$left" ]; then limit=$left; fi
    if [ "$limit" -lt 5 ]; then
        printf '%s\t-\t0\t0\n' "$name" >> "$STAGES"
        echo "== $name: skipped, no time left"
        return
    fi
    echo "== $name (limit ${limit}s): $*"
    started=$SECONDS
    timeout -s "$signal" -k 20 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    status=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - started))" "$limit" >> "$STAGES"
    echo "== $name: exit $status after $((SECONDS - started))s"
    tail -n 6 "$LOGS/$name.log" | sed "s/^/   $name | /"
}

if [ "$SMOKE" = 1 ]; then
    TESTS=(tests/test_registry.py)
    PROFILE=ci
    KERNELS=(--smoke --compile on --compile-backend eager)
    MODEL=(--smoke --compile on --compile-backend eager)
    COMPILE=(--smoke)
    LIMIT_TESTS=60 LIMIT_COMPILE=90 LIMIT_KERNELS=90 LIMIT_MODEL=60
else
    # test_gpu_compile.py compiles for explicit archs on the CPU: the compile stage reports the same rows.
    # test_benchmarks.py runs this script at smoke size: the stages below run it for real.
    TESTS=(tests --ignore=tests/test_gpu_compile.py --ignore=tests/test_benchmarks.py)
    PROFILE=thorough
    KERNELS=(--batch-size 128 --warmup-ms 5 --rep-ms 25 --compile-dtypes bf16)
    MODEL=(--batch-size 128 --dtypes bf16 fp32 --warmup-ms 20 --rep-ms 200)
    COMPILE=(--archs 80 90)
    LIMIT_TESTS=150 LIMIT_COMPILE=150 LIMIT_KERNELS=150 LIMIT_MODEL=140
fi

# The environment and the compile report need only CPUs: they run beside the tests.
run_stage environment 30 TERM bash -c "date -u; uname -a; nvidia-smi || echo 'no nvidia-smi'; \"$PYTHON\" -c '
import torch, triton, numpy, hypothesis, rich
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__, \"numpy\",
      numpy.__version__, \"hypothesis\", hypothesis.__version__)
print(\"device:\", torch.cuda.get_device_name() if torch.cuda.is_available() else \"no CUDA device\")'" &
ENVIRONMENT_JOB=$!
run_stage compile "$LIMIT_COMPILE" TERM nice -n 10 "$PYTHON" benchmarks/compile_report.py "${COMPILE[@]}" \
    --json "$OUTDIR/compile.json" &
COMPILE_JOB=$!
run_stage tests "$LIMIT_TESTS" INT env TRITONNET_HYPOTHESIS_PROFILE=$PROFILE \
    TRITONNET_MAX_EXAMPLES="${TRITONNET_MAX_EXAMPLES:-40}" "$PYTHON" -m pytest -p benchmarks.hypothesis_budget \
    -p no:cacheprovider -q -rfE --durations=15 "${TESTS[@]}"
wait "$ENVIRONMENT_JOB" "$COMPILE_JOB"
run_stage kernels "$LIMIT_KERNELS" INT "$PYTHON" benchmarks/bench_kernels.py "${KERNELS[@]}" \
    --json "$OUTDIR/kernels.json"
run_stage model "$LIMIT_MODEL" INT "$PYTHON" benchmarks/bench_model.py "${MODEL[@]}" --json "$OUTDIR/model.json"

if ! "$PYTHON" benchmarks/summarize.py "$OUTDIR" --stages "$STAGES" --tests-log "$LOGS/tests.log" \
        > "$LOGS/summarize.log" 2>&1; then
    { echo "# tritonnet GPU check (summarize.py failed: see logs.tar.gz)"; echo; date -u; echo
      echo "| stage | exit status | seconds | limit (s) |"; echo "|---|---|---|---|"
      sed 's/\t/ | /g; s/^/| /; s/$/ |/' "$STAGES"; } > "$OUTDIR/summary.md"
fi
tar czf "$OUTDIR/logs.tar.gz" -C "$WORK" logs
FAILED=$(awk -F'\t' '$2 != "0" { print $1 }' "$STAGES" | tr '\n' ' ')
rm -rf "$WORK"
echo
cat "$OUTDIR/summary.md"
echo "gpu_check: $((SECONDS - START))s; in $OUTDIR: $(cd "$OUTDIR" && ls | tr '\n' ' ')"
if [ -n "$FAILED" ]; then
    echo "gpu_check: stages not ok: $FAILED"
    exit 1
fi
