"""2-D max pooling with torch's semantics: padding with -inf, dilation, ceil_mode, return_indices, NaN propagation
(a window with a NaN pools to NaN, and its index points at the window's last NaN), and torch's errors.

The "triton" provider saves only a uint8 arg-max offset per output for the backward (see ``kernels/maxpool.py``),
so its windows are limited to 256 elements (refused with a ValueError beyond that; dilation does not count). It
reads any input strides without a copy and returns outputs, indices and the input gradient in the memory format
torch gives them (channels-last for a channels-last input).

Double backward: the backward is linear in the output gradient, ``grad_input = S grad_output`` with ``S`` sending
each output's gradient to its arg-max. So the gradient of ``grad_input`` with respect to ``grad_output`` is
``S^T``: each output picks the incoming gradient at its arg-max (:func:`_select_at_arg_max`, a torch gather on the
indices rebuilt from the saved offsets). With respect to the input it is zero (the arg-max is piecewise constant),
which autograd reports as unused (None) rather than as a tensor of zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonnet.kernels.maxpool import max_pool2d_backward, max_pool2d_forward, output_memory_format, pooled_size
from tritonnet.ops._checks import as_pair, check_tensor
from tritonnet.ops._library import fake_or_recorded, operator, placeholder
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
    if padding[0] > kernel_size[0] // 2 or padding[1] > kernel_size[1] // 2:  # torch's rule: the undilated kernel
        raise ValueError(f"padding must be at most half of kernel_size, got padding={padding} for "
                         f"kernel_size={kernel_size}")
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"ceil_mode must be a bool, got {ceil_mode!r}")
    if not isinstance(return_indices, bool):
        raise TypeError(f"return_indices must be a bool, got {return_indices!r}")
    out_size = tuple(pooled_size(input.shape[-2 + axis], kernel_size[axis], stride[axis], padding[axis],
                                 dilation[axis], ceil_mode) for axis in range(2))
    if min(out_size) < 1:
        raise ValueError(f"input of height x width {tuple(input.shape[-2:])} with padding {padding} is smaller than "
                         f"the window (kernel_size {kernel_size}, dilation {dilation}): the output size "
                         f"{out_size} is too small")
    return lookup(OP, provider)(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


@register(OP, "torch")
def torch_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    return F.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode,
                        return_indices=return_indices)


def _select_at_arg_max(values: torch.Tensor, offsets: torch.Tensor, kernel_size, stride, padding,
                       dilation) -> torch.Tensor:
    """Each output's arg-max element of ``values`` (shaped like the input): ``S^T values``. A window holding no
    input element selects 0, as its gradient went nowhere."""
    height, width = values.shape[-2:]
    out_height, out_width = offsets.shape[-2:]
    window = offsets.long()
    rows = (torch.arange(out_height, device=offsets.device)[:, None] * stride[0] - padding[0]
            + window // kernel_size[1] * dilation[0])
    columns = (torch.arange(out_width, device=offsets.device) * stride[1] - padding[1]
               + window % kernel_size[1] * dilation[1])
    inside = (rows < height) & (columns < width)
    flat_index = torch.where(inside, rows * width + columns, 0).flatten(-2)
    selected = values.flatten(-2).gather(-1, flat_index).view(offsets.shape)
    return torch.where(inside, selected, torch.zeros((), dtype=values.dtype, device=values.device))


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


@operator("max_pool2d_forward", mutates_args=())
def max_pool2d_forward_op(input: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
                          dilation: list[int], ceil_mode: bool, return_indices: bool,
                          channels_last: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.ops.tritonnet.max_pool2d_forward``: :func:`tritonnet.kernels.maxpool.max_pool2d_forward`'s output, uint8
    arg-max offsets and (with ``return_indices``, else an empty placeholder) int64 indices, channels-last or
    contiguous."""
    output, offsets, indices = max_pool2d_forward(input, tuple(kernel_size), tuple(stride), tuple(padding),
                                                  tuple(dilation), ceil_mode, return_indices,
                                                  _memory_format(channels_last))
    return output, offsets, placeholder(offsets.long()) if indices is None else indices


@fake_or_recorded(max_pool2d_forward_op)
def _max_pool2d_forward_fake(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                             channels_last):
    batch, channels, height, width = input.shape
    shape = (batch, channels, *(pooled_size(input.shape[2 + axis], kernel_size[axis], stride[axis], padding[axis],
                                            dilation[axis], ceil_mode) for axis in range(2)))
    like = dict(device=input.device, memory_format=_memory_format(channels_last))
    indices = (torch.empty(shape, dtype=torch.int64, **like) if return_indices
               else torch.empty(0, dtype=torch.int64, device=input.device))
    return torch.empty(shape, dtype=input.dtype, **like), torch.empty(shape, dtype=torch.uint8, **like), indices


@operator("max_pool2d_backward", mutates_args=())
def max_pool2d_backward_op(grad_output: torch.Tensor, offsets: torch.Tensor, input_shape: list[int],
                           kernel_size: list[int], stride: list[int], padding: list[int], dilation: list[int],
                           channels_last: bool) -> torch.Tensor:
    """``torch.ops.tritonnet.max_pool2d_backward``: :func:`tritonnet.kernels.maxpool.max_pool2d_backward`, the input
    gradient from the output gradient and the forward's offsets. Differentiable in ``grad_output`` (see the module
    docstring)."""
    return max_pool2d_backward(grad_output, offsets, tuple(input_shape), tuple(kernel_size), tuple(stride),
                               tuple(padding), tuple(dilation), _memory_format(channels_last))


@fake_or_recorded(max_pool2d_backward_op)
def _max_pool2d_backward_fake(grad_output, offsets, input_shape, kernel_size, stride, padding, dilation,
                              channels_last):
    return torch.empty(input_shape, dtype=grad_output.dtype, device=grad_output.device,
                       memory_format=_memory_format(channels_last))


def _max_pool2d_backward_context(ctx, inputs, output):
    grad_output, offsets, input_shape, kernel_size, stride, padding, dilation, channels_last = inputs
    ctx.save_for_backward(offsets)
    ctx.window = (kernel_size, stride, padding, dilation)


def _max_pool2d_double_backward(ctx, grad_grad_input):
    (offsets,) = ctx.saved_tensors
    return _select_at_arg_max(grad_grad_input, offsets, *ctx.window), None, None, None, None, None, None, None


max_pool2d_backward_op.register_autograd(_max_pool2d_double_backward, setup_context=_max_pool2d_backward_context)


class MaxPool2dFunction(torch.autograd.Function):
    """Forward in one pass saving a uint8 arg-max offset per output; backward from those offsets (a gather over input
    elements on a GPU, a scatter from output elements in the interpreter), itself differentiable."""

    @staticmethod
    def forward(ctx, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, channels_last):
        output, offsets, indices = max_pool2d_forward_op(input, kernel_size, stride, padding, dilation, ceil_mode,
                                                         return_indices, channels_last)
        _max_pool2d_setup_context(ctx, input, offsets, (kernel_size, stride, padding, dilation), channels_last)
        if not return_indices:
            return output
        ctx.mark_non_differentiable(indices)
        return output, indices

    @staticmethod
    def backward(ctx, grad_output, grad_indices=None):
        return _max_pool2d_gradient(ctx, grad_output), None, None, None, None, None, None, None


def _max_pool2d_setup_context(ctx, input, offsets, window, channels_last):
    """What the backward keeps, for :class:`MaxPool2dFunction` and the registered ``tritonnet::max_pool2d``."""
    ctx.save_for_backward(offsets)
    ctx.input_shape = input.shape
    ctx.window = window
    ctx.channels_last = channels_last


def _max_pool2d_gradient(ctx, grad_output):
    (offsets,) = ctx.saved_tensors
    return max_pool2d_backward_op(grad_output, offsets, list(ctx.input_shape), *ctx.window, ctx.channels_last)


@operator("max_pool2d", mutates_args=())
def max_pool2d_op(input: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
                  dilation: list[int], ceil_mode: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.ops.tritonnet.max_pool2d``, differentiable by itself: the pooled output (in torch's memory format)
    and the uint8 arg-max offsets its backward reads (non-differentiable, as aten's max_pool2d_with_indices returns
    its indices). 4-D input."""
    output, offsets, _ = max_pool2d_forward(input, tuple(kernel_size), tuple(stride), tuple(padding),
                                            tuple(dilation), ceil_mode, False, output_memory_format(input))
    return output, offsets


@fake_or_recorded(max_pool2d_op)
def _max_pool2d_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    channels_last = output_memory_format(input) == torch.channels_last
    return _max_pool2d_forward_fake(input, kernel_size, stride, padding, dilation, ceil_mode, False, channels_last)[:2]


def _max_pool2d_op_context(ctx, inputs, output):
    input, kernel_size, stride, padding, dilation, _ = inputs
    ctx.mark_non_differentiable(output[1])
    _max_pool2d_setup_context(ctx, input, output[1], (kernel_size, stride, padding, dilation),
                              output_memory_format(input) == torch.channels_last)


def _max_pool2d_op_backward(ctx, grad_output, grad_offsets):
    return _max_pool2d_gradient(ctx, grad_output), None, None, None, None, None


max_pool2d_op.register_autograd(_max_pool2d_op_backward, setup_context=_max_pool2d_op_context)


@register(OP, "triton")
def triton_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    unbatched = input.dim() == 3
    # torch returns contiguous outputs for an unbatched input whatever its strides.
    channels_last = not unbatched and output_memory_format(input) == torch.channels_last
    result = MaxPool2dFunction.apply(input.unsqueeze(0) if unbatched else input, list(kernel_size), list(stride),
                                     list(padding), list(dilation), ceil_mode, return_indices, channels_last)
    if unbatched:
        result = tuple(part.squeeze(0) for part in result) if return_indices else result.squeeze(0)
    return result
