"""Fully connected layer ``y = x W^T + b``, with ReLU and dropout optionally fused into the GEMM's epilogue.

Under torch.autocast the operands are cast as torch's linear's are; bf16 runs in fp32 in the interpreter (see
_precision.py). Any strides (a channels-last activation flattened for fc6 arrives as a copy made by the flatten,
weights and biases may be transposed, strided or expanded views): the kernels read every operand through its
strides.

The backward is differentiable to any order: it is ``grad_pre = grad_output x (constant masks)`` and two GEMMs that
are themselves linear layers, ``grad_input = linear(grad_pre, weight^T)`` and ``grad_weight = linear(grad_pre^T,
input^T)``, plus ``grad_bias = grad_pre.sum(0)``. Under ``create_graph=True`` it runs in that form, so autograd
records it; otherwise the fused kernels (masks in the GEMMs' prologues) run it without a graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tritonnet.kernels.linear import dropout_grad, linear_backward, linear_forward
from tritonnet.ops._checks import check_float, check_like, check_tensor
from tritonnet.ops._precision import autocast_operands, computes_in_fp32, in_fp32
from tritonnet.ops._library import asked_for, fake_or_recorded, operator, placeholder
from tritonnet.ops.dropout import draw_seed, seed_on
from tritonnet.registry import lookup, register

OP = "linear"


def linear(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, relu: bool = False,
           dropout_p: float = 0.0, training: bool = True, provider: str | None = None) -> torch.Tensor:
    """``torch.nn.functional.linear``; with the extras, ``dropout(relu(linear(input, weight, bias)), dropout_p,
    training)``. ``input`` is (*, in_features), ``weight`` (out_features, in_features)."""
    check_tensor("input", input, ndim=range(1, 9), layout="*, in_features")
    check_tensor("weight", weight, ndim=2, layout="out_features, in_features")
    if bias is not None:
        check_tensor("bias", bias, ndim=1, layout="out_features")
    input, weight, bias = autocast_operands(input, weight, bias)
    check_like("weight", weight, "input", input)
    if input.shape[-1] != weight.shape[1]:
        raise ValueError(f"input's last dimension ({input.shape[-1]}) must equal weight's in_features "
                         f"({weight.shape[1]})")
    if bias is not None:
        check_like("bias", bias, "input", input)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias must have {weight.shape[0]} elements (out_features), got {bias.shape[0]}")
    if not isinstance(relu, bool):
        raise TypeError(f"relu must be a bool, got {relu!r}")
    dropout_p = check_float("dropout_p", dropout_p, minimum=0.0, maximum=1.0, include_maximum=False)
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {training!r}")
    return lookup(OP, provider)(input, weight, bias, relu, dropout_p, training)


@register(OP, "torch")
def torch_linear(input, weight, bias, relu, dropout_p, training):
    output = F.linear(input, weight, bias)
    if relu:
        output = F.relu(output)
    if dropout_p > 0.0 and training:
        output = F.dropout(output, dropout_p, training)
    return output


def _dropout_seed(seed: torch.Tensor, dropout_p: float, device: torch.device) -> torch.Tensor | None:
    """The kernels' seed on ``device`` with dropout, None (nothing copied) without."""
    return seed_on(seed, device) if dropout_p > 0.0 else None


@operator("linear_forward", mutates_args=())
def linear_forward_op(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool,
                      dropout_p: float, seed: torch.Tensor, output_shape: list[int]) -> torch.Tensor:
    """``torch.ops.tritonnet.linear_forward``: :func:`tritonnet.kernels.linear.linear_forward` for a 2-D ``input``,
    its output shaped ``output_shape``; ``seed`` (from :func:`draw_seed`) is read only when ``dropout_p > 0``."""
    return linear_forward(input, weight, bias, relu, dropout_p, _dropout_seed(seed, dropout_p, input.device),
                          output_shape=tuple(output_shape))


@fake_or_recorded(linear_forward_op)
def _linear_forward_fake(input, weight, bias, relu, dropout_p, seed, output_shape):
    return input.new_empty(output_shape)


@operator("linear_backward", mutates_args=())
def linear_backward_op(grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
                       output: torch.Tensor | None, relu: bool, dropout_p: float, seed: torch.Tensor,
                       output_mask: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.ops.tritonnet.linear_backward``: :func:`tritonnet.kernels.linear.linear_backward`'s ``(grad_input,
    grad_weight, grad_bias)`` for a 2-D ``input``; ``output_mask`` says which are needed, the others are empty
    placeholders."""
    gradients = linear_backward(grad_output, input, weight, output, relu, dropout_p,
                                _dropout_seed(seed, dropout_p, input.device), needs_input_grad=output_mask[0],
                                needs_weight_grad=output_mask[1], needs_bias_grad=output_mask[2])
    return tuple(placeholder(input) if gradient is None else gradient for gradient in gradients)


@fake_or_recorded(linear_backward_op)
def _linear_backward_fake(grad_output, input, weight, output, relu, dropout_p, seed, output_mask):
    shapes = (input.shape, weight.shape, weight.shape[:1])
    return tuple(input.new_empty(shape) if needed else placeholder(input) for shape, needed in zip(shapes, output_mask))


@operator("linear_dropout_grad", mutates_args=())
def linear_dropout_grad_op(grad_output: torch.Tensor, dropout_p: float, seed: torch.Tensor) -> torch.Tensor:
    """``torch.ops.tritonnet.linear_dropout_grad``: ``grad_output * keep / (1 - p)`` with the forward's mask (2-D)."""
    return dropout_grad(grad_output, dropout_p, seed_on(seed, grad_output.device))


@fake_or_recorded(linear_dropout_grad_op)
def _linear_dropout_grad_fake(grad_output, dropout_p, seed):
    return grad_output.new_empty(grad_output.shape)


class LinearFunction(torch.autograd.Function):
    """``dropout(relu(input @ weight^T + bias))`` with the Triton GEMM kernels. Saves input, weight, the seed, and
    the (post-dropout) output only when ReLU is on, for its mask (see ``kernels/linear.py``); never a mask."""

    @staticmethod
    def forward(ctx, input, weight, bias, relu, dropout_p, training):
        dropout_p = dropout_p if training else 0.0
        seed = draw_seed() if dropout_p > 0.0 else torch.zeros((), dtype=torch.int64)
        flat_input = input.reshape(math.prod(input.shape[:-1]), input.shape[-1])
        # Allocated in its final shape: returning a view of a tensor made here would forbid in-place use of the output.
        output = linear_forward_op(flat_input, weight, bias, relu, dropout_p, seed,
                                   [*input.shape[:-1], weight.shape[0]])
        _linear_setup_context(ctx, (input, weight, bias, relu, dropout_p, seed), output)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        return *_linear_gradients(ctx, grad_output), None, None, None


def _linear_setup_context(ctx, inputs, output):
    """What the backward keeps, for :class:`LinearFunction` and the registered ``tritonnet::linear`` alike."""
    input, weight, bias, relu, dropout_p, seed = inputs
    # The input itself, not its flattened view: a view made here (grad mode is off in forward) would not be
    # connected to the input in a recorded backward.
    ctx.save_for_backward(input, weight, output if relu else None)
    ctx.input_shape = input.shape
    ctx.relu, ctx.dropout_p, ctx.seed = relu, dropout_p, seed  # the seed: a 0-D CPU tensor, not saved data


def _linear_gradients(ctx, grad_output):
    """``(grad_input, grad_weight, grad_bias)``, each None where not needed: the fused kernels
    (:func:`linear_backward_op`), or under ``create_graph=True`` the recorded form (see the module docstring)."""
    input, weight, output = ctx.saved_tensors
    seed = ctx.seed
    flat_input = input.reshape(math.prod(input.shape[:-1]), input.shape[-1])
    grad_output = grad_output.reshape(flat_input.shape[0], weight.shape[0])
    if torch.is_grad_enabled():
        grad_input, grad_weight, grad_bias = _recorded_backward(ctx, grad_output, flat_input, weight, output, seed)
    else:
        output_mask = list(ctx.needs_input_grad[:3])
        grad_input, grad_weight, grad_bias = (asked_for(gradient, needed) for gradient, needed in zip(
            linear_backward_op(grad_output, flat_input, weight, output, ctx.relu, ctx.dropout_p, seed, output_mask),
            output_mask))
    if grad_input is not None:
        grad_input = grad_input.reshape(ctx.input_shape)
    return grad_input, grad_weight, grad_bias


@operator("linear", mutates_args=())
def linear_op(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool, dropout_p: float,
              seed: torch.Tensor) -> torch.Tensor:
    """``torch.ops.tritonnet.linear``: ``dropout(relu(input @ weight^T + bias))`` for (*, in_features) ``input``,
    differentiable by itself (the backward of :class:`LinearFunction`); ``seed`` from :func:`draw_seed`, read only
    when ``dropout_p > 0``."""
    flat_input = input.reshape(math.prod(input.shape[:-1]), input.shape[-1])
    return linear_forward(flat_input, weight, bias, relu, dropout_p, _dropout_seed(seed, dropout_p, input.device),
                          output_shape=(*input.shape[:-1], weight.shape[0]))


@fake_or_recorded(linear_op)
def _linear_fake(input, weight, bias, relu, dropout_p, seed):
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


linear_op.register_autograd(lambda ctx, grad_output: (*_linear_gradients(ctx, grad_output), None, None, None),
                            setup_context=_linear_setup_context)


def _recorded_backward(ctx, grad_output, flat_input, weight, output, seed):
    """:func:`linear_backward`'s results as differentiable ops: the masks are constants (ReLU's comes from the saved
    output, whose second derivative is zero; dropout's from the seed), the GEMMs are :class:`LinearFunction`s."""
    grad_pre = grad_output
    if ctx.relu:  # the saved post-dropout output carries both masks (kernels/linear.py); a NaN output passes
        grad_pre = grad_pre.masked_fill(output.reshape(grad_pre.shape) <= 0, 0.0)
        if ctx.dropout_p > 0.0:
            grad_pre = grad_pre / (1.0 - ctx.dropout_p)
    elif ctx.dropout_p > 0.0:
        grad_pre = grad_pre * linear_dropout_grad_op(torch.ones_like(grad_pre), ctx.dropout_p, seed)
    grad_input = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_input = LinearFunction.apply(grad_pre, weight.t(), None, False, 0.0, False)
    if ctx.needs_input_grad[1]:
        grad_weight = LinearFunction.apply(grad_pre.t(), flat_input.t(), None, False, 0.0, False)
    if ctx.needs_input_grad[2]:
        grad_bias = grad_pre.sum(0)
    return grad_input, grad_weight, grad_bias


@register(OP, "triton")
def triton_linear(input, weight, bias, relu, dropout_p, training):
    if computes_in_fp32(input.dtype):
        input, weight, bias = in_fp32(input, weight, bias)
        return LinearFunction.apply(input, weight, bias, relu, dropout_p, training).to(torch.bfloat16)
    return LinearFunction.apply(input, weight, bias, relu, dropout_p, training)
