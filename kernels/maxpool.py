"""2-D max pooling: a one-pass forward that saves a 1-byte arg-max offset per output, and two backwards from it: a
deterministic gather (the GPU's) and an atomic scatter (the interpreter's).

Windows: output (r, c) pools the input elements (r * STRIDE_H - padding_h + i * DILATION_H,
c * STRIDE_W - padding_w + j * DILATION_W) for window row i < KERNEL_H and window column j < KERNEL_W.

Forward: each program owns a tile of OUTPUT elements. Every output scans its window in row-major order (i, j) and
keeps the first maximum, or the last NaN, exactly as torch does (``value > best || isnan(value)``, starting from the
first element at or after the window's first row and column inside the input). Padding is never read, so it acts as
-inf. It stores the maximum and the arg-max's position in the window, ``i * KERNEL_W + j``, as a uint8: 1 byte per
output instead of torch's int64 index, so windows are limited to 256 elements (``MAX_WINDOW_ELEMENTS``; dilation
spreads a window without adding elements, so it does not count). torch's int64 index (``return_indices``) is rebuilt
from that offset in the same pass, only when asked for.

A window can hold no input element at all: with dilation, its first in-range row (or column) may lie past the
input's end (e.g. kernel 3, padding 1, dilation 5 over 3 rows, with ceil_mode). torch then returns -inf and the
index of that first position, which lies outside the input plane, and its backward drops that output's gradient;
so do these kernels.

Backward on a GPU: a gather, no atomics. Each program owns a tile of INPUT elements; each element visits the few
windows that cover it, reads their saved offsets, and sums the output gradients of the windows whose arg-max it is,
in torch's order, so the result is deterministic. The bounds are derived beside :func:`max_pool2d_backward_kernel`.

Backward in the interpreter (``ALGORITHMS.maxpool_scatter_backward``, the ``scatter`` keyword of
:func:`max_pool2d_backward`): a scatter, in the "interpreter algorithm" section below. Each program owns a tile of
OUTPUT elements; each output rebuilds its arg-max's input position from the saved offset and adds its gradient there
with ``tl.atomic_add`` into a zeroed buffer (fp32, or fp64 for fp64), cast to the gradient's dtype afterwards. The
interpreter's cost is numpy passes over tiles: the gather makes about 15 per covering window (4 for 3x3 stride 2)
per input element, the scatter about 20 per output, and 3x3 stride-2 pooling has 4x fewer outputs than inputs. On a
GPU the atomics' order would vary from run to run among an element's windows; the interpreter runs programs one at a
time and a tile's adds in element order, so there the sum is deterministic.

Layout: any strides. Inputs and output gradients are read through their strides, never copied. Outputs, indices,
saved offsets and the input gradient take the memory format torch gives them (:func:`output_memory_format`:
channels-last when the input's strides look channels-last, else contiguous NCHW), and each program walks the
elements it writes in that memory order: for channels-last, neighbouring lanes are neighbouring channels, so both
the stores and the loads at every window position coalesce along the contiguous channel axis.

Index arithmetic: the batch is split into chunks of whole images, one per grid row, such that within a chunk every
element's position and every tensor's offset fit in ``INDEX_CHUNK`` (int32); only each chunk's base offset is
int64. One image of the input or output must hold fewer than ``INDEX_CHUNK`` elements; a strided tensor whose image
spans more memory than that is copied dense first.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .runtime import ALGORITHMS, INTERPRET, autotune, check_device, gpu_configs, interpreter_block, \
    launcher

MAX_WINDOW_ELEMENTS = 256  # the arg-max offset inside a window is stored in one byte
INDEX_CHUNK = 2**30  # elements (and memory span) per grid row: keeps per-element offsets below 2**31
MAX_GRID_ROWS = 65535  # CUDA's limit on the grid's second dimension

# Memory-bound kernels: the tile size sets how many loads each thread has in flight. Three configs, so the
# autotuning cost (a compile each) stays small; the largest uses 8 warps, so that no thread holds more than 4
# elements' index arithmetic (the dilated gather's registers).
GPU_CONFIGS = gpu_configs(("BLOCK",), [(256, 4, 1), (512, 4, 1), (1024, 8, 1)])
TUNING_KEY = ["channels", "height", "width", "out_height", "out_width", "KERNEL_H", "KERNEL_W", "STRIDE_H",
              "STRIDE_W", "DILATION_H", "DILATION_W", "CHANNELS_LAST"]


def pooled_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """torch's output extent along one axis (``pooling_output_shape``): the dilated window's span subtracted from
    the padded size, divided by the stride rounding down (up with ``ceil_mode``), plus one; the division rounds
    towards -inf, so a window larger than the padded input gives 0 or less (which torch refuses), or 1 with
    ``ceil_mode``. With ``ceil_mode`` the last window must still start inside the input or the left padding, which
    can take one output back off the rounded-up count."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def output_memory_format(input: torch.Tensor) -> torch.memory_format:
    """The memory format torch gives max_pool2d's outputs and input gradient: ``input.suggest_memory_format()``,
    channels-last when a 4-D input's strides order channels, width, height, batch from the fastest (ties of size-1
    dimensions resolved as torch does), else contiguous."""
    if input.dim() != 4 or input.stride(1) == 0:
        return torch.contiguous_format
    smallest = 0
    for dimension in (1, 3, 2, 0):
        size, stride = input.shape[dimension], input.stride(dimension)
        if size == 0 or stride < smallest or (dimension == 0 and smallest == input.stride(1)):
            return torch.contiguous_format
        smallest = stride * size if size > 1 else stride
    return torch.channels_last


def _image_span(tensor: torch.Tensor) -> int:
    """How much memory one image (batch entry) of an (N, C, H, W) tensor occupies, in elements: the batch stride,
    or the extent of its own elements if that is larger."""
    extent = 1 + sum((size - 1) * stride for size, stride in zip(tensor.shape[1:], tensor.stride()[1:]))
    return max(tensor.stride(0), extent)


@triton.jit
def _widened(value):
    """fp16/bf16 widened to fp32 (exactly), fp32/fp64 unchanged: the forward compares and the backward sums in at
    least fp32 (the interpreter also compares bf16 wrongly)."""
    if value.dtype == tl.float64:
        return value
    else:
        return value.to(tl.float32)


@triton.jit
def _image_tile(batch, images_per_chunk, channels, plane_height, plane_width, CHANNELS_LAST: tl.constexpr,
                BLOCK: tl.constexpr):
    """This program's tile of ``BLOCK`` elements of (batch, channels, plane_height, plane_width), in grid row
    ``program_id(1)``'s chunk of images, walked in memory order (channel fastest if ``CHANNELS_LAST``, else column).
    Returns ``(first_image, in_chunk, image, channel, row, column, inside)``: the chunk's first image (int64, for
    base offsets), each element's flat position in the chunk's dense memory order, its image counted from the
    chunk's first, its channel, row and column, and whether it exists."""
    image_elements = channels * plane_height * plane_width
    first_image = tl.program_id(1) * images_per_chunk
    in_chunk = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = in_chunk < tl.minimum(batch - first_image, images_per_chunk) * image_elements
    image = in_chunk // image_elements
    in_image = in_chunk % image_elements
    if CHANNELS_LAST:
        channel = in_image % channels
        position = in_image // channels
        row = position // plane_width
        column = position % plane_width
    else:
        in_plane = in_image % (plane_height * plane_width)
        channel = in_image // (plane_height * plane_width)
        row = in_plane // plane_width
        column = in_plane % plane_width
    return first_image.to(tl.int64), in_chunk, image, channel, row, column, inside


@triton.jit
def _first_inside(start, DILATION: tl.constexpr):
    """The first window index whose position ``start + index * DILATION`` is not in the leading padding: torch
    starts its scan there (it steps ``start`` by the dilation while it is negative)."""
    return (tl.maximum(-start, 0) + DILATION - 1) // DILATION


@autotune(GPU_CONFIGS, key=TUNING_KEY)
@triton.jit
def max_pool2d_forward_kernel(
    input_pointer,  # (batch, channels, height, width), any strides
    output_pointer,  # (batch, channels, out_height, out_width) dense in the walk order, same dtype as the input
    offset_pointer,  # like output, uint8: arg-max position in its window, row-major
    indices_pointer,  # like output, int64: arg-max as torch's flat index into its input plane
    batch, images_per_chunk,  # images, and images handled by one grid row (program_id(1)); see INDEX_CHUNK
    channels, height, width,  # input extent per image
    out_height, out_width,  # output plane extent
    input_stride_batch, input_stride_channel, input_stride_row, input_stride_column,  # input strides, in elements
    padding_h, padding_w,  # implicit -inf padding above/below and left/right
    KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr,  # window extent, in elements
    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,  # window step
    DILATION_H: tl.constexpr, DILATION_W: tl.constexpr,  # distance between a window's elements
    CHANNELS_LAST: tl.constexpr,  # outputs are channels-last (NHWC in memory), else contiguous NCHW
    WRITE_INDICES: tl.constexpr,  # store indices (return_indices=True)
    BLOCK: tl.constexpr,  # outputs per program
):
    first_image, in_chunk, image, channel, out_row, out_column, inside = _image_tile(
        batch, images_per_chunk, channels, out_height, out_width, CHANNELS_LAST, BLOCK)
    top = out_row * STRIDE_H - padding_h
    left = out_column * STRIDE_W - padding_w
    # torch's scan starts at the window's first row and column past the leading padding: that element stays the
    # arg-max unless a later one is larger or NaN. Elements outside the input load as -inf, which never wins.
    best_offset = _first_inside(top, DILATION_H) * KERNEL_W + _first_inside(left, DILATION_W)
    best = _widened(tl.full([BLOCK], float("-inf"), input_pointer.dtype.element_ty))
    # The window's first position (padding included); each later one is a scalar step away from it.
    window_start = (input_pointer + first_image * input_stride_batch + image * input_stride_batch
                    + channel * input_stride_channel + top * input_stride_row + left * input_stride_column)
    for window_row in tl.static_range(KERNEL_H):
        row_shift = window_row * DILATION_H
        row_inside = inside & (top >= -row_shift) & (top < height - row_shift)
        row_start = window_start + row_shift * input_stride_row
        for window_column in tl.static_range(KERNEL_W):
            column_shift = window_column * DILATION_W
            valid = row_inside & (left >= -column_shift) & (left < width - column_shift)
            value = tl.load(row_start + column_shift * input_stride_column, mask=valid, other=float("-inf"))
            value = value.to(best.dtype)
            # NaN-propagating, last-NaN-wins comparison: torch's `value > best || isnan(value)`.
            take = (value > best) | (value != value)
            best = tl.where(take, value, best)
            best_offset = tl.where(take, window_row * KERNEL_W + window_column, best_offset)

    out_start = first_image * (channels * out_height * out_width) + in_chunk
    tl.store(output_pointer + out_start, best.to(output_pointer.dtype.element_ty), mask=inside)
    tl.store(offset_pointer + out_start, best_offset.to(tl.uint8), mask=inside)
    if WRITE_INDICES:
        best_row = top + (best_offset // KERNEL_W) * DILATION_H
        best_column = left + (best_offset % KERNEL_W) * DILATION_W
        tl.store(indices_pointer + out_start, best_row.to(tl.int64) * width + best_column, mask=inside)


# Gather bounds, per axis (rows shown; columns are the same with width, KERNEL_W, STRIDE_W, DILATION_W, padding_w).
# Output row r's window covers input rows r * STRIDE_H - padding_h + i * DILATION_H, i < KERNEL_H. So input row h
# lies in window r iff
#     r * STRIDE_H <= h + padding_h <= r * STRIDE_H + (KERNEL_H - 1) * DILATION_H
#     <=>  ceil((h + padding_h - (KERNEL_H - 1) * DILATION_H) / STRIDE_H) <= r <= floor((h + padding_h) / STRIDE_H),
# clipped to [0, out_height - 1], and h + padding_h - r * STRIDE_H is a multiple of DILATION_H. The lower bound is
# computed on max(h + padding_h - (KERNEL_H - 1) * DILATION_H, 0) so every division has a non-negative numerator
# (integer division rounds the same way on the GPU and in the interpreter). At most
# ceil(((KERNEL_H - 1) * DILATION_H + 1) / STRIDE_H) rows qualify, so the loops below are static; the ones past the
# upper bound, or off the dilation grid, are masked off. Inside window r, input row h is at window row
# (h + padding_h - r * STRIDE_H) / DILATION_H, which with the column gives the offset to compare with the saved
# arg-max. Windows are visited in increasing (r, c), the order torch's own backward sums them in.
@autotune(GPU_CONFIGS, key=TUNING_KEY)
@triton.jit
def max_pool2d_backward_kernel(
    grad_output_pointer,  # (batch, channels, out_height, out_width), any strides
    offset_pointer,  # (batch, channels, out_height, out_width) uint8, as saved by the forward
    grad_input_pointer,  # (batch, channels, height, width) dense in the walk order, written in full
    batch, images_per_chunk,  # images, and images handled by one grid row (program_id(1)); see INDEX_CHUNK
    channels, height, width,  # input extent per image
    out_height, out_width,  # output plane extent
    grad_output_stride_batch, grad_output_stride_channel, grad_output_stride_row, grad_output_stride_column,  # strides
    offset_stride_batch, offset_stride_channel, offset_stride_row, offset_stride_column,  # strides
    padding_h, padding_w,  # the forward's padding
    KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr,  # window extent, in elements
    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,  # window step
    DILATION_H: tl.constexpr, DILATION_W: tl.constexpr,  # distance between a window's elements
    CHANNELS_LAST: tl.constexpr,  # the input gradient is channels-last (NHWC in memory), else contiguous NCHW
    BLOCK: tl.constexpr,  # input elements per program
):
    first_image, in_chunk, image, channel, row, column, inside = _image_tile(
        batch, images_per_chunk, channels, height, width, CHANNELS_LAST, BLOCK)
    first_out_row = (tl.maximum(row + padding_h - (KERNEL_H - 1) * DILATION_H, 0) + STRIDE_H - 1) // STRIDE_H
    later_out_rows = tl.minimum((row + padding_h) // STRIDE_H, out_height - 1) - first_out_row
    first_out_column = (tl.maximum(column + padding_w - (KERNEL_W - 1) * DILATION_W, 0) + STRIDE_W - 1) // STRIDE_W
    later_out_columns = tl.minimum((column + padding_w) // STRIDE_W, out_width - 1) - first_out_column
    # This element's position in the first covering window; each later window starts a stride further on.
    first_row_in_window = row + padding_h - first_out_row * STRIDE_H
    first_column_in_window = column + padding_w - first_out_column * STRIDE_W
    grad_output_start = (grad_output_pointer + first_image * grad_output_stride_batch
                         + image * grad_output_stride_batch + channel * grad_output_stride_channel
                         + first_out_row * grad_output_stride_row + first_out_column * grad_output_stride_column)
    offset_start = (offset_pointer + first_image * offset_stride_batch + image * offset_stride_batch
                    + channel * offset_stride_channel + first_out_row * offset_stride_row
                    + first_out_column * offset_stride_column)

    total = _widened(tl.zeros([BLOCK], grad_output_pointer.dtype.element_ty))
    for row_step in tl.static_range(((KERNEL_H - 1) * DILATION_H + STRIDE_H) // STRIDE_H):
        row_in_window = first_row_in_window - row_step * STRIDE_H
        row_covers = inside & (later_out_rows >= row_step)
        if DILATION_H > 1:  # only windows whose dilated grid lands on this row
            row_covers = row_covers & (row_in_window % DILATION_H == 0)
            row_in_window = row_in_window // DILATION_H
        window_row_offset = row_in_window * KERNEL_W
        for column_step in tl.static_range(((KERNEL_W - 1) * DILATION_W + STRIDE_W) // STRIDE_W):
            column_in_window = first_column_in_window - column_step * STRIDE_W
            covers = row_covers & (later_out_columns >= column_step)
            if DILATION_W > 1:
                covers = covers & (column_in_window % DILATION_W == 0)
                column_in_window = column_in_window // DILATION_W
            arg_max = tl.load(offset_start + (row_step * offset_stride_row + column_step * offset_stride_column),
                              mask=covers, other=0).to(tl.int32)
            wins = covers & (arg_max == window_row_offset + column_in_window)
            grad = tl.load(grad_output_start + (row_step * grad_output_stride_row
                                                + column_step * grad_output_stride_column), mask=wins, other=0.0)
            total += grad.to(total.dtype)

    grad_input = total.to(grad_input_pointer.dtype.element_ty)
    tl.store(grad_input_pointer + first_image * (channels * height * width) + in_chunk, grad_input, mask=inside)


# ---- Interpreter algorithm: the scatter backward (ALGORITHMS.maxpool_scatter_backward) ----
# Output (r, c) with saved offset o took its maximum from input
# (r * STRIDE_H - padding_h + (o // KERNEL_W) * DILATION_H, c * STRIDE_W - padding_w + (o % KERNEL_W) * DILATION_W),
# inside the input unless its window holds no input element (then torch drops its gradient, and so does the mask).
# The input gradient is the sum, over the outputs whose arg-max an element is, of their gradients: one atomic add
# per output. Its arguments mirror max_pool2d_backward_kernel's, so one _launch serves either algorithm.
@autotune(GPU_CONFIGS, key=TUNING_KEY, reset_to_zero=["grad_sum_pointer"])  # tuning runs must not add up
@triton.jit
def max_pool2d_backward_scatter_kernel(
    grad_output_pointer,  # (batch, channels, out_height, out_width), any strides
    offset_pointer,  # (batch, channels, out_height, out_width) uint8 as saved by the forward, dense in walk order
    grad_sum_pointer,  # (batch, channels, height, width) fp32 (fp64 for fp64), zeroed; gradients are added in
    batch, images_per_chunk,  # images, and images handled by one grid row (program_id(1)); see INDEX_CHUNK
    channels, height, width,  # input extent per image
    out_height, out_width,  # output plane extent
    grad_output_stride_batch, grad_output_stride_channel, grad_output_stride_row, grad_output_stride_column,  # strides
    grad_sum_stride_batch, grad_sum_stride_channel, grad_sum_stride_row, grad_sum_stride_column,  # strides
    padding_h, padding_w,  # the forward's padding
    KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr,  # window extent, in elements
    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,  # window step
    DILATION_H: tl.constexpr, DILATION_W: tl.constexpr,  # distance between a window's elements
    CHANNELS_LAST: tl.constexpr,  # the offsets are channels-last (NHWC in memory), else contiguous NCHW
    BLOCK: tl.constexpr,  # outputs per program
):
    first_image, in_chunk, image, channel, out_row, out_column, inside = _image_tile(
        batch, images_per_chunk, channels, out_height, out_width, CHANNELS_LAST, BLOCK)
    arg_max = tl.load(offset_pointer + first_image * (channels * out_height * out_width) + in_chunk, mask=inside,
                      other=0).to(tl.int32)
    row = out_row * STRIDE_H - padding_h + (arg_max // KERNEL_W) * DILATION_H
    column = out_column * STRIDE_W - padding_w + (arg_max % KERNEL_W) * DILATION_W
    grad = tl.load(grad_output_pointer + first_image * grad_output_stride_batch + image * grad_output_stride_batch
                   + channel * grad_output_stride_channel + out_row * grad_output_stride_row
                   + out_column * grad_output_stride_column, mask=inside, other=0.0)
    target = (grad_sum_pointer + first_image * grad_sum_stride_batch + image * grad_sum_stride_batch
              + channel * grad_sum_stride_channel + row * grad_sum_stride_row + column * grad_sum_stride_column)
    tl.atomic_add(target, grad.to(grad_sum_pointer.dtype.element_ty), mask=inside & (row < height) & (column < width))


def _launch(kernel, tensors, strided, shape, out_shape, padding, walk_outputs: bool, channels_last: bool,
            **constexprs) -> None:
    """Launch ``kernel`` over the (N, C, H, W) input ``shape`` pooled to ``out_shape``, its programs owning output
    elements if ``walk_outputs``, else input elements, in channels-last or contiguous order. ``strided`` are the
    tensors whose four strides follow the extents. Grid rows take chunks of whole images within which every
    tensor's offsets stay below ``INDEX_CHUNK``."""
    batch, channels, height, width = shape
    out_height, out_width = out_shape[-2:]
    spans = [channels * height * width, channels * out_height * out_width]
    spans += [_image_span(tensor) for tensor in strided]
    images_per_chunk = max(1, min(batch, INDEX_CHUNK // max(spans)))
    walked = images_per_chunk * channels * (out_height * out_width if walk_outputs else height * width)
    meta = {"BLOCK": interpreter_block(walked)} if INTERPRET else {}
    grid = lambda config: (triton.cdiv(walked, config["BLOCK"]), triton.cdiv(batch, images_per_chunk))  # noqa: E731
    strides = [stride for tensor in strided for stride in tensor.stride()]
    launcher(kernel)[grid](*tensors, batch, images_per_chunk, channels, height, width, out_height, out_width,
                           *strides, *padding, CHANNELS_LAST=channels_last, **constexprs, **meta)


def _within_index_chunk(tensor: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``tensor`` itself, or a dense copy if one image of it spans ``INDEX_CHUNK`` elements of memory or more (a
    strided view of a huge tensor): the kernels' per-image offsets are int32."""
    return tensor if _image_span(tensor) < INDEX_CHUNK else tensor.contiguous(memory_format=memory_format)


def check_supported(input_shape, kernel_size: tuple[int, int], out_shape) -> None:
    """Refuse what the kernels cannot do: windows over ``MAX_WINDOW_ELEMENTS`` (the 1-byte offset), images of
    ``INDEX_CHUNK`` elements or more (the int32 positions within a chunk), and more chunks than a grid has rows."""
    if kernel_size[0] * kernel_size[1] > MAX_WINDOW_ELEMENTS:
        raise ValueError(f"kernel_size {tuple(kernel_size)} has {kernel_size[0] * kernel_size[1]} elements; the "
                         f"Triton max_pool2d saves the arg-max's position in its window in one byte, so windows are "
                         f"limited to {MAX_WINDOW_ELEMENTS} elements (use provider='torch' for larger ones)")
    batch, channels = input_shape[:2]
    image_elements = channels * max(math.prod(input_shape[2:]), math.prod(out_shape[2:]))
    if image_elements >= INDEX_CHUNK:
        raise ValueError(f"input images of {channels} x {input_shape[2]} x {input_shape[3]} (channels x height x "
                         f"width) elements are too large for the Triton max_pool2d (at most {INDEX_CHUNK - 1} "
                         f"elements per image)")
    chunks = -(-batch // max(1, INDEX_CHUNK // max(image_elements, 1)))
    if chunks > MAX_GRID_ROWS:
        raise ValueError(f"input batch of {batch} images of {image_elements} elements is too large for the Triton "
                         f"max_pool2d (it needs {chunks} grid rows, at most {MAX_GRID_ROWS})")


def max_pool2d_forward(input: torch.Tensor, kernel_size: tuple[int, int], stride: tuple[int, int],
                       padding: tuple[int, int], dilation: tuple[int, int], ceil_mode: bool, return_indices: bool,
                       memory_format: torch.memory_format | None = None):
    """``(output, offsets, indices)`` for an (N, C, H, W) ``input`` of any strides: the pooled maxima, the uint8
    arg-max offset in each window (what the backward needs), and torch's int64 indices if ``return_indices`` (else
    None). All three are in ``memory_format`` (default: :func:`output_memory_format`, torch's choice)."""
    check_device("input", input)
    batch, channels, height, width = input.shape
    out_height = pooled_size(height, kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode)
    out_width = pooled_size(width, kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode)
    shape = (batch, channels, out_height, out_width)
    check_supported(input.shape, kernel_size, shape)
    memory_format = output_memory_format(input) if memory_format is None else memory_format
    like = dict(device=input.device, memory_format=memory_format)
    output = torch.empty(shape, dtype=input.dtype, **like)
    offsets = torch.empty(shape, dtype=torch.uint8, **like)
    indices = torch.empty(shape, dtype=torch.int64, **like) if return_indices else None
    if output.numel() == 0:
        return output, offsets, indices
    input = _within_index_chunk(input, memory_format)
    _launch(max_pool2d_forward_kernel, (input, output, offsets, indices), [input], input.shape, shape, padding,
            walk_outputs=True, channels_last=memory_format == torch.channels_last,
            **_window(kernel_size, stride, dilation), WRITE_INDICES=return_indices)
    return output, offsets, indices


def _window(kernel_size, stride, dilation) -> dict[str, int]:
    return dict(KERNEL_H=kernel_size[0], KERNEL_W=kernel_size[1], STRIDE_H=stride[0], STRIDE_W=stride[1],
                DILATION_H=dilation[0], DILATION_W=dilation[1])


def max_pool2d_backward(grad_output: torch.Tensor, offsets: torch.Tensor, input_shape, kernel_size: tuple[int, int],
                        stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                        memory_format: torch.memory_format, *,
                        scatter: bool = ALGORITHMS.maxpool_scatter_backward) -> torch.Tensor:
    """The input gradient (of ``input_shape``, in ``memory_format``: the forward's, which its offsets are in) from
    the output gradient (any strides) and the forward's offsets: gathered at the inputs (deterministic, the GPU's),
    or with ``scatter`` added from the outputs with atomics (the interpreter's)."""
    like = dict(device=grad_output.device, memory_format=memory_format)
    if math.prod(input_shape) == 0:
        return torch.empty(input_shape, dtype=grad_output.dtype, **like)
    grad_output = _within_index_chunk(grad_output, memory_format)
    launch = dict(walk_outputs=scatter, channels_last=memory_format == torch.channels_last,
                  **_window(kernel_size, stride, dilation))
    if scatter:
        sum_dtype = torch.float64 if grad_output.dtype == torch.float64 else torch.float32
        grad_sum = torch.empty(input_shape, dtype=sum_dtype, **like).zero_()
        _launch(max_pool2d_backward_scatter_kernel, (grad_output, offsets, grad_sum), [grad_output, grad_sum],
                input_shape, offsets.shape, padding, **launch)
        return grad_sum.to(grad_output.dtype)
    grad_input = torch.empty(input_shape, dtype=grad_output.dtype, **like)
    _launch(max_pool2d_backward_kernel, (grad_output, offsets, grad_input), [grad_output, offsets], input_shape,
            offsets.shape, padding, **launch)
    return grad_input


# What the compile check builds: AlexNet's pooling (3x3, stride 2) in the models' channels-last layout at every
# tile the autotuner tries; the rest at the largest tile, whose threads hold the most elements (the spill risk):
# the interpreter's scatter, the contiguous layout, and a dilated window (the gather's dilation masks and longer
# static loops).
COMPILE_WINDOWS = {"alexnet": ((3, 3), (2, 2), (1, 1)), "dilated": ((3, 2), (1, 2), (2, 3))}
COMPILE_VARIANTS = [  # (window, channels_last, dtypes, configs, kernels)
    ("alexnet", True, ("fp32", "fp16", "bf16"), GPU_CONFIGS, ("forward", "backward")),
    ("alexnet", True, ("fp32", "fp16", "bf16"), GPU_CONFIGS[-1:], ("backward_scatter",)),
    ("alexnet", False, ("fp32",), GPU_CONFIGS[-1:], ("forward", "backward", "backward_scatter")),
    ("dilated", True, ("fp32", "bf16"), GPU_CONFIGS[-1:], ("forward", "backward", "backward_scatter")),
]


def _compile_signature(kernel_name: str, dtype: str) -> dict[str, str]:
    """Argument types of one kernel for ``dtype`` data (the scatter sums into fp32)."""
    data = {"forward": ("input", "output"), "backward": ("grad_output", "grad_input"),
            "backward_scatter": ("grad_output",)}[kernel_name]
    strided = {"forward": ("input",), "backward": ("grad_output", "offset"),
               "backward_scatter": ("grad_output", "grad_sum")}[kernel_name]
    signature = {f"{name}_pointer": f"*{dtype}" for name in data}
    signature.update(offset_pointer="*u8", indices_pointer="*i64", grad_sum_pointer="*fp32")
    signature.update({f"{name}_stride_{axis}": "i32" for name in strided for axis in ("batch", "channel", "row",
                                                                                       "column")})
    return signature
