"""Every kernel, with the tile configs a GPU would autotune over, compiles for sm_80 and sm_90 on this CPU without
register spills, and the GEMM kernels use tensor cores in fp16/bf16."""

import importlib.util

import pytest

from kernels.gpu_compile import ARCHS, KERNEL_MODULES

PRESENT = [name for name in KERNEL_MODULES if importlib.util.find_spec(f"kernels.{name}") is not None]


@pytest.mark.parametrize("module", PRESENT)
def test_kernels_compile_for_gpu_without_spills(gpu_compile_report, module):
    rows = [row for row in gpu_compile_report if row["module"] == f"kernels.{module}"]
    assert rows, f"kernels.{module} declares no compile_cases()"
    assert {row["arch"] for row in rows} == {f"sm_{arch}" for arch in ARCHS}
    failures = [f"{row['kernel']} {row['arch']} {row['dtype']} {row['config']}: {row['error']}"
                for row in rows if row["error"]]
    assert not failures, "\n".join(failures)
    spilling = [f"{row['kernel']} {row['arch']} {row['dtype']} {row['config']}: {row['spills']} bytes local, "
                f"{row['registers']} registers" for row in rows if row["spills"]]
    assert not spilling, "register spills:\n" + "\n".join(spilling)
    too_much_shared = [row for row in rows if row["shared_bytes"] > 227 * 1024]
    assert not too_much_shared, too_much_shared


@pytest.mark.parametrize("module", [name for name in ("conv", "linear") if name in PRESENT])
def test_gemm_kernels_use_tensor_cores(gpu_compile_report, module):
    rows = [row for row in gpu_compile_report
            if row["module"] == f"kernels.{module}" and row["expects_tensor_cores"] and not row["error"]]
    assert {row["dtype"] for row in rows} >= {"fp16", "bf16"}, f"kernels.{module} declares no fp16/bf16 GEMM cases"
    missing = [f"{row['kernel']} {row['arch']} {row['dtype']} {row['config']}" for row in rows
               if not row["tensor_cores"]]
    assert not missing, "no mma/wgmma in the PTX of:\n" + "\n".join(missing)
