"""Compile kernels for NVIDIA GPUs without a GPU, and read back what the compiler did.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` builds PTX and a cubin on the CPU. The
triton wheel ships ``cuobjdump``, which reports registers, local memory (spills) and shared memory per kernel.
This catches what the interpreter cannot: unsupported ops, ``tl.dot`` shape limits, register spills, too much
shared memory, and whether a GEMM actually uses tensor cores (``mma`` / ``wgmma`` in the PTX).

Each kernel module exposes ``compile_cases() -> list[CompileCase]``: its kernels with the GPU tile configs they
are autotuned over. ``python -m kernels.gpu_compile --json PATH`` compiles all of them; it must run with
``TRITON_INTERPRET=0`` so that kernels are real ``JITFunction`` objects (it sets that itself when run as a module).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

KERNEL_MODULES = ("lrn", "maxpool", "dropout", "conv", "linear", "cross_entropy")
ARCHS = (80, 90)


@dataclasses.dataclass(frozen=True)
class CompileCase:
    """One kernel specialisation to compile: a jitted kernel, its argument types and its GPU tile config."""

    kernel_name: str  # a stable name, e.g. "lrn_forward"
    kernel: Any  # a JITFunction, or an autotuner/heuristics wrapping one
    signature: dict[str, str]  # every argument: "*fp16", "i32", "fp32", ..., or "constexpr"
    constexprs: dict[str, Any]  # values of the constexpr arguments (tile sizes, flags)
    dtype: str  # the data type this case is for: "fp32", "fp16", "bf16"
    num_warps: int = 4
    num_stages: int = 3
    expects_tensor_cores: bool = False  # GEMM kernels in fp16/bf16 must use mma/wgmma
    # Integer arguments a typical launch passes as multiples of 16 (row strides, feature counts of real layers):
    # Triton specializes those at launch, which is what lets it vectorize loads and pipeline them.
    multiples_of_16: tuple[str, ...] = ()

    @property
    def config(self) -> str:
        tiles = ",".join(f"{k}={v}" for k, v in sorted(self.constexprs.items()) if k.isupper())
        return f"{tiles},warps={self.num_warps},stages={self.num_stages}"


def jit_function(kernel):
    """The ``JITFunction`` under autotuner/heuristics wrappers."""
    from triton.runtime.jit import JITFunction

    while not isinstance(kernel, JITFunction):
        if not hasattr(kernel, "fn"):
            raise TypeError(f"{kernel!r} is not a Triton kernel; run with TRITON_INTERPRET=0 to compile for a GPU")
        kernel = kernel.fn
    return kernel


def python_function(kernel):
    """The Python function under jit/autotune/heuristics wrappers, in GPU and interpreter mode alike."""
    while hasattr(kernel, "fn"):
        kernel = kernel.fn
    return kernel


def kernel_parameters(kernel) -> list[tuple[str, bool]]:
    """``(name, is_constexpr)`` for each argument of a kernel; works in interpreter-mode processes too, so compile
    cases can be listed anywhere."""
    import inspect

    parameters = inspect.signature(python_function(kernel)).parameters.values()
    return [(parameter.name, "constexpr" in str(parameter.annotation)) for parameter in parameters]


def _tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _resource_usage(cubin: bytes) -> dict[str, int]:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        text = subprocess.run([_tool("cuobjdump"), "-res-usage", handle.name], capture_output=True, text=True,
                              check=True).stdout
    usage = {}
    for key in ("REG", "STACK", "SHARED", "LOCAL"):
        match = re.search(rf"\b{key}:(\d+)", text)
        usage[key] = int(match.group(1)) if match else 0
    return usage


def compile_case(case: CompileCase, arch: int) -> dict[str, Any]:
    """Compile one case for ``sm_<arch>`` and return a report row."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = jit_function(case.kernel)
    row: dict[str, Any] = {"module": fn.fn.__module__, "kernel": case.kernel_name, "arch": f"sm_{arch}", "dtype": case.dtype,
                           "config": case.config, "expects_tensor_cores": case.expects_tensor_cores}
    # Pointers are 16-byte aligned in practice (torch's allocator); tell the compiler, as a real launch would.
    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]]
             for name, kind in case.signature.items() if kind.startswith("*") or name in case.multiples_of_16}
    started = time.perf_counter()
    try:
        source = ASTSource(fn=fn, signature=case.signature, constexprs=case.constexprs, attrs=attrs)
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": case.num_warps, "num_stages": case.num_stages})
    except Exception as error:  # reported, and failed by the test
        row.update(error=f"{type(error).__name__}: {str(error).strip()[:2000]}")
        return row
    usage = _resource_usage(compiled.asm["cubin"])
    ptx = compiled.asm["ptx"]
    row.update(
        registers=usage["REG"],
        spills=usage["LOCAL"],
        stack=usage["STACK"],
        shared_bytes=max(usage["SHARED"], int(getattr(compiled.metadata, "shared", 0) or 0)),
        tensor_cores=bool(re.search(r"\b(mma|wgmma)\.", ptx)),
        compile_s=round(time.perf_counter() - started, 2),
        error=None,
    )
    return row


def all_cases(modules: tuple[str, ...] = KERNEL_MODULES) -> list[CompileCase]:
    cases = []
    for name in modules:
        try:
            module = importlib.import_module(f"kernels.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"kernels.{name}":
                continue  # that op family has no kernels yet
            raise
        if hasattr(module, "compile_cases"):
            cases.extend(module.compile_cases())
    return cases


def _compile_indexed(args):
    index, arch, modules = args
    return compile_case(all_cases(modules)[index], arch)


def compile_all(modules: tuple[str, ...] = KERNEL_MODULES, archs=ARCHS, workers: int | None = None):
    """Compile every case for every arch, in parallel processes. Returns report rows."""
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(index, arch, modules) for index in range(len(all_cases(modules))) for arch in archs]
    workers = workers or min(len(jobs), os.cpu_count() or 1) or 1
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_compile_indexed, jobs))


def compile_all_in_subprocess(modules: tuple[str, ...] = KERNEL_MODULES, archs=ARCHS) -> list[dict[str, Any]]:
    """Run :func:`compile_all` in a fresh process with ``TRITON_INTERPRET=0`` (works from an interpreter-mode
    process, such as the test suite on a CPU machine)."""
    import json

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "report.json")
        command = [sys.executable, "-m", "kernels.gpu_compile", "--json", path, "--modules", *modules,
                   "--archs", *map(str, archs)]
        env = dict(os.environ, TRITON_INTERPRET="0")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"compiling kernels for GPU failed:\n{done.stdout}\n{done.stderr}")
        with open(path) as handle:
            return json.load(handle)


def main(argv=None) -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="where to write the report rows")
    parser.add_argument("--modules", nargs="+", default=list(KERNEL_MODULES), choices=KERNEL_MODULES)
    parser.add_argument("--archs", nargs="+", type=int, default=list(ARCHS))
    args = parser.parse_args(argv)
    rows = compile_all(tuple(args.modules), tuple(args.archs))
    with open(args.json, "w") as handle:
        json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    from kernels import runtime

    if runtime.INTERPRET:
        raise SystemExit("kernels.gpu_compile needs real JITFunctions: run it with TRITON_INTERPRET=0")
    main()
