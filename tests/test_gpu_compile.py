"""What a GPU would run compiles for sm_80 and sm_90 on this CPU: every surviving autotune config of every distinct
launch of the recorded training steps (benchmarks.step_launches.STEPS), with no spills or local memory, shared
memory within the architecture's per-block limit, tensor cores in every fp16/bf16/TF32 GEMM, and no NaN-dropping max
in a fused ReLU or max-pool."""

import pytest

from benchmarks.step_launches import STEPS
from tritonnet.kernels.gpu_compile import ARCHS

# One worker computes the session's compile report (pytest -n): the compiles run once.
pytestmark = pytest.mark.xdist_group("gpu_compile")

MODULES = ("conv", "linear", "lrn", "maxpool", "dropout", "cross_entropy")

# Defects the recorded launches expose, each a strict expected failure of its check and module (so a fix turns it
# into a failure asking for the entry's removal). None today.
KNOWN_DEFECTS: dict[tuple[str, str], str] = {}


# Compiles that ptxas gives a small stack frame (no spilled registers, no local loads in the PTX), excused one by one:
# (kernel, arch, dtype, config) -> reason. An entry whose compile no longer has a stack frame fails the test.
STACK_FRAMES_EXCUSED: dict[tuple[str, str, str, str], str] = {
    ("conv2d_weight_grad_kernel", "sm_80", "fp32", "BLOCK_OUT_CHANNELS=64,BLOCK_WINDOW=64,BLOCK_PIXELS=16,warps=8,"
     "stages=3"): "conv1's TF32 weight gradient: ptxas caps it at 128 registers with an 8-byte frame on sm_80",
    ("linear_grad_input_kernel", "sm_80", "fp32", "BLOCK_ROWS=128,BLOCK_IN=64,BLOCK_OUT=64,warps=8,stages=3"):
        "fc6/fc7's TF32 input gradient: ptxas caps it at 128 registers with an 8-byte frame on sm_80",
}
MAX_EXCUSED_STACK = 8


def _modules(check: str):
    return [pytest.param(module, marks=pytest.mark.xfail(strict=True, reason=KNOWN_DEFECTS[(check, module)]))
            if (check, module) in KNOWN_DEFECTS else module for module in MODULES]


def _rows(report, module):
    return [row for row in report if row["module"] == f"tritonnet.kernels.{module}"]


def _where(row) -> str:
    return f"{row['kernel']} {row['arch']} {row['dtype']} {row['config']}"


def test_compile_cases_are_the_recorded_launches_of_every_step(gpu_compile_report):
    assert {row["arch"] for row in gpu_compile_report} == {f"sm_{arch}" for arch in ARCHS}
    steps = {label for row in gpu_compile_report for label in row["steps"]}
    assert steps == {step.name for step in STEPS}
    assert {row["module"] for row in gpu_compile_report} == {f"tritonnet.kernels.{module}" for module in MODULES} - {
        "tritonnet.kernels.dropout"}  # AlexNet's dropout is fused into linear


@pytest.mark.parametrize("module", MODULES)
def test_every_recorded_launch_compiles(gpu_compile_report, module):
    failures = [f"{_where(row)}: {row['error']}" for row in _rows(gpu_compile_report, module) if row["error"]]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("module", _modules("local"))
def test_no_register_spills_or_local_memory(gpu_compile_report, module):
    rows = [row for row in _rows(gpu_compile_report, module) if not row["error"]]

    def excused(row) -> bool:
        key = (row["kernel"], row["arch"], row["dtype"], row["config"])
        return key in STACK_FRAMES_EXCUSED and not row["spills"] and row["stack"] <= MAX_EXCUSED_STACK

    spilling = [f"{_where(row)}: {row['spills']} B local, {row['stack']} B stack, {row['registers']} registers"
                for row in rows if (row["spills"] or row["stack"]) and not excused(row)]
    assert not spilling, "\n".join(spilling)
    framed = {(row["kernel"], row["arch"], row["dtype"], row["config"]) for row in rows if row["stack"]}
    stale = [key for key in STACK_FRAMES_EXCUSED if key[0] in {row["kernel"] for row in rows} and key not in framed]
    assert not stale, f"no stack frame any more, remove from STACK_FRAMES_EXCUSED: {stale}"


@pytest.mark.parametrize("module", _modules("shared"))
def test_shared_memory_fits_one_block_of_the_architecture(gpu_compile_report, module):
    over = [f"{_where(row)}: {row['shared_bytes']:,} B > {row['shared_limit']:,} B"
            for row in _rows(gpu_compile_report, module) if not row["error"]
            and row["shared_bytes"] > row["shared_limit"]]
    assert not over, "\n".join(over)


@pytest.mark.parametrize("module", ["conv", "linear"])
def test_gemm_kernels_use_tensor_cores_in_bf16_and_tf32(gpu_compile_report, module):
    rows = [row for row in _rows(gpu_compile_report, module) if row["expects_tensor_cores"] and not row["error"]]
    assert {row["dtype"] for row in rows} >= {"bf16", "fp32"}, "no bf16 or TF32 GEMM launch recorded"
    missing = [_where(row) for row in rows if not row["tensor_cores"]]
    assert not missing, "no mma/wgmma in the PTX of:\n" + "\n".join(missing)


@pytest.mark.parametrize("module", _modules("nans"))
def test_relu_and_max_pool_kernels_keep_nans(gpu_compile_report, module):
    rows = [row for row in _rows(gpu_compile_report, module) if row["must_keep_nans"] and not row["error"]]
    assert rows or module not in ("conv", "linear", "maxpool"), f"no fused ReLU or max-pool launch of {module}"
    dropping = [f"{_where(row)}: {row['nan_dropping_max']} max without .NaN" for row in rows
                if row["nan_dropping_max"]]
    assert not dropping, "\n".join(dropping)
