"""Where kernels run, and the one place that decides tile sizes for each mode.

GPU mode: kernels are compiled for the CUDA device and their tiles are autotuned over short config lists, with
the tuning results cached on disk.

Interpreter mode: with no CUDA device and ``TRITON_INTERPRET`` unset, we set ``TRITON_INTERPRET=1`` so every kernel
runs in Triton's interpreter on the CPU. The interpreter executes a kernel body with numpy once per program, so
its cost is per program and per tile operation, not per element: launch functions use large tiles (a whole
problem dimension where possible, see :func:`interpreter_block`) and few programs.

A user who sets ``TRITON_INTERPRET`` themselves is obeyed either way (``TRITON_INTERPRET=0`` on a machine with no
GPU is how the compile-for-GPU report gets real ``JITFunction`` objects to compile).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading

from .interpreter import environment_flag


def _decide_interpret() -> bool:
    if "TRITON_INTERPRET" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["TRITON_INTERPRET"] = "1"
    return environment_flag("TRITON_INTERPRET")


INTERPRET: bool = _decide_interpret()


import triton  # noqa: E402  (after TRITON_INTERPRET is settled)


if INTERPRET:
    from . import interpreter as _interpreter  # noqa: E402

    _interpreter.install()


@dataclasses.dataclass(frozen=True)
class Algorithms:
    """Which algorithm each op uses where the interpreter's costs differ from a GPU's: the one policy for it.

    The interpreter pays per program and per tile operation (numpy), a GPU per byte moved and per instruction, so a
    few ops have an interpreter-only algorithm beside their GPU kernel. Launch functions take the choice as a keyword
    whose default comes from :data:`ALGORITHMS`, so a test runs either path in either mode without patching globals.
    """

    # LRN's window sums as a band-matrix product over tiles spanning samples (GPU: a walk of shifted loads).
    lrn_band_matrix: bool
    # Max-pool's backward scatters from the outputs with atomics (GPU: the deterministic gather).
    maxpool_scatter_backward: bool
    # Conv masks ReLU's gradient in one pass up front (GPU: the mask is fused into the gradient GEMMs' loads).
    conv_separate_relu_gradient: bool
    # Conv walks its reduction flat (GPU: channels-inner whenever the channels come in whole 16-wide chunks).
    conv_flat_walk: bool
    # bf16 GEMMs computed in fp32 and rounded to bf16 (the interpreter's bf16 tl.dot answers wrongly).
    bf16_through_fp32: bool


GPU_ALGORITHMS = Algorithms(lrn_band_matrix=False, maxpool_scatter_backward=False, conv_separate_relu_gradient=False,
                            conv_flat_walk=False, bf16_through_fp32=False)
INTERPRETER_ALGORITHMS = Algorithms(lrn_band_matrix=True, maxpool_scatter_backward=True,
                                    conv_separate_relu_gradient=True, conv_flat_walk=True,
                                    bf16_through_fp32=True)
ALGORITHMS: Algorithms = INTERPRETER_ALGORITHMS if INTERPRET else GPU_ALGORITHMS


# What launch functions call a kernel through, per thread: None (the kernel itself) or, while a
# ``torch.library.triton_op``'s implementation runs, ``torch.library.wrap_triton``, so that tracing records each
# launch as a graph node.
_launch_wrapper = threading.local()


def launcher(kernel):
    """``kernel``, or ``wrap_triton(kernel)`` inside a triton_op's implementation (:func:`launching_through`).
    Launch functions write ``launcher(kernel)[grid](...)``; outside a triton_op it costs an attribute read."""
    wrapper = getattr(_launch_wrapper, "wrapper", None)
    return kernel if wrapper is None else wrapper(kernel)


@contextlib.contextmanager
def launching_through(wrapper):
    """Used by tritonnet/ops/_library.py only: :func:`launcher` applies ``wrapper`` to kernels launched from this
    thread while it is active (other threads, which may launch at the same time, are left alone)."""
    previous = getattr(_launch_wrapper, "wrapper", None)
    _launch_wrapper.wrapper = wrapper
    try:
        yield
    finally:
        _launch_wrapper.wrapper = previous


def tracing() -> bool:
    """Whether a launch is being traced into a graph (fake tensors, nothing runs) rather than run: a launch whose host
    code depends on the tile the autotuner picks must not, since Inductor picks the tile after tracing."""
    import torch

    return torch._guards.detect_fake_mode() is not None


def gpu_configs(names: tuple[str, ...], rows: list[tuple[int, ...]]) -> list[triton.Config]:
    """A kernel's GPU tiles, declared beside it in one style: each row is its block sizes in the order of ``names``,
    then warps and pipeline stages. A launch with a fixed tile is a list of one row (the autotuner does not time a
    single config)."""
    configs = []
    for row in rows:
        if len(row) != len(names) + 2:
            raise ValueError(f"a config row needs {len(names)} block sizes, warps and stages; got {row}")
        *blocks, warps, stages = row
        configs.append(triton.Config(dict(zip(names, blocks)), num_warps=warps, num_stages=stages))
    return configs


# Interpreter tiles: the default cap of interpreter_block (a tile op on 2**16 elements costs about a millisecond of
# numpy). Conv and LRN's band-matrix path go to 2**18, where their per-step Python overhead still dominates
# (benchmarks/results/NOTES.md).
INTERPRETER_MAX_BLOCK = 1 << 16


def interpreter_block(extent: int, cap: int = INTERPRETER_MAX_BLOCK, minimum: int = 16) -> int:
    """A power-of-two tile covering ``extent`` (the whole dimension), clamped to ``[minimum, cap]``."""
    return max(minimum, min(cap, triton.next_power_of_2(max(int(extent), 1))))


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What a kernel launch may use on one NVIDIA architecture (the CUDA programming guide's table of compute
    capabilities), and the machine the plan and the compile check assume for it."""

    capability: int  # 80, 90
    multiprocessors: int  # SMs of the reference GPU
    # The most shared memory one block may opt into: 163 KiB on sm_80, 227 KiB on sm_90.
    shared_memory_per_block: int
    shared_memory_per_multiprocessor: int
    registers_per_multiprocessor: int = 65536
    threads_per_multiprocessor: int = 2048
    blocks_per_multiprocessor: int = 32


ARCHITECTURES = {
    80: Architecture(80, multiprocessors=108, shared_memory_per_block=166_912,
                     shared_memory_per_multiprocessor=167_936),
    90: Architecture(90, multiprocessors=132, shared_memory_per_block=232_448,
                     shared_memory_per_multiprocessor=233_472),
}

# The architecture a launch recorder (tritonnet.kernels.launches) stands in for while it records: launch functions see
# it through architecture() and multiprocessor_count(), exactly as they would see the CUDA device.
_recording_architecture: Architecture | None = None


def set_recording_architecture(architecture: Architecture | None) -> None:
    """Used by tritonnet.kernels.launches only: the architecture a recording stands in for, or None when it ends."""
    global _recording_architecture
    _recording_architecture = architecture


def architecture(device=None) -> Architecture | None:
    """The architecture kernels launch on: the recording's, the CUDA device's (the nearest known one below its
    compute capability), or None (interpreter, no GPU)."""
    if _recording_architecture is not None:
        return _recording_architecture
    if INTERPRET:
        return None
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    known = [capability for capability in ARCHITECTURES if capability <= 10 * major + minor]
    base = ARCHITECTURES[max(known)] if known else ARCHITECTURES[min(ARCHITECTURES)]
    processors = torch.cuda.get_device_properties(device).multi_processor_count
    return dataclasses.replace(base, multiprocessors=processors)


def multiprocessor_count(device=None) -> int:
    """SMs of the device kernels launch on (the recording's stand-in while recording); 1 in the interpreter."""
    target = architecture(device)
    return target.multiprocessors if target is not None else 1


def pipelined_shared_memory(first: str, second: str, reduction: str, operand: str):
    """A ``shared_memory`` estimate for :func:`autotune` of a GEMM kernel: ``stages`` buffers of the two operand
    tiles, ``(first + second) x reduction`` elements of the ``operand`` tensor's element size (the compiler adds a
    little for its epilogue; the compile check measures the real figure)."""

    def estimate(config, named_args) -> int:
        blocks = config.kwargs
        element_size = named_args[operand].element_size()
        return config.num_stages * (blocks[first] + blocks[second]) * blocks[reduction] * element_size

    return estimate


def _fitting(configs, named_args, shared_memory) -> list:
    """The configs whose estimated shared memory fits one block of the current architecture (the smallest one if
    none does, so the launch still gets a config and the compiler reports the overflow)."""
    target = architecture()
    if shared_memory is None or target is None:
        return configs
    estimates = [shared_memory(config, named_args) for config in configs]
    fitting = [config for config, estimate in zip(configs, estimates) if estimate <= target.shared_memory_per_block]
    return fitting or [configs[estimates.index(min(estimates))]]


def autotune(configs: list[triton.Config], key: list[str], *, shared_memory=None, **kwargs):
    """Decorator: ``triton.autotune`` over the GPU ``configs`` (cached on disk) in GPU mode; in interpreter mode no
    tuning at all, and the launch function passes its own (large) tile sizes as keyword arguments.

    ``shared_memory(config, named_args) -> bytes`` (e.g. :func:`pipelined_shared_memory`) drops, after the
    kernel's own ``early_config_prune``, the configs one block of the current architecture could not hold: an A100
    allows 163 KiB, an H100 227 KiB. A launch left with one config is not timed (triton 3.6 times even a single
    survivor: a compile and a benchmark for nothing).

    Keep ``configs`` short: every config is a separate compile, and compile time is a known pain point.
    """
    if INTERPRET:
        return lambda kernel: kernel
    prune_configs_by = dict(kwargs.pop("prune_configs_by", None) or {})
    kernel_prune = prune_configs_by.get("early_config_prune")

    def early_config_prune(candidates, named_args, **launch_kwargs):
        if kernel_prune is not None:
            candidates = kernel_prune(candidates, named_args, **launch_kwargs)
        return _fitting(list(candidates), {**named_args, **launch_kwargs}, shared_memory)

    if kernel_prune is not None or shared_memory is not None:
        prune_configs_by["early_config_prune"] = early_config_prune
    if prune_configs_by:
        kwargs["prune_configs_by"] = prune_configs_by

    def decorate(kernel):
        try:
            tuner = triton.autotune(configs=configs, key=key, cache_results=True, **kwargs)(kernel)
        except TypeError:  # triton releases without cache_results
            tuner = triton.autotune(configs=configs, key=key, **kwargs)(kernel)
        _time_only_rivals(tuner)
        return tuner

    return decorate


def _time_only_rivals(tuner) -> None:
    """Make ``tuner`` skip the benchmark when pruning leaves one config (triton 3.6 times it anyway; newer releases
    already skip it). The config is still compiled, once, by the launch itself."""
    prune_configs, bench = tuner.prune_configs, tuner._bench
    survivors = {"count": len(tuner.configs)}

    def counting_prune_configs(*args, **kwargs):
        pruned = prune_configs(*args, **kwargs)
        survivors["count"] = len(pruned)
        return pruned

    def bench_rivals(*args, config, **kwargs):
        if survivors["count"] == 1:
            return [0.0, 0.0, 0.0]
        return bench(*args, config=config, **kwargs)

    tuner.prune_configs, tuner._bench = counting_prune_configs, bench_rivals


def autotune_bucket(size: int) -> int:
    """``size`` rounded up to a power of two, for autotuner keys. The kernels mask by the exact size, so any tile is
    right for any size in a bucket; which tile is fastest depends on the size's magnitude, not its exact value. So
    the last, partial batch of an epoch reuses the full batches' tuning instead of timing every config again."""
    return triton.next_power_of_2(max(int(size), 1))


def check_device(name: str, tensor) -> None:
    """Triton kernels need CUDA tensors on the GPU; the interpreter takes CPU (or CUDA) tensors; a launch recorder
    (tritonnet.kernels.launches) takes meta tensors, whose shapes stand in for a GPU's."""
    if _recording_architecture is not None and tensor.device.type == "meta":
        return
    if not INTERPRET and tensor.device.type != "cuda":
        raise ValueError(
            f"{name} must be a CUDA tensor for the Triton kernels (got device {tensor.device}); move it to the GPU, "
            "use the 'torch' provider, or run with TRITON_INTERPRET=1"
        )


def check_dot_dtype(name: str, tensor) -> None:
    """Triton's interpreter multiplies bf16 ``tl.dot`` operands wrongly (triton 3.9: errors around 1e11), so the
    GEMM kernels (conv2d, linear) refuse bf16 there rather than answer wrongly. tritonnet's ops compute bf16 in fp32
    in the interpreter (tritonnet/ops/_precision.py) and never reach this."""
    import torch

    if INTERPRET and tensor.dtype == torch.bfloat16:
        raise TypeError(f"{name} is bf16, which Triton's interpreter multiplies wrongly in tl.dot; pass fp32 or fp16 "
                        "here, or call tritonnet.functional (it computes bf16 in fp32 in the interpreter)")
