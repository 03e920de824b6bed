"""2-D convolution (cross-correlation, as torch) as three implicit GEMMs: forward, input gradient, weight gradient.

No im2col matrix is ever stored: each kernel computes, for the tile it is about to multiply, where every element
of the virtual im2col matrix lives in the NCHW (or channels-last: all strides are arguments) tensor, and gathers it
with a masked load. Out-of-image taps (padding) read as zero.

    forward      output[pixel, out_channel] = sum over window: input_patch[pixel, window] * weight[out_channel, window]
                 pixel = (n, oh, ow), window = (in_channel, kh, kw); bias and ReLU on the fp32 accumulator.
    input grad   grad_input[pixel, in_channel] = sum over window: grad_output_patch[pixel, window] * weight[...]
                 pixel = (n, ih, iw), window = (out_channel, kh, kw) restricted to the taps that reach ih (below).
    weight grad  grad_weight[out_channel, window] = sum over pixels: grad_output[pixel, out_channel]
                                                                   * input_patch[pixel, window]
                 pixel = (n, oh, ow) is the reduction: split over programs into fp32 partials, summed by a second
                 kernel (deterministic, unlike atomics); the bias gradient is the same sum without the input factor.

Groups are grid dimension 1: group g multiplies in_channels [g*C_in/G, (g+1)*C_in/G) by out_channels
[g*C_out/G, (g+1)*C_out/G). ReLU's backward is fused: the gradient kernels load the saved output beside the output
gradient and zero it where ``output <= 0`` (the prologue, kernels/relu.py), so no masked gradient is ever written
out (on a GPU).

Two ways to walk the (channel, kh, kw) reduction, chosen per launch with ``CHANNELS_INNER``:
  * flat: chunks of BLOCK_WINDOW consecutive (channel, kh, kw) indices, the weight's own order. Right for few
    channels (conv1: 3 channels x 11 x 11 = 363, a 32-wide chunk wastes only 6%), but every element needs its own
    bounds check, since a chunk spans window taps.
  * channels inner: the window taps outside, BLOCK_WINDOW channels inside. Every element of a chunk shares one tap,
    so bounds checks are per row ([BLOCK_PIXELS, 1]) and an element costs one pointer add. Used on a GPU when the
    channels come in whole 16-wide chunks (conv2-5).
The interpreter always walks flat, picks its tile sizes from a cost model of loop steps and gathered elements, and
applies ReLU's mask once, before the gradient kernels: the "interpreter-only" section at the end, chosen by
``runtime.ALGORITHMS`` through the launch functions' ``flat_walk`` and ``separate_relu_gradient`` keywords.

Layouts: NCHW and channels-last tensors both run natively (every stride is an argument, the weight's and bias's
too: no launch copies them). On a GPU channels-last should be the fast one (by design; untimed): with the
channels-inner walk a chunk of channels is then contiguous in the input, the output gradient and a channels-last
weight (as ``model.to(memory_format=torch.channels_last)`` leaves it), so loads vectorise and pipeline; in NCHW every
im2col element is its own load. Outputs and gradients come back in the formats torch returns: the input's for the output
and the input gradient, the weight's for the weight gradient.

Input gradient with stride > 1, without zero insertion: input row ih receives gradient from kernel tap kh only
when ``ih + padding - kh * dilation`` is a multiple of stride. Input rows are split into "phases" by which taps
reach them (the residue of ``ih + padding`` mod stride); within a phase the taps form an arithmetic sequence and
the output row falls by a fixed step per tap. A small per-geometry table (built on the host, cached) gives each
phase its first input row, row count, first tap, tap count and the output row of tap 0; phases that no tap reaches
are not launched (their gradient is zero). conv1 (11x11, stride 4) has 16 phases of at most 3 x 3 taps instead of
121 taps of which 15/16 would be masked off.

Precision: fp16/bf16 tiles go to tensor cores with fp32 accumulation. fp32 uses exact ("ieee") products unless the
user opted into TF32 with ``torch.backends.cuda.matmul.allow_tf32 = True`` (we follow the matmul flag, not
cudnn's, whose default is True: exact fp32 is the safer default, and the tests' tolerance keys on that flag). fp64
accumulates in fp64 (the interpreter; gradcheck).

Index arithmetic: the batch index is widened to int64 before it is multiplied by the batch stride, so tensors past
2**31 elements are addressed correctly; offsets inside one image (and the weight, and row counters) stay int32,
and the launch functions refuse a single image or weight of 2**31 elements or more.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from .relu import relu, relu_gradient
from .runtime import (ALGORITHMS, INTERPRET, INTERPRETER_MAX_BLOCK, Architecture, architecture, autotune,
                      autotune_bucket, check_dot_dtype, gpu_configs, interpreter_block, launcher, tracing)

INT32_LIMIT = 2 ** 31 - INTERPRETER_MAX_BLOCK  # headroom: a tile's last index must not wrap either


# ------------------------------------------------------------------------------------------------ shared pieces

@triton.jit
def _window_steps(channels, taps_h, taps_w, BLOCK_WINDOW: tl.constexpr, CHANNELS_INNER: tl.constexpr):
    """How many BLOCK_WINDOW chunks cover the reduction over (channel, tap_h, tap_w)."""
    if CHANNELS_INNER:
        steps = taps_h * taps_w * tl.cdiv(channels, BLOCK_WINDOW)
    else:
        steps = tl.cdiv(channels * taps_h * taps_w, BLOCK_WINDOW)
    return steps


@triton.jit
def _window_chunk(step, channels, taps_h, taps_w, BLOCK_WINDOW: tl.constexpr, CHANNELS_INNER: tl.constexpr):
    """Chunk ``step`` of the reduction over (channel, tap_h, tap_w): per lane its channel, tap_h, tap_w and whether
    it is inside the reduction. With CHANNELS_INNER one tap per chunk: tap_h and tap_w have shape [1]."""
    lanes = tl.arange(0, BLOCK_WINDOW)
    if CHANNELS_INNER:
        chunks = tl.cdiv(channels, BLOCK_WINDOW)
        tap = step // chunks
        channel = (step - tap * chunks) * BLOCK_WINDOW + lanes
        tap_h = tl.zeros([1], dtype=tl.int32) + tap // taps_w
        tap_w = tl.zeros([1], dtype=tl.int32) + tap % taps_w
    else:
        index = step * BLOCK_WINDOW + lanes
        taps = taps_h * taps_w
        channel = index // taps
        tap = index - channel * taps
        tap_h = tap // taps_w
        tap_w = tap - tap_h * taps_w
    return channel, tap_h, tap_w, channel < channels


@triton.jit
def _inside(row_h, row_w, row_valid, column_h, column_w, column_valid, height, width, CHECK_BOUNDS: tl.constexpr):
    """Where a gathered tile is loaded: rows and columns inside the problem, and (with CHECK_BOUNDS) the pixel
    (row_h[r] + column_h[c], row_w[r] + column_w[c]) inside height x width. Elsewhere the tile reads 0."""
    rows = row_valid[:, None]
    if CHECK_BOUNDS:  # 0 <= row + column < size, compared without forming row + column
        # Shape [rows, 1] when the chunk shares one tap (channels inner), so only the last & is a whole tile.
        rows = (rows & (row_h[:, None] >= -column_h[None, :]) & (row_h[:, None] < (height - column_h)[None, :])
                & (row_w[:, None] >= -column_w[None, :]) & (row_w[:, None] < (width - column_w)[None, :]))
    return rows & column_valid[None, :]


GATHER_TILE = 64 * 64 * 16  # rows x columns x chunk: the tile for gathered loads (the last of each tile list)
EXACT_FP32_TILE = 64 * 64 * 32


def _tiles_for_launch(configs, named_args, **kwargs):
    """The configs worth timing for a launch. Loads of contiguous channel chunks (the channels-inner walk on
    channels-last tensors) vectorise and pipeline: every tile but the gather tile (exact fp32, whose products run on
    FMA units instead of tensor cores and need more registers: 64x64 only). Loads that gather element by element
    (the flat walk, or channels not contiguous) hold a 64-bit address per element: the 64x64x16 gather tile, the
    one that keeps them in registers without spilling."""
    data = next(value for value in named_args.values() if isinstance(value, torch.Tensor))
    contiguous = kwargs.get("CHANNELS_INNER") and all(value == 1 for name, value in named_args.items()
                                                      if name in OPERAND_CHANNEL_STRIDES)
    gather = [config for config in configs if math.prod(config.kwargs.values()) <= GATHER_TILE]
    if not contiguous:
        return gather
    largest = EXACT_FP32_TILE if data.dtype == torch.float32 and kwargs.get("INPUT_PRECISION") == "ieee" else math.inf
    return [config for config in configs if config not in gather and math.prod(config.kwargs.values()) <= largest]


# The strides whose being 1 makes a channel chunk a run of memory in every operand of a tl.dot (the partial sums
# of the weight gradient are written once per program and do not count).
OPERAND_CHANNEL_STRIDES = ("input_channel_stride", "weight_channel_stride", "output_channel_stride",
                           "grad_channel_stride", "grad_input_channel_stride")
PRUNE = {"early_config_prune": _tiles_for_launch}


# ------------------------------------------------------------------------------------------------ forward

# GPU tiles, (BLOCK_PIXELS, BLOCK_OUT_CHANNELS, BLOCK_WINDOW, warps, stages), chosen from compile reports, untimed
# (as are the input- and weight-gradient tiles): rows are batch x output pixels, columns the out channels of one
# group, the reduction (in channel, kh, kw). 8 warps: a tile's addresses and the accumulator spread over 256
# threads. Channels-last launches of the channels-inner walk try all four:
#   128x128x32: the big layers at batch 128 (conv2: 93k pixels x 128 out channels per group; conv3: 21k x 384).
#   64x128x32:  conv3-5 at smaller batches (13x13 outputs; 384/192/256 out channels per group).
#   128x64x32:  conv2-5 with few pixels per column tile, more programs.
#   64x64x32:   small problems, and exact fp32.
#   64x64x16:   the gather tile, the only one for gathered launches (see _tiles_for_launch): conv1 (flat walk over
#               3 x 11 x 11 = 363 in 23 chunks, 1% padding; 96 out channels in 2 column tiles), any NCHW launch.
FORWARD_TILES = [(128, 128, 32, 8, 3), (64, 128, 32, 8, 3), (128, 64, 32, 8, 3), (64, 64, 32, 8, 3),
                 (64, 64, 16, 8, 3)]
FORWARD_BLOCKS = ("BLOCK_PIXELS", "BLOCK_OUT_CHANNELS", "BLOCK_WINDOW")
FORWARD_CONFIGS = gpu_configs(FORWARD_BLOCKS, FORWARD_TILES)


@autotune(configs=FORWARD_CONFIGS,
          key=["in_channels_per_group", "out_channels_per_group", "pixels_bucket", "height", "width", "KERNEL_H",
               "KERNEL_W", "CHANNELS_INNER", "INPUT_PRECISION", "input_channel_stride", "weight_channel_stride"],
          prune_configs_by=PRUNE)
@triton.jit
def conv2d_forward_kernel(
    input_pointer, weight_pointer, bias_pointer, output_pointer,
    in_channels_per_group,  # C_in / groups: the channels one output sees
    height, width,  # input image size
    out_channels_per_group,  # C_out / groups
    out_height, out_width,  # output image size
    pixels,  # batch x out_height x out_width: the GEMM's rows
    pixels_bucket,  # pixels rounded up to a power of two: the autotuner's key only (see autotune_bucket)
    stride_h, stride_w, padding_top, padding_left, dilation_h, dilation_w,
    input_batch_stride, input_channel_stride, input_height_stride, input_width_stride,  # in elements
    weight_out_stride, weight_channel_stride, weight_height_stride, weight_width_stride,  # any layout
    bias_stride,  # bias's stride (0 for an expanded bias)
    output_batch_stride, output_channel_stride, output_height_stride, output_width_stride,
    KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr,  # the weight's window
    HAS_BIAS: tl.constexpr,  # add bias[out_channel] to the accumulator
    APPLY_RELU: tl.constexpr,  # store relu(.) (NaN stays NaN, as torch)
    CHANNELS_INNER: tl.constexpr,  # reduction walk: window taps outside, channels inside (else flat, see module doc)
    CHECK_BOUNDS: tl.constexpr,  # some padding: taps may fall outside the image (without padding they never do)
    INPUT_PRECISION: tl.constexpr,  # tl.dot's input_precision for fp32: "ieee" or "tf32"
    ACCUMULATOR: tl.constexpr,  # tl.float32 (tl.float64 for fp64 input)
    BLOCK_PIXELS: tl.constexpr, BLOCK_OUT_CHANNELS: tl.constexpr, BLOCK_WINDOW: tl.constexpr,
):
    group = tl.program_id(1)
    out_channel_tiles = tl.cdiv(out_channels_per_group, BLOCK_OUT_CHANNELS)
    first_pixel = (tl.program_id(0) // out_channel_tiles) * BLOCK_PIXELS
    out_channel = ((tl.program_id(0) % out_channel_tiles) * BLOCK_OUT_CHANNELS
                   + tl.arange(0, BLOCK_OUT_CHANNELS))
    out_channel_valid = out_channel < out_channels_per_group

    pixel = first_pixel + tl.arange(0, BLOCK_PIXELS)
    top = (pixel // out_width) % out_height * stride_h - padding_top  # input row of window tap 0
    left = pixel % out_width * stride_w - padding_left
    input_rows = (input_pointer + group * in_channels_per_group * input_channel_stride  # tap 0 of each window
                  + (pixel // (out_height * out_width)).to(tl.int64) * input_batch_stride
                  + top * input_height_stride + left * input_width_stride)
    weight_rows = (group * out_channels_per_group + out_channel) * weight_out_stride

    accumulator = tl.zeros([BLOCK_PIXELS, BLOCK_OUT_CHANNELS], dtype=ACCUMULATOR)
    for step in range(_window_steps(in_channels_per_group, KERNEL_H, KERNEL_W, BLOCK_WINDOW, CHANNELS_INNER)):
        channel, kh, kw, window_valid = _window_chunk(step, in_channels_per_group, KERNEL_H, KERNEL_W, BLOCK_WINDOW,
                                                      CHANNELS_INNER)
        tap_h = kh * dilation_h
        tap_w = kw * dilation_w
        input_columns = channel * input_channel_stride + tap_h * input_height_stride + tap_w * input_width_stride
        patch = tl.load(input_rows[:, None] + input_columns[None, :], other=0.0,
                        mask=_inside(top, left, pixel < pixels, tap_h, tap_w, window_valid, height, width,
                                     CHECK_BOUNDS))
        weight_columns = channel * weight_channel_stride + kh * weight_height_stride + kw * weight_width_stride
        weight = tl.load(weight_pointer + weight_rows[None, :] + weight_columns[:, None],
                         mask=window_valid[:, None] & out_channel_valid[None, :], other=0.0)
        accumulator = tl.dot(patch, weight, accumulator, input_precision=INPUT_PRECISION, out_dtype=ACCUMULATOR)

    if HAS_BIAS:
        bias = tl.load(bias_pointer + (group * out_channels_per_group + out_channel) * bias_stride,
                       mask=out_channel_valid, other=0.0)
        accumulator += bias.to(ACCUMULATOR)[None, :]
    if APPLY_RELU:
        accumulator = relu(accumulator)
    pixel = first_pixel + tl.arange(0, BLOCK_PIXELS)  # decoded again: nothing of it stays live in the loop
    output_rows = ((pixel // (out_height * out_width)).to(tl.int64) * output_batch_stride
                   + (pixel // out_width) % out_height * output_height_stride + pixel % out_width * output_width_stride)
    output_columns = (group * out_channels_per_group + out_channel) * output_channel_stride
    tl.store(output_pointer + output_rows[:, None] + output_columns[None, :],
             accumulator.to(output_pointer.dtype.element_ty),
             mask=(pixel < pixels)[:, None] & out_channel_valid[None, :])


# ------------------------------------------------------------------------------------------------ input gradient

# GPU tiles, (BLOCK_PIXELS, BLOCK_IN_CHANNELS, BLOCK_WINDOW, warps, stages), untimed: rows are batch x input pixels
# of one phase, columns the in channels of one group, the reduction (out channel, tap_h, tap_w) over the phase's taps.
#   128x128x32: conv3-5 at batch 128 (192/256 in channels per group; 384/192/128 out channels x 9 taps).
#   64x128x32:  the same at smaller batches.
#   128x64x32:  conv2 (48 in channels per group fit one 64-wide column tile; 128 out channels x 25 taps).
#   64x64x32:   small problems, and exact fp32.
#   64x64x16:   the gather tile (see _tiles_for_launch).
INPUT_GRAD_TILES = [(128, 128, 32, 8, 3), (64, 128, 32, 8, 3), (128, 64, 32, 8, 3), (64, 64, 32, 8, 3),
                    (64, 64, 16, 8, 3)]
INPUT_GRAD_BLOCKS = ("BLOCK_PIXELS", "BLOCK_IN_CHANNELS", "BLOCK_WINDOW")
INPUT_GRAD_CONFIGS = gpu_configs(INPUT_GRAD_BLOCKS, INPUT_GRAD_TILES)
# Per axis of a phase: first input row, rows, first kernel tap, taps, output row read by tap 0 at the first row.
PHASE_FIELDS = tl.constexpr(5)


@autotune(configs=INPUT_GRAD_CONFIGS,
          key=["in_channels_per_group", "out_channels_per_group", "batch_bucket", "height", "width", "KERNEL_H",
               "KERNEL_W", "CHANNELS_INNER", "INPUT_PRECISION", "grad_channel_stride", "weight_channel_stride"],
          prune_configs_by=PRUNE)
@triton.jit
def conv2d_input_grad_kernel(
    grad_output_pointer, output_pointer, weight_pointer, grad_input_pointer,
    phase_pointer,  # int32 (phases, 2 * PHASE_FIELDS): for each launched phase, the h fields then the w fields
    batch, in_channels_per_group, height, width, out_channels_per_group, out_height, out_width,
    batch_bucket,  # batch rounded up to a power of two: the autotuner's key only (see autotune_bucket)
    phases,  # launched phases (grid dimension 1 is group x phase)
    stride_h, stride_w,  # the rows of one phase are stride apart
    tap_step_h, tap_step_w,  # kernel taps reaching one phase are this far apart: stride / gcd(stride, dilation)
    out_step_h, out_step_w,  # and the output row falls by this much per tap: dilation / gcd(stride, dilation)
    grad_batch_stride, grad_channel_stride, grad_height_stride, grad_width_stride,  # grad_output's (= output's)
    weight_out_stride, weight_channel_stride, weight_height_stride, weight_width_stride,
    grad_input_batch_stride, grad_input_channel_stride, grad_input_height_stride, grad_input_width_stride,
    KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr,  # the weight's window
    RELU_MASK: tl.constexpr,  # the forward applied ReLU: use relu_gradient(grad_output, output)
    CHANNELS_INNER: tl.constexpr,  # reduction walk: taps outside, out channels inside (else flat)
    INPUT_PRECISION: tl.constexpr, ACCUMULATOR: tl.constexpr,
    BLOCK_PIXELS: tl.constexpr, BLOCK_IN_CHANNELS: tl.constexpr, BLOCK_WINDOW: tl.constexpr,
):
    # grad_input[n, c, ih, iw] = sum of grad_output[n, o, oh, ow] * weight[o, c, kh, kw] over the (o, kh, kw, oh, ow)
    # with ih + padding_h = oh * stride_h + kh * dilation_h (and the same in w). In this program's phase the taps are
    # kh = first_tap_h + t * tap_step_h for t < taps_h, and oh = (output row of tap 0) - t * out_step_h.
    group = tl.program_id(1) // phases
    phase_pointer += (tl.program_id(1) % phases) * (2 * PHASE_FIELDS)
    first_h = tl.load(phase_pointer + 0)
    rows_h = tl.load(phase_pointer + 1)
    first_tap_h = tl.load(phase_pointer + 2)
    taps_h = tl.load(phase_pointer + 3)
    out_origin_h = tl.load(phase_pointer + 4)
    first_w = tl.load(phase_pointer + PHASE_FIELDS + 0)
    rows_w = tl.load(phase_pointer + PHASE_FIELDS + 1)
    first_tap_w = tl.load(phase_pointer + PHASE_FIELDS + 2)
    taps_w = tl.load(phase_pointer + PHASE_FIELDS + 3)
    out_origin_w = tl.load(phase_pointer + PHASE_FIELDS + 4)

    in_channel_tiles = tl.cdiv(in_channels_per_group, BLOCK_IN_CHANNELS)
    first_pixel = (tl.program_id(0) // in_channel_tiles) * BLOCK_PIXELS
    in_channel = ((tl.program_id(0) % in_channel_tiles) * BLOCK_IN_CHANNELS
                  + tl.arange(0, BLOCK_IN_CHANNELS))
    in_channel_valid = in_channel < in_channels_per_group
    phase_pixels = batch * rows_h * rows_w

    pixel = first_pixel + tl.arange(0, BLOCK_PIXELS)
    out_h = out_origin_h + (pixel // rows_w) % rows_h  # output pixel that tap 0 reads for this input pixel
    out_w = out_origin_w + pixel % rows_w
    grad_rows = ((pixel // (rows_h * rows_w)).to(tl.int64) * grad_batch_stride + out_h * grad_height_stride
                 + out_w * grad_width_stride + group * out_channels_per_group * grad_channel_stride)
    weight_pointer += group * out_channels_per_group * weight_out_stride

    accumulator = tl.zeros([BLOCK_PIXELS, BLOCK_IN_CHANNELS], dtype=ACCUMULATOR)
    for step in range(_window_steps(out_channels_per_group, taps_h, taps_w, BLOCK_WINDOW, CHANNELS_INNER)):
        out_channel, tap_h, tap_w, window_valid = _window_chunk(step, out_channels_per_group, taps_h, taps_w,
                                                                BLOCK_WINDOW, CHANNELS_INNER)
        shift_h = tap_h * out_step_h
        shift_w = tap_w * out_step_w
        grad_columns = out_channel * grad_channel_stride - shift_h * grad_height_stride - shift_w * grad_width_stride
        mask = _inside(out_h, out_w, pixel < phase_pixels, -shift_h, -shift_w, window_valid, out_height, out_width,
                       True)
        gradient = tl.load((grad_output_pointer + grad_rows)[:, None] + grad_columns[None, :], mask=mask, other=0.0)
        if RELU_MASK:
            output = tl.load((output_pointer + grad_rows)[:, None] + grad_columns[None, :], mask=mask, other=0.0)
            gradient = relu_gradient(gradient, output)
        kh = first_tap_h + tap_h * tap_step_h
        kw = first_tap_w + tap_w * tap_step_w
        weight_rows = out_channel * weight_out_stride + kh * weight_height_stride + kw * weight_width_stride
        weight = tl.load(weight_pointer + weight_rows[:, None] + in_channel[None, :] * weight_channel_stride,
                         mask=window_valid[:, None] & in_channel_valid[None, :], other=0.0)
        accumulator = tl.dot(gradient, weight, accumulator, input_precision=INPUT_PRECISION, out_dtype=ACCUMULATOR)

    pixel = first_pixel + tl.arange(0, BLOCK_PIXELS)  # decoded again: nothing of it stays live in the loop
    in_h = first_h + (pixel // rows_w) % rows_h * stride_h
    in_w = first_w + pixel % rows_w * stride_w
    grad_input_rows = ((pixel // (rows_h * rows_w)).to(tl.int64) * grad_input_batch_stride
                       + in_h * grad_input_height_stride + in_w * grad_input_width_stride)
    grad_input_columns = (group * in_channels_per_group + in_channel) * grad_input_channel_stride
    tl.store(grad_input_pointer + grad_input_rows[:, None] + grad_input_columns[None, :],
             accumulator.to(grad_input_pointer.dtype.element_ty),
             mask=(pixel < phase_pixels)[:, None] & in_channel_valid[None, :])


# ------------------------------------------------------------------------------------------------ weight gradient

# GPU tiles, (BLOCK_OUT_CHANNELS, BLOCK_WINDOW, BLOCK_PIXELS, warps, stages), untimed: rows are the out channels
# of one group, columns (in channel, kh, kw), the reduction batch x output pixels, split over grid dimension 1
# (weight_grad_splits).
#   128x128x32: conv3-5 (384/192/128 out channels; 256/192 in channels x 9 taps).
#   128x64x32:  conv2 (128 out channels per group; 48 in channels x 25 taps in 64-wide column tiles).
#   64x128x32:  fewer out channels, wide windows.
#   64x64x32:   small weights, and exact fp32.
#   64x64x16:   the gather tile (see _tiles_for_launch): conv1 (96 out channels x 363 window in 12 tiles).
WEIGHT_GRAD_TILES = [(128, 128, 32, 8, 3), (128, 64, 32, 8, 3), (64, 128, 32, 8, 3), (64, 64, 32, 8, 3),
                     (64, 64, 16, 8, 3)]
WEIGHT_GRAD_BLOCKS = ("BLOCK_OUT_CHANNELS", "BLOCK_WINDOW", "BLOCK_PIXELS")
WEIGHT_GRAD_CONFIGS = gpu_configs(WEIGHT_GRAD_BLOCKS, WEIGHT_GRAD_TILES)


@autotune(configs=WEIGHT_GRAD_CONFIGS,
          key=["in_channels_per_group", "out_channels_per_group", "pixels_bucket", "height", "width", "KERNEL_H",
               "KERNEL_W", "CHANNELS_INNER", "INPUT_PRECISION", "input_channel_stride", "grad_channel_stride"],
          prune_configs_by=PRUNE)
@triton.jit
def conv2d_weight_grad_kernel(
    input_pointer, grad_output_pointer, output_pointer,
    weight_partials_pointer,  # (splits, C_out, C_in/G, kH, kW) in the accumulator type, strides below
    bias_partials_pointer,  # (splits, C_out) contiguous, in the accumulator type, when HAS_BIAS
    in_channels_per_group, height, width, out_channels, out_channels_per_group, out_height, out_width,
    pixels,  # batch x out_height x out_width: the reduction, split evenly over grid dimension 1
    pixels_bucket,  # pixels rounded up to a power of two: the autotuner's key only (see autotune_bucket)
    stride_h, stride_w, padding_top, padding_left, dilation_h, dilation_w,
    input_batch_stride, input_channel_stride, input_height_stride, input_width_stride,
    grad_batch_stride, grad_channel_stride, grad_height_stride, grad_width_stride,  # grad_output's (= output's)
    partials_split_stride, partials_out_stride, partials_channel_stride, partials_height_stride,  # the weight's
    partials_width_stride,  # layout within a split, so the summed gradient comes out in the weight's format
    KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr,
    HAS_BIAS: tl.constexpr,  # also sum grad_output over pixels (the bias gradient), in the first column tile
    RELU_MASK: tl.constexpr,  # the forward applied ReLU: use relu_gradient(grad_output, output)
    CHANNELS_INNER: tl.constexpr,  # column tiles: one tap x BLOCK_WINDOW in channels (else flat chunks)
    CHECK_BOUNDS: tl.constexpr,  # some padding: taps may fall outside the image
    INPUT_PRECISION: tl.constexpr, ACCUMULATOR: tl.constexpr,
    BLOCK_OUT_CHANNELS: tl.constexpr, BLOCK_WINDOW: tl.constexpr, BLOCK_PIXELS: tl.constexpr,
):
    # grad_weight[o, c, kh, kw] = sum over (n, oh, ow) of grad_output[n, o, oh, ow] * input[n, c, ih, iw] with
    # ih = oh * stride_h - padding_top + kh * dilation_h: the forward's im2col tile, transposed roles.
    group = tl.program_id(2)
    split = tl.program_id(1)
    pixels_per_split = tl.cdiv(tl.cdiv(pixels, tl.num_programs(1)), BLOCK_PIXELS) * BLOCK_PIXELS
    window_tiles = _window_steps(in_channels_per_group, KERNEL_H, KERNEL_W, BLOCK_WINDOW, CHANNELS_INNER)
    window_tile = tl.program_id(0) % window_tiles
    out_channel = ((tl.program_id(0) // window_tiles) * BLOCK_OUT_CHANNELS
                   + tl.arange(0, BLOCK_OUT_CHANNELS))
    out_channel_valid = out_channel < out_channels_per_group
    channel, kh, kw, window_valid = _window_chunk(window_tile, in_channels_per_group, KERNEL_H, KERNEL_W,
                                                  BLOCK_WINDOW, CHANNELS_INNER)
    tap_h = kh * dilation_h
    tap_w = kw * dilation_w
    input_columns = ((group * in_channels_per_group + channel) * input_channel_stride + tap_h * input_height_stride
                     + tap_w * input_width_stride)
    grad_rows = grad_output_pointer + (group * out_channels_per_group + out_channel) * grad_channel_stride
    output_rows = output_pointer + (group * out_channels_per_group + out_channel) * grad_channel_stride

    accumulator = tl.zeros([BLOCK_OUT_CHANNELS, BLOCK_WINDOW], dtype=ACCUMULATOR)
    bias_accumulator = tl.zeros([BLOCK_OUT_CHANNELS], dtype=ACCUMULATOR)
    end = tl.minimum(pixels, (split + 1) * pixels_per_split)
    for first_pixel in range(split * pixels_per_split, end, BLOCK_PIXELS):
        pixel = first_pixel + tl.arange(0, BLOCK_PIXELS)
        pixel_valid = pixel < end
        batch_index = (pixel // (out_height * out_width)).to(tl.int64)
        out_h = (pixel // out_width) % out_height
        out_w = pixel % out_width
        grad_columns = batch_index * grad_batch_stride + out_h * grad_height_stride + out_w * grad_width_stride
        mask = out_channel_valid[:, None] & pixel_valid[None, :]
        gradient = tl.load(grad_rows[:, None] + grad_columns[None, :], mask=mask, other=0.0)
        if RELU_MASK:
            output = tl.load(output_rows[:, None] + grad_columns[None, :], mask=mask, other=0.0)
            gradient = relu_gradient(gradient, output)
        top = out_h * stride_h - padding_top
        left = out_w * stride_w - padding_left
        input_rows = (input_pointer + batch_index * input_batch_stride + top * input_height_stride
                      + left * input_width_stride)
        patch = tl.load(input_rows[:, None] + input_columns[None, :], other=0.0,
                        mask=_inside(top, left, pixel_valid, tap_h, tap_w, window_valid, height, width, CHECK_BOUNDS))
        accumulator = tl.dot(gradient, patch, accumulator, input_precision=INPUT_PRECISION, out_dtype=ACCUMULATOR)
        if HAS_BIAS:
            if window_tile == 0:
                bias_accumulator += tl.sum(gradient.to(ACCUMULATOR), axis=1)

    partial_rows = ((split * partials_split_stride).to(tl.int64)
                    + (group * out_channels_per_group + out_channel) * partials_out_stride)
    window = channel * partials_channel_stride + kh * partials_height_stride + kw * partials_width_stride
    tl.store(weight_partials_pointer + partial_rows[:, None] + window[None, :],
             accumulator.to(weight_partials_pointer.dtype.element_ty),
             mask=out_channel_valid[:, None] & window_valid[None, :])
    partial_rows = split * out_channels + group * out_channels_per_group + out_channel
    if HAS_BIAS:
        if window_tile == 0:
            tl.store(bias_partials_pointer + partial_rows, bias_accumulator.to(bias_partials_pointer.dtype.element_ty),
                     mask=out_channel_valid)


# One fixed tile for the two elementwise kernels (the sum over splits, ReLU's separate gradient pass).
ELEMENTWISE_BLOCKS = ("BLOCK",)
ELEMENTWISE_TILES = [(1024, 4, 3)]
ELEMENTWISE_CONFIGS = gpu_configs(ELEMENTWISE_BLOCKS, ELEMENTWISE_TILES)


@autotune(configs=ELEMENTWISE_CONFIGS, key=[])
@triton.jit
def sum_splits_kernel(
    partials_pointer,  # (splits, count), each split dense (any one memory format, the same for all splits)
    total_pointer,  # (count,) laid out like one split: sum over splits, cast to this tensor's dtype
    splits, count,
    BLOCK: tl.constexpr,
):
    index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = index < count
    total = tl.zeros([BLOCK], dtype=partials_pointer.dtype.element_ty)
    for split in range(splits):
        total += tl.load(partials_pointer + split * count + index, mask=valid, other=0.0)
    tl.store(total_pointer + index, total.to(total_pointer.dtype.element_ty), mask=valid)


# ------------------------------------------------------------------------------------------------ launching

def output_size(size: int, kernel: int, stride: int, padding_before: int, padding_after: int, dilation: int) -> int:
    return (size + padding_before + padding_after - dilation * (kernel - 1) - 1) // stride + 1


def dense_format(tensor: torch.Tensor) -> torch.memory_format:
    """channels-last for a dense channels-last tensor, else NCHW (contiguous): the layouts the kernels run natively
    (they take strides)."""
    if not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def result_format(input: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    """The memory format of conv2d's output and input gradient, as torch chooses it: channels-last when the input or
    the weight is channels-last."""
    if torch.channels_last in (dense_format(input), dense_format(weight)):
        return torch.channels_last
    return torch.contiguous_format


def _dense(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.memory_format]:
    """``tensor`` in its :func:`dense_format` (a copy only when it is in neither), and that format."""
    memory_format = dense_format(tensor)
    return tensor.contiguous(memory_format=memory_format), memory_format


def _like(tensor: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``tensor`` (same shape as ``reference``) laid out with ``reference``'s strides, so one offset serves both.
    (Dense tensors of one memory format share strides except on size-1 dimensions, where strides don't matter.)"""
    if all(a == b or size == 1 for a, b, size in zip(tensor.stride(), reference.stride(), reference.shape)):
        return tensor
    return torch.empty_strided(reference.shape, reference.stride(), dtype=tensor.dtype,
                               device=tensor.device).copy_(tensor)


def _check_int32(name: str, count: int, what: str) -> None:
    if count >= INT32_LIMIT:
        raise ValueError(f"{name}: {what} has {count} elements; the conv2d kernels address one image, the weight "
                         f"and the pixel count with int32 (limit {INT32_LIMIT}): split the batch or use "
                         f"provider='torch'")


def _last_offset(tensor: torch.Tensor) -> int:
    """The offset of ``tensor``'s last element from its first: what int32 addressing must reach (for a dense tensor
    its element count less one; an expanded or strided parameter may reach further or less far)."""
    return sum((size - 1) * abs(stride) for size, stride in zip(tensor.shape, tensor.stride()) if size)


def _precision(dtype: torch.dtype) -> tuple[str, tl.dtype]:
    """tl.dot's input_precision and the accumulator type for ``dtype``."""
    if dtype == torch.float64:
        return "ieee", tl.float64
    tf32 = dtype == torch.float32 and not INTERPRET and torch.backends.cuda.matmul.allow_tf32
    return ("tf32" if tf32 else "ieee"), tl.float32


def use_channels_inner(channels: int, *, flat_walk: bool = ALGORITHMS.conv_flat_walk) -> bool:
    """Which walk of a reduction over ``channels`` x window taps to take: on a GPU channels inner when channels come
    in whole 16-wide chunks (contiguous, vectorised chunk loads in channels-last tensors). ``flat_walk`` is the
    interpreter's choice: there a loop step costs a few dozen tile operations of Python whatever its size, and the
    flat walk covers the window in a few large chunks where channels-inner takes at least one step per tap (a whole
    alexnet_small step at batch 16: 3.47 -> 3.12 s; benchmarks/results/NOTES.md, "conv in the interpreter")."""
    return not flat_walk and channels % 16 == 0


def conv2d_forward(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                   padding: tuple[int, int, int, int], dilation: tuple[int, int], groups: int, relu: bool,
                   channels_inner: bool | None = None, *,
                   flat_walk: bool = ALGORITHMS.conv_flat_walk) -> torch.Tensor:
    """``relu?(conv2d(input, weight, bias))`` for 4-D ``input``; ``padding`` is (top, bottom, left, right).

    The output's memory format is torch's (:func:`result_format`). The weight and bias are read in whatever layout
    they come (their strides are arguments): a channels-last weight beside a channels-last input is what lets a GPU
    take the vectorised channels-inner tiles.
    """
    check_dot_dtype("input", input)
    batch, in_channels, height, width = input.shape
    out_channels, in_channels_per_group, kernel_h, kernel_w = weight.shape
    out_height = output_size(height, kernel_h, stride[0], padding[0], padding[1], dilation[0])
    out_width = output_size(width, kernel_w, stride[1], padding[2], padding[3], dilation[1])
    pixels = batch * out_height * out_width
    _check_int32("input", in_channels * height * width, "one image")
    _check_int32("output", max(out_channels * out_height * out_width, pixels), "one image (or the pixel count)")
    _check_int32("weight", _last_offset(weight) + 1, "the weight")
    _check_grid("forward", groups)
    input, _ = _dense(input)
    output = torch.empty((batch, out_channels, out_height, out_width), dtype=input.dtype, device=input.device,
                         memory_format=result_format(input, weight))
    if output.numel() == 0:
        return output
    out_channels_per_group = out_channels // groups
    if channels_inner is None:
        channels_inner = use_channels_inner(in_channels_per_group, flat_walk=flat_walk)
    input_precision, accumulator = _precision(input.dtype)
    if INTERPRET:
        window = in_channels_per_group if channels_inner else in_channels_per_group * kernel_h * kernel_w
        meta = dict(zip(FORWARD_BLOCKS, _interpreter_tiles(pixels, out_channels_per_group, window)))
    else:
        meta = {}
    grid = lambda meta: (triton.cdiv(pixels, meta["BLOCK_PIXELS"])  # noqa: E731
                         * triton.cdiv(out_channels_per_group, meta["BLOCK_OUT_CHANNELS"]), groups)
    launcher(conv2d_forward_kernel)[grid](
        input, weight, bias if bias is not None else weight, output,
        in_channels_per_group, height, width, out_channels_per_group, out_height, out_width, pixels,
        autotune_bucket(pixels), stride[0], stride[1], padding[0], padding[2], dilation[0], dilation[1],
        *input.stride(), *weight.stride(), bias.stride(0) if bias is not None else 0, *output.stride(),
        KERNEL_H=kernel_h, KERNEL_W=kernel_w, HAS_BIAS=bias is not None, APPLY_RELU=relu,
        CHANNELS_INNER=channels_inner, CHECK_BOUNDS=any(padding), INPUT_PRECISION=input_precision,
        ACCUMULATOR=accumulator, **meta)
    return output


def _phase_axis(size: int, kernel: int, stride: int, padding: int, dilation: int) -> list[tuple[int, ...]]:
    """For each residue r of (input row + padding) mod stride that some kernel tap reaches and some input row has:
    (first input row, rows, first tap, taps, output row read by the first tap at the first row)."""
    phases = []
    for residue in range(stride):
        first = (residue - padding) % stride
        rows = max(0, -(-(size - first) // stride))
        taps = [tap for tap in range(kernel) if (tap * dilation) % stride == residue]
        if rows and taps:
            phases.append((first, rows, taps[0], len(taps), (first + padding - taps[0] * dilation) // stride))
    return phases


@functools.lru_cache(maxsize=256)
def _phases(height: int, width: int, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
            dilation: tuple[int, int]):
    """The input-gradient phases (see the module docstring) as rows of 2 * PHASE_FIELDS ints, the most input pixels
    of one image in a phase, and whether some input pixels are reached by no tap at all (then grad_input starts from
    zeros)."""
    axes = [_phase_axis(size, kernel[axis], stride[axis], padding[axis], dilation[axis])
            for axis, size in enumerate((height, width))]
    table = tuple(phase_h + phase_w for phase_h in axes[0] for phase_w in axes[1])
    covered = [sum(phase[1] for phase in axis) for axis in axes]
    most_rows = max((phase[1] for phase in axes[0]), default=0) * max((phase[1] for phase in axes[1]), default=0)
    return table, most_rows, covered != [height, width]


def _phase_tensor(table: tuple[tuple[int, ...], ...], device: torch.device) -> torch.Tensor:
    """The phase rows as an int32 tensor (phases, 2 * PHASE_FIELDS) on ``device``: cached per device when run (one
    host-to-device copy per geometry); made afresh while tracing, where it is a constant of the graph."""
    if tracing():
        return _phase_rows(table, device)
    return _cached_phase_rows(table, device)


def _phase_rows(table: tuple[tuple[int, ...], ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(table, dtype=torch.int32).reshape(-1, 2 * PHASE_FIELDS).to(device)


_cached_phase_rows = functools.lru_cache(maxsize=256)(_phase_rows)


def _check_grid(name: str, count: int) -> None:
    if count > 65535:
        raise ValueError(f"conv2d {name} needs {count} programs in grid dimension 1 or 2 (CUDA allows 65535): "
                         f"use fewer groups, or provider='torch'")


def conv2d_input_grad(grad_output: torch.Tensor, output: torch.Tensor | None, weight: torch.Tensor,
                      input_shape: torch.Size, memory_format: torch.memory_format, stride: tuple[int, int],
                      padding: tuple[int, int, int, int], dilation: tuple[int, int], groups: int,
                      channels_inner: bool | None = None, *,
                      flat_walk: bool = ALGORITHMS.conv_flat_walk) -> torch.Tensor:
    """Gradient of conv2d with respect to its 4-D input, in ``memory_format``. ``output`` is the saved ReLU output
    (None without ReLU, or when the gradient was masked already); ``padding`` is (top, bottom, left, right)."""
    check_dot_dtype("grad_output", grad_output)
    grad_output = grad_output.contiguous(memory_format=memory_format)
    if output is not None:
        output = _like(output, grad_output)
    batch, in_channels, height, width = input_shape
    out_channels, in_channels_per_group, kernel_h, kernel_w = weight.shape
    out_height, out_width = grad_output.shape[2:]
    out_channels_per_group = out_channels // groups
    table, most_rows, unreached = _phases(height, width, (kernel_h, kernel_w), stride, (padding[0], padding[2]),
                                          dilation)
    phases = _phase_tensor(table, grad_output.device)
    grad_input = torch.empty(input_shape, dtype=grad_output.dtype, device=grad_output.device,
                             memory_format=memory_format)
    if unreached or grad_output.numel() == 0:
        grad_input.zero_()
    if grad_input.numel() == 0 or grad_output.numel() == 0 or len(phases) == 0:
        return grad_input
    _check_int32("grad_input", max(in_channels * height * width, batch * height * width), "one image")
    _check_int32("weight", _last_offset(weight) + 1, "the weight")
    _check_grid("input gradient", groups * len(phases))
    gcd = (math.gcd(stride[0], dilation[0]), math.gcd(stride[1], dilation[1]))
    taps = -(-kernel_h // (stride[0] // gcd[0])) * -(-kernel_w // (stride[1] // gcd[1]))  # the most in one phase
    if channels_inner is None:
        channels_inner = use_channels_inner(out_channels_per_group, flat_walk=flat_walk)
    input_precision, accumulator = _precision(grad_output.dtype)
    most_pixels = batch * most_rows
    if INTERPRET:
        window = out_channels_per_group * (1 if channels_inner else taps)
        meta = dict(zip(INPUT_GRAD_BLOCKS, _interpreter_tiles(most_pixels, in_channels_per_group, window)))
    else:
        meta = {}
    grid = lambda meta: (triton.cdiv(most_pixels, meta["BLOCK_PIXELS"])  # noqa: E731
                         * triton.cdiv(in_channels_per_group, meta["BLOCK_IN_CHANNELS"]), groups * len(phases))
    launcher(conv2d_input_grad_kernel)[grid](
        grad_output, output if output is not None else grad_output, weight, grad_input, phases,
        batch, in_channels_per_group, height, width, out_channels_per_group, out_height, out_width,
        autotune_bucket(batch), len(phases), stride[0], stride[1], stride[0] // gcd[0], stride[1] // gcd[1],
        dilation[0] // gcd[0], dilation[1] // gcd[1],
        *grad_output.stride(), *weight.stride(), *grad_input.stride(),
        KERNEL_H=kernel_h, KERNEL_W=kernel_w, RELU_MASK=output is not None, CHANNELS_INNER=channels_inner,
        INPUT_PRECISION=input_precision, ACCUMULATOR=accumulator, **meta)
    return grad_input


# The split of the weight gradient's reduction. A block that finishes early leaves its SM's slot idle until the
# whole grid is done, so the time of a grid is its number of waves times the time of one block: a few blocks
# spilling into a second wave cost as much as a full wave. Each split also writes an fp32 partial tile that the sum
# reads back, worth about this many reduction steps of the block (an estimate, untimed).
SPLIT_COST_STEPS = 4
# A split sums at least this many reduction steps (BLOCK_PIXELS-wide), so partials stay a small part of the work.
MINIMUM_STEPS_PER_SPLIT = 16
MAXIMUM_SPLITS = 1024


def weight_grad_splits(tiles: int, processors: int, blocks_per_processor: int, reduction_steps: int) -> int:
    """How many programs share each of ``tiles`` output tiles' reduction of ``reduction_steps`` steps, on
    ``processors`` SMs holding ``blocks_per_processor`` blocks each: the count with the least modelled time,
    ``waves x (steps per split + SPLIT_COST_STEPS)`` with ``waves = ceil(tiles x splits / slots)``, so the grid fills
    whole waves. A pure function of its arguments (ties go to fewer splits): the same shapes on the same device
    always reduce in the same order."""
    slots = max(1, processors * blocks_per_processor)
    most = max(1, min(reduction_steps // MINIMUM_STEPS_PER_SPLIT, MAXIMUM_SPLITS))
    best, best_time = 1, None
    for splits in range(1, most + 1):
        waves = -(-tiles * splits // slots)
        time = waves * (-(-reduction_steps // splits) + SPLIT_COST_STEPS)
        if best_time is None or time < best_time:
            best, best_time = splits, time
    return best


# Occupancy estimate for a tile, from what one block holds: warps (threads), the pipelined operand tiles in shared
# memory, and registers (the fp32 accumulator spread over the threads, plus addresses and indices).
REGISTERS_BESIDE_ACCUMULATOR = 64


def blocks_per_processor(config: triton.Config, element_size: int, target: Architecture) -> int:
    """How many blocks of a weight-gradient ``config`` one SM of the ``target`` architecture runs at once."""
    blocks = config.kwargs
    threads = 32 * config.num_warps
    operands = (blocks["BLOCK_OUT_CHANNELS"] + blocks["BLOCK_WINDOW"]) * blocks["BLOCK_PIXELS"] * element_size
    registers = blocks["BLOCK_OUT_CHANNELS"] * blocks["BLOCK_WINDOW"] // threads + REGISTERS_BESIDE_ACCUMULATOR
    limits = (target.threads_per_multiprocessor // threads,
              target.shared_memory_per_multiprocessor // max(1, config.num_stages * operands),
              target.registers_per_multiprocessor // (threads * registers))
    return max(1, min(limits))


def conv2d_weight_grad(input: torch.Tensor, grad_output: torch.Tensor, output: torch.Tensor | None,
                       weight_shape: torch.Size, weight_dtype: torch.dtype, stride: tuple[int, int],
                       padding: tuple[int, int, int, int], dilation: tuple[int, int], groups: int, bias: bool,
                       channels_inner: bool | None = None, *,
                       weight_format: torch.memory_format = torch.contiguous_format,
                       flat_walk: bool = ALGORITHMS.conv_flat_walk
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradients of conv2d with respect to its weight (in ``weight_format``) and (when ``bias``) its bias, for 4-D
    ``input``. ``output`` is the saved ReLU output (None without ReLU, or when the gradient was masked already)."""
    check_dot_dtype("input", input)
    input, memory_format = _dense(input)
    grad_output = grad_output.contiguous(memory_format=memory_format)
    if output is not None:
        output = _like(output, grad_output)
    batch, in_channels, height, width = input.shape
    out_channels, in_channels_per_group, kernel_h, kernel_w = weight_shape
    out_height, out_width = grad_output.shape[2:]
    out_channels_per_group = out_channels // groups
    window_size = in_channels_per_group * kernel_h * kernel_w
    pixels = batch * out_height * out_width
    if pixels == 0 or out_channels == 0 or window_size == 0:
        grad_weight = torch.empty(weight_shape, dtype=weight_dtype, device=input.device,
                                  memory_format=weight_format).zero_()
        return grad_weight, (torch.zeros(out_channels, dtype=weight_dtype, device=input.device) if bias else None)
    _check_int32("input", in_channels * height * width, "one image")
    _check_int32("grad_output", max(out_channels * out_height * out_width, pixels), "one image (or the pixel count)")
    _check_grid("weight gradient", groups)
    if channels_inner is None:
        channels_inner = use_channels_inner(in_channels_per_group, flat_walk=flat_walk)
    input_precision, accumulator = _precision(input.dtype)
    partial_dtype = torch.float64 if accumulator == tl.float64 else torch.float32
    window_tiles = (lambda block: kernel_h * kernel_w * triton.cdiv(in_channels_per_group, block)) if channels_inner \
        else (lambda block: triton.cdiv(window_size, block))
    if INTERPRET:
        blocks = _interpreter_weight_grad_tiles(pixels, out_channels_per_group,
                                                in_channels_per_group if channels_inner else window_size)
        meta = dict(zip(WEIGHT_GRAD_BLOCKS, (blocks[1], blocks[2], blocks[0])))
        splits_for = lambda meta: 1  # noqa: E731  (the interpreter runs programs one after another)
        most_splits = 1
    else:
        meta = {}
        target = architecture(input.device)  # the CUDA device's, or the one a launch recorder stands in for

        def splits_for(meta):
            config = next(config for config in WEIGHT_GRAD_CONFIGS
                          if all(config.kwargs[name] == meta[name] for name in WEIGHT_GRAD_BLOCKS))
            tiles = triton.cdiv(out_channels_per_group, meta["BLOCK_OUT_CHANNELS"]) * window_tiles(
                meta["BLOCK_WINDOW"]) * groups
            return weight_grad_splits(tiles, target.multiprocessors,
                                      blocks_per_processor(config, input.element_size(), target),
                                      triton.cdiv(pixels, meta["BLOCK_PIXELS"]))

        most_splits = max(splits_for(config.kwargs) for config in WEIGHT_GRAD_CONFIGS)
        if tracing():  # every tile splits alike, so the sum below fits whichever tile Inductor picks
            splits_for = lambda meta: most_splits  # noqa: E731
    _check_int32("weight gradient", most_splits * out_channels * window_size, "the partial sums")
    weight_partials = _partials(most_splits, weight_shape, partial_dtype, input.device, weight_format)
    bias_partials = torch.empty((most_splits, out_channels), dtype=partial_dtype, device=input.device) if bias \
        else None
    launched = {}

    def grid(meta):
        launched["splits"] = splits_for(meta)  # the launch's own tile decides the split (the last call is the launch)
        return (triton.cdiv(out_channels_per_group, meta["BLOCK_OUT_CHANNELS"]) * window_tiles(meta["BLOCK_WINDOW"]),
                launched["splits"], groups)

    launcher(conv2d_weight_grad_kernel)[grid](
        input, grad_output, output if output is not None else grad_output, weight_partials,
        bias_partials if bias else weight_partials,
        in_channels_per_group, height, width, out_channels, out_channels_per_group, out_height, out_width,
        pixels, autotune_bucket(pixels), stride[0], stride[1], padding[0], padding[2], dilation[0], dilation[1],
        *input.stride(), *grad_output.stride(), *weight_partials.stride(),
        KERNEL_H=kernel_h, KERNEL_W=kernel_w, HAS_BIAS=bias, RELU_MASK=output is not None,
        CHANNELS_INNER=channels_inner, CHECK_BOUNDS=any(padding), INPUT_PRECISION=input_precision,
        ACCUMULATOR=accumulator, **meta)
    splits = launched["splits"]
    grad_weight = _sum_splits(weight_partials[:splits], weight_dtype)
    return grad_weight, (_sum_splits(bias_partials[:splits], weight_dtype) if bias else None)


def _partials(splits: int, weight_shape: torch.Size, dtype: torch.dtype, device: torch.device,
              weight_format: torch.memory_format) -> torch.Tensor:
    """(splits, *weight_shape) partial sums, each split laid out in ``weight_format``."""
    one = torch.empty(weight_shape, dtype=dtype, device="meta", memory_format=weight_format)
    return torch.empty_strided((splits, *weight_shape), (one.numel(), *one.stride()), dtype=dtype, device=device)


def _sum_splits(partials: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``partials.sum(0)`` cast to ``dtype`` and laid out like one split, by sum_splits_kernel (no launch for one
    split in the right dtype)."""
    if partials.shape[0] == 1 and partials.dtype == dtype:
        return partials[0]
    count = partials[0].numel()
    total = torch.empty_strided(partials.shape[1:], partials.stride()[1:], dtype=dtype, device=partials.device)
    meta = {"BLOCK": interpreter_block(count)} if INTERPRET else {}
    grid = lambda meta: (triton.cdiv(count, meta["BLOCK"]),)  # noqa: E731
    launcher(sum_splits_kernel)[grid](partials, total, partials.shape[0], count, **meta)
    return total


def conv2d_backward(grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
                    output: torch.Tensor | None, stride: tuple[int, int], padding: tuple[int, int, int, int],
                    dilation: tuple[int, int], groups: int, *, needs_input_grad: bool, needs_weight_grad: bool,
                    needs_bias_grad: bool,
                    separate_relu_gradient: bool = ALGORITHMS.conv_separate_relu_gradient,
                    flat_walk: bool = ALGORITHMS.conv_flat_walk):
    """Gradients of :func:`conv2d_forward` for 4-D ``input``: ``(grad_input, grad_weight, grad_bias)``, each None
    where not needed, in the memory formats torch returns (:func:`result_format`; the weight's for its gradient,
    which autograd then accumulates into the weight without a copy). ``output`` is the saved forward output when
    ReLU was fused (its mask), else None. With ``separate_relu_gradient`` the mask is applied once up front
    (:func:`separate_relu_gradient_pass`), else inside the gradient kernels' loads."""
    if output is not None and separate_relu_gradient:
        grad_output, output = separate_relu_gradient_pass(grad_output, output), None
    grad_input = grad_weight = grad_bias = None
    if needs_input_grad:
        grad_input = conv2d_input_grad(grad_output, output, weight, input.shape, result_format(input, weight), stride,
                                       padding, dilation, groups, flat_walk=flat_walk)
    if needs_weight_grad or needs_bias_grad:
        grad_weight, grad_bias = conv2d_weight_grad(input, grad_output, output, weight.shape, weight.dtype, stride,
                                                    padding, dilation, groups, needs_bias_grad,
                                                    weight_format=dense_format(weight),
                                                    flat_walk=flat_walk)
    return (grad_input, grad_weight if needs_weight_grad else None, grad_bias)


# ------------------------------------------------------------------------------------------------ interpreter-only
# The interpreter pays per program and per tile operation (numpy), not per byte moved, so it runs a few things
# differently; ALGORITHMS chooses them, and tests run both ways through the keywords above.

@autotune(configs=ELEMENTWISE_CONFIGS, key=[])
@triton.jit
def relu_gradient_kernel(
    grad_output_pointer, output_pointer,  # dense, with the same strides: element i of one is element i of the other
    masked_pointer,  # the same layout: relu_gradient(grad_output, output)
    count,  # elements
    BLOCK: tl.constexpr,
):
    index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = index < count
    gradient = tl.load(grad_output_pointer + index, mask=valid, other=0.0)
    output = tl.load(output_pointer + index, mask=valid, other=0.0)
    tl.store(masked_pointer + index, relu_gradient(gradient, output), mask=valid)


def separate_relu_gradient_pass(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """ReLU's gradient mask applied once, before the gradient kernels, laid out like ``grad_output``'s dense memory
    format. The interpreter's choice: there every gathered element costs numpy passes, and the fused mask gathers
    the output beside the gradient and masks it again for every window tap that reads it (25 times per element for
    conv2's 5x5 window; timings in benchmarks/results/NOTES.md, "conv in the interpreter"). On a GPU the fused mask
    writes no masked gradient at all."""
    grad_output, _ = _dense(grad_output)
    output = _like(output, grad_output)
    masked = torch.empty_like(grad_output)
    count = grad_output.numel()
    if count:
        meta = {"BLOCK": interpreter_block(count)} if INTERPRET else {}
        grid = lambda meta: (triton.cdiv(count, meta["BLOCK"]),)  # noqa: E731
        launcher(relu_gradient_kernel)[grid](grad_output, output, masked, count, **meta)
    return masked


# Interpreter tiles hold up to 2**19 elements (8x the runtime's default block; Triton's limit is 2**20): from this
# size on the per-element work outweighs the per-loop-step overhead (benchmarks/results/NOTES.md, "conv in the
# interpreter").
INTERPRETER_TILE = 8 * INTERPRETER_MAX_BLOCK
# What one loop step costs in the interpreter, in gathered elements' worth of time (NOTES.md, the same section).
INTERPRETER_STEP_ELEMENTS = 250_000


def _interpreter_tiles(rows: int, columns: int, reduction: int) -> tuple[int, int, int]:
    """Interpreter tiles (rows, columns, reduction chunk) for a program that loops over the reduction: all columns,
    then the chunk and row count with the least modelled cost, steps x (step overhead + gathered elements), so few
    loop steps run and little of a chunk is padding (NOTES.md, "conv in the interpreter": alexnet-small's conv1)."""
    block_columns = interpreter_block(columns, cap=256)
    best = None
    block_reduction = 16
    while True:
        block_rows = interpreter_block(rows, cap=max(16, INTERPRETER_TILE // max(block_reduction, block_columns)))
        steps = -(-rows // block_rows) * -(-reduction // block_reduction)
        cost = steps * (INTERPRETER_STEP_ELEMENTS + block_rows * block_reduction)
        if best is None or cost <= best[0]:
            best = (cost, (block_rows, block_columns, block_reduction))
        if block_reduction >= min(reduction, INTERPRETER_TILE // block_columns):
            return best[1]
        block_reduction *= 2


def _interpreter_weight_grad_tiles(pixels: int, out_channels: int, window: int) -> tuple[int, int, int]:
    """Interpreter tiles for the weight gradient (pixels per loop step, out channels, window columns): its programs
    own (out channel, window) tiles and loop over pixels, and a narrower window tile would load the output gradient
    once per tile, so the whole window where it fits, then as many pixels as the element budget allows."""
    block_columns = interpreter_block(out_channels, cap=256)
    block_window = interpreter_block(window, cap=INTERPRETER_TILE // block_columns)
    block_pixels = interpreter_block(pixels, cap=max(16, INTERPRETER_TILE // max(block_window, block_columns)))
    return block_pixels, block_columns, block_window
