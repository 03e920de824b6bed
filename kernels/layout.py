"""Addressing tensors through their strides: a launch's dims collapsed to the few a kernel walks.

An elementwise-style kernel (dropout, LRN's positions) walks a flat index over ``DIMS`` dims, outermost first, and
addresses each tensor as ``sum_d coordinate[d] * stride[d]`` with that tensor's own strides. Before the launch,
:func:`collapse_dims` orders the dims as a reference tensor lies in memory (its largest stride first), drops dims of
size 1, and merges neighbours that every tensor can walk as one (``stride[outer] == stride[inner] * size[inner]``),
so a contiguous or channels-last tensor usually becomes one or two dims, and any strides (expanded, sliced,
transposed) cost no copy. Walking the reference's memory order keeps a program's accesses contiguous wherever the
reference is.

On a GPU, Triton specialises an integer argument equal to 1 as a constant, so sizes of 1 and unit strides fold away
in the index arithmetic of the common layouts.
"""

from __future__ import annotations

from typing import Sequence

import triton
import triton.language as tl

# The dims a kernel addresses: enough for any 4-D tensor (NCHW in any layout, with any strides) and for anything of
# more dims whose strides merge down to it.
DIMS = 4


def collapse_dims(sizes: Sequence[int], strides: Sequence[Sequence[int]]) -> tuple[list[int], list[list[int]]] | None:
    """``(sizes, strides per tensor)`` of the dims of a launch over ``sizes``, ordered as ``strides[0]`` lies in
    memory (largest stride first), with size-1 dims dropped and neighbours merged where every tensor allows, padded
    at the front to :data:`DIMS` dims of size 1. ``None`` if more than :data:`DIMS` dims remain."""
    kept = [dim for dim, size in enumerate(sizes) if size != 1]
    kept.sort(key=lambda dim: -abs(strides[0][dim]))  # stable: ties keep the logical order
    merged_sizes: list[int] = []
    merged_strides: list[list[int]] = [[] for _ in strides]
    for dim in kept:
        if merged_sizes and all(tensor[-1] == tensor_strides[dim] * sizes[dim]
                                for tensor, tensor_strides in zip(merged_strides, strides)):
            merged_sizes[-1] *= sizes[dim]
            for tensor, tensor_strides in zip(merged_strides, strides):
                tensor[-1] = tensor_strides[dim]
        else:
            merged_sizes.append(sizes[dim])
            for tensor, tensor_strides in zip(merged_strides, strides):
                tensor.append(tensor_strides[dim])
    if len(merged_sizes) > DIMS:
        return None
    padding = DIMS - len(merged_sizes)
    return [1] * padding + merged_sizes, [[0] * padding + tensor for tensor in merged_strides]


def contiguous_strides(sizes: Sequence[int]) -> list[int]:
    """The strides of a row-major tensor of ``sizes``: each element's logical (flat, row-major) index."""
    strides, step = [], 1
    for size in reversed(sizes):
        strides.append(step)
        step *= size
    return strides[::-1]


def may_overlap(sizes: Sequence[int], strides: Sequence[int]) -> bool:
    """Whether two elements may share memory: false when each dim's stride clears the extent of all smaller-stride
    dims (a sufficient test; expanded tensors, with stride 0, fail it)."""
    extent = 0
    for size, stride in sorted(((size, abs(stride)) for size, stride in zip(sizes, strides) if size > 1),
                               key=lambda pair: pair[1]):
        if stride <= extent:
            return True
        extent += (size - 1) * stride
    return False


# The largest tile of flat indices a kernel walks with (the last program's tile runs past the count).
MAX_INDEX_BLOCK = 1 << 20


def needs_wide_index(count: int) -> bool:
    """Whether a flat index over ``count`` elements, in tiles of up to :data:`MAX_INDEX_BLOCK`, needs 64 bits
    (kernels divide it in 32 bits otherwise: a 64-bit division is a long software sequence on a GPU)."""
    return count + MAX_INDEX_BLOCK >= 2**31


@triton.jit
def program_indices(BLOCK: tl.constexpr, WIDE_INDEX: tl.constexpr):
    """This program's ``BLOCK`` flat indices, in int64 when ``WIDE_INDEX`` (see :func:`needs_wide_index`)."""
    first = tl.program_id(0)
    if WIDE_INDEX:
        first = first.to(tl.int64)
    return first * BLOCK + tl.arange(0, BLOCK)


@triton.jit
def coordinates(index, size1, size2, size3):
    """The four coordinates (outermost first) of flat ``index`` over dims of sizes ``(*, size1, size2, size3)``."""
    coordinate3 = index % size3
    index = index // size3
    coordinate2 = index % size2
    index = index // size2
    return index // size1, index % size1, coordinate2, coordinate3


@triton.jit
def strided_offset(coordinate0, coordinate1, coordinate2, coordinate3, stride0, stride1, stride2, stride3):
    """The (int64) memory offset of the element at these coordinates, in a tensor with these strides."""
    return (coordinate0.to(tl.int64) * stride0 + coordinate1.to(tl.int64) * stride1
            + coordinate2.to(tl.int64) * stride2 + coordinate3.to(tl.int64) * stride3)
