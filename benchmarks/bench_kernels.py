"""Time every op with every provider, and torch.compile of the torch reference, at AlexNet's layer shapes.

    python benchmarks/bench_kernels.py [--batch-size 128] [--dtypes bf16 fp16 fp32] [--json results/kernels.json]
    python benchmarks/bench_kernels.py --smoke      # tiny shapes, through the interpreter on a CPU, in seconds

Every provider that ``tritonnet.available_kernels()`` lists is called the same way, through the public functional
API with ``provider=``; a newly registered provider is benchmarked without new code. ``torch.compile`` compiles
the plain ``torch.nn.functional`` expression that the "torch" provider runs (without tritonnet's argument checks).
Ratios are taken against the "torch" provider: PyTorch eager (cuDNN, cuBLAS and torch's own kernels).

Passes: ``fwd`` is the forward pass as in training (the tensors that get gradients in the network require them,
so each provider saves what its backward needs); ``fwd+bwd`` adds the backward of a random output gradient.
conv1's input needs no gradient (it is the image), so its backward computes the weight and bias gradients only.

What is counted (s = bytes per element, n = elements of the op's input, m = of its output):

- conv2d + ReLU: 2 * N * C_out * H_out * W_out * (C_in / groups) * kH * kW FLOPs forward; the backward adds as
  many for the weight gradient and as many again for the input gradient (not for conv1). Bias and ReLU are not
  counted. Reported as TFLOP/s, against the dtype's tensor-core peak (TF32 for fp32 unless ``--no-tf32``).
- linear (+ ReLU + dropout): 2 * M * N * K forward, 3x that forward+backward. TFLOP/s, as for conv.
- The memory-bound ops report GB/s: the fewest bytes each pass must move through HBM, over the time.
  - local_response_norm: forward reads x, writes y and saves u = base^(-beta-1) in fp32 (kernels/lrn.py):
    2 n s + 4 n. Forward+backward adds reading dy, x and u and writing dx: 5 n s + 8 n (bf16: 18 bytes/element).
  - max_pool2d: forward reads x, writes y and a 1-byte window offset per output for the backward: (n + m) s + m.
    Forward+backward adds reading dy and the offsets and writing dx: (2 n + 2 m) s + 2 m.
  - dropout: forward reads x and writes y (the mask is regenerated from a seed, never stored): 2 n s.
    Forward+backward: 4 n s.
  - cross_entropy (N x C logits, int64 targets): forward reads the logits and targets: N C s + 8 N.
    Forward+backward: the logits read once, their gradient written once: 2 N C s + 8 N.
- graph_bytes (GPU): what the autograd graph holds after the forward beyond the output, from
  ``torch.cuda.memory_allocated``: the memory a provider keeps for its backward (PyTorch's dropout keeps a
  1-byte mask per element, its max-pool int64 indices).
- rel_error: ||out - eager|| / ||eager|| of the forward output (not for ops that draw random numbers).
- first_call_s: seconds of the first call, untimed otherwise: Triton's compiles and autotuning, torch.compile's
  compile, cuDNN's algorithm search (fwd rows: the forward's; fwd+bwd rows: the first backward's).

The goals each kernel is held to on an H100/H200 at batch 128 are printed as pass/fail at the end (README.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from typing import Callable

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn.functional as torch_functional

import tritonnet
from benchmarks import harness
from benchmarks.harness import COMPILED, EAGER, GoalResult, check_minimum
from tritonnet import functional, registry

PASSES = ("fwd", "fwd+bwd")
OURS = "triton"  # the provider the goals are about
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0  # the paper's LRN (tritonnet.models)
DROPOUT_P = 0.5


@dataclasses.dataclass(frozen=True)
class Geometry:
    """The layers to benchmark (batch excluded). Convolutions: (layer, in_channels, out_channels, kernel, stride,
    padding, groups, input side). LRN and pools: (layer, channels, input side). Fully connected: (layer,
    in_features, out_features, ReLU, dropout p). Dropout: (layer, shape of one sample). Loss: classes."""

    convolutions: list[tuple]
    normalizations: list[tuple]
    pools: list[tuple]
    fully_connected: list[tuple]
    dropouts: list[tuple]
    classes: int


ALEXNET = Geometry(  # the paper's net at 227x227, as tritonnet.models.alexnet builds it
    convolutions=[("conv1", 3, 96, 11, 4, 0, 1, 227), ("conv2", 96, 256, 5, 1, 2, 2, 27),
                  ("conv3", 256, 384, 3, 1, 1, 1, 13), ("conv4", 384, 384, 3, 1, 1, 2, 13),
                  ("conv5", 384, 256, 3, 1, 1, 2, 13)],
    normalizations=[("lrn1", 96, 55), ("lrn2", 256, 27)],
    pools=[("pool1", 96, 55), ("pool2", 256, 27), ("pool5", 256, 13)],
    fully_connected=[("fc6", 9216, 4096, True, DROPOUT_P), ("fc7", 4096, 4096, True, DROPOUT_P),
                     ("fc8", 4096, 1000, False, 0.0)],
    # fc activations as in the net; drop_big (conv1's output size) is large enough to measure bandwidth
    dropouts=[("drop_fc", (4096,)), ("drop_big", (96, 55, 55))],
    classes=1000,
)

SMOKE = Geometry(  # the same layer kinds (kernel sizes, strides, groups) at tiny sizes, for the interpreter
    convolutions=[("conv1", 3, 8, 11, 4, 0, 1, 35), ("conv2", 8, 16, 5, 1, 2, 2, 7), ("conv3", 16, 24, 3, 1, 1, 1, 5),
                  ("conv4", 24, 24, 3, 1, 1, 2, 5), ("conv5", 24, 16, 3, 1, 1, 2, 5)],
    normalizations=[("lrn1", 8, 7), ("lrn2", 16, 5)],
    pools=[("pool1", 8, 7), ("pool2", 16, 5), ("pool5", 16, 5)],
    fully_connected=[("fc6", 64, 32, True, DROPOUT_P), ("fc7", 32, 32, True, DROPOUT_P), ("fc8", 32, 10, False, 0.0)],
    dropouts=[("drop_fc", (32,)), ("drop_big", (8, 7, 7))],
    classes=10,
)


@dataclasses.dataclass(frozen=True)
class Case:
    """One op at one layer's shape."""

    layer: str  # "conv1", "lrn2", ...
    op: str  # the registry's op name
    shape: str  # the main input's shape, e.g. "128x96x55x55"
    params: str  # the rest, e.g. "weight 256x48x5x5, padding 2, groups 2, +ReLU"
    make_tensors: Callable[..., list[torch.Tensor]]  # (dtype, device=benchmark device): fresh random inputs
    needs_grad: tuple[int, ...]  # which of them get gradients in the network
    forward: Callable[[list[torch.Tensor], str], torch.Tensor]  # the public API call, with provider=
    reference: Callable[..., torch.Tensor]  # plain torch.nn.functional, what torch.compile compiles
    flops: Callable[[str], float] | None = None  # per pass, for compute-bound ops
    bytes_moved: Callable[[str, int], float] | None = None  # per pass and element size, for memory-bound ops
    random: bool = False  # the output depends on random numbers (no error check against eager)


def _dims(*sizes: int) -> str:
    return "x".join(map(str, sizes))


def _randn(*shape: int, dtype: torch.dtype, device: torch.device | None, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, device=device or harness.DEVICE) * scale).to(dtype)


def conv_case(batch: int, layer: str, in_channels: int, out_channels: int, kernel: int, stride: int, padding: int,
              groups: int, side: int) -> Case:
    out_side = (side + 2 * padding - kernel) // stride + 1
    fan_in = in_channels // groups * kernel * kernel
    is_first = in_channels == 3  # the image: no input gradient

    def make(dtype, device=None):
        return [_randn(batch, in_channels, side, side, dtype=dtype, device=device),
                _randn(out_channels, in_channels // groups, kernel, kernel, dtype=dtype, device=device,
                       scale=fan_in ** -0.5),
                _randn(out_channels, dtype=dtype, device=device, scale=0.1)]

    forward_flops = 2.0 * batch * out_channels * out_side * out_side * fan_in
    return Case(
        layer, "conv2d", _dims(batch, in_channels, side, side),
        f"weight {_dims(out_channels, in_channels // groups, kernel, kernel)}, stride {stride}, padding {padding}, "
        f"groups {groups}, +ReLU",
        make, (1, 2) if is_first else (0, 1, 2),
        lambda t, provider: functional.conv2d(t[0], t[1], t[2], stride, padding, 1, groups, relu=True,
                                              provider=provider),
        lambda x, w, b: torch.relu(torch_functional.conv2d(x, w, b, stride, padding, 1, groups)),
        flops=lambda pass_: forward_flops * (1 if pass_ == "fwd" else 2 if is_first else 3),
    )


def lrn_case(batch: int, layer: str, channels: int, side: int) -> Case:
    elements = batch * channels * side * side
    return Case(
        layer, "local_response_norm", _dims(batch, channels, side, side),
        f"size {LRN_SIZE}, alpha {LRN_ALPHA:g}, beta {LRN_BETA:g}, k {LRN_K:g}",
        lambda dtype, device=None: [torch.relu(_randn(batch, channels, side, side, dtype=dtype, device=device))],
        (0,),
        lambda t, provider: functional.local_response_norm(t[0], LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K,
                                                           provider=provider),
        lambda x: torch_functional.local_response_norm(x, LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K),
        bytes_moved=lambda pass_, size: lrn_bytes_per_element(pass_, size) * elements,
    )


def lrn_bytes_per_element(pass_: str, size: int) -> int:
    """What kernels/lrn.py moves per element: the forward reads x and writes y and the saved ``u`` (in the fp32
    accumulator; fp64 for fp64); the backward reads dy, x and ``u`` and writes dx. bf16: 8 forward, 18 both."""
    saved = max(size, 4)
    return 2 * size + saved if pass_ == "fwd" else 5 * size + 2 * saved


def pool_case(batch: int, layer: str, channels: int, side: int) -> Case:
    inputs = batch * channels * side * side
    outputs = batch * channels * ((side - 3) // 2 + 1) ** 2

    def bytes_moved(pass_, size):
        forward = (inputs + outputs) * size + outputs
        return forward if pass_ == "fwd" else forward + (inputs + outputs) * size + outputs

    return Case(
        layer, "max_pool2d", _dims(batch, channels, side, side), "kernel 3, stride 2",
        lambda dtype, device=None: [_randn(batch, channels, side, side, dtype=dtype, device=device)], (0,),
        lambda t, provider: functional.max_pool2d(t[0], 3, 2, provider=provider),
        lambda x: torch_functional.max_pool2d(x, 3, 2),
        bytes_moved=bytes_moved,
    )


def dropout_case(batch: int, layer: str, sample_shape: tuple[int, ...]) -> Case:
    elements = batch * math.prod(sample_shape)
    return Case(
        layer, "dropout", _dims(batch, *sample_shape), f"p {DROPOUT_P}, training",
        lambda dtype, device=None: [_randn(batch, *sample_shape, dtype=dtype, device=device)], (0,),
        lambda t, provider: functional.dropout(t[0], DROPOUT_P, True, provider=provider),
        lambda x: torch_functional.dropout(x, DROPOUT_P, True),
        bytes_moved=lambda pass_, size: (2 if pass_ == "fwd" else 4) * elements * size,
        random=True,
    )


def linear_case(batch: int, layer: str, in_features: int, out_features: int, relu: bool, dropout_p: float) -> Case:
    def make(dtype, device=None):
        return [_randn(batch, in_features, dtype=dtype, device=device),
                _randn(out_features, in_features, dtype=dtype, device=device, scale=in_features ** -0.5),
                _randn(out_features, dtype=dtype, device=device, scale=0.1)]

    def reference(x, w, b):
        output = torch_functional.linear(x, w, b)
        output = torch.relu(output) if relu else output
        return torch_functional.dropout(output, dropout_p, True) if dropout_p else output

    fused = (", +ReLU" if relu else "") + (f", +dropout {dropout_p}" if dropout_p else "")
    forward_flops = 2.0 * batch * in_features * out_features
    return Case(
        layer, "linear", _dims(batch, in_features), f"weight {_dims(out_features, in_features)}{fused}",
        make, (0, 1, 2),
        lambda t, provider: functional.linear(t[0], t[1], t[2], relu=relu, dropout_p=dropout_p, training=True,
                                              provider=provider),
        reference,
        flops=lambda pass_: forward_flops * (1 if pass_ == "fwd" else 3),
        random=dropout_p > 0,
    )


def cross_entropy_case(batch: int, classes: int) -> Case:
    return Case(
        "loss", "cross_entropy", _dims(batch, classes), "int64 targets, mean",
        lambda dtype, device=None: [_randn(batch, classes, dtype=dtype, device=device, scale=3.0),
                                    torch.randint(0, classes, (batch,), device=device or harness.DEVICE)], (0,),
        lambda t, provider: functional.cross_entropy(t[0], t[1], provider=provider),
        lambda logits, target: torch_functional.cross_entropy(logits, target),
        bytes_moved=lambda pass_, size: (1 if pass_ == "fwd" else 2) * batch * classes * size + 8 * batch,
    )


def alexnet_cases(batch: int, geometry: Geometry = ALEXNET) -> list[Case]:
    """Every op at every AlexNet layer it appears in, in network order (the loss last)."""
    return [
        *(conv_case(batch, *layer) for layer in geometry.convolutions),
        *(lrn_case(batch, *layer) for layer in geometry.normalizations),
        *(pool_case(batch, *layer) for layer in geometry.pools),
        *(dropout_case(batch, *layer) for layer in geometry.dropouts),
        *(linear_case(batch, *layer) for layer in geometry.fully_connected),
        cross_entropy_case(batch, geometry.classes),
    ]


# ----------------------------------------------------------------------------------------------------- measuring

def _graph_bytes(forward: Callable[[], torch.Tensor]) -> int | None:
    """Bytes the autograd graph holds after ``forward()`` beyond its output (GPU only)."""
    if not harness.ON_GPU:
        return None
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    output = forward()
    torch.cuda.synchronize()
    output_bytes = -(-output.untyped_storage().nbytes() // 512) * 512  # the allocator's 512-byte blocks
    held = torch.cuda.memory_allocated() - before - output_bytes
    del output
    return max(held, 0)


def _first_call(fn: Callable[[], object]) -> tuple[object, float]:
    """``fn()`` and the seconds it took: the first call of a provider compiles and autotunes."""
    harness.synchronize()
    started = time.perf_counter()
    result = fn()
    harness.synchronize()
    return result, round(time.perf_counter() - started, 3)


def _relative_error(output: torch.Tensor, expected: torch.Tensor) -> float:
    output, expected = output.detach().double(), expected.detach().double()
    return float((output - expected).norm() / expected.norm().clamp_min(1e-30))


def _throughput(case: Case, pass_: str, dtype: torch.dtype, ms: float, spec, tf32: bool) -> dict:
    name = harness.dtype_name(dtype)
    if case.flops is not None:
        flops = case.flops(pass_)
        tflops = flops / ms / 1e9
        return {"flops": flops, "tflops": harness.significant(tflops, 4),
                "roofline_fraction": harness.roofline_fraction(spec, dtype=name, tflops=tflops, tf32=tf32)}
    moved = case.bytes_moved(pass_, torch.finfo(dtype).bits // 8)
    gbps = moved / ms / 1e6
    return {"bytes": moved, "gbps": harness.significant(gbps, 4),
            "roofline_fraction": harness.roofline_fraction(spec, dtype=name, gbps=gbps)}


def benchmark_case(case: Case, dtype: torch.dtype, providers: list[str], args, spec) -> list[dict]:
    """Rows for one case in one dtype: every provider (and torch.compile), both passes."""
    tensors = case.make_tensors(dtype)
    for index in case.needs_grad:
        tensors[index].requires_grad_(True)
    inputs_with_grad = [tensors[index] for index in case.needs_grad]

    forwards: dict[str, Callable[[], torch.Tensor]] = {}
    for provider in providers:
        if provider == COMPILED:
            torch._dynamo.reset()  # one compile per case and dtype; never the recompile limit's eager fallback
            compiled = torch.compile(case.reference, dynamic=False, backend=args.compile_backend,
                                     **({"mode": args.compile_mode} if args.compile_mode else {}))
            forwards[provider] = lambda compiled=compiled: compiled(*tensors)
        else:
            forwards[provider] = lambda provider=provider: case.forward(tensors, provider)

    base = {"op": case.op, "layer": case.layer, "shape": case.shape, "params": case.params,
            "dtype": harness.dtype_name(dtype), "batch": args.batch_size}
    rows: list[dict] = []
    failed: dict[str, str] = {}
    first_outputs: dict[str, torch.Tensor] = {}
    first_call_s: dict[tuple[str, str], float] = {}
    for provider, forward in forwards.items():
        try:
            first_outputs[provider], first_call_s["fwd", provider] = _first_call(forward)
        except Exception as error:  # noqa: BLE001  (a broken provider is reported, and the others still run)
            failed[provider] = f"{type(error).__name__}: {str(error).strip()[:500]}"
    grad_output = None
    if EAGER in first_outputs:
        grad_output = torch.randn_like(first_outputs[EAGER], dtype=torch.float32).to(dtype)
    elif first_outputs:
        grad_output = torch.randn_like(next(iter(first_outputs.values())), dtype=torch.float32).to(dtype)
    expected = first_outputs.get(EAGER)
    errors = {provider: None if case.random or expected is None else _relative_error(output, expected)
              for provider, output in first_outputs.items()}
    first_outputs.clear()
    held = {provider: _graph_bytes(forward) for provider, forward in forwards.items() if provider not in failed}

    for pass_ in args.passes:
        if pass_ == "fwd":
            calls = {provider: forward for provider, forward in forwards.items() if provider not in failed}
        else:
            calls = {}
            for provider, forward in forwards.items():
                if provider in failed:
                    continue

                def step(forward=forward):
                    return torch.autograd.grad(forward(), inputs_with_grad, grad_output)

                try:
                    _, first_call_s[pass_, provider] = _first_call(step)
                    calls[provider] = step
                except Exception as error:  # noqa: BLE001
                    rows.append({**base, "pass": pass_, "provider": provider, "ms": None,
                                 "error": f"{type(error).__name__}: {str(error).strip()[:500]}"})
        try:
            timings = harness.measure_alike(calls, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms,
                                            cuda_graph=args.cuda_graph, min_reps=args.min_reps)
        except Exception as error:  # noqa: BLE001
            timings = {}
            failed_timing = f"{type(error).__name__}: {str(error).strip()[:500]}"
            rows.extend({**base, "pass": pass_, "provider": provider, "ms": None, "error": failed_timing}
                        for provider in calls)
        for provider, timing in timings.items():
            rows.append({**base, "pass": pass_, "provider": provider,
                         "ms": harness.significant(timing.ms), "p20": harness.significant(timing.p20),
                         "p80": harness.significant(timing.p80),
                         "timer": timing.method,
                         **_throughput(case, pass_, dtype, timing.ms, spec, args.tf32),
                         "graph_bytes": held.get(provider) if pass_ == "fwd" else None,
                         "rel_error": errors.get(provider), "first_call_s": first_call_s.get((pass_, provider)),
                         "error": None})
    for provider, message in failed.items():
        rows.extend({**base, "pass": pass_, "provider": provider, "ms": None, "error": message}
                    for pass_ in args.passes)
    return rows


# ------------------------------------------------------------------------------------------------------- goals

def evaluate_goals(rows: list[dict]) -> list[GoalResult]:
    """The targets for an H100/H200 at batch 128 (README.md), checked against the rows."""
    by_key = {(row["layer"], row["dtype"], row["pass"], row["provider"]): row for row in rows if row.get("ms")}

    def ours(op: str, pass_: str, dtype: str | None = None, layers: tuple[str, ...] | None = None) -> list[dict]:
        return [row for row in by_key.values() if row["op"] == op and row["pass"] == pass_ and row["provider"] == OURS
                and (dtype is None or row["dtype"] == dtype) and (layers is None or row["layer"] in layers)]

    def where(row: dict) -> str:
        return f"{row['layer']} {row['dtype']} {row['pass']}"

    def versus(row: dict, provider: str) -> float | None:
        other = by_key.get((row["layer"], row["dtype"], row["pass"], provider))
        return other["ms"] / row["ms"] if other else None

    def backward_ratio(forward_row: dict) -> float | None:
        """Eager's backward time over ours, each the fwd+bwd time less the fwd time."""
        key = (forward_row["layer"], forward_row["dtype"])
        times = [by_key.get((*key, pass_, provider)) for provider in (EAGER, OURS) for pass_ in PASSES]
        if not all(times):
            return None
        eager_backward, our_backward = times[1]["ms"] - times[0]["ms"], times[3]["ms"] - times[2]["ms"]
        return eager_backward / our_backward if our_backward > 0 else None

    lrn = ours("local_response_norm", "fwd+bwd")
    pools = ours("max_pool2d", "fwd+bwd")
    big_dropout = ours("dropout", "fwd", layers=("drop_big",)) + ours("dropout", "fwd+bwd", layers=("drop_big",))
    dropout_forward = [row for row in ours("dropout", "fwd") if row.get("graph_bytes") is not None]
    conv_forward = ours("conv2d", "fwd", "bf16")
    linear_rows = ours("linear", "fwd", "bf16") + ours("linear", "fwd+bwd", "bf16")
    results = [
        check_minimum("LRN fwd+bwd >= 5x eager", [(row.get("speedup_vs_eager"), where(row)) for row in lrn], 5.0),
        check_minimum("LRN fwd+bwd >= 1.5x torch.compile", [(versus(row, COMPILED), where(row)) for row in lrn], 1.5),
        check_minimum("LRN fwd+bwd >= 80% of HBM bandwidth",
                      [(row.get("roofline_fraction"), where(row)) for row in lrn], 0.8, unit="%"),
        check_minimum("max-pool fwd+bwd >= 1.2x eager",
                      [(row.get("speedup_vs_eager"), where(row)) for row in pools], 1.2),
        check_minimum("dropout >= 75% of HBM bandwidth (drop_big)",
                      [(row.get("roofline_fraction"), where(row)) for row in big_dropout], 0.75, unit="%"),
    ]
    # 0 bytes of mask: what the graph holds, per element of the input (eager keeps a 1-byte mask per element)
    mask = [(row["graph_bytes"] / math.prod(map(int, row["shape"].split("x"))), where(row)) for row in dropout_forward]
    if mask:
        worst, at = max(mask)
        results.append(GoalResult("dropout keeps no mask (graph bytes per element < 0.01)",
                                  f"{worst:.3f} B/element ({at})", "pass" if worst < 0.01 else "FAIL"))
    else:
        results.append(GoalResult("dropout keeps no mask (graph bytes per element < 0.01)", "-", "no data"))
    results += [
        check_minimum("conv2d+ReLU fwd bf16 >= 1.0x eager (cuDNN)",
                      [(row.get("speedup_vs_eager"), where(row)) for row in conv_forward], 1.0),
        check_minimum("conv2d+ReLU bwd bf16 >= 0.8x eager (cuDNN)",
                      [(backward_ratio(row), f"{row['layer']} bf16 bwd") for row in conv_forward], 0.8),
        check_minimum("linear(+ReLU+dropout) bf16 >= 1.0x eager (cuBLAS)",
                      [(row.get("speedup_vs_eager"), where(row)) for row in linear_rows], 1.0),
    ]
    return results


# ------------------------------------------------------------------------------------------------------ reporting

def provider_order(provider: str) -> tuple:
    """The registered providers in the registry's order (ours first, then PyTorch eager), then torch.compile."""
    return provider == COMPILED, registry.provider_order(provider)


def _cell(row: dict) -> str:
    if not row.get("ms"):
        return "[red]error[/]"
    throughput = f"{row['tflops']:.3g} TFLOP/s" if "tflops" in row else f"{row['gbps']:.4g} GB/s"
    roof = f" {row['roofline_fraction'] * 100:.0f}%" if row.get("roofline_fraction") is not None else ""
    speedup = f" {row['speedup_vs_eager']:.2f}x" if row.get("speedup_vs_eager") else ""
    return f"{row['ms']:.4f} ms{speedup}  {throughput}{roof}"


def print_tables(console, rows: list[dict]) -> None:
    from rich.table import Table

    providers = sorted({row["provider"] for row in rows}, key=provider_order)
    for dtype in dict.fromkeys(row["dtype"] for row in rows):
        table = Table(title=f"{dtype}: median ms, x eager, throughput, % of roofline", title_justify="left")
        for column in ("layer", "pass", "shape", *providers):
            table.add_column(column, no_wrap=True)
        cells: dict[tuple, dict[str, dict]] = {}
        for row in rows:
            if row["dtype"] == dtype:
                cells.setdefault((row["layer"], row["pass"], row["shape"]), {})[row["provider"]] = row
        for (layer, pass_, shape), by_provider in cells.items():
            table.add_row(layer, pass_, shape, *(_cell(by_provider[p]) if p in by_provider else "" for p in providers))
        console.print(table)
    harness.print_errors(console, rows, ("layer", "dtype", "pass", "provider"))


def write_chart(path: str, rows: list[dict], environment: dict) -> None:
    harness.speedup_chart(path, rows, environment, "tritonnet kernels: times faster than PyTorch eager",
                          lambda row: f"{row['layer']} {row['pass']}", provider_order)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes, fp32, one timed call each: exercises everything in seconds on a CPU")
    parser.add_argument("--batch-size", type=int, default=None, help="default 128 (2 with --smoke)")
    parser.add_argument("--dtypes", nargs="+", choices=list(harness.DTYPES), default=None,
                        help="default bf16 fp16 fp32 (fp32 with --smoke)")
    parser.add_argument("--passes", nargs="+", choices=PASSES, default=list(PASSES))
    parser.add_argument("--ops", nargs="+", default=None, help="only these ops (registry names)")
    parser.add_argument("--layers", nargs="+", default=None, help="only these layers (conv1, lrn2, ...)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="time torch.compile of the torch reference (auto: on a GPU only)")
    parser.add_argument("--compile-dtypes", nargs="+", choices=list(harness.DTYPES), default=None,
                        help="compile only in these dtypes (compiling costs seconds per case)")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--compile-mode", default=None, help="e.g. max-autotune (default: torch's default)")
    parser.add_argument("--warmup-ms", type=float, default=None, help="default 25 (0 with --smoke)")
    parser.add_argument("--rep-ms", type=float, default=None, help="default 100 (0 with --smoke)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="replay CUDA graphs, for each case only if every provider can be captured")
    parser.add_argument("--no-tf32", dest="tf32", action="store_false",
                        help="fp32 matrix products in full fp32 in cuBLAS/cuDNN (roofline: fp32 CUDA-core peak)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the rows here, and a PNG chart beside it")
    args = parser.parse_args(argv)
    args.batch_size = args.batch_size or (2 if args.smoke else 128)
    args.dtypes = args.dtypes or (["fp32"] if args.smoke else ["bf16", "fp16", "fp32"])
    args.warmup_ms = args.warmup_ms if args.warmup_ms is not None else (0.0 if args.smoke else 25.0)
    args.rep_ms = args.rep_ms if args.rep_ms is not None else (0.0 if args.smoke else 100.0)
    args.min_reps = 1 if args.smoke else 3  # CPU timing; every function was called once before it is timed
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_arguments(argv)
    console = harness.make_console()
    torch.manual_seed(args.seed)
    harness.fair_settings(args.tf32)
    spec = harness.gpu_spec(harness.device_name()) if harness.ON_GPU else None
    compile_on = args.compile == "on" or (args.compile == "auto" and harness.ON_GPU)
    kernels = tritonnet.available_kernels()
    cases = [case for case in alexnet_cases(args.batch_size, SMOKE if args.smoke else ALEXNET)
             if (args.ops is None or case.op in args.ops) and (args.layers is None or case.layer in args.layers)]
    environment = harness.environment(batch_size=args.batch_size, smoke=args.smoke, tf32=args.tf32,
                                      providers=kernels, compile=compile_on, cuda_graph=args.cuda_graph)
    console.print(f"[bold]bench_kernels[/] on {environment['gpu']} "
                  f"(roofline: {environment['gpu_spec'] or 'unknown GPU'}), torch {environment['torch']}, "
                  f"triton {environment['triton']}, batch {args.batch_size}")

    rows: list[dict] = []
    interrupted = False
    try:
        for dtype_name in args.dtypes:
            dtype = harness.DTYPES[dtype_name]
            for case in cases:
                providers = list(kernels[case.op])
                if compile_on and (args.compile_dtypes is None or dtype_name in args.compile_dtypes):
                    providers.append(COMPILED)
                rows += benchmark_case(case, dtype, providers, args, spec)
                harness.case_done(console, args, environment, rows, ("layer", "dtype", "pass"),
                                  f"{dtype_name} {case.layer:8s}")
    except KeyboardInterrupt:  # `timeout -s INT`: keep what was measured
        interrupted = True
        console.print("[yellow]interrupted: reporting the rows measured so far[/]")

    return harness.finish(console, args, environment, rows, ("layer", "dtype", "pass"), evaluate_goals=evaluate_goals,
                          print_rows=print_tables, write_chart=write_chart, interrupted=interrupted)


if __name__ == "__main__":
    sys.exit(main())
