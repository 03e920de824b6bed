"""Local response normalization across channels: a forward and a backward kernel, one pass over memory each.

With ``base[c] = k + alpha / size * sum_{j in window(c)} x[j]^2`` and ``window(c) = [c - before, c + after]``
(``before = size // 2``, ``after = (size - 1) // 2``, clipped to the channels: torch's asymmetric window for even
sizes), the output is ``out[c] = x[c] * base[c] ** -beta``. The input is viewed as (batch, channels, spatial) with
every trailing dimension flattened into ``spatial``, and must be contiguous.

Shape of both kernels: a program owns one sample's tile of ``BLOCK_SPATIAL`` positions across all channels, and walks
the channels in chunks of ``BLOCK_CHANNELS``. A chunk's window sums are ``size`` loads of the chunk shifted by each
window offset: direct sums, no running sum, so no cancellation when a large value leaves the window. The largest
offset is loaded first: it brings in the chunk's new rows from memory in one round trip, and every other shifted load
hits rows already in cache (the previous chunk's or this one's). So each tensor crosses DRAM once.

What the backward needs, in bytes moved. Write ``u[c] = base[c] ** (-beta - 1)``. The gradient (derived beside the
backward kernel) is ``dx[j] = g[j] base[j]^-beta - 2 alpha beta / size * x[j] * sum_{c in mirrored(j)} g[c] x[c] u[c]``.
- Saving only the input: 2 tensor passes forward and 3 backward, but the backward must recompute ``base`` for every
  neighbour of every element: ``size`` pows and ``size * size`` cached loads per element, which by estimate (not
  measured) costs at AlexNet's sizes about as long as the DRAM traffic it saves, in fp32, and more in fp16/bf16.
- Saving the input and the output: ``base`` cannot be recovered from them where ``x == 0`` (post-ReLU, often).
- Saving the input and ``u`` (chosen): the forward writes one more tensor (3 passes), the backward reads the gradient,
  the input and ``u`` and writes the input's gradient (4 passes) with no pow at all: ``sum g x u`` is products of
  shifted loads, and ``base[j]^-beta = base[j] * u[j]`` where ``base[j]`` comes from the same shifted input loads.
  ``u`` is kept in the accumulator dtype (fp32; fp64 for fp64), since in fp16 it overflows when ``k`` is small.
  The input itself is saved by reference (no copy when it is contiguous). fp32 total: 7 tensor passes, 28 bytes per
  element for forward + backward (fp16/bf16: 18). ``beta == 0`` (the identity) never reaches these kernels.

Interpreter path (``WINDOW_MATMUL``, set only by the interpreter launch when all channels fit one chunk): the shifted
loads cost ``size`` numpy tile ops per tensor there, with no cache to make them cheap. Instead each tensor's tile is
loaded once and the window sums across channels are one ``tl.dot`` with a band matrix (a BLAS call in numpy). The
interpreter's cost is per program and per tile op, so a tile's rows are all the channels and its columns are
(sample, position) pairs flattened over batch x spatial: one tile spans several samples, and a batch takes a few
programs of about 2**18 elements instead of one program per sample. The GPU path never takes it.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels.gpu_compile import CompileCase
from kernels.runtime import INTERPRET, INTERPRETER_MAX_BLOCK, autotune, check_device, interpreter_block

# A tile of BLOCK_CHANNELS x BLOCK_SPATIAL = 1024 elements per program: 8 per thread with 4 warps, and enough
# programs (AlexNet's 128 samples x 6 to 95 spatial tiles) to keep every SM busy. The autotuner picks the aspect.
# Not tuned on a GPU yet.
GPU_CONFIGS = [
    triton.Config({"BLOCK_CHANNELS": 8, "BLOCK_SPATIAL": 128}, num_warps=4),
    triton.Config({"BLOCK_CHANNELS": 16, "BLOCK_SPATIAL": 64}, num_warps=4),
    triton.Config({"BLOCK_CHANNELS": 32, "BLOCK_SPATIAL": 32}, num_warps=4),
]


@triton.jit
def _load_rows(pointer, channel, spatial, channels, spatial_size):
    """The (channel x spatial) tile of one sample in the accumulator dtype (fp32, or fp64 for fp64); zero outside
    the tensor (a channel below 0 or past the last, a position past the last)."""
    inside = ((channel >= 0) & (channel < channels))[:, None] & (spatial < spatial_size)[None, :]
    values = tl.load(pointer + channel[:, None] * spatial_size + spatial[None, :], mask=inside, other=0.0)
    return values.to(tl.float64 if values.dtype == tl.float64 else tl.float32)


@triton.jit
def _store_rows(pointer, values, channel, spatial, channels, spatial_size):
    """Store ``values`` (converted to the pointer's dtype) at the (channel x spatial) tile of one sample."""
    inside = (channel < channels)[:, None] & (spatial < spatial_size)[None, :]
    offsets = channel[:, None] * spatial_size + spatial[None, :]
    tl.store(pointer + offsets, values.to(pointer.dtype.element_ty), mask=inside)


@triton.jit
def _program_tile(channels, spatial_size, BLOCK_SPATIAL: tl.constexpr):
    """This program's sample, as the (int64) offset of its first element, and its ``BLOCK_SPATIAL`` positions."""
    spatial_tiles = tl.cdiv(spatial_size, BLOCK_SPATIAL)
    sample = tl.program_id(0) // spatial_tiles
    spatial = (tl.program_id(0) % spatial_tiles) * BLOCK_SPATIAL + tl.arange(0, BLOCK_SPATIAL)
    return sample.to(tl.int64) * channels * spatial_size, spatial


@triton.jit
def _column_tile(batch, channels, spatial_size, BLOCK_CHANNELS: tl.constexpr, BLOCK_COLUMNS: tl.constexpr):
    """Interpreter path: this program's (all channels x ``BLOCK_COLUMNS`` columns) tile, where the columns are
    (sample, position) pairs flattened over batch x spatial, so one tile spans several samples. Returns the channel
    indices, every element's int64 offset (``sample * channels * spatial_size + channel * spatial_size + position``)
    and which elements are inside the tensor."""
    channel = tl.arange(0, BLOCK_CHANNELS)
    column = tl.program_id(0).to(tl.int64) * BLOCK_COLUMNS + tl.arange(0, BLOCK_COLUMNS)
    sample = column // spatial_size
    column_offset = column + sample * ((channels - 1) * spatial_size)  # column = sample * spatial_size + position
    offsets = (channel * spatial_size)[:, None] + column_offset[None, :]
    inside = (channel < channels)[:, None] & (sample < batch)[None, :]
    return channel, offsets, inside


@triton.jit
def _power(base, exponent, negative_base_sign):
    """``base ** exponent`` as ``torch.pow`` gives it for a nonzero exponent: ``|base| ** exponent`` times
    ``negative_base_sign`` where the base is negative (``(-1) ** exponent`` for an integer exponent, NaN otherwise)."""
    magnitude = tl.exp2(exponent * tl.log2(tl.abs(base)))
    return tl.where(base < 0, negative_base_sign * magnitude, magnitude)


@triton.jit
def _window_sum(values, channel, channels, reach_down, reach_up, scale, offset):
    """``offset + scale * sum of rows [c - reach_down, c + reach_up]`` (clipped to the channels) for every row ``c``
    of the (channel x column) tile ``values`` (all channels, ``channel`` = ``arange(BLOCK_CHANNELS)``), as the
    product of a band matrix holding ``scale`` with the tile, accumulated onto ``offset``: one ``tl.dot`` in place of
    ``reach_down + reach_up + 1`` shifted tiles, and no scalar ops on the whole tile (the interpreter splats every
    scalar to the tile's shape). Exact-precision dot (fp32 accumulation, fp64 for fp64).

    A NaN or infinity in the tile would reach every row through the band's zeros (``0 * inf`` is NaN), so where any
    sum comes out non-finite the tile is summed again with its finite part and its NaN/+inf/-inf counts apart: each
    row then gets what ``offset + scale * (direct sum)`` gives (NaN from a NaN or from +inf and -inf together, else
    the infinity times ``scale``)."""
    row = channel[:, None]
    column = channel[None, :]
    band = ((column >= row - reach_down) & (column <= row + reach_up) & (column < channels)).to(values.dtype)
    weights = band * scale
    accumulator = tl.full(values.shape, offset, values.dtype)
    total = tl.dot(weights, values, accumulator, input_precision="ieee")
    checksum = tl.sum(total)  # NaN or infinite if any sum is (or, rarely, if finite sums overflow: harmless)
    if checksum - checksum != 0:
        finite = (values - values) == 0
        total = tl.dot(weights, tl.where(finite, values, 0.0), accumulator, input_precision="ieee")
        nan_count = tl.dot(band, (values != values).to(values.dtype), input_precision="ieee")
        positive_count = tl.dot(band, (~finite & (values > 0)).to(values.dtype), input_precision="ieee")
        negative_count = tl.dot(band, (~finite & (values < 0)).to(values.dtype), input_precision="ieee")
        infinity = tl.where(positive_count > 0, float("inf"), 0.0) + tl.where(negative_count > 0, -float("inf"), 0.0)
        total = tl.where(nan_count > 0, float("nan"), total + scale * infinity)
    return total


@autotune(GPU_CONFIGS, key=["channels", "spatial_size"])
@triton.jit
def lrn_forward_kernel(
    input_ptr,  # (batch, channels, spatial_size), contiguous
    output_ptr,  # same shape and dtype as the input
    base_power_ptr,  # same shape, accumulator dtype: base ** (-beta - 1), written when save_for_backward
    batch,  # samples
    channels,  # channels per sample
    spatial_size,  # positions per channel (the trailing dimensions, flattened)
    window_before,  # window(c) starts at c - window_before: size // 2, clipped to channels - 1
    window_after,  # window(c) ends at c + window_after: (size - 1) // 2, clipped to channels - 1
    alpha_over_size,  # alpha / size
    k,  # the additive constant of the base
    beta,  # the exponent
    negative_base_sign,  # (-1) ** beta for an integer beta, NaN otherwise: the sign of a negative base's power
    save_for_backward,  # 1: write base_power_ptr; 0: inference, it is not touched
    BLOCK_CHANNELS: tl.constexpr,  # channels per chunk of the walk across channels
    BLOCK_SPATIAL: tl.constexpr,  # positions per program; WINDOW_MATMUL: (sample, position) columns, across samples
    WINDOW_MATMUL: tl.constexpr,  # interpreter only: one chunk holds every channel (>= 16), window sums by tl.dot
):
    if WINDOW_MATMUL:
        channel, offsets, inside = _column_tile(batch, channels, spatial_size, BLOCK_CHANNELS, BLOCK_SPATIAL)
        value = tl.load(input_ptr + offsets, mask=inside, other=0.0).to(base_power_ptr.dtype.element_ty)
        base = _window_sum(value * value, channel, channels, window_before, window_after, alpha_over_size, k)
        if (k < 0) | (alpha_over_size < 0):
            power = _power(base, -beta, negative_base_sign)
        else:  # base >= 0 (or NaN): no sign to restore
            power = tl.exp2(-beta * tl.log2(base))
        tl.store(output_ptr + offsets, (value * power).to(output_ptr.dtype.element_ty), mask=inside)
        if save_for_backward:
            tl.store(base_power_ptr + offsets, power / base, mask=inside)
    else:
        sample_start, spatial = _program_tile(channels, spatial_size, BLOCK_SPATIAL)
        input_ptr += sample_start
        output_ptr += sample_start
        base_power_ptr += sample_start
        for channel_start in range(0, channels, BLOCK_CHANNELS):
            channel = channel_start + tl.arange(0, BLOCK_CHANNELS)
            # The leading edge first (the rows this chunk brings in), then the shifts that hit them in cache.
            neighbour = _load_rows(input_ptr, channel + window_after, spatial, channels, spatial_size)
            sum_of_squares = neighbour * neighbour
            for step in range(1, window_before + window_after + 1):
                neighbour = _load_rows(input_ptr, channel + (window_after - step), spatial, channels, spatial_size)
                sum_of_squares += neighbour * neighbour
            base = k + alpha_over_size * sum_of_squares
            power = _power(base, -beta, negative_base_sign)
            value = _load_rows(input_ptr, channel, spatial, channels, spatial_size)
            _store_rows(output_ptr, value * power, channel, spatial, channels, spatial_size)
            if save_for_backward:
                _store_rows(base_power_ptr, power / base, channel, spatial, channels, spatial_size)


# The backward. out[c] = x[c] * base[c]^-beta with base[c] = k + alpha/size * sum_{i in window(c)} x[i]^2, so
#   d out[c] / d x[j] = [c == j] base[c]^-beta - beta x[c] base[c]^(-beta-1) * alpha/size * 2 x[j] [j in window(c)]
# and with g = d loss / d out:
#   dx[j] = g[j] base[j]^-beta - (2 alpha beta / size) x[j] * sum_{c : j in window(c)} g[c] x[c] u[c],
# u[c] = base[c]^(-beta-1) (saved by the forward). j is in window(c) = [c - before, c + after] exactly when c is in
# the mirrored window [j - after, j + before]. base[j] itself needs window(j) = [j - before, j + after]; since
# before >= after, both windows lie in [j - before, j + before], so one walk over those offsets loads x, g and u
# once per offset and accumulates both sums. Then base[j]^-beta = base[j] * u[j]: no pow in the backward.
@autotune(GPU_CONFIGS, key=["channels", "spatial_size"])
@triton.jit
def lrn_backward_kernel(
    input_ptr,  # (batch, channels, spatial_size), contiguous: the forward's input
    base_power_ptr,  # same shape, accumulator dtype: base ** (-beta - 1) from the forward
    grad_output_ptr,  # same shape and dtype as the input, contiguous
    grad_input_ptr,  # same shape and dtype as the input, written
    batch,  # samples
    channels,  # channels per sample
    spatial_size,  # positions per channel
    window_before,  # size // 2, clipped to channels - 1
    window_after,  # (size - 1) // 2, clipped to channels - 1
    alpha_over_size,  # alpha / size
    k,  # the additive constant of the base
    gradient_coefficient,  # 2 * alpha * beta / size
    BLOCK_CHANNELS: tl.constexpr,  # channels per chunk of the walk across channels
    BLOCK_SPATIAL: tl.constexpr,  # positions per program; WINDOW_MATMUL: (sample, position) columns, across samples
    WINDOW_MATMUL: tl.constexpr,  # interpreter only: one chunk holds every channel (>= 16), window sums by tl.dot
):
    if WINDOW_MATMUL:
        # The same formula, each sum over its own window: window(j) for base[j], mirrored(j) for the weighted sum.
        channel, offsets, inside = _column_tile(batch, channels, spatial_size, BLOCK_CHANNELS, BLOCK_SPATIAL)
        base_power = tl.load(base_power_ptr + offsets, mask=inside, other=0.0)
        value = tl.load(input_ptr + offsets, mask=inside, other=0.0).to(base_power.dtype)
        grad = tl.load(grad_output_ptr + offsets, mask=inside, other=0.0).to(base_power.dtype)
        base = _window_sum(value * value, channel, channels, window_before, window_after, alpha_over_size, k)
        scaled_weighted_sum = _window_sum(grad * value * base_power, channel, channels, window_after, window_before,
                                          gradient_coefficient, 0.0)
        grad_input = grad * (base * base_power) - value * scaled_weighted_sum
        tl.store(grad_input_ptr + offsets, grad_input.to(grad_input_ptr.dtype.element_ty), mask=inside)
    else:
        sample_start, spatial = _program_tile(channels, spatial_size, BLOCK_SPATIAL)
        input_ptr += sample_start
        base_power_ptr += sample_start
        grad_output_ptr += sample_start
        grad_input_ptr += sample_start
        for channel_start in range(0, channels, BLOCK_CHANNELS):
            channel = channel_start + tl.arange(0, BLOCK_CHANNELS)
            # Offset +window_before (the leading edge) first: always in the mirrored window, in window(j) iff size
            # is odd.
            neighbour = channel + window_before
            value = _load_rows(input_ptr, neighbour, spatial, channels, spatial_size)
            sum_of_squares = tl.where(window_before <= window_after, value * value, 0.0)
            weighted_sum = (_load_rows(grad_output_ptr, neighbour, spatial, channels, spatial_size) * value
                            * _load_rows(base_power_ptr, neighbour, spatial, channels, spatial_size))
            for step in range(1, 2 * window_before + 1):
                offset = window_before - step
                neighbour = channel + offset
                value = _load_rows(input_ptr, neighbour, spatial, channels, spatial_size)
                sum_of_squares += value * value  # offset <= window_before - 1 <= window_after: in window(j)
                weighted = (_load_rows(grad_output_ptr, neighbour, spatial, channels, spatial_size) * value
                            * _load_rows(base_power_ptr, neighbour, spatial, channels, spatial_size))
                weighted_sum += tl.where(offset >= -window_after, weighted, 0.0)
            base = k + alpha_over_size * sum_of_squares
            value = _load_rows(input_ptr, channel, spatial, channels, spatial_size)
            grad = _load_rows(grad_output_ptr, channel, spatial, channels, spatial_size)
            base_power = _load_rows(base_power_ptr, channel, spatial, channels, spatial_size)
            grad_input = grad * (base * base_power) - gradient_coefficient * value * weighted_sum
            _store_rows(grad_input_ptr, grad_input, channel, spatial, channels, spatial_size)


def _accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def lrn_geometry(shape: torch.Size, size: int) -> tuple[int, int, int, int, int]:
    """(batch, channels, spatial_size, window_before, window_after) of an (N, C, *) input; refuses samples the kernels
    cannot index."""
    batch, channels = shape[0], shape[1]
    spatial_size = math.prod(shape[2:])
    if channels * spatial_size >= 2**31:
        raise ValueError(f"input has {channels * spatial_size} elements per sample; the LRN kernels index a sample "
                         "with 32-bit offsets, so it must have fewer than 2**31")
    last_channel = max(channels - 1, 0)
    return batch, channels, spatial_size, min(size // 2, last_channel), min((size - 1) // 2, last_channel)


# Interpreter: up to this many channels, all of a sample's channels go in one chunk and the window sums are a
# tl.dot with a (channels x channels) band matrix; beyond it the band (and the dot's work) grows too large.
INTERPRETER_MATMUL_MAX_CHANNELS = 1024


# Interpreter, band-matrix path: elements per program. A tile op costs a fixed Python overhead plus its numpy pass,
# and tl.load / tl.store cost about 12 ns per element whatever the tile, so larger tiles save overhead until the
# numpy passes fall out of cache. Measured (2 cores, fp32, AlexNet's constants), forward + backward milliseconds
# at tiles of 2**15 / 2**16 / 2**17 / 2**18 / 2**19 / 2**20 elements: (32, 32, 32, 32): 311 / 212 / 162 / 138 /
# 145 / 155; (32, 64, 15, 15): 144 / 105 / 79 / 69 / 80 / 89.
INTERPRETER_TILE = 1 << 18


def _launch(kernel, batch: int, channels: int, spatial_size: int, *args) -> None:
    if INTERPRET and channels <= INTERPRETER_MATMUL_MAX_CHANNELS:
        # One tile spans every channel and as many (sample, position) columns as fit.
        block_channels = interpreter_block(channels)  # at least 16: tl.dot's smallest operand
        block_columns = interpreter_block(batch * spatial_size, cap=max(16, INTERPRETER_TILE // block_channels))
        meta = {"BLOCK_CHANNELS": block_channels, "BLOCK_SPATIAL": block_columns, "WINDOW_MATMUL": True}
        kernel[(triton.cdiv(batch * spatial_size, block_columns),)](*args, **meta)
        return
    if INTERPRET:
        block_spatial = interpreter_block(spatial_size)
        block_channels = interpreter_block(channels, cap=max(1, INTERPRETER_MAX_BLOCK // block_spatial), minimum=1)
        meta = {"BLOCK_CHANNELS": block_channels, "BLOCK_SPATIAL": block_spatial, "WINDOW_MATMUL": False}
    else:
        meta = {"WINDOW_MATMUL": False}
    grid = lambda tiles: (batch * triton.cdiv(spatial_size, tiles["BLOCK_SPATIAL"]),)  # noqa: E731
    kernel[grid](*args, **meta)


def _negative_base_sign(beta: float) -> float:
    """``(-1) ** -beta`` for an integer beta (the sign of a negative number's power), NaN for a fractional one."""
    return (-1.0) ** int(beta) if float(beta).is_integer() else math.nan


def lrn_forward(input: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                save_for_backward: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Local response normalization of a contiguous (N, C, *) ``input`` (``beta != 0``). Returns the output (same
    shape and dtype) and, when ``save_for_backward``, ``base ** (-beta - 1)`` in the accumulator dtype for
    :func:`lrn_backward`."""
    check_device("input", input)
    assert input.is_contiguous() and beta != 0
    batch, channels, spatial_size, before, after = lrn_geometry(input.shape, size)
    output = torch.empty_like(input)
    accumulator = _accumulator_dtype(input.dtype)
    # Without a backward the kernel never touches base_power_ptr: one element stands in for it.
    base_power = torch.empty(input.shape if save_for_backward else (1,), dtype=accumulator, device=input.device)
    if input.numel():
        _launch(lrn_forward_kernel, batch, channels, spatial_size, input, output, base_power, batch, channels,
                spatial_size, before, after, alpha / size, k, beta, _negative_base_sign(beta), int(save_for_backward))
    return output, (base_power if save_for_backward else None)


def lrn_backward(input: torch.Tensor, base_power: torch.Tensor, grad_output: torch.Tensor, size: int, alpha: float,
                 beta: float, k: float) -> torch.Tensor:
    """The input's gradient, from the forward's contiguous ``input``, its ``base_power`` and a contiguous
    ``grad_output``."""
    check_device("grad_output", grad_output)
    assert input.is_contiguous() and grad_output.is_contiguous() and base_power.shape == input.shape
    batch, channels, spatial_size, before, after = lrn_geometry(input.shape, size)
    grad_input = torch.empty_like(input)
    if input.numel():
        _launch(lrn_backward_kernel, batch, channels, spatial_size, input, base_power, grad_output, grad_input,
                batch, channels, spatial_size, before, after, alpha / size, k, 2.0 * alpha * beta / size)
    return grad_input


def compile_cases() -> list[CompileCase]:
    cases = []
    for dtype in ("fp32", "fp16", "bf16"):
        for config in GPU_CONFIGS:
            scalars = {"batch": "i32", "channels": "i32", "spatial_size": "i32", "window_before": "i32",
                       "window_after": "i32", "alpha_over_size": "fp32", "k": "fp32"}
            forward = {"input_ptr": f"*{dtype}", "output_ptr": f"*{dtype}", "base_power_ptr": "*fp32", **scalars,
                       "beta": "fp32", "negative_base_sign": "fp32", "save_for_backward": "i32",
                       **{name: "constexpr" for name in config.kwargs}}
            backward = {"input_ptr": f"*{dtype}", "base_power_ptr": "*fp32", "grad_output_ptr": f"*{dtype}",
                        "grad_input_ptr": f"*{dtype}", **scalars, "gradient_coefficient": "fp32",
                        **{name: "constexpr" for name in config.kwargs}}
            for name, kernel, signature in (("lrn_forward", lrn_forward_kernel, forward),
                                            ("lrn_backward", lrn_backward_kernel, backward)):
                signature = {**signature, "WINDOW_MATMUL": "constexpr"}
                cases.append(CompileCase(name, kernel, signature, {**config.kwargs, "WINDOW_MATMUL": False}, dtype,
                                         num_warps=config.num_warps, num_stages=config.num_stages))
    return cases
