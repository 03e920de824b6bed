"""The GPU step plan (benchmarks/plan.py) and the GPU check's compile budget (benchmarks/budget.py) come from the
launch recorder: the plan's FLOPs are AlexNet's, its bytes each tensor once, its waves the grid over the SMs; and
the stages of gpu_check.sh compile and autotune within their time limits on a cold cache."""

from __future__ import annotations

import json
import math
import os

import pytest

from benchmarks import bench_kernels, budget, plan
from tritonnet.kernels import runtime
from tests.recorded import gpu_check_stages

# One worker records the GPU check's stages for these modules (pytest -n): tests/recorded.py caches them.
pytestmark = pytest.mark.xdist_group("recorded")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def stages():
    return gpu_check_stages()


@pytest.fixture(scope="module")
def step_rows(stages):
    return plan.plan_rows(stages["training"], {}, plan.H200)


def test_plan_flops_are_alexnets_forward_and_backward_products(step_rows):
    cases = {case.layer: case for case in bench_kernels.alexnet_cases(128) if case.flops is not None}
    expected = sum(case.flops("fwd+bwd") for case in cases.values())
    assert sum(row["gflop"] for row in step_rows) * 1e9 == pytest.approx(expected, rel=1e-9)


def test_plan_roofline_is_the_slower_of_compute_and_memory(step_rows):
    for row in step_rows:
        compute = row["gflop"] * 1e9 / (plan.H200.tflops[row["precision"]] * 1e12)
        memory = row["megabytes"] * 1e6 / (plan.H200.bandwidth_gbps * 1e9)
        assert row["roofline_us"] == pytest.approx(max(compute, memory) * 1e6)
        assert row["bound"] == ("compute" if compute >= memory else "memory")
    assert sum(row["share"] for row in step_rows) == pytest.approx(1.0)


@pytest.mark.parametrize("programs, waves, tail", [(132, 1.0, 0.0), (133, 133 / 132, 131 / 132), (66, 0.5, 0.5),
                                                  (264, 2.0, 0.0)])
def test_waves_and_tail_follow_the_grid(programs, waves, tail):
    from tritonnet.kernels.launches import Config, Launch

    launch = Launch("tritonnet.kernels.dropout", "dropout_kernel", (), (Config((), num_warps=8),), ((programs, 1, 1),))
    compiled = {plan.compile_key(launch): {"registers": 255, "shared_bytes": 0}}  # one 8-warp program per SM
    row = plan.plan_rows([launch], compiled, plan.H200)[0]
    assert row["programs_per_sm"] == 1
    assert row["waves"] == pytest.approx(waves) and row["wave_tail"] == pytest.approx(tail)


@pytest.mark.parametrize("registers, shared, warps, expected", [
    (32, 0, 4, 16),  # threads: 2048 / 128
    (128, 0, 8, 2),  # registers: 65536 / (128 x 256)
    (64, 100_000, 4, 2),  # shared memory: 233,472 // 101,024
    (None, None, 1, 32),  # the block limit
])
def test_occupancy_is_the_tightest_limit(registers, shared, warps, expected):
    assert plan.occupancy(registers, shared, warps, runtime.ARCHITECTURES[90]) == expected


def test_plan_exposes_the_weak_spots(step_rows):
    notes = "\n".join(plan.weak_spots(step_rows))
    assert "conv2d_weight_grad_kernel" in notes and "idle" in notes  # weight-gradient wave tails
    assert "gather tile" in notes  # conv1's gather tile
    assert "tiles 75% used" in notes  # 48 channels per group in 64-wide tiles


def test_committed_plan_is_consistent():
    with open(os.path.join(ROOT, "benchmarks", "results", "plan.json")) as handle:
        committed = json.load(handle)
    assert committed["step"]["model"] == "alexnet" and committed["step"]["batch"] == 128
    assert committed["step"]["dtype"] == "bf16"
    assert committed["floor_us"] == pytest.approx(sum(row["padded_floor_us"] for row in committed["rows"]))
    assert committed["floor_us"] >= committed["roofline_us"] > 0
    assert all(row["registers"] for row in committed["rows"]), "every launch's chosen config was compiled"
    with open(os.path.join(ROOT, "benchmarks", "results", "plan.md")) as handle:
        assert f"floor {committed['floor_us']:.1f} us" in handle.read()


def test_gpu_check_compiles_within_its_budget(stages):
    costs = budget.costs(stages)
    assert [cost.stage for cost in costs] == list(budget.STAGE_LIMITS)
    assert sum(budget.STAGE_LIMITS.values()) <= budget.TOTAL_LIMIT_S - 20  # the summary's reserve
    assert sum(cost.seconds for cost in costs) <= budget.COMPILE_BUDGET_S, budget.table(costs)
    for cost in costs:  # compiling and autotuning leave at least a tenth of each stage to run
        assert cost.seconds <= 0.9 * cost.limit_s, budget.table(costs)
    assert costs[0].compiles > 0 and costs[1].compiles < costs[0].compiles  # later stages reuse the cache


def test_stage_limits_are_what_gpu_check_runs():
    with open(os.path.join(ROOT, "benchmarks", "gpu_check.sh")) as handle:
        script = handle.read()
    assert "budget.py --limits" in script
    for stage in budget.STAGE_LIMITS:
        assert f'"$LIMIT_{stage}"' in script, stage
