"""Local response normalization across channels (Krizhevsky et al. 2012, section 3.3), torch's semantics:

    out[c] = x[c] / (k + alpha / size * sum_{j in window(c)} x[j]^2) ** beta

with ``window(c) = [c - size // 2, c + (size - 1) // 2]`` clipped to the channels (asymmetric for even sizes,
exactly as ``torch.nn.functional.local_response_norm`` pads).

Any ``k`` is accepted, as torch accepts it. Where the base ``k + alpha / size * sum`` is negative, its power is NaN for
a fractional ``beta`` and signed for an integer one, as ``torch.pow`` gives; where it is 0 the output is ``x / 0``.

The ``"triton"`` provider computes in fp32 (fp64 for fp64), reads any layout in place (channels-last, sliced,
transposed, expanded) and returns the input's memory format, as torch does; the input's gradient likewise. Under
``torch.autocast`` it returns the dtype torch's returns (see :func:`_autocast_dtype`). Its backward is a Triton
kernel that is not itself differentiable: double backward (``create_graph=True``) is refused with an error rather
than answered through torch ops; the ``"torch"`` provider has it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonnet.kernels.lrn import accumulator_dtype, lrn_backward, lrn_forward
from tritonnet.ops._checks import check_float, check_int, check_tensor
from tritonnet.ops._library import fake_or_recorded, operator, placeholder
from tritonnet.registry import lookup, register

OP = "local_response_norm"


def local_response_norm(input: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
                        *, provider: str | None = None) -> torch.Tensor:
    """``torch.nn.functional.local_response_norm`` with a choice of provider. ``input`` is (N, C, *)."""
    check_tensor("input", input, ndim=range(3, 9), layout="N, C, *")
    size = check_int("size", size, minimum=1)
    alpha = check_float("alpha", alpha)
    beta = check_float("beta", beta)
    k = check_float("k", k)
    return lookup(OP, provider)(input, size, alpha, beta, k)


@register(OP, "torch")
def torch_local_response_norm(input, size, alpha, beta, k):
    return F.local_response_norm(input, size, alpha=alpha, beta=beta, k=k)


def _autocast_dtype(input: torch.Tensor) -> torch.dtype:
    """The dtype torch's ``local_response_norm`` returns for ``input`` under the current autocast state. torch builds
    it from ops of which one is on an autocast fp32 list, so fp16/bf16 inputs come back fp32: on CUDA ``pow`` (every
    input), on the CPU ``avg_pool3d`` (which it uses for inputs of 4 dims or more; 3-D inputs pool with
    ``avg_pool2d``, not on the list, and stay in their dtype)."""
    device_type = input.device.type
    if input.dtype not in (torch.float16, torch.bfloat16) or device_type not in ("cpu", "cuda"):
        return input.dtype
    if not torch.is_autocast_enabled(device_type):
        return input.dtype
    return torch.float32 if device_type == "cuda" or input.dim() >= 4 else input.dtype


@operator("local_response_norm_forward", mutates_args=())
def local_response_norm_forward_op(input: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                                   save_for_backward: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.ops.tritonnet.local_response_norm_forward``: :func:`tritonnet.kernels.lrn.lrn_forward`'s output and, with
    ``save_for_backward``, its ``base ** (-beta - 1)`` (else an empty placeholder)."""
    output, base_power = lrn_forward(input, size, alpha, beta, k, save_for_backward)
    return output, placeholder(output) if base_power is None else base_power


@fake_or_recorded(local_response_norm_forward_op)
def _local_response_norm_forward_fake(input, size, alpha, beta, k, save_for_backward):
    output = torch.empty_like(input)
    return output, (torch.empty_like(output, dtype=accumulator_dtype(input.dtype)) if save_for_backward
                    else placeholder(output))


@operator("local_response_norm_backward", mutates_args=())
def local_response_norm_backward_op(input: torch.Tensor, base_power: torch.Tensor, grad_output: torch.Tensor,
                                    size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """``torch.ops.tritonnet.local_response_norm_backward``: :func:`tritonnet.kernels.lrn.lrn_backward`."""
    return lrn_backward(input, base_power, grad_output, size, alpha, beta, k)


@fake_or_recorded(local_response_norm_backward_op)
def _local_response_norm_backward_fake(input, base_power, grad_output, size, alpha, beta, k):
    return torch.empty_like(input)


class LocalResponseNormFunction(torch.autograd.Function):
    """Saves the input (by reference, in its own layout) and ``base ** (-beta - 1)`` in fp32: the least the backward
    needs without recomputing a pow per neighbour (see ``kernels/lrn.py``)."""

    @staticmethod
    def forward(ctx, input, size, alpha, beta, k):
        needs_grad = ctx.needs_input_grad[0]
        output, base_power = local_response_norm_forward_op(input, size, alpha, beta, k, needs_grad)
        if needs_grad:
            ctx.save_for_backward(input, base_power)
        ctx.hyperparameters = (size, alpha, beta, k)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        input, base_power = ctx.saved_tensors
        return _local_response_norm_gradients(ctx, grad_output, input, base_power)


def _local_response_norm_gradients(ctx, grad_output, input, base_power):
    """The input's gradient through :func:`local_response_norm_backward_op` (None for the hyperparameters)."""
    if torch.is_grad_enabled():  # create_graph=True: the gradient would have to be differentiable
        raise RuntimeError("local_response_norm's Triton backward is not differentiable, so double backward "
                           "(create_graph=True) is not supported; use provider='torch' for higher derivatives")
    grad_input = local_response_norm_backward_op(input, base_power, grad_output.to(input.dtype),
                                                 *ctx.hyperparameters)
    return grad_input, None, None, None, None


@operator("local_response_norm", mutates_args=())
def local_response_norm_op(input: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """``torch.ops.tritonnet.local_response_norm`` (``beta != 0``), differentiable by itself. An op's autograd keeps
    only its inputs and outputs, so its backward recomputes ``base ** (-beta - 1)`` with one more forward kernel;
    :class:`LocalResponseNormFunction` keeps it from the forward instead."""
    return lrn_forward(input, size, alpha, beta, k, save_for_backward=False)[0]


@fake_or_recorded(local_response_norm_op)
def _local_response_norm_fake(input, size, alpha, beta, k):
    return torch.empty_like(input)


def _local_response_norm_op_context(ctx, inputs, output):
    input, *ctx.hyperparameters = inputs
    ctx.save_for_backward(input)


def _local_response_norm_op_backward(ctx, grad_output):
    (input,) = ctx.saved_tensors
    _, base_power = local_response_norm_forward_op(input, *ctx.hyperparameters, True)
    return _local_response_norm_gradients(ctx, grad_output, input, base_power)


local_response_norm_op.register_autograd(_local_response_norm_op_backward,
                                         setup_context=_local_response_norm_op_context)


@register(OP, "triton")
def triton_local_response_norm(input, size, alpha, beta, k):
    input = input.to(_autocast_dtype(input))
    if beta == 0:  # x / base ** 0 == x everywhere, even where the base is 0, inf or NaN (torch: pow(b, 0) == 1)
        return input.clone()
    return LocalResponseNormFunction.apply(input, size, alpha, beta, k)
