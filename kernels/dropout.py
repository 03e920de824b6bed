"""Dropout with Philox random numbers generated in the kernel: nothing of the input's size is stored.

The scheme, shared with every kernel that fuses dropout (linear's epilogue): element ``i`` of a tensor (its flat,
row-major index in the logical shape) survives iff ``tl.rand(seed, i) >= p``; survivors are scaled by
``1 / (1 - p)``. The mask is a function of (seed, logical index), not of where the element lies in memory: a
channels-last, transposed, sliced or expanded tensor drops the same elements as its contiguous copy, and the
backward, whatever the strides of the gradient it receives, regenerates exactly the forward's mask. So a fused
dropout and a standalone dropout over the same output, with the same seed, drop exactly the same elements.

The kernel walks the elements in the output's memory order (coalesced), addresses the input and the output through
their own strides and computes each element's logical index from its coordinates (``kernels/layout.py``): no copy
for any layout, and the output keeps the input's memory format (``torch.empty_like``), as torch's dropout does.

The index may be int32 or int64: since triton 3.4 (triton-lang/triton#6832) ``tl.rand`` runs the 32-bit Philox for
both, a 64-bit offset filling two counter words with its halves, so both give the same mask wherever an int32 index
reaches. (Older triton ran a 64-bit Philox for int64 offsets: a different stream.) The standalone kernel indexes in
int64, so any size works.

The seed is a 0-D int64 tensor on the kernel's device, which the kernel loads: drawn in a graph anew each call, it
stays data in a traced graph rather than a constant read on the host (tritonnet/ops/_library.py).

The scale ``1 / (1 - p)`` is rounded to fp32 and the product computed in fp32 (fp64 for fp64), as torch's CUDA
kernel does; ``p == 1`` scales by 0 instead of dividing by 0. A multiply, not a select, so NaN and inf propagate as
in torch (a dropped inf or NaN becomes NaN).
"""

import torch
import triton
import triton.language as tl

from .layout import collapse_dims, contiguous_strides, coordinates, may_overlap, needs_wide_index, \
    program_indices, strided_offset
from .runtime import INTERPRET, autotune, check_device, gpu_configs, interpreter_block, launcher

# An elementwise kernel: 1024 elements per program (8 per thread, 16-byte accesses in fp16) is near the best block
# on every recent GPU, so one config (the autotuner does not time it, so an in-place launch is never replayed).
GPU_CONFIGS = gpu_configs(("BLOCK",), [(1024, 4, 1)])


@triton.jit
def dropout_keep(seed, index, p):
    """True where element ``index`` survives dropout with probability ``p`` under ``seed``."""
    return tl.rand(seed, index) >= p


@autotune(GPU_CONFIGS, key=["numel"])
@triton.jit
def dropout_kernel(
    input_pointer,  # numel elements, read through input_stride0..3
    output_pointer,  # numel elements, same dtype, written through output_stride0..3 (may be input_pointer: in place)
    numel,  # number of elements
    size1, size2, size3,  # the walk's dims after the outermost (kernels/layout.py), in the output's memory order
    input_stride0, input_stride1, input_stride2, input_stride3,  # the input's stride along each dim of the walk
    output_stride0, output_stride1, output_stride2, output_stride3,  # the output's
    index_stride0, index_stride1, index_stride2, index_stride3,  # the logical (row-major) index's
    p,  # probability of dropping an element
    scale,  # 1 / (1 - p), or 0 when p == 1
    seed_pointer,  # the Philox seed of this dropout call: one int64
    BLOCK: tl.constexpr,  # elements per program
    WIDE_INDEX: tl.constexpr,  # the flat index in int64 (kernels/layout.py: needs_wide_index)
):
    """``output[i] = input[i] * keep(i) * scale`` with ``i`` the logical index. The forward applies it to the input,
    the backward to the output's gradient with the same seed: the same mask."""
    flat = program_indices(BLOCK, WIDE_INDEX)
    inside = flat < numel
    coordinate0, coordinate1, coordinate2, coordinate3 = coordinates(flat, size1, size2, size3)
    value = tl.load(input_pointer + strided_offset(coordinate0, coordinate1, coordinate2, coordinate3, input_stride0,
                                                   input_stride1, input_stride2, input_stride3), mask=inside)
    index = strided_offset(coordinate0, coordinate1, coordinate2, coordinate3, index_stride0, index_stride1,
                           index_stride2, index_stride3)
    factor = dropout_keep(tl.load(seed_pointer), index, p).to(tl.float32) * scale
    output_offset = strided_offset(coordinate0, coordinate1, coordinate2, coordinate3, output_stride0, output_stride1,
                                   output_stride2, output_stride3)
    tl.store(output_pointer + output_offset, (value * factor).to(output_pointer.dtype.element_ty), mask=inside)


def apply_dropout(input: torch.Tensor, p: float, seed: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
    """``input`` with seed ``seed``'s dropout mask for probability ``p`` applied (0 < p <= 1; ``seed`` a 0-D int64
    tensor on the input's device), in any layout: the result has the input's memory format (``torch.empty_like``);
    with ``inplace`` it is written into ``input``, which is returned. The mask follows the logical row-major index."""
    check_device("input", input)
    if inplace and may_overlap(input.shape, input.stride()):
        raise ValueError("input has elements sharing memory (an expanded tensor), so dropout cannot write it in "
                         "place; clone() it first or pass inplace=False")
    output = input if inplace else torch.empty_like(input)
    numel = input.numel()
    if numel == 0:
        return output
    layout = collapse_dims(input.shape, [output.stride(), input.stride(), contiguous_strides(input.shape)])
    if layout is None:  # more dims than the kernel addresses (kernels/layout.py): walk a contiguous copy
        output.copy_(apply_dropout(input.contiguous(), p, seed))
        return output
    sizes, (output_strides, input_strides, index_strides) = layout
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    meta = {"WIDE_INDEX": needs_wide_index(numel)} | ({"BLOCK": interpreter_block(numel)} if INTERPRET else {})
    grid = lambda tiles: (triton.cdiv(numel, tiles["BLOCK"]),)  # noqa: E731
    launcher(dropout_kernel)[grid](input, output, numel, *sizes[1:], *input_strides, *output_strides, *index_strides,
                                   p, scale, seed, **meta)
    return output
