"""Local response normalization across channels: a forward and a backward kernel, one pass over memory each.

With ``base[c] = k + alpha / size * sum_{j in window(c)} x[j]^2`` and ``window(c) = [c - before, c + after]``
(``before = size // 2``, ``after = (size - 1) // 2``, clipped to the channels: torch's asymmetric window for even
sizes), the output is ``out[c] = x[c] * base[c] ** -beta``.

Layout. The input is (N, C, *): the window runs along C, and every other dim (batch and spatial) is an independent
*position*. The kernels walk the positions as a flat index over up to four dims (``kernels/layout.py``: the dims in
the output's memory order, merged where every tensor allows) and address each tensor through its own strides: any
layout is read in place, and the output, the saved ``base ** (-beta - 1)`` and the input's gradient have the input's
memory format (``torch.empty_like``), as torch's do. Contiguous NCHW walks (N, H * W) with channels ``H * W`` apart;
channels-last walks one dim of N * H * W positions with the channels contiguous.

GPU kernels. A program owns a tile of ``BLOCK_POSITIONS`` positions and walks the channels in chunks of
``BLOCK_CHANNELS``. A chunk's window sums are ``size`` loads of the chunk shifted by each window offset: direct
sums, no running sum, so no cancellation when a large value leaves the window. The largest offset is loaded first:
it brings in the chunk's new rows from memory in one round trip, and every other shifted load hits rows already in
cache (the previous chunk's or this one's). So each tensor should cross DRAM once (the design; untimed on a GPU). In
channels-last a tile's rows of channels are contiguous runs in memory (a chunk of 32 to 64 channels is 64 to 256
bytes per position) and the shifted loads read the same lines again: the tiles the autotuner offers run from
positions-major (NCHW: positions contiguous) to channels-major (NHWC).

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
  The input itself is saved by reference, in whatever layout it came (no copy). fp32 total: 7 tensor passes, 28
  bytes per element for forward + backward (fp16/bf16: 18). ``beta == 0`` (the identity) never reaches these kernels.

Interpreter-only algorithm (the section at the end, chosen by ``band_matrix``, default
``ALGORITHMS.lrn_band_matrix``): the shifted loads cost ``size`` numpy tile ops per tensor there, with no cache to make
them cheap. Instead each tensor's tile is loaded once and the window sums across channels are one ``tl.dot`` with a
band matrix (a BLAS call in numpy). A tile's rows are all the channels and its columns about 2**18 / channels
positions, so a batch takes a few programs.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .layout import collapse_dims, coordinates, needs_wide_index, program_indices, strided_offset
from .runtime import ALGORITHMS, INTERPRET, INTERPRETER_MAX_BLOCK, autotune, check_device, gpu_configs, \
    interpreter_block, launcher

# Tiles of BLOCK_CHANNELS x BLOCK_POSITIONS = 1024 elements per program: 8 per thread with 4 warps, and enough
# programs (AlexNet's 128 x 55 x 55 positions: 3,000 to 24,000 tiles) to keep every SM busy. Positions-major tiles
# suit NCHW (positions contiguous), channels-major tiles NHWC (channels contiguous); the autotuner picks per layout
# (the channel stride is in its key). Chosen from compile reports, untimed.
GPU_CONFIGS = gpu_configs(("BLOCK_CHANNELS", "BLOCK_POSITIONS"), [
    (8, 128, 4, 3),
    (32, 32, 4, 3),
    (64, 16, 4, 3),
])
TUNING_KEY = ["channels", "positions", "input_channel_stride"]


@triton.jit
def _load_rows(pointer, channel, channel_stride, position_offset, channels, position_inside):
    """The (channel x position) tile at these channels (any, clipped to the tensor) and positions (their offsets
    in this tensor), in the accumulator dtype (fp32, or fp64 for fp64); zero outside the tensor."""
    inside = ((channel >= 0) & (channel < channels))[:, None] & position_inside[None, :]
    offsets = (channel.to(tl.int64) * channel_stride)[:, None] + position_offset[None, :]
    values = tl.load(pointer + offsets, mask=inside, other=0.0)
    return values.to(tl.float64 if values.dtype == tl.float64 else tl.float32)


@triton.jit
def _store_rows(pointer, values, channel, channel_stride, position_offset, channels, position_inside):
    """Store ``values`` (converted to the pointer's dtype) at the (channel x position) tile."""
    inside = (channel < channels)[:, None] & position_inside[None, :]
    offsets = (channel.to(tl.int64) * channel_stride)[:, None] + position_offset[None, :]
    tl.store(pointer + offsets, values.to(pointer.dtype.element_ty), mask=inside)


@triton.jit
def _program_positions(positions, size1, size2, size3, BLOCK_POSITIONS: tl.constexpr, WIDE_INDEX: tl.constexpr):
    """This program's ``BLOCK_POSITIONS`` positions: which are inside the tensor, and their four coordinates."""
    position = program_indices(BLOCK_POSITIONS, WIDE_INDEX)
    coordinate0, coordinate1, coordinate2, coordinate3 = coordinates(position, size1, size2, size3)
    return position < positions, coordinate0, coordinate1, coordinate2, coordinate3


@triton.jit
def _positions_in(positions, size1, size2, size3, stride0, stride1, stride2, stride3, BLOCK_POSITIONS: tl.constexpr,
                  WIDE_INDEX: tl.constexpr):
    """This program's ``BLOCK_POSITIONS`` positions: which are inside the tensor, and their offsets in a tensor with
    these position strides. Each tensor of a kernel calls it with its own strides; the positions are the same."""
    inside, coordinate0, coordinate1, coordinate2, coordinate3 = _program_positions(positions, size1, size2, size3,
                                                                                    BLOCK_POSITIONS, WIDE_INDEX)
    return inside, strided_offset(coordinate0, coordinate1, coordinate2, coordinate3, stride0, stride1, stride2,
                                  stride3)


@triton.jit
def _power(base, exponent, negative_base_sign):
    """``base ** exponent`` as ``torch.pow`` gives it for a nonzero exponent: ``|base| ** exponent`` times
    ``negative_base_sign`` where the base is negative (``(-1) ** exponent`` for an integer exponent, NaN otherwise),
    except that ``-inf`` to a fractional power is ``+inf`` or ``+0``, as C's ``pow`` has it."""
    magnitude = tl.exp2(exponent * tl.log2(tl.abs(base)))
    sign = tl.where((base == -float("inf")) & (negative_base_sign != negative_base_sign), 1.0, negative_base_sign)
    return tl.where(base < 0, sign * magnitude, magnitude)


@triton.jit
def _base_power(power, base, beta):
    """``u = base ** (-beta - 1)`` (as ``power / base``) for the backward, NaN where the base is infinite and
    ``beta > 1``: there torch's chain rule multiplies ``x / base ** (2 beta) = 0`` by ``beta * base ** (beta - 1) =
    inf``, a NaN that reaches every gradient whose window holds this channel; ``u = 0`` would hide it."""
    return tl.where((tl.abs(base) == float("inf")) & (beta > 1), float("nan"), power / base)


@autotune(GPU_CONFIGS, key=TUNING_KEY)
@triton.jit
def lrn_forward_kernel(
    input_pointer,  # (batch, channels, *), any strides
    output_pointer,  # same shape and dtype as the input, dense (the input's memory format)
    base_power_pointer,  # the output's strides, accumulator dtype: base ** (-beta - 1), written when save_for_backward
    positions,  # elements per channel: batch x spatial
    channels,  # channels per sample
    size1, size2, size3,  # the positions' walk (kernels/layout.py): sizes of its dims after the outermost
    input_channel_stride, input_stride0, input_stride1, input_stride2, input_stride3,  # the input's strides
    output_channel_stride, output_stride0, output_stride1, output_stride2, output_stride3,  # the output's
    window_before,  # window(c) starts at c - window_before: size // 2, clipped to channels - 1
    window_after,  # window(c) ends at c + window_after: (size - 1) // 2, clipped to channels - 1
    alpha_over_size,  # alpha / size
    k,  # the additive constant of the base
    beta,  # the exponent
    negative_base_sign,  # (-1) ** beta for an integer beta, NaN otherwise: the sign of a negative base's power
    save_for_backward,  # 1: write base_power_pointer; 0: inference, it is not touched
    BLOCK_CHANNELS: tl.constexpr,  # channels per chunk of the walk across channels
    BLOCK_POSITIONS: tl.constexpr,  # positions per program
    WIDE_INDEX: tl.constexpr,  # the positions' flat index in int64 (kernels/layout.py: needs_wide_index)
):
    inside, input_position = _positions_in(positions, size1, size2, size3, input_stride0, input_stride1, input_stride2,
                                           input_stride3, BLOCK_POSITIONS, WIDE_INDEX)
    _, output_position = _positions_in(positions, size1, size2, size3, output_stride0, output_stride1, output_stride2,
                                       output_stride3, BLOCK_POSITIONS, WIDE_INDEX)
    for channel_start in range(0, channels, BLOCK_CHANNELS):
        channel = channel_start + tl.arange(0, BLOCK_CHANNELS)
        # The leading edge first (the rows this chunk brings in), then the shifts that hit them in cache.
        neighbour = _load_rows(input_pointer, channel + window_after, input_channel_stride, input_position, channels,
                               inside)
        sum_of_squares = neighbour * neighbour
        for step in range(1, window_before + window_after + 1):
            neighbour = _load_rows(input_pointer, channel + (window_after - step), input_channel_stride,
                                   input_position, channels, inside)
            sum_of_squares += neighbour * neighbour
        base = k + alpha_over_size * sum_of_squares
        power = _power(base, -beta, negative_base_sign)
        value = _load_rows(input_pointer, channel, input_channel_stride, input_position, channels, inside)
        _store_rows(output_pointer, value * power, channel, output_channel_stride, output_position, channels, inside)
        if save_for_backward:
            _store_rows(base_power_pointer, _base_power(power, base, beta), channel, output_channel_stride,
                        output_position, channels, inside)


# The backward. out[c] = x[c] * base[c]^-beta with base[c] = k + alpha/size * sum_{i in window(c)} x[i]^2, so
#   d out[c] / d x[j] = [c == j] base[c]^-beta - beta x[c] base[c]^(-beta-1) * alpha/size * 2 x[j] [j in window(c)]
# and with g = d loss / d out:
#   dx[j] = g[j] base[j]^-beta - (2 alpha beta / size) x[j] * sum_{c : j in window(c)} g[c] x[c] u[c],
# u[c] = base[c]^(-beta-1) (saved by the forward). j is in window(c) = [c - before, c + after] exactly when c is in
# the mirrored window [j - after, j + before]. base[j] itself needs window(j) = [j - before, j + after]; since
# before >= after, both windows lie in [j - before, j + before], so one walk over those offsets loads x, g and u
# once per offset and accumulates both sums. Then base[j]^-beta = base[j] * u[j]: no pow in the backward.
@triton.jit
def _base_to_minus_beta(base, base_power):
    """base^-beta as base * base^(-beta-1), but 0 for an infinite base (a window holding an infinity), where the
    product would be inf * 0 = NaN: torch's pow gives inf^-beta = 0, so such a channel's own term vanishes."""
    return tl.where(base == float("inf"), 0.0, base * base_power)


@autotune(GPU_CONFIGS, key=TUNING_KEY)
@triton.jit
def lrn_backward_kernel(
    input_pointer,  # (batch, channels, *), any strides: the forward's input
    base_power_pointer,  # the output's strides, accumulator dtype: base ** (-beta - 1) from the forward
    grad_output_pointer,  # same shape and dtype as the input, any strides
    grad_input_pointer,  # same shape and dtype as the input, the output's strides, written
    positions,  # elements per channel: batch x spatial
    channels,  # channels per sample
    size1, size2, size3,  # the positions' walk (kernels/layout.py): sizes of its dims after the outermost
    input_channel_stride, input_stride0, input_stride1, input_stride2, input_stride3,  # the input's strides
    grad_output_channel_stride, grad_output_stride0, grad_output_stride1, grad_output_stride2,
    grad_output_stride3,  # the output gradient's strides
    output_channel_stride, output_stride0, output_stride1, output_stride2, output_stride3,  # base_power's, grad_input's
    window_before,  # size // 2, clipped to channels - 1
    window_after,  # (size - 1) // 2, clipped to channels - 1
    alpha_over_size,  # alpha / size
    k,  # the additive constant of the base
    gradient_coefficient,  # 2 * alpha * beta / size
    BLOCK_CHANNELS: tl.constexpr,  # channels per chunk of the walk across channels
    BLOCK_POSITIONS: tl.constexpr,  # positions per program
    WIDE_INDEX: tl.constexpr,  # the positions' flat index in int64 (kernels/layout.py: needs_wide_index)
):
    inside, input_position = _positions_in(positions, size1, size2, size3, input_stride0, input_stride1, input_stride2,
                                           input_stride3, BLOCK_POSITIONS, WIDE_INDEX)
    _, grad_position = _positions_in(positions, size1, size2, size3, grad_output_stride0, grad_output_stride1,
                                     grad_output_stride2, grad_output_stride3, BLOCK_POSITIONS, WIDE_INDEX)
    _, output_position = _positions_in(positions, size1, size2, size3, output_stride0, output_stride1, output_stride2,
                                       output_stride3, BLOCK_POSITIONS, WIDE_INDEX)
    for channel_start in range(0, channels, BLOCK_CHANNELS):
        channel = channel_start + tl.arange(0, BLOCK_CHANNELS)
        # Offset +window_before (the leading edge) first: always in the mirrored window, in window(j) iff size is odd.
        neighbour = channel + window_before
        value = _load_rows(input_pointer, neighbour, input_channel_stride, input_position, channels, inside)
        sum_of_squares = tl.where(window_before <= window_after, value * value, 0.0)
        weighted_sum = (_load_rows(grad_output_pointer, neighbour, grad_output_channel_stride, grad_position, channels,
                                   inside) * value
                        * _load_rows(base_power_pointer, neighbour, output_channel_stride, output_position, channels,
                                     inside))
        for step in range(1, 2 * window_before + 1):
            offset = window_before - step
            neighbour = channel + offset
            value = _load_rows(input_pointer, neighbour, input_channel_stride, input_position, channels, inside)
            sum_of_squares += value * value  # offset <= window_before - 1 <= window_after: in window(j)
            weighted = (_load_rows(grad_output_pointer, neighbour, grad_output_channel_stride, grad_position,
                                   channels, inside) * value
                        * _load_rows(base_power_pointer, neighbour, output_channel_stride, output_position, channels,
                                     inside))
            weighted_sum += tl.where(offset >= -window_after, weighted, 0.0)
        base = k + alpha_over_size * sum_of_squares
        value = _load_rows(input_pointer, channel, input_channel_stride, input_position, channels, inside)
        grad = _load_rows(grad_output_pointer, channel, grad_output_channel_stride, grad_position, channels, inside)
        base_power = _load_rows(base_power_pointer, channel, output_channel_stride, output_position, channels, inside)
        grad_input = grad * _base_to_minus_beta(base, base_power) - gradient_coefficient * value * weighted_sum
        _store_rows(grad_input_pointer, grad_input, channel, output_channel_stride, output_position, channels, inside)


# ---------------------------------------------------------------------------------------------------------------
# Interpreter only: window sums as a band-matrix product. The same formulas as the GPU kernels above, each window sum
# one tl.dot of a (channels x channels) band with a tile of all channels x many positions.
# ---------------------------------------------------------------------------------------------------------------


@triton.jit
def _band_tile(positions, channels, size1, size2, size3, BLOCK_CHANNELS: tl.constexpr,
               BLOCK_POSITIONS: tl.constexpr, WIDE_INDEX: tl.constexpr):
    """This program's (all channels x ``BLOCK_POSITIONS`` positions) tile: the channel indices, which elements are
    inside the tensor, and the positions' four coordinates."""
    channel = tl.arange(0, BLOCK_CHANNELS)
    position_inside, coordinate0, coordinate1, coordinate2, coordinate3 = _program_positions(
        positions, size1, size2, size3, BLOCK_POSITIONS, WIDE_INDEX)
    inside = (channel < channels)[:, None] & position_inside[None, :]
    return channel, inside, coordinate0, coordinate1, coordinate2, coordinate3


@triton.jit
def _band_offsets(channel, coordinate0, coordinate1, coordinate2, coordinate3, channel_stride, stride0, stride1,
                  stride2, stride3):
    """Every element's offset in the (channel x position) tile of a tensor with these strides."""
    position = strided_offset(coordinate0, coordinate1, coordinate2, coordinate3, stride0, stride1, stride2, stride3)
    return (channel.to(tl.int64) * channel_stride)[:, None] + position[None, :]


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



@triton.jit
def lrn_forward_band_matrix_kernel(
    input_pointer, output_pointer, base_power_pointer, positions, channels, size1, size2, size3,
    input_channel_stride, input_stride0, input_stride1, input_stride2, input_stride3,
    output_channel_stride, output_stride0, output_stride1, output_stride2, output_stride3,
    window_before, window_after, alpha_over_size, k, beta, negative_base_sign, save_for_backward,
    BLOCK_CHANNELS: tl.constexpr,  # every channel (a power of two >= 16: tl.dot's smallest operand)
    BLOCK_POSITIONS: tl.constexpr,  # positions per program
    WIDE_INDEX: tl.constexpr,  # the positions' flat index in int64 (kernels/layout.py: needs_wide_index)
):
    """:func:`lrn_forward_kernel`'s arguments and result, the window sums by :func:`_window_sum`."""
    channel, inside, coordinate0, coordinate1, coordinate2, coordinate3 = _band_tile(
        positions, channels, size1, size2, size3, BLOCK_CHANNELS, BLOCK_POSITIONS, WIDE_INDEX)
    input_offsets = _band_offsets(channel, coordinate0, coordinate1, coordinate2, coordinate3, input_channel_stride,
                                  input_stride0, input_stride1, input_stride2, input_stride3)
    output_offsets = _band_offsets(channel, coordinate0, coordinate1, coordinate2, coordinate3, output_channel_stride,
                                   output_stride0, output_stride1, output_stride2, output_stride3)
    value = tl.load(input_pointer + input_offsets, mask=inside, other=0.0).to(base_power_pointer.dtype.element_ty)
    base = _window_sum(value * value, channel, channels, window_before, window_after, alpha_over_size, k)
    if (k < 0) | (alpha_over_size < 0):
        power = _power(base, -beta, negative_base_sign)
    else:  # base >= 0 (or NaN): no sign to restore
        power = tl.exp2(-beta * tl.log2(base))
    tl.store(output_pointer + output_offsets, (value * power).to(output_pointer.dtype.element_ty), mask=inside)
    if save_for_backward:
        tl.store(base_power_pointer + output_offsets, _base_power(power, base, beta), mask=inside)


@triton.jit
def lrn_backward_band_matrix_kernel(
    input_pointer, base_power_pointer, grad_output_pointer, grad_input_pointer, positions, channels,
    size1, size2, size3,
    input_channel_stride, input_stride0, input_stride1, input_stride2, input_stride3,
    grad_output_channel_stride, grad_output_stride0, grad_output_stride1, grad_output_stride2, grad_output_stride3,
    output_channel_stride, output_stride0, output_stride1, output_stride2, output_stride3,
    window_before, window_after, alpha_over_size, k, gradient_coefficient,
    BLOCK_CHANNELS: tl.constexpr,  # every channel (a power of two >= 16: tl.dot's smallest operand)
    BLOCK_POSITIONS: tl.constexpr,  # positions per program
    WIDE_INDEX: tl.constexpr,  # the positions' flat index in int64 (kernels/layout.py: needs_wide_index)
):
    """:func:`lrn_backward_kernel`'s arguments and result, each sum over its own window by :func:`_window_sum`:
    window(j) for base[j], mirrored(j) for the weighted sum."""
    channel, inside, coordinate0, coordinate1, coordinate2, coordinate3 = _band_tile(
        positions, channels, size1, size2, size3, BLOCK_CHANNELS, BLOCK_POSITIONS, WIDE_INDEX)
    input_offsets = _band_offsets(channel, coordinate0, coordinate1, coordinate2, coordinate3, input_channel_stride,
                                  input_stride0, input_stride1, input_stride2, input_stride3)
    grad_offsets = _band_offsets(channel, coordinate0, coordinate1, coordinate2, coordinate3,
                                 grad_output_channel_stride, grad_output_stride0, grad_output_stride1,
                                 grad_output_stride2, grad_output_stride3)
    output_offsets = _band_offsets(channel, coordinate0, coordinate1, coordinate2, coordinate3, output_channel_stride,
                                   output_stride0, output_stride1, output_stride2, output_stride3)
    base_power = tl.load(base_power_pointer + output_offsets, mask=inside, other=0.0)
    value = tl.load(input_pointer + input_offsets, mask=inside, other=0.0).to(base_power.dtype)
    grad = tl.load(grad_output_pointer + grad_offsets, mask=inside, other=0.0).to(base_power.dtype)
    base = _window_sum(value * value, channel, channels, window_before, window_after, alpha_over_size, k)
    scaled_weighted_sum = _window_sum(grad * value * base_power, channel, channels, window_after, window_before,
                                      gradient_coefficient, 0.0)
    grad_input = grad * _base_to_minus_beta(base, base_power) - value * scaled_weighted_sum
    tl.store(grad_input_pointer + output_offsets, grad_input.to(grad_input_pointer.dtype.element_ty), mask=inside)


# Up to this many channels, a tile holds all of them and the window sums are a tl.dot with a (channels x channels)
# band matrix; beyond it the band (and the dot's work) grows too large and the channel walk runs instead.
INTERPRETER_MATMUL_MAX_CHANNELS = 1024


# Band-matrix path: elements per program. A tile op costs a fixed Python overhead plus its numpy pass, so larger
# tiles save overhead until the numpy passes fall out of cache (see benchmarks/results/NOTES.md, "LRN in the
# interpreter").
INTERPRETER_TILE = 1 << 18


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def lrn_window(channels: int, size: int) -> tuple[int, int]:
    """(window_before, window_after): how far the window reaches down and up, clipped to the channels."""
    last_channel = max(channels - 1, 0)
    return min(size // 2, last_channel), min((size - 1) // 2, last_channel)


def _position_walk(reference: torch.Tensor, others: list[torch.Tensor]):
    """The positions' walk (every dim but the channels) in ``reference``'s memory order, with each tensor's channel
    stride and position strides (``reference`` first), or None if it needs more dims than the kernels address."""
    tensors = [reference, *others]
    sizes = [reference.shape[0], *reference.shape[2:]]
    walk = collapse_dims(sizes, [[tensor.stride(0), *tensor.stride()[2:]] for tensor in tensors])
    if walk is None:
        return None
    dims, strides = walk
    return dims, [[tensor.stride(1), *tensor_strides] for tensor, tensor_strides in zip(tensors, strides)]


def _in_layout_of(reference: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` copied into ``reference``'s strides: only for strides the kernels cannot walk (more than four
    position dims that do not merge, possible from 6-D up)."""
    return torch.empty_like(reference, dtype=tensor.dtype).copy_(tensor)


def _launch(walk_kernel, band_kernel, band_matrix: bool, positions: int, channels: int, *args) -> None:
    wide_index = needs_wide_index(positions)
    if band_matrix and channels <= INTERPRETER_MATMUL_MAX_CHANNELS:
        block_channels = interpreter_block(channels)  # at least 16: tl.dot's smallest operand
        block_positions = interpreter_block(positions, cap=max(16, INTERPRETER_TILE // block_channels))
        launcher(band_kernel)[(triton.cdiv(positions, block_positions),)](
            *args, BLOCK_CHANNELS=block_channels, BLOCK_POSITIONS=block_positions, WIDE_INDEX=wide_index)
        return
    meta = {"WIDE_INDEX": wide_index}
    if INTERPRET:
        block_positions = interpreter_block(positions)
        meta |= {"BLOCK_POSITIONS": block_positions,
                "BLOCK_CHANNELS": interpreter_block(channels, cap=max(1, INTERPRETER_MAX_BLOCK // block_positions),
                                                    minimum=1)}
    grid = lambda tiles: (triton.cdiv(positions, tiles["BLOCK_POSITIONS"]),)  # noqa: E731
    launcher(walk_kernel)[grid](*args, **meta)


def _negative_base_sign(beta: float) -> float:
    """``(-1) ** -beta`` for an integer beta (the sign of a negative number's power), NaN for a fractional one."""
    return (-1.0) ** int(beta) if float(beta).is_integer() else math.nan


def lrn_forward(input: torch.Tensor, size: int, alpha: float, beta: float, k: float, save_for_backward: bool, *,
                band_matrix: bool = ALGORITHMS.lrn_band_matrix) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Local response normalization of an (N, C, *) ``input`` in any layout (``beta != 0``). Returns the output
    (same shape and dtype, the input's memory format) and, when ``save_for_backward``, ``base ** (-beta - 1)`` in the
    accumulator dtype and the output's strides, for :func:`lrn_backward`. ``band_matrix``: the interpreter-only
    algorithm (where the channels fit)."""
    check_device("input", input)
    if beta == 0:
        raise ValueError("beta == 0 is the identity; the kernels compute x * base ** -beta for beta != 0 only")
    channels = input.shape[1]
    output = torch.empty_like(input)
    accumulator = accumulator_dtype(input.dtype)
    # Without a backward the kernel never touches base_power_pointer: one element stands in for it.
    base_power = (torch.empty_like(output, dtype=accumulator) if save_for_backward
                  else torch.empty(1, dtype=accumulator, device=input.device))
    if input.numel() == 0:
        return output, (base_power if save_for_backward else None)
    walk = _position_walk(output, [input])
    if walk is None:
        input = _in_layout_of(output, input)
        walk = _position_walk(output, [input])
    (_, *sizes), (output_strides, input_strides) = walk
    _launch(lrn_forward_kernel, lrn_forward_band_matrix_kernel, band_matrix, input.numel() // channels, channels,
            input, output, base_power, input.numel() // channels, channels, *sizes, *input_strides, *output_strides,
            *lrn_window(channels, size), alpha / size, k, beta, _negative_base_sign(beta), int(save_for_backward))
    return output, (base_power if save_for_backward else None)


def lrn_backward(input: torch.Tensor, base_power: torch.Tensor, grad_output: torch.Tensor, size: int, alpha: float,
                 beta: float, k: float, *, band_matrix: bool = ALGORITHMS.lrn_band_matrix) -> torch.Tensor:
    """The input's gradient (the input's memory format), from the forward's ``input`` and ``base_power`` and a
    ``grad_output`` of the input's dtype, each in any layout."""
    check_device("grad_output", grad_output)
    if base_power.shape != input.shape or grad_output.shape != input.shape or grad_output.dtype != input.dtype:
        raise ValueError(f"base_power {tuple(base_power.shape)} and grad_output {tuple(grad_output.shape)} "
                         f"({grad_output.dtype}) must match the input {tuple(input.shape)} ({input.dtype})")
    channels = input.shape[1]
    grad_input = torch.empty_like(input)
    if input.numel() == 0:
        return grad_input
    if base_power.stride() != grad_input.stride():
        base_power = _in_layout_of(grad_input, base_power)
    walk = _position_walk(grad_input, [input, grad_output])
    if walk is None:
        input, grad_output = _in_layout_of(grad_input, input), _in_layout_of(grad_input, grad_output)
        walk = _position_walk(grad_input, [input, grad_output])
    (_, *sizes), (output_strides, input_strides, grad_output_strides) = walk
    _launch(lrn_backward_kernel, lrn_backward_band_matrix_kernel, band_matrix, input.numel() // channels, channels,
            input, base_power, grad_output, grad_input, input.numel() // channels, channels, *sizes, *input_strides,
            *grad_output_strides, *output_strides, *lrn_window(channels, size), alpha / size, k,
            2.0 * alpha * beta / size)
    return grad_input
