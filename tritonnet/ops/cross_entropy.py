"""Cross-entropy over logits: log-softmax and negative log-likelihood in one pass."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernels.cross_entropy import cross_entropy_backward, cross_entropy_forward
from tritonnet.ops._checks import check_float, check_int, check_tensor
from tritonnet.registry import lookup, register

OP = "cross_entropy"
REDUCTIONS = ("mean", "sum", "none")


def cross_entropy(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                  *, provider: str | None = None) -> torch.Tensor:
    """``torch.nn.functional.cross_entropy`` for logits ``input`` (N, C) or (C,) and class-index ``target``
    (N,) or (). Class weights and probability targets are not supported and are refused."""
    check_tensor("input", input, ndim=(1, 2), layout="N, C or C")
    if weight is not None:
        raise ValueError("weight (class weights) is not supported by tritonnet's cross_entropy; pass weight=None")
    check_tensor("target", target, ndim=input.dim() - 1, layout="N class indices" if input.dim() == 2 else "()",
                 dtypes=(torch.int64, torch.int32, torch.int16, torch.uint8))
    if target.device != input.device:
        raise ValueError(f"target is on {target.device} but input is on {input.device}")
    if input.dim() == 2 and target.shape[0] != input.shape[0]:
        raise ValueError(f"target has {target.shape[0]} entries but input has batch size {input.shape[0]}")
    ignore_index = check_int("ignore_index", ignore_index)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")
    label_smoothing = check_float("label_smoothing", label_smoothing, minimum=0.0, maximum=1.0)
    classes = input.shape[-1]
    valid = target[target != ignore_index]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= classes):
        raise ValueError(f"target holds class indices outside [0, {classes}) (input has {classes} classes) other "
                         f"than ignore_index={ignore_index}")
    return lookup(OP, provider)(input, target, ignore_index, reduction, label_smoothing)


@register(OP, "torch")
def torch_cross_entropy(input, target, ignore_index, reduction, label_smoothing):
    return F.cross_entropy(input, target.long(), ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)


class CrossEntropyFunction(torch.autograd.Function):
    """Fused log-softmax + NLL with the Triton kernels. Saves the logits, the targets, each row's max and
    log-denominator and the count of non-ignored rows; the backward recomputes the softmax from them (see
    ``kernels/cross_entropy.py``)."""

    @staticmethod
    def forward(ctx, input, target, ignore_index, reduction, label_smoothing):
        logits = input.reshape(math.prod(input.shape[:-1]), input.shape[-1])
        flat_target = target.reshape(-1)
        # The loss is allocated in its final shape: returning a view of a tensor made here would forbid in-place use.
        loss, (row_max, log_denominator), valid_count = cross_entropy_forward(
            logits, flat_target, ignore_index, reduction, label_smoothing, loss_shape=target.shape)
        ctx.save_for_backward(logits, flat_target, row_max, log_denominator, valid_count)
        ctx.input_shape = input.shape
        ctx.ignore_index, ctx.reduction, ctx.label_smoothing = ignore_index, reduction, label_smoothing
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        logits, flat_target, row_max, log_denominator, valid_count = ctx.saved_tensors
        grad_input = cross_entropy_backward(grad_output.reshape(-1), logits, flat_target, (row_max, log_denominator),
                                            valid_count, ctx.ignore_index, ctx.reduction, ctx.label_smoothing)
        return grad_input.view(ctx.input_shape), None, None, None, None


@register(OP, "triton")
def triton_cross_entropy(input, target, ignore_index, reduction, label_smoothing):
    return CrossEntropyFunction.apply(input, target, ignore_index, reduction, label_smoothing)
