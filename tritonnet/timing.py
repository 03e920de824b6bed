"""How tritonnet times things: the one module the profiler (:mod:`tritonnet.profile`) and the benchmarks
(``benchmarks/``) both time with, and the one table of the dtypes they name on their command lines.

One call is timed by :func:`time_call_ms`: on a GPU, CUDA events around the call after a synchronize (the GPU
idle before it, so launch overhead counts); on the CPU (Triton's interpreter), ``time.perf_counter``. Two ways of
repeating it:

- :func:`measure` (the benchmarks: one function, called over and over): on a GPU ``triton.testing.do_bench``,
  which flushes the L2 cache before each call (so inputs come from HBM, as they do in a network) and reports the
  median and the 20th/80th percentiles; ``cuda_graph=True`` replays a captured CUDA graph instead
  (``do_bench_cudagraph``), which removes launch overhead. :func:`measure_alike` uses graphs for a group of
  functions only when every one of them can be captured, so no provider gets an advantage the others were denied.
  On the CPU: warm-up calls for ``warmup_ms`` (at least one), then timed calls for ``rep_ms`` (at least
  ``min_reps``).
- :func:`measure_stages_ms` (the profiler: a forward and the backward of the graph it built): each stage of a run
  timed on its own with :func:`time_call_ms`, a fixed number of untimed warm-up runs, the median of ``repeats``.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable, Sequence

import torch

from tritonnet.kernels.runtime import INTERPRET

# Where the benchmarks run: a GPU when there is one and Triton is not interpreting, else the CPU.
DEVICE = torch.device("cuda" if torch.cuda.is_available() and not INTERPRET else "cpu")
ON_GPU = DEVICE.type == "cuda"

# The dtypes the profiler and the benchmarks take by name (--dtype, --dtypes).
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    """The name :data:`DTYPES` gives ``dtype``."""
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"dtype must be one of {', '.join(map(str, DTYPES.values()))}, got {dtype}")


def time_call_ms(call: Callable[[object], object], state: object, device: torch.device) -> tuple[object, float]:
    """``call(state)`` and the milliseconds it took on ``device`` (see the module docstring)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        state = call(state)
        end.record()
        end.synchronize()
        return state, start.elapsed_time(end)
    began = time.perf_counter()
    state = call(state)
    return state, (time.perf_counter() - began) * 1e3


@dataclasses.dataclass(frozen=True)
class Timing:
    ms: float  # median milliseconds per call
    p20: float  # 20th percentile
    p80: float  # 80th percentile
    method: str  # "do_bench", "cuda_graph" or "perf_counter"


def measure(fn: Callable[[], object], *, warmup_ms: float = 25.0, rep_ms: float = 100.0, cuda_graph: bool = False,
            min_reps: int = 3) -> Timing:
    """Time ``fn()`` on :data:`DEVICE` (see the module docstring). ``warmup_ms`` and ``rep_ms`` are the time spent
    warming up and timing; on the CPU at least one warm-up call (none if ``warmup_ms`` is 0) and ``min_reps`` timed
    calls."""
    if ON_GPU:
        import triton.testing

        if cuda_graph:
            median, p20, p80 = triton.testing.do_bench_cudagraph(fn, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
            return Timing(median, p20, p80, "cuda_graph")
        median, p20, p80 = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return Timing(median, p20, p80, "do_bench")
    import numpy

    if warmup_ms > 0:
        deadline = time.perf_counter() + warmup_ms / 1000.0
        fn()
        while time.perf_counter() < deadline:
            fn()
    times = []
    deadline = time.perf_counter() + rep_ms / 1000.0
    while len(times) < min_reps or (time.perf_counter() < deadline and len(times) < 1000):
        times.append(time_call_ms(lambda _: fn(), None, DEVICE)[1])
    median, p20, p80 = numpy.quantile(times, [0.5, 0.2, 0.8])
    return Timing(float(median), float(p20), float(p80), "perf_counter")


def measure_alike(fns: dict[str, Callable[[], object]], *, warmup_ms: float, rep_ms: float,
                  cuda_graph: bool = False, min_reps: int = 3) -> dict[str, Timing]:
    """Time every function of a group the same way: with CUDA graphs only if all of them can be captured (a
    provider that synchronises with the host, or draws its random seed on the host, can't be), else all without."""
    if cuda_graph and ON_GPU:
        try:
            return {name: measure(fn, warmup_ms=warmup_ms, rep_ms=rep_ms, cuda_graph=True)
                    for name, fn in fns.items()}
        except Exception:  # noqa: BLE001  (a capture failed: time them all without graphs)
            torch.cuda.synchronize()
    return {name: measure(fn, warmup_ms=warmup_ms, rep_ms=rep_ms, min_reps=min_reps) for name, fn in fns.items()}


def measure_stages_ms(stages: Sequence[Callable[[object], object]], *, device: torch.device, repeats: int,
                      warmup: int, prepare: Callable[[], object] | None = None) -> list[float]:
    """Median milliseconds of each stage over ``repeats`` runs after ``warmup`` untimed ones. A run is
    ``state = prepare()`` (never timed), then ``state = stage(state)`` for each stage, each timed on its own by
    :func:`time_call_ms` (a forward stage hands its graph to the backward stage)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    samples: list[list[float]] = [[] for _ in stages]
    for _ in range(warmup + repeats):
        state = prepare() if prepare is not None else None
        for stage, stage_samples in zip(stages, samples):
            state, milliseconds = time_call_ms(stage, state, device)
            stage_samples.append(milliseconds)
        del state
    return [statistics.median(stage_samples[warmup:]) for stage_samples in samples]


def measure_ms(run: Callable[[object], object], *, device: torch.device, repeats: int, warmup: int,
               prepare: Callable[[], object] | None = None) -> float:
    """Median milliseconds of ``run(prepare())`` (see :func:`measure_stages_ms`)."""
    return measure_stages_ms([run], device=device, repeats=repeats, warmup=warmup, prepare=prepare)[0]


__all__ = ["DEVICE", "DTYPES", "ON_GPU", "Timing", "dtype_name", "measure", "measure_alike", "measure_ms",
           "measure_stages_ms", "time_call_ms"]
