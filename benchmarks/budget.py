"""The GPU check's compile budget, counted on a CPU from the launch recorder: what each stage of gpu_check.sh
compiles and autotunes on a cold Triton cache.

    python benchmarks/budget.py [--json PATH]

Each recorded stage's launches are recorded on meta tensors as an H200 (sm_90) would make them
(tritonnet.kernels.launches, benchmarks/step_launches.py).
A stage pays for what no earlier stage compiled (Triton's disk cache serves the rest, and the autotuner's disk cache
``cache_results`` its timings):
- compiles: distinct (specialization, surviving config) pairs, :data:`COMPILE_S` each (pessimistic on an H200
  host's CPU; this machine measured 1-3 s per kernel with 2 busy cores);
- autotune benchmark runs: per new autotune key with two or more surviving configs, one ``do_bench`` per survivor
  (:data:`BENCHMARK_S` each: 25 ms warm-up, 100 ms of repetitions, launch overhead). A lone survivor is not timed
  (tritonnet.kernels.runtime.autotune).
The property tests (last stage) draw random shapes, a new autotune key and compile per example: they are held by
their time limit and example cap instead, and :data:`STAGE_LIMITS` leaves them what the others do not use.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.step_launches import Step
from tritonnet.kernels.launches import Launch, gpu_mode_environment

COMPILE_S = 1.5
BENCHMARK_S = 0.25
# gpu_check.sh's stages in order, with their time limits (seconds); the whole run is GPU_CHECK_BUDGET_S = 480.
# training_compiled is recorded as the training step: autocast cannot run on meta tensors, so its fp32 LRN and
# max-pool specializations (tritonnet/ops/lrn.py) and Inductor's compile of the step are left to its limit.
STAGE_LIMITS = {"correctness": 195, "training": 90, "training_compiled": 50, "profile": 40, "kernels": 55,
                "tests": 30}
TOTAL_LIMIT_S = 480
# The most compile-equivalent seconds the recorded stages may cost together: 200 compiles at COMPILE_S.
COMPILE_BUDGET_S = 200 * COMPILE_S
TRAINING_STEP = Step("alexnet", 128, "bf16", channels_last=True)
BENCHMARKED_OPS = ("conv2d", "linear", "local_response_norm", "max_pool2d")


@dataclasses.dataclass(frozen=True)
class StageCost:
    stage: str
    launches: int
    compiles: int  # new distinct kernels
    benchmark_runs: int  # autotune timings of new keys
    limit_s: int

    @property
    def seconds(self) -> float:
        return self.compiles * COMPILE_S + self.benchmark_runs * BENCHMARK_S


def _record_cases(dtypes: tuple[str, ...], ops: tuple[str, ...] | None, batch: int) -> list[Launch]:
    """Forward and backward of bench_kernels' AlexNet cases through the triton provider, recorded on meta tensors
    (call in a TRITON_INTERPRET=0 process). The loss goes straight to its provider (its checks read the targets)."""
    import torch

    from benchmarks import bench_kernels
    from benchmarks.step_launches import training_loss
    from tritonnet.kernels.launches import LaunchRecorder
    from tritonnet.timing import DTYPES

    launches = []
    meta = torch.device("meta")
    for name in dtypes:
        dtype = DTYPES[name]
        for case in bench_kernels.alexnet_cases(batch):
            if ops is not None and case.op not in ops:
                continue
            tensors = case.make_tensors(dtype, meta)
            for index in case.needs_grad:
                tensors[index].requires_grad_(True)
            with LaunchRecorder(90) as recorder:
                if case.op == "cross_entropy":
                    output = training_loss(*tensors)
                else:
                    output = case.forward(tensors, "triton")
                output.backward(torch.empty_like(output))
            launches += recorder.launches
    return launches


def _record_stages(batch: int) -> dict[str, list[Launch]]:
    import torch

    from benchmarks.step_launches import record_training_step

    torch.set_float32_matmul_precision("high")  # harness.fair_settings: TF32 on, as the stages run
    torch.manual_seed(0)  # dropout seeds are kernel arguments: the same draws give the same specializations
    step = record_training_step(TRAINING_STEP)
    return {
        "correctness": _record_cases(("bf16", "fp32"), None, batch),
        "training": step,
        "training_compiled": step,
        "profile": step,
        "kernels": _record_cases(("bf16",), BENCHMARKED_OPS, batch),
    }


def costs(stages: dict[str, list[Launch]]) -> list[StageCost]:
    """Each stage's new compiles and autotune timings, in gpu_check.sh's order."""
    compiled, tuned, result = set(), set(), []
    for stage, limit in STAGE_LIMITS.items():
        launches = stages.get(stage, [])
        compiles = benchmark_runs = 0
        for launch in launches:
            for config in launch.configs:
                signature = launch.specialization(config)
                if signature not in compiled:
                    compiled.add(signature)
                    compiles += 1
            key = (launch.module, launch.kernel, launch.autotune_key)
            if launch.autotune_key is not None and key not in tuned:
                tuned.add(key)
                benchmark_runs += len(launch.configs) if len(launch.configs) > 1 else 0
        result.append(StageCost(stage, len(launches), compiles, benchmark_runs, limit))
    return result


def record_in_subprocess(batch: int = 128) -> dict[str, list[Launch]]:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "stages.json")
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--record-worker", path,
                               "--batch-size", str(batch)], env=gpu_mode_environment(), capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise RuntimeError(f"recording the GPU check's stages failed:\n{done.stdout[-4000:]}\n"
                               f"{done.stderr[-8000:]}")
        with open(path) as handle:
            recorded = json.load(handle)
    return {stage: [Launch.from_json(launch) for launch in launches] for stage, launches in recorded.items()}


def table(stage_costs: list[StageCost]) -> str:
    lines = ["| stage | launches | new compiles | autotune timings | compile cost (s) | limit (s) |",
             "|---|---|---|---|---|---|"]
    for cost in stage_costs:
        lines.append(f"| {cost.stage} | {cost.launches} | {cost.compiles} | {cost.benchmark_runs} | "
                     f"{cost.seconds:.0f} | {cost.limit_s} |")
    total = sum(cost.seconds for cost in stage_costs)
    lines.append(f"| total | {sum(cost.launches for cost in stage_costs)} | "
                 f"{sum(cost.compiles for cost in stage_costs)} | "
                 f"{sum(cost.benchmark_runs for cost in stage_costs)} | {total:.0f} | {sum(STAGE_LIMITS.values())} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", default=None)
    parser.add_argument("--limits", action="store_true", help="print gpu_check.sh's stage limits as shell lines")
    parser.add_argument("--record-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.limits:
        print("\n".join(f"LIMIT_{stage}={limit}" for stage, limit in STAGE_LIMITS.items()))
        print(f"BUDGET={TOTAL_LIMIT_S}")
        return 0
    if args.record_worker:
        stages = _record_stages(args.batch_size)
        with open(args.record_worker, "w") as handle:
            json.dump({stage: [launch.to_json() for launch in launches] for stage, launches in stages.items()},
                      handle)
        return 0
    stage_costs = costs(record_in_subprocess(args.batch_size))
    print(table(stage_costs))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([{**dataclasses.asdict(cost), "seconds": cost.seconds} for cost in stage_costs], handle,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
