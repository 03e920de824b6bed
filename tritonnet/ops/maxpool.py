"""2-D max pooling with torch's semantics (padding with -inf, ceil_mode, return_indices, NaN propagation).

The "triton" provider saves only a uint8 arg-max offset per output for the backward (see ``kernels/maxpool.py``).
Its limits, refused with a ValueError: dilation 1 only, windows of at most 256 elements. Its outputs are contiguous
NCHW even for a channels-last input (torch keeps channels-last); the values and indices are the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from kernels import maxpool as kernels
from tritonnet.ops._checks import as_pair, check_tensor
from tritonnet.registry import lookup, register

OP = "max_pool2d"


def max_pool2d(input: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False, *, provider: str | None = None):
    """``torch.nn.functional.max_pool2d`` with a choice of provider. ``input`` is (N, C, H, W) or (C, H, W)."""
    check_tensor("input", input, ndim=(3, 4), layout="N, C, H, W or C, H, W")
    if 0 in input.shape[-3:]:
        raise ValueError(f"input must have non-zero channels, height and width (only the batch may be empty), got "
                         f"shape {tuple(input.shape)}")
    kernel_size = as_pair("kernel_size", kernel_size, minimum=1)
    stride = kernel_size if stride is None or stride == [] or stride == () else as_pair("stride", stride, minimum=1)
    padding = as_pair("padding", padding, minimum=0)
    dilation = as_pair("dilation", dilation, minimum=1)
    for axis in range(2):  # torch's rule: at most half the dilated window
        if padding[axis] > (dilation[axis] * (kernel_size[axis] - 1) + 1) // 2:
            raise ValueError(f"padding must be at most half of kernel_size (dilated), got padding={padding} for "
                             f"kernel_size={kernel_size} and dilation={dilation}")
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"ceil_mode must be a bool, got {ceil_mode!r}")
    if not isinstance(return_indices, bool):
        raise TypeError(f"return_indices must be a bool, got {return_indices!r}")
    for axis, name in enumerate(("height", "width")):
        extent = input.shape[-2 + axis] + 2 * padding[axis]
        if extent < dilation[axis] * (kernel_size[axis] - 1) + 1:
            raise ValueError(f"input {name} {input.shape[-2 + axis]} with padding {padding[axis]} is smaller than "
                             f"the window ({kernel_size[axis]}); the output would be empty")
    return lookup(OP, provider)(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


@register(OP, "torch")
def torch_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    return F.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode,
                        return_indices=return_indices)


class MaxPool2dFunction(torch.autograd.Function):
    """Forward in one pass saving a uint8 arg-max offset per output; backward from those offsets (a gather over input
    elements on a GPU, a scatter from output elements in the interpreter)."""

    @staticmethod
    def forward(ctx, input, kernel_size, stride, padding, ceil_mode, return_indices):
        output, offsets, indices = kernels.max_pool2d_forward(input, kernel_size, stride, padding, ceil_mode,
                                                              return_indices)
        ctx.save_for_backward(offsets)
        ctx.input_shape = input.shape
        ctx.window = (kernel_size, stride, padding)
        if indices is None:
            return output
        ctx.mark_non_differentiable(indices)
        return output, indices

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output, grad_indices=None):
        (offsets,) = ctx.saved_tensors
        grad_input = kernels.max_pool2d_backward(grad_output, offsets, ctx.input_shape, *ctx.window)
        return grad_input, None, None, None, None, None


@register(OP, "triton")
def triton_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    if dilation != (1, 1):
        raise ValueError(f"dilation must be 1 for the Triton max_pool2d, got dilation={dilation} "
                         f"(use provider='torch' for dilated pooling)")
    unbatched = input.dim() == 3
    result = MaxPool2dFunction.apply(input.unsqueeze(0) if unbatched else input, kernel_size, stride, padding,
                                     ceil_mode, return_indices)
    if unbatched:
        result = tuple(part.squeeze(0) for part in result) if return_indices else result.squeeze(0)
    return result
