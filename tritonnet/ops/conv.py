"""2-D convolution (cross-correlation, as torch) with bias and an optional fused ReLU.

The "triton" provider runs all three passes in Triton (kernels/conv.py): the forward with bias and ReLU fused, the
input gradient and the weight gradient (bias gradient fused) as implicit GEMMs, with ReLU's mask read from the saved
output inside the gradient kernels. NCHW and channels-last inputs both run natively, and the weight and bias are read
in whatever layout they come (the kernels take strides; no launch copies them); other input layouts are made
contiguous first. The output and input gradient come back channels-last when the input or the weight is, as
torch's do, and the weight gradient in the weight's format. On a GPU channels-last is the fast layout (input and
weight channels-last, as ``model.to(memory_format=torch.channels_last)`` leaves a net: channel chunks load as
vectors; see kernels/conv.py). The backward refuses ``create_graph=True`` (see Conv2dFunction). 3-D (unbatched) input
works as in torch. Any stride, padding (per side, so padding='same' with even kernels works), dilation and
groups; fp32, fp16, bf16 on GPU, and fp64 in the interpreter (where bf16 runs in fp32). Under torch.autocast
the operands are cast as torch's conv2d's are (see _precision.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonnet.kernels.conv import conv2d_backward, conv2d_forward, dense_format, output_size, result_format
from tritonnet.kernels.runtime import INTERPRET, check_device
from tritonnet.ops._checks import as_pair, check_int, check_like, check_tensor
from tritonnet.ops._library import asked_for, fake_or_recorded, operator, placeholder
from tritonnet.ops._precision import autocast_operands, computes_in_fp32, in_fp32
from tritonnet.registry import lookup, register

OP = "conv2d"


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1, *, relu: bool = False, provider: str | None = None) -> torch.Tensor:
    """``torch.nn.functional.conv2d``; with ``relu=True`` returns ``relu(conv2d(...))`` computed in one kernel.

    ``input`` is (N, C_in, H, W) or (C_in, H, W); ``weight`` is (C_out, C_in / groups, kH, kW).
    """
    check_tensor("input", input, ndim=(3, 4), layout="N, C_in, H, W or C_in, H, W")
    check_tensor("weight", weight, ndim=4, layout="C_out, C_in / groups, kH, kW")
    if bias is not None:
        check_tensor("bias", bias, ndim=1, layout="C_out")
    input, weight, bias = autocast_operands(input, weight, bias)
    check_like("weight", weight, "input", input)
    groups = check_int("groups", groups, minimum=1)
    if 0 in weight.shape:
        raise ValueError(f"weight must have at least one element in every dimension (as torch requires), got shape "
                         f"{tuple(weight.shape)}")
    out_channels, channels_per_group = weight.shape[0], weight.shape[1]
    in_channels = input.shape[-3]
    if out_channels % groups != 0:
        raise ValueError(f"weight's out channels ({out_channels}) must be divisible by groups ({groups})")
    if in_channels != channels_per_group * groups:
        raise ValueError(f"input has {in_channels} channels but weight expects {channels_per_group} x groups "
                         f"({groups}) = {channels_per_group * groups}")
    if bias is not None:
        check_like("bias", bias, "input", input)
        if bias.shape[0] != out_channels:
            raise ValueError(f"bias must have {out_channels} elements (weight's out channels), got {bias.shape[0]}")
    stride = as_pair("stride", stride, minimum=1)
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise ValueError("padding='same' needs stride 1, as in torch")
            padding = "same"
        else:
            raise ValueError(f"padding must be an int, a pair of ints, 'valid' or 'same'; got {padding!r}")
    else:
        padding = as_pair("padding", padding, minimum=0)
    dilation = as_pair("dilation", dilation, minimum=1)
    if not isinstance(relu, bool):
        raise TypeError(f"relu must be a bool, got {relu!r}")
    if padding != "same":
        for axis, name in enumerate(("height", "width")):
            extent = input.shape[-2 + axis] + 2 * padding[axis]
            window = dilation[axis] * (weight.shape[2 + axis] - 1) + 1
            if extent < window:
                raise ValueError(f"kernel {name} ({weight.shape[2 + axis]}) is larger than the padded input {name} "
                                 f"({extent})")
    return lookup(OP, provider)(input, weight, bias, stride, padding, dilation, groups, relu)


@register(OP, "torch")
def torch_conv2d(input, weight, bias, stride, padding, dilation, groups, relu):
    output = F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    return F.relu(output) if relu else output


def padding_sides(padding, kernel_size, dilation) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for a (height, width) padding pair or "same" (torch's rule: the odd unit of an
    even total goes after, i.e. bottom/right)."""
    if padding != "same":
        return (padding[0], padding[0], padding[1], padding[1])
    sides = []
    for kernel, spacing in zip(kernel_size, dilation):
        total = spacing * (kernel - 1)
        sides += [total // 2, total - total // 2]
    return tuple(sides)


@operator("conv2d_forward", mutates_args=())
def conv2d_forward_op(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int],
                      padding: list[int], dilation: list[int], groups: int, relu: bool) -> torch.Tensor:
    """``torch.ops.tritonnet.conv2d_forward``: :func:`tritonnet.kernels.conv.conv2d_forward` (4-D input; ``padding`` is
    (top, bottom, left, right))."""
    return conv2d_forward(input, weight, bias, tuple(stride), tuple(padding), tuple(dilation), groups, relu)


@fake_or_recorded(conv2d_forward_op)
def _conv2d_forward_fake(input, weight, bias, stride, padding, dilation, groups, relu):
    batch, _, height, width = input.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    out_height = output_size(height, kernel_h, stride[0], padding[0], padding[1], dilation[0])
    out_width = output_size(width, kernel_w, stride[1], padding[2], padding[3], dilation[1])
    return torch.empty((batch, out_channels, out_height, out_width), dtype=input.dtype, device=input.device,
                       memory_format=result_format(input, weight))


@operator("conv2d_backward", mutates_args=())
def conv2d_backward_op(grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
                       output: torch.Tensor | None, stride: list[int], padding: list[int], dilation: list[int],
                       groups: int, output_mask: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.ops.tritonnet.conv2d_backward``: ``(grad_input, grad_weight, grad_bias)`` of :func:`conv2d_forward_op`
    (``output`` its saved output when ReLU was fused, else None); ``output_mask`` says which are needed, the others
    are empty placeholders."""
    gradients = conv2d_backward(grad_output, input, weight, output, tuple(stride), tuple(padding), tuple(dilation),
                                groups, needs_input_grad=output_mask[0], needs_weight_grad=output_mask[1],
                                needs_bias_grad=output_mask[2])
    return tuple(placeholder(input) if gradient is None else gradient for gradient in gradients)


@fake_or_recorded(conv2d_backward_op)
def _conv2d_backward_fake(grad_output, input, weight, output, stride, padding, dilation, groups, output_mask):
    like = dict(dtype=input.dtype, device=input.device)
    grad_input = (torch.empty(input.shape, memory_format=result_format(input, weight), **like) if output_mask[0]
                  else placeholder(input))
    grad_weight = (torch.empty(weight.shape, memory_format=dense_format(weight), **like) if output_mask[1]
                   else placeholder(input))
    grad_bias = torch.empty(weight.shape[0], **like) if output_mask[2] else placeholder(input)
    return grad_input, grad_weight, grad_bias


class Conv2dFunction(torch.autograd.Function):
    """conv2d (+ bias, + ReLU) on 4-D input with Triton forward and backward. Saves input and weight, and the
    output only when ReLU is fused (its backward mask is ``output <= 0``).

    The backward is not differentiable (its input gradient would be a transposed convolution and its weight gradient
    a correlation of input and gradient, which have no Triton kernels of their own here). Under ``create_graph=True``
    its gradients are connected to the grad_output, input and weight they depend on through a node that raises when
    differentiated, so a second derivative raises (``autograd.grad``, ``allow_unused`` or not, and ``.backward``
    alike) instead of coming back as None or zero. provider='torch' differentiates twice."""

    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, dilation, groups, relu):
        output = conv2d_forward_op(input, weight, bias, stride, padding, dilation, groups, relu)
        _conv2d_setup_context(ctx, (input, weight, bias, stride, padding, dilation, groups, relu), output)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        return _conv2d_gradients(ctx, grad_output)


def _conv2d_setup_context(ctx, inputs, output):
    """What the backward keeps, for :class:`Conv2dFunction` and the registered ``tritonnet::conv2d`` alike."""
    input, weight, bias, stride, padding, dilation, groups, relu = inputs
    ctx.save_for_backward(input, weight, output if relu else None)
    ctx.geometry = (stride, padding, dilation, groups)
    ctx.has_bias = bias is not None


def _conv2d_gradients(ctx, grad_output):
    """The gradients of every input of :func:`conv2d_forward_op` (None for the geometry), through
    :func:`conv2d_backward_op`; under ``create_graph=True`` connected through :class:`_RefuseDifferentiation`."""
    input, weight, output = ctx.saved_tensors
    stride, padding, dilation, groups = ctx.geometry
    output_mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
    gradients = [asked_for(gradient, needed) for gradient, needed in zip(
        conv2d_backward_op(grad_output, input, weight, output, stride, padding, dilation, groups, output_mask),
        output_mask)]
    if torch.is_grad_enabled():  # create_graph=True: autograd runs the backward without grad otherwise
        present = [gradient for gradient in gradients if gradient is not None]
        refusing = iter(_RefuseDifferentiation.apply(len(present), *present, grad_output, input, weight))
        gradients = [None if gradient is None else next(refusing) for gradient in gradients]
    return (*gradients, None, None, None, None, None)


@operator("conv2d", mutates_args=())
def conv2d_op(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int],
              padding: list[int], dilation: list[int], groups: int, relu: bool) -> torch.Tensor:
    """``torch.ops.tritonnet.conv2d``: :func:`conv2d_forward_op` with its own autograd (the same backward as
    :class:`Conv2dFunction`), for callers of the op itself. 4-D input; ``padding`` is (top, bottom, left, right)."""
    return conv2d_forward(input, weight, bias, tuple(stride), tuple(padding), tuple(dilation), groups, relu)


fake_or_recorded(conv2d_op)(_conv2d_forward_fake)
conv2d_op.register_autograd(_conv2d_gradients, setup_context=_conv2d_setup_context)


class _RefuseDifferentiation(torch.autograd.Function):
    """The identity on conv2d's first ``count`` arguments (its gradients), recorded as depending on the rest (what
    those gradients are functions of); differentiating through it raises."""

    @staticmethod
    def forward(ctx, count, *tensors):
        return tuple(tensor.clone() for tensor in tensors[:count])

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("conv2d's Triton backward cannot be differentiated (a second derivative through conv2d, "
                           "e.g. a Hessian-vector product or a gradient penalty): use provider='torch' for conv2d "
                           "there")


@register(OP, "triton")
def triton_conv2d(input, weight, bias, stride, padding, dilation, groups, relu):
    check_device("input", input)
    if input.dtype == torch.float64 and not INTERPRET:
        raise TypeError("conv2d's Triton kernels take fp32, fp16 or bf16 on the GPU (fp64 runs in the interpreter "
                        "only); use provider='torch' for fp64")
    if computes_in_fp32(input.dtype):
        input, weight, bias = in_fp32(input, weight, bias)
        return triton_conv2d(input, weight, bias, stride, padding, dilation, groups, relu).to(torch.bfloat16)
    padding = padding_sides(padding, weight.shape[2:], dilation)
    if input.dim() == 3:
        return Conv2dFunction.apply(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups,
                                    relu).squeeze(0)
    return Conv2dFunction.apply(input, weight, bias, stride, padding, dilation, groups, relu)
