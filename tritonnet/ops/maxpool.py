"""2-D max pooling with torch's semantics (padding with -inf, ceil_mode, return_indices)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonnet.ops._checks import as_pair, check_tensor
from tritonnet.registry import lookup, register

OP = "max_pool2d"


def max_pool2d(input: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False, *, provider: str | None = None):
    """``torch.nn.functional.max_pool2d`` with a choice of provider. ``input`` is (N, C, H, W) or (C, H, W)."""
    check_tensor("input", input, ndim=(3, 4), layout="N, C, H, W or C, H, W")
    kernel_size = as_pair("kernel_size", kernel_size, minimum=1)
    stride = kernel_size if stride is None or stride == [] or stride == () else as_pair("stride", stride, minimum=1)
    padding = as_pair("padding", padding, minimum=0)
    dilation = as_pair("dilation", dilation, minimum=1)
    for axis in range(2):
        if padding[axis] > kernel_size[axis] // 2:
            raise ValueError(f"padding must be at most half of kernel_size, got padding={padding} for "
                             f"kernel_size={kernel_size}")
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
