"""2-D max pooling: a one-pass forward that saves a 1-byte arg-max offset per output, and two backwards from it: a
deterministic gather (the GPU's) and an atomic scatter (the interpreter's).

Forward: each program owns a tile of OUTPUT elements. Every output scans its window in row-major order
(kernel row ``window_row``, kernel column ``window_column``) and keeps the first maximum, or the last NaN, exactly
as torch does (``value > best || isnan(value)``, starting from the first element inside the input). Padding is
never read, so it acts as -inf. It stores the maximum and the arg-max's position in the window,
``window_row * KERNEL_W + window_column``, as a uint8: 1 byte per output instead of torch's int64 index, so windows
are limited to 256 elements (``MAX_WINDOW_ELEMENTS``). torch's int64 index (``return_indices``) is rebuilt from that
offset in the same pass, only when asked for.

Backward on a GPU: a gather, no atomics. Each program owns a tile of INPUT elements; each element visits the few
windows that cover it, reads their saved offsets, and sums the output gradients of the windows whose arg-max it is,
in torch's order, so the result is deterministic. The bounds are derived beside :func:`max_pool2d_backward_kernel`.

Backward in the interpreter (``SCATTER_BACKWARD``): a scatter. Each program owns a tile of OUTPUT elements; each
output rebuilds its arg-max's input position from the saved offset and adds its gradient there with
``tl.atomic_add`` into a zeroed buffer (fp32, or fp64 for fp64), cast to the gradient's dtype afterwards. The
interpreter's cost is numpy passes over tiles: the gather makes about 15 per covering window (4 for 3x3 stride 2)
per input element, the scatter about 20 per output, and 3x3 stride-2 pooling has 4x fewer outputs than inputs
(measured: AlexNet-small's pool1 backward 10x faster). On a GPU the atomics' order would vary from run to run among
an element's windows; the interpreter runs programs one at a time and a tile's adds in element order, so there the
sum is deterministic.

Index arithmetic: the planes are split into chunks, one per grid row, whose input and output each hold at most
``INDEX_CHUNK`` elements, so every per-element index within a chunk stays int32; only the chunk's base offset is
int64. A single plane must hold fewer than ``INDEX_CHUNK`` elements.

Layout: the kernels read and write contiguous NCHW. Channels-last or otherwise strided inputs are copied to
contiguous NCHW by the launch functions, and outputs are contiguous NCHW whatever the input's layout.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels.gpu_compile import CompileCase
from kernels.runtime import INTERPRET, autotune, check_device, interpreter_block

MAX_WINDOW_ELEMENTS = 256  # the arg-max offset inside a window is stored in one byte
INDEX_CHUNK = 2**30  # elements per grid row: keeps per-element indices (plus one tile) below 2**31
# The backward's path: the interpreter scatters from the outputs, the GPU gathers deterministically (see above).
# Tests switch it to check both paths in either mode.
SCATTER_BACKWARD = INTERPRET

# Memory-bound kernels: the tile size sets how many loads each thread has in flight. Three configs, so the
# autotuning cost (a compile each) stays small.
GPU_CONFIGS = [
    triton.Config({"BLOCK": 256}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK": 512}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK": 1024}, num_warps=4, num_stages=1),
]
TUNING_KEY = ["height", "width", "out_height", "out_width", "KERNEL_H", "KERNEL_W", "STRIDE_H", "STRIDE_W"]


def pooled_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """torch's output extent along one axis (dilation 1). With ``ceil_mode`` the last window must still start
    inside the input or the left padding, which can take one output back off the rounded-up count."""
    span = size + 2 * padding - kernel
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


@triton.jit
def widened(value):
    """fp16/bf16 widened to fp32 (exactly), fp32/fp64 unchanged: the forward compares and the backward sums in at
    least fp32 (the interpreter also compares bf16 wrongly)."""
    if value.dtype == tl.float64:
        return value
    else:
        return value.to(tl.float32)


@triton.jit
def plane_tile(planes, planes_per_chunk, plane_height, plane_width, BLOCK: tl.constexpr):
    """This program's tile of ``BLOCK`` elements of (planes, plane_height, plane_width), in grid row
    ``program_id(1)``'s chunk of planes. Returns ``(first_plane, in_chunk, plane, row, column, inside)``:
    the chunk's first plane (int64, for base offsets), each element's flat position in the chunk, its plane counted
    from the chunk's first, its row and column, and whether it exists."""
    plane_elements = plane_height * plane_width
    first_plane = tl.program_id(1) * planes_per_chunk
    in_chunk = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = in_chunk < tl.minimum(planes - first_plane, planes_per_chunk) * plane_elements
    plane = in_chunk // plane_elements
    in_plane = in_chunk % plane_elements
    return first_plane.to(tl.int64), in_chunk, plane, in_plane // plane_width, in_plane % plane_width, inside


@autotune(GPU_CONFIGS, key=TUNING_KEY)
@triton.jit
def max_pool2d_forward_kernel(
    input_pointer,  # (planes, height, width) contiguous, planes = batch * channels
    output_pointer,  # (planes, out_height, out_width) contiguous, same dtype as the input
    offset_pointer,  # (planes, out_height, out_width) uint8: arg-max position in its window, row-major
    indices_pointer,  # (planes, out_height, out_width) int64: arg-max as torch's flat index into its input plane
    planes,  # batch * channels
    planes_per_chunk,  # planes handled by one grid row (program_id(1)); see INDEX_CHUNK
    height, width,  # input plane extent
    out_height, out_width,  # output plane extent
    padding_h, padding_w,  # implicit -inf padding above/below and left/right
    KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr,  # window extent
    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,  # window step
    WRITE_INDICES: tl.constexpr,  # store indices (return_indices=True)
    BLOCK: tl.constexpr,  # outputs per program
):
    first_plane, in_chunk, plane, out_row, out_column, inside = plane_tile(planes, planes_per_chunk, out_height,
                                                                           out_width, BLOCK)
    top = out_row * STRIDE_H - padding_h
    left = out_column * STRIDE_W - padding_w
    # torch's scan starts at the window's first element inside the input (every window has one): it stays the
    # arg-max unless a later element is larger or NaN. Elements outside the input load as -inf, which never wins.
    best_offset = (tl.maximum(top, 0) - top) * KERNEL_W + (tl.maximum(left, 0) - left)
    best = widened(tl.full([BLOCK], float("-inf"), input_pointer.dtype.element_ty))
    plane_start = input_pointer + first_plane * (height * width) + plane * (height * width)
    for window_row in tl.static_range(KERNEL_H):
        row = top + window_row
        row_inside = inside & (row >= 0) & (row < height)
        row_start = plane_start + (row * width + left)
        for window_column in tl.static_range(KERNEL_W):
            valid = row_inside & (left >= -window_column) & (left < width - window_column)
            value = tl.load(row_start + window_column, mask=valid, other=float("-inf")).to(best.dtype)
            take = (value > best) | (value != value)
            best = tl.where(take, value, best)
            best_offset = tl.where(take, window_row * KERNEL_W + window_column, best_offset)

    out_start = first_plane * (out_height * out_width) + in_chunk
    tl.store(output_pointer + out_start, best.to(output_pointer.dtype.element_ty), mask=inside)
    tl.store(offset_pointer + out_start, best_offset.to(tl.uint8), mask=inside)
    if WRITE_INDICES:
        best_row = top + best_offset // KERNEL_W
        best_column = left + best_offset % KERNEL_W
        tl.store(indices_pointer + out_start, (best_row * width + best_column).to(tl.int64), mask=inside)


# Gather bounds, per axis (rows shown; columns are the same with width, KERNEL_W, STRIDE_W, padding_w).
# Output row r's window covers input rows [r * STRIDE_H - padding_h, r * STRIDE_H - padding_h + KERNEL_H). So input
# row h lies in window r iff
#     r * STRIDE_H <= h + padding_h <= r * STRIDE_H + KERNEL_H - 1
#     <=>  ceil((h + padding_h - KERNEL_H + 1) / STRIDE_H) <= r <= floor((h + padding_h) / STRIDE_H),
# clipped to [0, out_height - 1]. The lower bound is computed on max(h + padding_h - KERNEL_H + 1, 0) so every
# division has a non-negative numerator (integer division rounds the same way on the GPU and in the interpreter).
# At most ceil(KERNEL_H / STRIDE_H) rows qualify, so the loops below are static; the ones past the upper bound
# are masked off. Inside window r, input row h is at window row h + padding_h - r * STRIDE_H, which with the
# column gives the offset to compare with the saved arg-max. Windows are visited in increasing (r, c), the order
# torch's own backward sums them in.
@autotune(GPU_CONFIGS, key=TUNING_KEY)
@triton.jit
def max_pool2d_backward_kernel(
    grad_output_pointer,  # (planes, out_height, out_width) contiguous
    offset_pointer,  # (planes, out_height, out_width) uint8, as saved by the forward
    grad_input_pointer,  # (planes, height, width) contiguous, written in full
    planes,  # batch * channels
    planes_per_chunk,  # planes handled by one grid row (program_id(1)); see INDEX_CHUNK
    height, width,  # input plane extent
    out_height, out_width,  # output plane extent
    padding_h, padding_w,  # the forward's padding
    KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr,  # window extent
    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,  # window step
    BLOCK: tl.constexpr,  # input elements per program
):
    first_plane, in_chunk, plane, row, column, inside = plane_tile(planes, planes_per_chunk, height, width, BLOCK)
    first_out_row = (tl.maximum(row + padding_h - KERNEL_H + 1, 0) + STRIDE_H - 1) // STRIDE_H
    last_out_row = tl.minimum((row + padding_h) // STRIDE_H, out_height - 1)
    first_out_column = (tl.maximum(column + padding_w - KERNEL_W + 1, 0) + STRIDE_W - 1) // STRIDE_W
    last_out_column = tl.minimum((column + padding_w) // STRIDE_W, out_width - 1)

    total = widened(tl.zeros([BLOCK], grad_output_pointer.dtype.element_ty))
    out_plane = first_plane * (out_height * out_width) + plane * (out_height * out_width)
    for row_step in tl.static_range((KERNEL_H + STRIDE_H - 1) // STRIDE_H):
        out_row = first_out_row + row_step
        window_row = row + padding_h - out_row * STRIDE_H
        row_covers = inside & (out_row <= last_out_row)
        for column_step in tl.static_range((KERNEL_W + STRIDE_W - 1) // STRIDE_W):
            out_column = first_out_column + column_step
            window_column = column + padding_w - out_column * STRIDE_W
            covers = row_covers & (out_column <= last_out_column)
            out_index = out_plane + out_row * out_width + out_column
            arg_max = tl.load(offset_pointer + out_index, mask=covers, other=0).to(tl.int32)
            wins = covers & (arg_max == window_row * KERNEL_W + window_column)
            total += tl.load(grad_output_pointer + out_index, mask=wins, other=0.0).to(total.dtype)

    grad_input = total.to(grad_input_pointer.dtype.element_ty)
    tl.store(grad_input_pointer + first_plane * (height * width) + in_chunk, grad_input, mask=inside)


# Scatter: output (r, c) with saved offset o took its maximum from input (r * STRIDE_H - padding_h + o // KERNEL_W,
# c * STRIDE_W - padding_w + o % KERNEL_W), always inside the input (the forward never picks padding). The input
# gradient is the sum, over the outputs whose arg-max an element is, of their gradients: one atomic add per output.
@autotune(GPU_CONFIGS, key=TUNING_KEY, reset_to_zero=["grad_sum_pointer"])  # tuning runs must not add up
@triton.jit
def max_pool2d_backward_scatter_kernel(
    grad_output_pointer,  # (planes, out_height, out_width) contiguous
    offset_pointer,  # (planes, out_height, out_width) uint8, as saved by the forward
    grad_sum_pointer,  # (planes, height, width) contiguous fp32 (fp64 for fp64), zeroed; gradients are added in
    planes,  # batch * channels
    planes_per_chunk,  # planes handled by one grid row (program_id(1)); see INDEX_CHUNK
    height, width,  # input plane extent
    out_height, out_width,  # output plane extent
    padding_h, padding_w,  # the forward's padding
    KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr,  # window extent
    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,  # window step
    BLOCK: tl.constexpr,  # outputs per program
):
    first_plane, in_chunk, plane, out_row, out_column, inside = plane_tile(planes, planes_per_chunk, out_height,
                                                                           out_width, BLOCK)
    out_start = first_plane * (out_height * out_width) + in_chunk
    arg_max = tl.load(offset_pointer + out_start, mask=inside, other=0).to(tl.int32)
    row = out_row * STRIDE_H - padding_h + arg_max // KERNEL_W
    column = out_column * STRIDE_W - padding_w + arg_max % KERNEL_W
    grad = tl.load(grad_output_pointer + out_start, mask=inside, other=0.0).to(grad_sum_pointer.dtype.element_ty)
    grad_sum = grad_sum_pointer + first_plane * (height * width)
    tl.atomic_add(grad_sum + (plane * (height * width) + row * width + column), grad, mask=inside)


def _launch(kernel, tensors, planes: int, extents, walk_outputs: bool, **constexprs) -> None:
    """Launch ``kernel`` over ``planes`` planes, its programs owning output elements if ``walk_outputs``, else input
    elements. ``extents`` are (height, width, out_height, out_width, padding_h, padding_w). Grid rows take chunks
    of whole planes whose input and output each hold at most ``INDEX_CHUNK`` elements."""
    height, width, out_height, out_width = extents[:4]
    planes_per_chunk = max(1, min(planes, INDEX_CHUNK // max(height * width, out_height * out_width)))
    walked = planes_per_chunk * (out_height * out_width if walk_outputs else height * width)
    meta = {"BLOCK": interpreter_block(walked)} if INTERPRET else {}
    grid = lambda config: (triton.cdiv(walked, config["BLOCK"]), triton.cdiv(planes, planes_per_chunk))  # noqa: E731
    kernel[grid](*tensors, planes, planes_per_chunk, *extents, **constexprs, **meta)


def check_supported(input_shape, kernel_size: tuple[int, int]) -> None:
    """Refuse what the kernels cannot do: windows over ``MAX_WINDOW_ELEMENTS`` (the 1-byte offset), and planes of
    ``INDEX_CHUNK`` elements or more, or as many planes (the int32 indices within a chunk)."""
    if kernel_size[0] * kernel_size[1] > MAX_WINDOW_ELEMENTS:
        raise ValueError(f"kernel_size {tuple(kernel_size)} has {kernel_size[0] * kernel_size[1]} elements; the "
                         f"Triton max_pool2d saves the arg-max's position in its window in one byte, so windows are "
                         f"limited to {MAX_WINDOW_ELEMENTS} elements (use provider='torch' for larger ones)")
    if input_shape[-2] * input_shape[-1] >= INDEX_CHUNK:
        raise ValueError(f"input planes of {input_shape[-2]} x {input_shape[-1]} elements are too large for the "
                         f"Triton max_pool2d (at most {INDEX_CHUNK - 1} elements per plane)")
    if input_shape[0] * input_shape[1] >= INDEX_CHUNK:
        raise ValueError(f"input has {input_shape[0]} x {input_shape[1]} (batch x channels) planes, too many for the "
                         f"Triton max_pool2d (at most {INDEX_CHUNK - 1})")


def max_pool2d_forward(input: torch.Tensor, kernel_size: tuple[int, int], stride: tuple[int, int],
                       padding: tuple[int, int], ceil_mode: bool, return_indices: bool):
    """``(output, offsets, indices)`` for an (N, C, H, W) ``input``: the pooled maxima, the uint8 arg-max offset in
    each window (what the backward needs), and torch's int64 indices if ``return_indices`` (else None). Outputs
    are contiguous NCHW; a non-contiguous (e.g. channels-last) input is made contiguous first."""
    check_device("input", input)
    check_supported(input.shape, kernel_size)
    batch, channels, height, width = input.shape
    out_height = pooled_size(height, kernel_size[0], stride[0], padding[0], ceil_mode)
    out_width = pooled_size(width, kernel_size[1], stride[1], padding[1], ceil_mode)
    shape = (batch, channels, out_height, out_width)
    output = torch.empty(shape, device=input.device, dtype=input.dtype)
    offsets = torch.empty(shape, device=input.device, dtype=torch.uint8)
    indices = torch.empty(shape, device=input.device, dtype=torch.int64) if return_indices else None
    if output.numel() == 0:
        return output, offsets, indices
    _launch(max_pool2d_forward_kernel, (input.contiguous(), output, offsets, indices), batch * channels,
            (height, width, out_height, out_width, *padding), walk_outputs=True, KERNEL_H=kernel_size[0],
            KERNEL_W=kernel_size[1], STRIDE_H=stride[0], STRIDE_W=stride[1], WRITE_INDICES=return_indices)
    return output, offsets, indices


def max_pool2d_backward(grad_output: torch.Tensor, offsets: torch.Tensor, input_shape, kernel_size: tuple[int, int],
                        stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """The input gradient (contiguous NCHW of ``input_shape``) from the output gradient and the forward's offsets."""
    batch, channels, height, width = input_shape
    out_height, out_width = offsets.shape[-2:]
    extents = (height, width, out_height, out_width, *padding)
    window = dict(KERNEL_H=kernel_size[0], KERNEL_W=kernel_size[1], STRIDE_H=stride[0], STRIDE_W=stride[1])
    if math.prod(input_shape) == 0:
        return torch.empty(input_shape, device=grad_output.device, dtype=grad_output.dtype)
    if SCATTER_BACKWARD:
        sum_dtype = torch.float64 if grad_output.dtype == torch.float64 else torch.float32
        grad_sum = torch.zeros(input_shape, device=grad_output.device, dtype=sum_dtype)
        _launch(max_pool2d_backward_scatter_kernel, (grad_output.contiguous(), offsets, grad_sum), batch * channels,
                extents, walk_outputs=True, **window)
        return grad_sum.to(grad_output.dtype)
    grad_input = torch.empty(input_shape, device=grad_output.device, dtype=grad_output.dtype)
    _launch(max_pool2d_backward_kernel, (grad_output.contiguous(), offsets, grad_input), batch * channels, extents,
            walk_outputs=False, **window)
    return grad_input


def compile_cases() -> list[CompileCase]:
    """The three kernels at AlexNet's pooling (3x3 windows, stride 2), every GPU config, fp32/fp16/bf16 (the
    scatter into its fp32 sum); the forward also with ``return_indices``. The scatter is the interpreter's default,
    compiled here so that it stays usable on a GPU (``SCATTER_BACKWARD``)."""
    extents = {name: "i32" for name in ("planes", "planes_per_chunk", "height", "width", "out_height", "out_width",
                                        "padding_h", "padding_w")}
    window = {"KERNEL_H": 3, "KERNEL_W": 3, "STRIDE_H": 2, "STRIDE_W": 2}
    constexpr = {name: "constexpr" for name in window}
    cases = []
    for dtype in ("fp32", "fp16", "bf16"):
        for config in GPU_CONFIGS:
            for write_indices in (False, True) if dtype == "fp32" else (False,):
                cases.append(CompileCase(
                    "max_pool2d_forward", max_pool2d_forward_kernel,
                    {"input_pointer": f"*{dtype}", "output_pointer": f"*{dtype}", "offset_pointer": "*u8",
                     "indices_pointer": "*i64", **extents, **constexpr, "WRITE_INDICES": "constexpr",
                     "BLOCK": "constexpr"},
                    {**window, "WRITE_INDICES": write_indices, **config.kwargs}, dtype, config.num_warps,
                    config.num_stages))
            cases.append(CompileCase(
                "max_pool2d_backward", max_pool2d_backward_kernel,
                {"grad_output_pointer": f"*{dtype}", "offset_pointer": "*u8", "grad_input_pointer": f"*{dtype}",
                 **extents, **constexpr, "BLOCK": "constexpr"},
                {**window, **config.kwargs}, dtype, config.num_warps, config.num_stages))
            cases.append(CompileCase(
                "max_pool2d_backward_scatter", max_pool2d_backward_scatter_kernel,
                {"grad_output_pointer": f"*{dtype}", "offset_pointer": "*u8", "grad_sum_pointer": "*fp32",
                 **extents, **constexpr, "BLOCK": "constexpr"},
                {**window, **config.kwargs}, dtype, config.num_warps, config.num_stages))
    return cases
