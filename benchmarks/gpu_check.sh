#!/usr/bin/env bash
# One run for a machine that has a GPU briefly and no network, in 8 minutes on a cold Triton cache, stages ordered by
# value: (1) every op forward and backward at AlexNet's real shapes against torch, bf16 and fp32; (2) AlexNet
# training steps at batch 128 in bf16, channels-last: images/s for tritonnet, torch eager and torch.compile, and the
# loss falling; (3) the same step under bf16 autocast with torch.compile of tritonnet's model beside tritonnet eager
# and torch eager; (4) the per-layer profile at batch 128 in bf16, beside the roofline plan
# (benchmarks/results/plan.json); (5) the kernel benchmarks (conv, linear, LRN, max-pool; bf16) against eager and
# torch.compile; (6) the property tests on CUDA with a small example budget. Uses the torch/triton already installed;
# installs nothing.
#
#   bash benchmarks/gpu_check.sh OUTDIR            # on the GPU machine (PYTHONPATH is set to the checkout)
#   bash benchmarks/gpu_check.sh --smoke OUTDIR    # every stage at smoke size, on a CPU (tests/test_benchmarks.py)
#
# Stage limits come from benchmarks/budget.py, which counts each stage's compiles and autotune timings from the
# launch recorder (tests/test_plan.py holds them within the limits). Each stage runs under `timeout` (SIGINT first,
# so pytest and the scripts report what they have; every script rewrites its JSON after each case) and the next stage
# runs whatever the last one's exit status. OUTDIR gets summary.md (the goals table first, then the stages, the
# profile beside the plan, key ratios), correctness.json, model.json, model.png, training_compiled.json,
# training_compiled.png, profile.json, kernels.json, kernels.png and logs.tar.gz (every stage's log and the stage
# table).
#
# Environment: PYTHON (python3), GPU_CHECK_BUDGET_S (480: the whole run), TRITONNET_MAX_EXAMPLES (5 examples per
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
eval "$("$PYTHON" benchmarks/budget.py --limits)" || exit 2
BUDGET=${GPU_CHECK_BUDGET_S:-$BUDGET}
RESERVE=20  # seconds kept for the summary and the tarball
START=$SECONDS

# run_stage NAME LIMIT_S SIGNAL COMMAND...: run COMMAND with a time limit (cut to what the budget has left), sent
# SIGNAL at the limit and KILL 15 s later, its output to LOGS/NAME.log; record NAME, exit status, seconds and limit
# in the stage table. A stage started with `&` must use TERM, because a background job of a script ignores SIGINT.
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
    timeout -s "$signal" -k 15 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    status=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - started))" "$limit" >> "$STAGES"
    echo "== $name: exit $status after $((SECONDS - started))s"
    tail -n 6 "$LOGS/$name.log" | sed "s/^/   $name | /"
}

if [ "$SMOKE" = 1 ]; then
    CORRECTNESS=(--smoke --dtypes fp32)
    MODEL=(--smoke --models alexnet-small --providers tritonnet torch torch.compile --compile on
           --compile-backend eager)
    # the compiled path only: tritonnet eager under autocast is the same kernels, and the interpreter is slow
    COMPILED=(--smoke --models alexnet-small --dtypes bf16 --providers "torch.compile(tritonnet)" torch --compile on
              --compile-backend eager)
    PROFILE=(--model alexnet-small --batch-size 2 --dtype fp32 --repeats 1 --warmup 0 --no-step)
    KERNELS=(--smoke --dtypes fp32 --ops conv2d max_pool2d --layers conv2 pool1 --compile on --compile-backend eager)
    TESTS=(tests/test_registry.py)
    LIMIT_correctness=60 LIMIT_training=60 LIMIT_training_compiled=90 LIMIT_profile=60 LIMIT_kernels=60 LIMIT_tests=60
else
    CORRECTNESS=(--batch-size 128 --dtypes bf16 fp32)
    MODEL=(--models alexnet --dtypes bf16 --batch-size 128 --channels-last --providers tritonnet torch torch.compile
           --warmup-steps 3 --warmup-ms 0 --rep-ms 1500)
    # about 10 timed steps each (do_bench repeats rep-ms over its estimate of one step)
    COMPILED=(--models alexnet --dtypes bf16 --batch-size 128 --providers tritonnet "torch.compile(tritonnet)" torch
              --warmup-steps 3 --warmup-ms 0 --rep-ms 200)
    PROFILE=(--model alexnet --batch-size 128 --dtype bf16)
    KERNELS=(--batch-size 128 --dtypes bf16 --ops conv2d linear local_response_norm max_pool2d --passes fwd+bwd
             --warmup-ms 5 --rep-ms 25 --compile-dtypes bf16)
    # the property tests; the compile check and the benchmark smoke run compile or interpret on the CPU
    TESTS=(tests --ignore=tests/test_gpu_compile.py --ignore=tests/test_benchmarks.py --ignore=tests/test_plan.py
           --ignore=tests/test_launches.py)
fi

run_stage environment 30 TERM bash -c "date -u; uname -a; nvidia-smi || echo 'no nvidia-smi'; \"$PYTHON\" -c '
import torch, triton, numpy, hypothesis, rich
print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__, \"numpy\",
      numpy.__version__, \"hypothesis\", hypothesis.__version__)
print(\"device:\", torch.cuda.get_device_name() if torch.cuda.is_available() else \"no CUDA device\")'" &
ENVIRONMENT_JOB=$!
run_stage correctness "$LIMIT_correctness" INT "$PYTHON" benchmarks/correctness.py "${CORRECTNESS[@]}" \
    --json "$OUTDIR/correctness.json"
wait "$ENVIRONMENT_JOB"
run_stage training "$LIMIT_training" INT "$PYTHON" benchmarks/bench_model.py "${MODEL[@]}" --json "$OUTDIR/model.json"
run_stage training_compiled "$LIMIT_training_compiled" INT "$PYTHON" benchmarks/bench_model.py "${COMPILED[@]}" \
    --autocast --channels-last --json "$OUTDIR/training_compiled.json"
run_stage profile "$LIMIT_profile" INT "$PYTHON" -m tritonnet.profile "${PROFILE[@]}" --json "$OUTDIR/profile.json"
run_stage kernels "$LIMIT_kernels" INT "$PYTHON" benchmarks/bench_kernels.py "${KERNELS[@]}" \
    --json "$OUTDIR/kernels.json"
run_stage tests "$LIMIT_tests" INT env TRITONNET_HYPOTHESIS_PROFILE=thorough \
    TRITONNET_MAX_EXAMPLES="${TRITONNET_MAX_EXAMPLES:-5}" "$PYTHON" -m pytest -p benchmarks.hypothesis_budget \
    -p no:cacheprovider -q -x -rfE --durations=10 "${TESTS[@]}"

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
