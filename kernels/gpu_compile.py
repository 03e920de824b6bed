"""Compile exactly what a model launches, for NVIDIA GPUs, without a GPU, and read back what the compiler did.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` builds PTX and a cubin on the CPU. The
triton wheel ships ``cuobjdump``, which reports registers, local memory (spills) and shared memory per kernel.
This catches what the interpreter cannot: unsupported ops, ``tl.dot`` shape limits, register spills, too much
shared memory for the architecture, whether a GEMM uses tensor cores (``mma`` / ``wgmma`` in the PTX), and whether a
ReLU or max-pool drops NaNs (``max.f32`` without ``.NaN``).

What is compiled comes from the launch recorder (:mod:`tritonnet.kernels.launches`): every surviving autotune config
of every distinct recorded launch, specialized as Triton specializes it at launch (ints equal to 1 as constants,
divisibility by 16 of ints and pointers as they are). Which training steps the compile check records, and the
subprocess that records and compiles them, are benchmarks/step_launches.py's.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import tempfile
import time
from typing import Any

from .launches import Config, Launch, decode_constant, distinct, kernel_object

ARCHS = (80, 90)
# Kernels whose products must run on tensor cores in fp16/bf16 and TF32: those of these modules that call tl.dot.
GEMM_MODULES = ("tritonnet.kernels.conv", "tritonnet.kernels.linear")
MAX_POOL_MODULES = ("tritonnet.kernels.maxpool",)
# A float max without .NaN returns the other operand when one is NaN: ReLU and max-pool would hide a NaN.
NAN_DROPPING_MAX = re.compile(r"^\s*(?:@%p\w+\s+)?max((?:\.\w+)*)\.(?:f32|f16|bf16|f16x2|bf16x2)\b", re.MULTILINE)


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
    """``(name, is_constexpr)`` for each argument of a kernel; works in interpreter-mode processes too."""
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


def _expects_tensor_cores(launch: Launch, source: str) -> bool:
    """A GEMM kernel (conv, linear: ``tl.dot``) on fp16/bf16 data, or on fp32 data with TF32 precision."""
    if launch.module not in GEMM_MODULES or "tl.dot(" not in source:
        return False
    kinds = {argument.kind for argument in launch.arguments if argument.is_pointer}
    precision = {argument.value for argument in launch.arguments if argument.name == "INPUT_PRECISION"}
    return bool(kinds & {"*fp16", "*bf16"}) or "tf32" in precision


def _must_keep_nans(launch: Launch) -> bool:
    """A max-pool kernel, or a kernel launched with its ReLU fused (a constexpr flag named RELU... set)."""
    return launch.module in MAX_POOL_MODULES or any(
        argument.kind == "constexpr" and argument.name.upper().startswith("RELU") and argument.value is True
        for argument in launch.arguments)


def data_dtype(launch: Launch) -> str:
    """The dtype of the launch's first floating-point tensor ("bf16", "fp32", ...)."""
    kinds = [argument.kind[1:] for argument in launch.arguments if argument.is_pointer]
    floats = [kind for kind in kinds if kind.startswith(("fp", "bf"))]
    return (floats or kinds or ["-"])[0]


def compile_inputs(launch: Launch, config: Config) -> tuple[dict, dict, dict]:
    """``triton.compile``'s signature, constexprs and attributes for a launch with one of its configs: the config's
    meta-parameters and the specialized constants as constexprs, the 16-divisible arguments marked."""
    blocks = dict(config.blocks)
    signature, constexprs, attrs = {}, {}, {}
    for index, argument in enumerate(launch.arguments):
        if argument.name in blocks:
            signature[argument.name], constexprs[argument.name] = "constexpr", blocks[argument.name]
        elif argument.kind == "constexpr":
            signature[argument.name], constexprs[argument.name] = "constexpr", decode_constant(argument.value)
        else:
            signature[argument.name] = argument.kind
            if argument.divisible_by_16:
                attrs[(index,)] = [["tt.divisibility", 16]]
    return signature, constexprs, attrs


def specialization_label(launch: Launch, config: Config) -> str:
    """One line naming every argument's compiled type (``name:i32/16`` is divisible by 16, ``name:constexpr=1``)."""
    signature, constexprs, attrs = compile_inputs(launch, config)
    return ",".join(f"{name}:{kind}" + (f"={constexprs[name]}" if name in constexprs else "")
                    + ("/16" if (index,) in attrs else "") for index, (name, kind) in enumerate(signature.items()))


def compile_launch(launch: Launch, config: Config, arch: int) -> dict[str, Any]:
    """Compile one recorded launch with one of its configs for ``sm_<arch>``; return a report row."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from .runtime import ARCHITECTURES

    function = jit_function(kernel_object(launch))
    signature, constexprs, attrs = compile_inputs(launch, config)
    row: dict[str, Any] = {
        "module": launch.module, "kernel": launch.kernel, "arch": f"sm_{arch}", "dtype": data_dtype(launch),
        "config": config.label, "expects_tensor_cores": _expects_tensor_cores(launch, function.src),
        "must_keep_nans": _must_keep_nans(launch), "shared_limit": ARCHITECTURES[arch].shared_memory_per_block,
        "specialization": specialization_label(launch, config),
    }
    started = time.perf_counter()
    try:
        source = ASTSource(fn=function, signature=signature, constexprs=constexprs, attrs=attrs)
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": config.num_warps, "num_stages": config.num_stages})
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
        nan_dropping_max=sum(1 for match in NAN_DROPPING_MAX.finditer(ptx) if ".NaN" not in match.group(1)),
        compile_s=round(time.perf_counter() - started, 2),
        error=None,
    )
    return row


def _compile_job(job: tuple[dict, dict, int]) -> dict[str, Any]:
    launch_json, config_json, arch = job
    launch = Launch.from_json(launch_json)
    config = Config(tuple(tuple(block) for block in config_json["blocks"]), config_json["num_warps"],
                    config_json["num_stages"])
    return compile_launch(launch, config, arch)


def compile_recorded(recorded: dict[tuple[str, int], list[Launch]], workers: int | None = None,
                     chosen_only: bool = False) -> list[dict]:
    """Compile every distinct (launch specialization, surviving config) per architecture of ``recorded``'s
    ``{(recording name, arch): launches}``, in ``workers`` processes (default: the CPU count, at most 2); with
    ``chosen_only``, only each launch's chosen config. Each row names (``steps``) the recordings that launch it."""
    from concurrent.futures import ProcessPoolExecutor

    jobs, owners = {}, {}
    for (name, arch), launches in recorded.items():
        pairs = [(launch, launch.chosen) for launch in launches] if chosen_only else distinct(launches)
        for launch, config in pairs:
            key = (launch.specialization(config), arch)
            if key not in jobs:
                jobs[key] = (launch.to_json(), dataclasses.asdict(config), arch)
            owners.setdefault(key, []).append(name)
    workers = workers or min(2, os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = list(pool.map(_compile_job, jobs.values(), chunksize=4))
    else:
        rows = [_compile_job(job) for job in jobs.values()]
    for row, key in zip(rows, jobs):
        row["steps"] = sorted(set(owners[key]))
    return rows
