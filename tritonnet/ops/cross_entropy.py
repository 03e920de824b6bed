"""Cross-entropy over logits: torch's ``cross_entropy`` (class indices or probabilities, class weights,
``ignore_index``, label smoothing, K-dimensional and unbatched inputs, every reduction) with the Triton kernels.

Bad class indices without host syncs. Checking targets on the host costs a device-to-host read each step. The
forward kernel checks them instead (see ``kernels/cross_entropy.py``): a class index outside ``[0, C)`` that is not
``ignore_index`` never addresses memory, makes its row's loss (hence a reduced loss) and gradient NaN, and is
counted in a small error record on the device, one per (device, class count, ignore_index). On the CPU (and in
Triton's interpreter) reading the record is free, so the call raises at once. On a GPU the record is read by
:func:`raise_deferred_target_errors`, which a training loop calls where it waits for the device anyway (when it
logs the loss); it raises a ``ValueError`` naming ``target``, the range of the bad values and the class count, and
clears the records.

Target dtypes are torch's: int64 or uint8 class indices (compared with ``ignore_index`` as integers, so a uint8
target of 156 is a bad index, not ``ignore_index=-100``), or probabilities in the input's dtype (torch would promote
mixed dtypes; here they are refused), as are the class weights.

Autograd: gradients flow to the logits and to probability targets. The backward is one kernel that is not itself
differentiable, so double backward (``create_graph=True``) is refused with an error rather than answered with
zeros; the "torch" provider serves higher-order gradients.
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F

from tritonnet.kernels.cross_entropy import (clear_target_errors, cross_entropy_backward, cross_entropy_forward,
                                             new_target_error_record, read_target_errors)
from tritonnet.kernels.runtime import INTERPRET
from tritonnet.ops._checks import check_float, check_int, check_tensor
from tritonnet.ops._library import fake_or_recorded, operator, placeholder
from tritonnet.ops._precision import autocast_enabled
from tritonnet.registry import lookup, register

OP = "cross_entropy"
REDUCTIONS = ("mean", "sum", "none")
CLASS_INDEX_DTYPES = (torch.int64, torch.uint8)  # what torch's cross_entropy accepts
AUTOCAST_WIDENED_DTYPES = (torch.float16, torch.bfloat16)  # torch's autocast runs cross_entropy in fp32


def cross_entropy(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                  *, provider: str | None = None) -> torch.Tensor:
    """``torch.nn.functional.cross_entropy`` for logits ``input`` (N, C), (N, C, d1, ..., dk) or (C,), and
    ``target`` either class indices ((N,), (N, d1, ..., dk) or (), int64 or uint8) or probabilities (the input's
    shape and dtype). ``weight`` (C,) weighs the classes. Under ``torch.autocast`` fp16/bf16 tensors are computed in
    fp32, as torch does."""
    check_tensor("input", input)
    if input.dim() == 0:
        raise ValueError("input must be a 1-D (C) or N-D (N, C, d1, ..., dk) tensor of logits, got a 0-D tensor")
    if autocast_enabled(input.device.type):
        input, target, weight = (tensor.float() if tensor is not None and tensor.dtype in AUTOCAST_WIDENED_DTYPES
                                 else tensor for tensor in (input, target, weight))
    classes = input.shape[0 if input.dim() == 1 else 1]
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.device != input.device:
        raise ValueError(f"target is on {target.device} but input is on {input.device}")
    soft_targets = target.shape == input.shape
    if soft_targets:
        check_tensor("target", target, dtypes=(input.dtype,))
    else:
        index_shape = input.shape[:1] + input.shape[2:] if input.dim() > 1 else ()
        if target.shape != index_shape:
            raise ValueError(f"target must hold class indices of shape {tuple(index_shape)} or probabilities of the "
                             f"input's shape {tuple(input.shape)}; got shape {tuple(target.shape)}")
        check_tensor("target", target, dtypes=CLASS_INDEX_DTYPES)
    if weight is not None:
        check_tensor("weight", weight, ndim=1, layout="C class weights", dtypes=(input.dtype,))
        if weight.shape[0] != classes:
            raise ValueError(f"weight has {weight.shape[0]} entries but input has {classes} classes")
        if weight.device != input.device:
            raise ValueError(f"weight is on {weight.device} but input is on {input.device}")
        if weight.requires_grad:
            raise ValueError("weight requires grad, but cross_entropy is not differentiable with respect to weight "
                             "(as torch's nll_loss); pass weight.detach()")
    ignore_index = check_int("ignore_index", ignore_index)
    if soft_targets and ignore_index >= 0:
        raise ValueError(f"ignore_index={ignore_index} needs class-index targets; target holds probabilities")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")
    label_smoothing = check_float("label_smoothing", label_smoothing, minimum=0.0, maximum=1.0)
    return lookup(OP, provider)(input, target, weight, ignore_index, reduction, label_smoothing)


@register(OP, "torch")
def torch_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing):
    return F.cross_entropy(input, target if target.is_floating_point() else target.long(), weight,
                           ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)


# Error records of bad class indices, one per (device, class count, ignore_index): each names its class count.
_error_records: dict[tuple[torch.device, int, int], torch.Tensor] = {}
_error_records_lock = threading.Lock()


def _error_record(device: torch.device, classes: int, ignore_index: int) -> torch.Tensor:
    with _error_records_lock:
        key = (device, classes, ignore_index)
        if key not in _error_records:
            _error_records[key] = new_target_error_record(device)
        return _error_records[key]


def _raise_target_errors(records: list[tuple[tuple[torch.device, int, int], torch.Tensor]]) -> None:
    problems = []
    for (device, classes, ignore_index), record in records:
        count, low, high = read_target_errors(record)
        if count:
            clear_target_errors(record)
            problems.append(f"target held {count} class {'index' if count == 1 else 'indices'} in [{low}, {high}] "
                            f"outside [0, {classes}) (input has {classes} classes) other than "
                            f"ignore_index={ignore_index}, on {device}")
    if problems:
        raise ValueError("; ".join(problems) + " (their losses are NaN)")


def raise_deferred_target_errors() -> None:
    """Raise a ``ValueError`` for the bad class indices that cross_entropy calls on a GPU recorded since the last
    call (and clear them). Waits for the device: call it where the host waits anyway, e.g. when logging the loss."""
    with _error_records_lock:
        records = list(_error_records.items())
    _raise_target_errors(records)


def _as_rows(tensor: torch.Tensor, unbatched: bool, with_classes: bool) -> torch.Tensor:
    """``tensor`` as (batch, classes, spatial) (``with_classes``) or (batch, spatial): a view where the dimensions
    after the class dimension can be walked with one stride (always for contiguous and channels-last tensors)."""
    if unbatched:
        tensor = tensor.unsqueeze(0)
    leading = 2 if with_classes else 1
    shape = (*tensor.shape[:leading], math.prod(tensor.shape[leading:]))
    try:
        return tensor.view(shape)
    except RuntimeError:  # no single spatial stride (e.g. an expanded middle dimension): the kernels need one
        return tensor.reshape(shape)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@operator("cross_entropy_forward", mutates_args=())
def cross_entropy_forward_op(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                             ignore_index: int, reduction: str, label_smoothing: float,
                             loss_shape: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                             torch.Tensor]:
    """``torch.ops.tritonnet.cross_entropy_forward``: :func:`tritonnet.kernels.cross_entropy.cross_entropy_forward` on
    (batch, classes, spatial) ``logits``: the loss, then each row's max logit, log-denominator and target mass, and
    mean's denominator. Bad class indices raise here on the CPU (and in the interpreter), and are recorded on a GPU
    (see the module docstring)."""
    record = _error_record(logits.device, logits.shape[1], ignore_index)
    loss, saved = cross_entropy_forward(logits, target, weight, record, ignore_index=ignore_index,
                                        reduction=reduction, label_smoothing=label_smoothing,
                                        loss_shape=tuple(loss_shape))
    if logits.device.type != "meta" and (INTERPRET or logits.device.type != "cuda"):  # meta: shapes only
        _raise_target_errors([((logits.device, logits.shape[1], ignore_index), record)])
    if reduction != "mean":  # only mean's kernel writes the denominator
        saved[3].zero_()
    return loss, *saved


@fake_or_recorded(cross_entropy_forward_op)
def _cross_entropy_forward_fake(logits, target, weight, ignore_index, reduction, label_smoothing, loss_shape):
    rows = logits.shape[0] * logits.shape[2]
    compute_dtype = _compute_dtype(logits.dtype)
    loss = logits.new_empty(loss_shape if reduction == "none" else ())
    return (loss, *(logits.new_empty(rows, dtype=compute_dtype) for _ in range(3)),
            logits.new_empty((), dtype=compute_dtype))


@operator("cross_entropy_backward", mutates_args=())
def cross_entropy_backward_op(grad_output: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                              weight: torch.Tensor | None, saved: list[torch.Tensor], ignore_index: int,
                              reduction: str, label_smoothing: float,
                              grad_target: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.ops.tritonnet.cross_entropy_backward``: :func:`tritonnet.kernels.cross_entropy.cross_entropy_backward`'s
    gradients of the logits and (with ``grad_target``, else an empty placeholder) of probability targets."""
    grad_logits, grad_probabilities = cross_entropy_backward(
        grad_output, logits, target, weight, tuple(saved), ignore_index=ignore_index, reduction=reduction,
        label_smoothing=label_smoothing, grad_target=grad_target)
    return grad_logits, placeholder(logits) if grad_probabilities is None else grad_probabilities


@fake_or_recorded(cross_entropy_backward_op)
def _cross_entropy_backward_fake(grad_output, logits, target, weight, saved, ignore_index, reduction,
                                 label_smoothing, grad_target):
    return torch.empty_like(logits), torch.empty_like(target) if grad_target else placeholder(logits)


class CrossEntropyFunction(torch.autograd.Function):
    """Fused log-softmax + NLL with the Triton kernels. Saves the logits, the targets, the weights, each row's max,
    log-denominator and target mass, and mean's denominator; the backward recomputes the softmax from them (see
    ``kernels/cross_entropy.py``). The backward is not itself differentiable: double backward is refused."""

    @staticmethod
    def forward(ctx, input, target, weight, ignore_index, reduction, label_smoothing):
        unbatched = input.dim() == 1
        soft_targets = target.shape == input.shape
        logits = _as_rows(input, unbatched, with_classes=True)
        rows_target = _as_rows(target, unbatched, with_classes=soft_targets)
        loss_shape = input.shape[:1] + input.shape[2:] if not unbatched else ()
        # The loss is allocated in its final shape: returning a view of a tensor made here would forbid in-place use.
        loss, *saved = cross_entropy_forward_op(logits, rows_target, weight, ignore_index, reduction, label_smoothing,
                                                list(loss_shape))
        ctx.save_for_backward(logits, rows_target, weight, *saved)
        ctx.input_shape, ctx.target_shape = input.shape, target.shape
        ctx.ignore_index, ctx.reduction, ctx.label_smoothing = ignore_index, reduction, label_smoothing
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        logits, rows_target, weight, *saved = ctx.saved_tensors
        if ctx.reduction == "none":
            grad_output = _as_rows(grad_output, len(ctx.input_shape) == 1, with_classes=False)
        grad_input, grad_target = _cross_entropy_gradients(ctx, grad_output, logits, rows_target, weight, saved)
        return (grad_input.view(ctx.input_shape), None if grad_target is None else grad_target.view(ctx.target_shape),
                None, None, None, None)


def _cross_entropy_gradients(ctx, grad_output, logits, target, weight, saved):
    """``(grad_logits, grad_target)`` of (batch, classes, spatial) logits through :func:`cross_entropy_backward_op`
    (``grad_target`` None unless asked for); double backward refused."""
    if torch.is_grad_enabled():
        raise RuntimeError("cross_entropy's Triton backward is not differentiable: double backward "
                           "(create_graph=True) is not supported; use provider='torch' for higher-order gradients")
    grad_logits, grad_target = cross_entropy_backward_op(grad_output, logits, target, weight, saved, ctx.ignore_index,
                                                         ctx.reduction, ctx.label_smoothing, ctx.needs_input_grad[1])
    return grad_logits, grad_target if ctx.needs_input_grad[1] else None


@operator("cross_entropy", mutates_args=())
def cross_entropy_op(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, ignore_index: int,
                     reduction: str, label_smoothing: float) -> torch.Tensor:
    """``torch.ops.tritonnet.cross_entropy`` of (batch, classes, spatial) ``logits`` against class indices (batch,
    spatial) or probabilities shaped like ``logits``, differentiable by itself (the loss is (batch, spatial) for
    reduction "none"). An op's autograd keeps only its inputs and outputs, so its backward recomputes the row
    statistics with one more forward kernel; :class:`CrossEntropyFunction` keeps them from the forward instead."""
    return cross_entropy_forward_op(logits, target, weight, ignore_index, reduction, label_smoothing,
                                    [logits.shape[0], logits.shape[2]])[0]


@fake_or_recorded(cross_entropy_op)
def _cross_entropy_fake(logits, target, weight, ignore_index, reduction, label_smoothing):
    return logits.new_empty((logits.shape[0], logits.shape[2]) if reduction == "none" else ())


def _cross_entropy_op_context(ctx, inputs, output):
    logits, target, weight, ctx.ignore_index, ctx.reduction, ctx.label_smoothing = inputs
    ctx.save_for_backward(logits, target, weight)


def _cross_entropy_op_backward(ctx, grad_output):
    logits, target, weight = ctx.saved_tensors
    _, *saved = cross_entropy_forward_op(logits, target, weight, ctx.ignore_index, ctx.reduction,
                                         ctx.label_smoothing, [logits.shape[0], logits.shape[2]])
    return (*_cross_entropy_gradients(ctx, grad_output, logits, target, weight, saved), None, None, None, None)


cross_entropy_op.register_autograd(_cross_entropy_op_backward, setup_context=_cross_entropy_op_context)


@register(OP, "triton")
def triton_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing):
    return CrossEntropyFunction.apply(input, target, weight, ignore_index, reduction, label_smoothing)
