"""Cross-entropy over logits: log-softmax and the negative log-likelihood fused, forward and backward.

For a row of logits ``x`` (C classes), target class ``t`` and label smoothing ``e``, the smoothed target puts
``1 - e + e / C`` on ``t`` and ``e / C`` on every other class, so (with ``lse = log(sum_c exp(x_c))``)::

    loss       = (1 - e) * (lse - x_t) + e * (lse - mean_c x_c)
    d loss/dx_c = softmax(x)_c - (1 - e) * [c == t] - e / C

Rows whose target is ``ignore_index`` have loss 0 and gradient 0; ``mean`` divides by the number of the other rows
(so all-ignored gives NaN, as torch's does).

Forward: each program takes BLOCK_ROWS rows and walks their classes in BLOCK_CLASSES blocks, keeping a running max
and a running sum of ``exp(x - max)`` rescaled whenever the max grows (online softmax): one read of the logits,
stable for any finite logits (1e4 and -1e4 in fp16 included), in fp32 (fp64 for fp64). It stores each row's loss and,
for the backward, its max ``m`` and ``log(sum_c exp(x_c - m))`` (8 bytes a row): kept apart, so that the backward's
``x - lse`` is computed as ``(x - m) - log(...)`` without the rounding of a large ``lse`` (1e4 has an fp32 ulp of
1e-3). A single-program pass then sums the losses and counts the
non-ignored rows, in a fixed order (deterministic; no atomics).

Backward: recomputes the softmax from the logits and the saved row statistics and writes the gradient in one pass.
Computing the gradient already in the forward (into a logits-sized buffer) would save re-reading the logits, but
would hold a second logits-sized tensor from the forward to the backward and still need a pass to apply
``grad_output``; for AlexNet's 128 x 1000 logits both are negligible, and recomputing keeps what the forward leaves
behind at 8 bytes a row.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.gpu_compile import CompileCase
from kernels.runtime import INTERPRET, autotune, check_device, interpreter_block

# One row per program for ImageNet-sized class counts (1000 classes: one block, 128 programs at batch 128); several
# rows per program for small class counts (10 classes), where one row would leave most of the tile idle.
ROW_CONFIGS = [
    triton.Config({"BLOCK_ROWS": 1, "BLOCK_CLASSES": 1024}, num_warps=4),
    triton.Config({"BLOCK_ROWS": 1, "BLOCK_CLASSES": 4096}, num_warps=8),
    triton.Config({"BLOCK_ROWS": 16, "BLOCK_CLASSES": 64}, num_warps=4),
]
REDUCE_CONFIGS = [triton.Config({"BLOCK_ROWS": 1024}, num_warps=4)]


@triton.jit
def _row_targets(target_pointer, row, rows, target_stride, ignore_index):
    """(target as int64, whether the row exists and its target is not ignore_index) for int64 ``row`` indices."""
    row_in_range = row < rows
    target = tl.load(target_pointer + row * target_stride, mask=row_in_range, other=0).to(tl.int64)
    return target, row_in_range & (target != ignore_index)


@autotune(configs=ROW_CONFIGS, key=["classes"])
@triton.jit
def cross_entropy_forward_kernel(
    logits_pointer,  # (rows, classes), any strides
    target_pointer,  # (rows,) class indices, any integer dtype, in [0, classes) or ignore_index
    loss_pointer,  # (rows,) per-row loss (0 for ignored rows), contiguous
    row_max_pointer,  # (rows,) max logit of each row, fp32 (fp64 for fp64), contiguous
    log_denominator_pointer,  # (rows,) log(sum_c exp(x_c - row max)), fp32 (fp64 for fp64), contiguous
    rows,  # number of rows (the batch)
    classes,  # number of classes
    logits_stride_row, logits_stride_class,  # logits strides, in elements
    target_stride,  # target stride, in elements
    ignore_index,  # target value whose rows are left out
    label_smoothing,  # e in [0, 1] (an fp32 argument, also for fp64 logits)
    SMOOTHING: tl.constexpr,  # label_smoothing > 0
    BLOCK_ROWS: tl.constexpr,  # rows per program
    BLOCK_CLASSES: tl.constexpr,  # classes per step
):
    """Loss and softmax statistics of BLOCK_ROWS rows, with an online max / sum-exp over the classes."""
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS).to(tl.int64)
    target, valid = _row_targets(target_pointer, row, rows, target_stride, ignore_index)
    row_logits = logits_pointer + row[:, None] * logits_stride_row
    compute_dtype = tl.float64 if logits_pointer.dtype.element_ty == tl.float64 else tl.float32
    running_max = tl.full((BLOCK_ROWS,), float("-inf"), compute_dtype)
    running_sum = tl.zeros((BLOCK_ROWS,), compute_dtype)  # of exp(x - running_max)
    logit_sum = tl.zeros((BLOCK_ROWS,), compute_dtype)
    for start in range(0, classes, BLOCK_CLASSES):
        class_index = start + tl.arange(0, BLOCK_CLASSES).to(tl.int64)
        in_range = (row < rows)[:, None] & (class_index < classes)[None, :]
        logits = tl.load(row_logits + class_index[None, :] * logits_stride_class, mask=in_range,
                         other=float("-inf")).to(compute_dtype)
        new_max = tl.maximum(running_max, tl.max(logits, axis=1))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)  # rows of -inf only (or padding): no NaN
        running_sum = running_sum * tl.exp(running_max - shift) + tl.sum(tl.exp(logits - shift[:, None]), axis=1)
        running_max = new_max
        if SMOOTHING:
            logit_sum += tl.sum(tl.where(in_range, logits, 0.0), axis=1)
    row_in_range = row < rows
    row_max = tl.where(running_max == float("-inf"), 0.0, running_max)
    log_denominator = tl.log(tl.where(row_in_range, running_sum, 1.0))
    target_in_range = valid & (target >= 0) & (target < classes)
    target_logit = tl.load(logits_pointer + row * logits_stride_row + target * logits_stride_class,
                           mask=target_in_range, other=0.0).to(compute_dtype)
    loss = (row_max - target_logit) + log_denominator  # lse - x_t
    if SMOOTHING:
        loss = (1.0 - label_smoothing) * loss + label_smoothing * ((row_max - logit_sum / classes) + log_denominator)
    loss = tl.where(valid, loss, 0.0)
    tl.store(loss_pointer + row, loss.to(loss_pointer.dtype.element_ty), mask=row_in_range)
    tl.store(row_max_pointer + row, row_max, mask=row_in_range)
    tl.store(log_denominator_pointer + row, log_denominator, mask=row_in_range)


@autotune(configs=REDUCE_CONFIGS, key=[])
@triton.jit
def cross_entropy_reduce_kernel(
    loss_pointer,  # (rows,) per-row losses, fp32 (fp64 for fp64), contiguous
    target_pointer,  # (rows,) class indices, any integer dtype
    result_pointer,  # () the reduced loss, in the logits' dtype
    valid_count_pointer,  # () int32: number of rows whose target is not ignore_index (for the backward)
    rows,  # number of rows
    target_stride,  # target stride, in elements
    ignore_index,  # target value whose rows are left out
    MEAN: tl.constexpr,  # divide the sum by the number of non-ignored rows
    BLOCK_ROWS: tl.constexpr,  # rows per step
):
    """Sum (or mean over non-ignored rows) of the per-row losses, by one program in a fixed order."""
    total = tl.zeros((BLOCK_ROWS,), loss_pointer.dtype.element_ty)
    count = tl.zeros((BLOCK_ROWS,), tl.int32)
    for start in range(0, rows, BLOCK_ROWS):
        row = start + tl.arange(0, BLOCK_ROWS).to(tl.int64)
        total += tl.load(loss_pointer + row, mask=row < rows, other=0.0)
        count += _row_targets(target_pointer, row, rows, target_stride, ignore_index)[1].to(tl.int32)
    result = tl.sum(total, axis=0)
    valid_count = tl.sum(count, axis=0)
    if MEAN:  # NaN when every row is ignored, as torch
        result = tl.where(valid_count > 0, result / tl.maximum(valid_count, 1).to(result.dtype), float("nan"))
    tl.store(result_pointer, result.to(result_pointer.dtype.element_ty))
    tl.store(valid_count_pointer, valid_count)


@autotune(configs=ROW_CONFIGS, key=["classes"])
@triton.jit
def cross_entropy_backward_kernel(
    logits_pointer,  # (rows, classes), any strides
    target_pointer,  # (rows,) class indices, any integer dtype
    row_max_pointer,  # (rows,) saved by the forward, contiguous
    log_denominator_pointer,  # (rows,) saved by the forward, contiguous
    grad_output_pointer,  # (rows,) for reduction "none"; a scalar (stride 0) for "sum" and "mean"
    valid_count_pointer,  # () int32 number of non-ignored rows (read with MEAN)
    grad_logits_pointer,  # (rows, classes), contiguous: the result
    rows,  # number of rows
    classes,  # number of classes
    logits_stride_row, logits_stride_class,  # logits strides, in elements
    target_stride,  # target stride, in elements
    grad_output_stride,  # grad_output stride, in elements (0 for a scalar)
    ignore_index,  # target value whose rows are left out
    label_smoothing,  # e in [0, 1]
    MEAN: tl.constexpr,  # the forward reduced with "mean"
    SMOOTHING: tl.constexpr,  # label_smoothing > 0
    BLOCK_ROWS: tl.constexpr,  # rows per program
    BLOCK_CLASSES: tl.constexpr,  # classes per step
):
    """``(softmax(x) - (1 - e) * onehot(t) - e / C) * grad_output[row]`` (/ valid count for mean); 0 for ignored
    rows."""
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS).to(tl.int64)
    target, valid = _row_targets(target_pointer, row, rows, target_stride, ignore_index)
    compute_dtype = tl.float64 if logits_pointer.dtype.element_ty == tl.float64 else tl.float32
    row_max = tl.load(row_max_pointer + row, mask=row < rows, other=0.0)
    log_denominator = tl.load(log_denominator_pointer + row, mask=row < rows, other=0.0)
    scale = tl.load(grad_output_pointer + row * grad_output_stride, mask=row < rows, other=0.0).to(compute_dtype)
    if MEAN:  # (no valid row at all: every scale below is masked anyway)
        scale = scale / tl.maximum(tl.load(valid_count_pointer), 1).to(compute_dtype)
    scale = tl.where(valid, scale, 0.0)
    row_logits = logits_pointer + row[:, None] * logits_stride_row
    for start in range(0, classes, BLOCK_CLASSES):
        class_index = start + tl.arange(0, BLOCK_CLASSES).to(tl.int64)
        in_range = (row < rows)[:, None] & (class_index < classes)[None, :]
        logits = tl.load(row_logits + class_index[None, :] * logits_stride_class, mask=in_range,
                         other=float("-inf")).to(compute_dtype)
        one_hot = (class_index[None, :] == target[:, None]).to(compute_dtype)
        softmax = tl.exp((logits - row_max[:, None]) - log_denominator[:, None])
        grad = softmax - one_hot * (1.0 - label_smoothing)
        if SMOOTHING:
            grad -= label_smoothing / tl.cast(classes, compute_dtype)
        grad = tl.where(valid[:, None], grad * scale[:, None], 0.0)
        tl.store(grad_logits_pointer + row[:, None] * classes + class_index[None, :],
                 grad.to(grad_logits_pointer.dtype.element_ty), mask=in_range)


def _row_tiles(rows: int, classes: int) -> dict:
    """Launch meta-parameters: none on the GPU (autotuned); in the interpreter every class in one block and as
    many rows as fit a tile of ``INTERPRETER_MAX_BLOCK`` elements."""
    if not INTERPRET:
        return {}
    block_classes = interpreter_block(classes)
    return {"BLOCK_CLASSES": block_classes,
            "BLOCK_ROWS": interpreter_block(rows, cap=max(1, (1 << 16) // block_classes), minimum=1)}


def cross_entropy_forward(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, reduction: str,
                          label_smoothing: float, loss_shape: tuple[int, ...] | None = None):
    """Loss of 2-D ``logits`` (rows, classes) against class indices ``target`` (rows,). Returns ``(loss,
    row_statistics, valid_count)``: the loss as torch returns it for ``reduction`` (in the logits' dtype), and what
    :func:`cross_entropy_backward` needs (each row's max logit and log-denominator; the number of non-ignored
    rows, a 0-D int32 tensor, for mean). ``loss_shape`` is the shape of the per-row loss for reduction "none"
    (default (rows,))."""
    check_device("input", logits)
    rows, classes = logits.shape
    compute_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    if reduction == "none":
        per_row = torch.empty((rows,) if loss_shape is None else loss_shape, device=logits.device, dtype=logits.dtype)
    else:
        per_row = torch.empty(rows, device=logits.device, dtype=compute_dtype)
    row_max = torch.empty(rows, device=logits.device, dtype=compute_dtype)
    log_denominator = torch.empty(rows, device=logits.device, dtype=compute_dtype)
    valid_count = torch.empty((), device=logits.device, dtype=torch.int32)  # written by the reduction (mean, sum)
    if rows:
        grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_ROWS"]),)
        cross_entropy_forward_kernel[grid](
            logits, target, per_row, row_max, log_denominator, rows, classes, logits.stride(0), logits.stride(1),
            target.stride(0), ignore_index, label_smoothing, SMOOTHING=label_smoothing > 0.0,
            **_row_tiles(rows, classes))
    if reduction == "none":
        return per_row, (row_max, log_denominator), valid_count
    result = torch.empty((), device=logits.device, dtype=logits.dtype)
    meta = {"BLOCK_ROWS": interpreter_block(rows, cap=1 << 16)} if INTERPRET else {}
    cross_entropy_reduce_kernel[(1,)](per_row, target, result, valid_count, rows, target.stride(0), ignore_index,
                                      MEAN=reduction == "mean", **meta)
    return result, (row_max, log_denominator), valid_count


def cross_entropy_backward(grad_output: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                           row_statistics: tuple[torch.Tensor, torch.Tensor], valid_count: torch.Tensor,
                           ignore_index: int, reduction: str, label_smoothing: float) -> torch.Tensor:
    """Gradient with respect to ``logits`` (a new contiguous tensor), given ``grad_output`` ((rows,) for
    reduction "none", a scalar otherwise) and what :func:`cross_entropy_forward` returned."""
    check_device("grad_output", grad_output)
    rows, classes = logits.shape
    grad_logits = torch.empty((rows, classes), device=logits.device, dtype=logits.dtype)
    if grad_logits.numel() == 0:
        return grad_logits
    grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_ROWS"]),)
    cross_entropy_backward_kernel[grid](
        logits, target, *row_statistics, grad_output, valid_count, grad_logits, rows, classes, logits.stride(0),
        logits.stride(1), target.stride(0), grad_output.stride(0) if reduction == "none" else 0, ignore_index,
        label_smoothing, MEAN=reduction == "mean", SMOOTHING=label_smoothing > 0.0, **_row_tiles(rows, classes))
    return grad_logits


def compile_cases() -> list[CompileCase]:
    """Each kernel with each GPU config, for fp32/fp16/bf16 logits and int64 targets (contiguous, as a typical launch
    specializes them), mean reduction and label smoothing on."""
    cases = []
    for dtype in ("fp32", "fp16", "bf16"):
        logits, statistics = f"*{dtype}", "*fp32"
        for config in ROW_CONFIGS:
            cases.append(CompileCase(
                "cross_entropy_forward", cross_entropy_forward_kernel,
                dict(logits_pointer=logits, target_pointer="*i64", loss_pointer=statistics, row_max_pointer=statistics,
                     log_denominator_pointer=statistics, rows="i32", classes="i32", logits_stride_row="i32",
                     logits_stride_class="constexpr", target_stride="constexpr", ignore_index="i32",
                     label_smoothing="fp32", SMOOTHING="constexpr", BLOCK_ROWS="constexpr", BLOCK_CLASSES="constexpr"),
                dict(logits_stride_class=1, target_stride=1, SMOOTHING=True, **config.kwargs),
                dtype, config.num_warps, config.num_stages))
            cases.append(CompileCase(
                "cross_entropy_backward", cross_entropy_backward_kernel,
                dict(logits_pointer=logits, target_pointer="*i64", row_max_pointer=statistics,
                     log_denominator_pointer=statistics, grad_output_pointer=logits, valid_count_pointer="*i32",
                     grad_logits_pointer=logits, rows="i32", classes="i32", logits_stride_row="i32",
                     logits_stride_class="constexpr", target_stride="constexpr", grad_output_stride="i32",
                     ignore_index="i32", label_smoothing="fp32", MEAN="constexpr", SMOOTHING="constexpr",
                     BLOCK_ROWS="constexpr", BLOCK_CLASSES="constexpr"),
                dict(logits_stride_class=1, target_stride=1, MEAN=True, SMOOTHING=True, **config.kwargs),
                dtype, config.num_warps, config.num_stages))
        for config in REDUCE_CONFIGS:
            cases.append(CompileCase(
                "cross_entropy_reduce", cross_entropy_reduce_kernel,
                dict(loss_pointer=statistics, target_pointer="*i64", result_pointer=logits, valid_count_pointer="*i32",
                     rows="i32", target_stride="constexpr", ignore_index="i32", MEAN="constexpr",
                     BLOCK_ROWS="constexpr"),
                dict(target_stride=1, MEAN=True, **config.kwargs), dtype, config.num_warps, config.num_stages))
    return cases
