"""Cross-entropy over logits: log-softmax and the negative log-likelihood fused, forward and backward.

Rows. The logits are a (batch, classes, spatial) view: AlexNet's (N, C) is spatial = 1, a (N, C, d1, ..., dk)
input is spatial = d1 * ... * dk, and an unbatched (C,) input is batch = spatial = 1. Row ``r = n * spatial + s``
is the class vector at (n, s); the kernels walk it with the class stride, so an NCHW or channels-last input is read
in place, without a permute copy.

Math. For a row of logits ``x`` (C classes), ``lse = log(sum_c exp(x_c))`` and ``log p_c = x_c - lse``. Every
flavour of torch's ``cross_entropy`` is a weighted sum of ``-log p``::

    loss = sum_c s_c * (lse - x_c) + u * (lse - x_t)

- class indices ``t`` with weights ``w`` (1 without) and label smoothing ``e``: ``u = (1 - e) * w_t`` and the
  smoothing share ``s_c = (e / C) * w_c``;
- probability targets ``y``: ``u = 0`` and ``s_c = w_c * ((1 - e) * y_c + e / C)``.

With ``M = u + sum_c s_c`` (the row's target mass) the gradient is ``d loss / d x_j = M p_j - s_j - u [j == t]``,
and for probability targets ``d loss / d y_j = -(1 - e) w_j log p_j``. Rows whose class index is ``ignore_index``
have loss 0 and no gradient. ``sum`` adds the rows; ``mean`` divides by the summed weight ``w_t`` of the non-ignored
rows for class indices and by the row count for probabilities (torch's rules), so that all-ignored, or all-zero
weights, give NaN as torch does.

Forward: each program takes BLOCK_ROWS rows and walks their classes in BLOCK_CLASSES blocks, keeping a running max
and a running sum of ``exp(x - max)`` rescaled whenever the max grows (online softmax), and ``sum_c s_c (x_c -
max)`` shifted the same way: one read of the logits, stable for any finite logits (1e4 and -1e4 in fp16 included),
in fp32 (fp64 for fp64). It stores each row's loss and, for the backward, its max ``m``, ``log(sum_c exp(x_c -
m))`` and ``M`` (12 bytes a row): max and log-sum kept apart, so that the backward's ``x - lse`` is computed as ``(x
- m) - log(...)`` without the rounding of a large ``lse`` (1e4 has an fp32 ulp of 1e-3). A single-program pass then
sums the losses and the denominator of ``mean`` in a fixed order (deterministic; no atomics).

Backward: recomputes the softmax from the logits and the saved row statistics and writes the gradient in one pass.
Computing the gradient already in the forward (into a logits-sized buffer) would save re-reading the logits, but
would hold a second logits-sized tensor from the forward to the backward and still need a pass to apply
``grad_output``; for AlexNet's 128 x 1000 logits both are negligible, and recomputing keeps what the forward leaves
behind at 12 bytes a row.

Target errors without host syncs. Checking class indices on the host means reading them back (a sync per step).
Instead the forward kernel checks them: an index outside ``[0, C)`` that is not ``ignore_index`` is never used to
address memory (the gather is masked), its row's loss and gradient are NaN (so the loss is never silently finite),
and the program adds the count, minimum and maximum of its bad indices to an int64 error record of three
(:func:`new_target_error_record`) with atomics, which are only issued by programs that saw a bad index. Whoever owns
the record reads it at a moment the host waits for the device anyway (:func:`read_target_errors`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .runtime import INTERPRET, INTERPRETER_MAX_BLOCK, autotune, check_device, gpu_configs, interpreter_block, \
    launcher

# One row per program for ImageNet-sized class counts (1000 classes: one block, 128 programs at batch 128); several
# rows per program for small class counts (10 classes, or a segmentation map's rows), where one row would leave most
# of the tile idle. The 16x64 tile takes 8 warps: with 4, ptxas gives the forward an 8-byte stack frame on sm_80
# (72 registers); with 8 it needs 46 and none (compile report, untimed).
ROW_CONFIGS = gpu_configs(("BLOCK_ROWS", "BLOCK_CLASSES"), [(1, 1024, 4, 3), (1, 4096, 8, 3), (16, 64, 8, 3)])
REDUCE_CONFIGS = gpu_configs(("BLOCK_ROWS",), [(1024, 4, 3)])

INT64_MAX = tl.constexpr(2**63 - 1)
INT64_MIN = tl.constexpr(-(2**63))


@triton.jit
def _class_targets(target_row, row_in_range, ignore_index, classes):
    """(class index as int64, whether the row counts: in range and not ignore_index, whether its index is bad: not
    ignore_index and outside [0, classes)) of the rows at ``target_row``."""
    target = tl.load(target_row, mask=row_in_range, other=0).to(tl.int64)
    not_ignored = row_in_range & (target != ignore_index)
    out_of_range = not_ignored & ((target < 0) | (target >= classes))
    return target, not_ignored & ~out_of_range, out_of_range


@triton.jit
def _smoothing_share(target_row, weight_pointer, class_index, in_range, logits, classes, target_stride_class,
                     weight_stride, label_smoothing, SOFT_TARGETS: tl.constexpr, WEIGHTED: tl.constexpr):
    """``s_c`` of a block of classes (0 outside ``in_range``): ``w_c e / C``, or ``w_c ((1 - e) y_c + e / C)``."""
    share = tl.zeros(logits.shape, logits.dtype) + label_smoothing / tl.cast(classes, logits.dtype)
    if SOFT_TARGETS:
        probability = tl.load(target_row[:, None] + class_index[None, :] * target_stride_class, mask=in_range,
                              other=0.0).to(logits.dtype)
        share += (1.0 - label_smoothing) * probability
    if WEIGHTED:
        weight = tl.load(weight_pointer + class_index * weight_stride, mask=class_index < classes, other=0.0)
        share *= weight.to(logits.dtype)[None, :]
    return tl.where(in_range, share, 0.0)


@autotune(configs=ROW_CONFIGS, key=["classes"])
@triton.jit
def cross_entropy_forward_kernel(
    logits_pointer,  # (batch, classes, spatial), any strides
    target_pointer,  # class indices (batch, spatial), int64 or uint8; or probabilities (batch, classes, spatial)
    weight_pointer,  # (classes,) class weights (read with WEIGHTED)
    loss_pointer,  # (rows,) per-row loss, row n * spatial + s, contiguous
    row_weight_pointer,  # (rows,) each row's part of mean's denominator, compute dtype, contiguous (MEAN)
    row_max_pointer,  # (rows,) max logit of each row, fp32 (fp64 for fp64), contiguous
    log_denominator_pointer,  # (rows,) log(sum_c exp(x_c - row max)), compute dtype, contiguous
    target_mass_pointer,  # (rows,) M = u + sum_c s_c, compute dtype, contiguous
    error_record_pointer,  # (3,) int64: count, minimum and maximum of the bad class indices seen
    rows,  # batch * spatial
    classes,  # number of classes
    spatial,  # product of the dimensions after the class dimension (1 for (N, C) logits)
    logits_stride_batch, logits_stride_class, logits_stride_spatial,  # logits strides, in elements
    target_stride_batch, target_stride_class, target_stride_spatial,  # target strides (class: probabilities only)
    weight_stride,  # weight stride, in elements
    ignore_index,  # class index whose rows are left out
    label_smoothing,  # e in [0, 1], rounded to fp32 (a float argument is fp32)
    label_smoothing_rest,  # e minus its fp32 rounding: with it, fp64 logits see e to about 2**-48
    SOFT_TARGETS: tl.constexpr,  # target holds probabilities, not class indices
    WEIGHTED: tl.constexpr,  # weight is given
    SMOOTHING: tl.constexpr,  # label_smoothing > 0
    MEAN: tl.constexpr,  # write row_weight for the mean
    BLOCK_ROWS: tl.constexpr,  # rows per program
    BLOCK_CLASSES: tl.constexpr,  # classes per step
):
    """Loss and softmax statistics of BLOCK_ROWS rows, with an online max / sum-exp over the classes."""
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS).to(tl.int64)
    row_in_range = row < rows
    batch_index, spatial_index = row // spatial, row % spatial
    logits_row = logits_pointer + batch_index * logits_stride_batch + spatial_index * logits_stride_spatial
    target_row = target_pointer + batch_index * target_stride_batch + spatial_index * target_stride_spatial
    compute_dtype = tl.float64 if logits_pointer.dtype.element_ty == tl.float64 else tl.float32
    label_smoothing = tl.cast(label_smoothing, compute_dtype) + tl.cast(label_smoothing_rest, compute_dtype)
    running_max = tl.full((BLOCK_ROWS,), float("-inf"), compute_dtype)
    shift = tl.zeros((BLOCK_ROWS,), compute_dtype)  # running max, 0 while it is -inf (no NaN from -inf - -inf)
    running_sum = tl.zeros((BLOCK_ROWS,), compute_dtype)  # of exp(x - shift)
    shifted_share_sum = tl.zeros((BLOCK_ROWS,), compute_dtype)  # sum_c s_c (x_c - shift)
    share_sum = tl.zeros((BLOCK_ROWS,), compute_dtype)  # sum_c s_c
    for start in range(0, classes, BLOCK_CLASSES):
        class_index = start + tl.arange(0, BLOCK_CLASSES).to(tl.int64)
        in_range = row_in_range[:, None] & (class_index < classes)[None, :]
        logits = tl.load(logits_row[:, None] + class_index[None, :] * logits_stride_class, mask=in_range,
                         other=float("-inf")).to(compute_dtype)
        new_max = tl.maximum(running_max, tl.max(logits, axis=1))
        new_shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        running_sum = running_sum * tl.exp(running_max - new_shift) + tl.sum(tl.exp(logits - new_shift[:, None]),
                                                                              axis=1)
        if SOFT_TARGETS or SMOOTHING:
            share = _smoothing_share(target_row, weight_pointer, class_index, in_range, logits, classes,
                                     target_stride_class, weight_stride, label_smoothing, SOFT_TARGETS, WEIGHTED)
            shifted_logits = tl.where(in_range, logits - new_shift[:, None], 0.0)
            shifted_share_sum = (shifted_share_sum + (shift - new_shift) * share_sum
                                 + tl.sum(share * shifted_logits, axis=1))
            share_sum += tl.sum(share, axis=1)
        running_max = new_max
        shift = new_shift
    # No classes: every sum is empty and the loss 0, as torch's.
    log_denominator = tl.log(tl.where(row_in_range & (classes > 0), running_sum, 1.0))
    loss = share_sum * log_denominator - shifted_share_sum  # sum_c s_c (lse - x_c)
    target_mass = share_sum
    if SOFT_TARGETS:
        row_weight = tl.where(row_in_range, 1.0, 0.0).to(compute_dtype)
    else:
        target, valid, out_of_range = _class_targets(target_row, row_in_range, ignore_index, classes)
        target_logit = tl.load(logits_row + target * logits_stride_class, mask=valid, other=0.0).to(compute_dtype)
        row_weight = tl.where(valid, 1.0, 0.0).to(compute_dtype)
        if WEIGHTED:
            row_weight = tl.load(weight_pointer + target * weight_stride, mask=valid, other=0.0).to(compute_dtype)
        target_share = (1.0 - label_smoothing) * row_weight  # u
        loss += target_share * ((shift - target_logit) + log_denominator)
        target_mass += target_share
        loss = tl.where(valid, loss, 0.0)
        loss = tl.where(out_of_range, float("nan"), loss)
        bad_count = tl.sum(out_of_range.to(tl.int64), axis=0)
        if bad_count > 0:
            tl.atomic_add(error_record_pointer, bad_count)
            tl.atomic_min(error_record_pointer + 1, tl.min(tl.where(out_of_range, target, INT64_MAX), axis=0))
            tl.atomic_max(error_record_pointer + 2, tl.max(tl.where(out_of_range, target, INT64_MIN), axis=0))
    tl.store(loss_pointer + row, loss.to(loss_pointer.dtype.element_ty), mask=row_in_range)
    if MEAN:
        tl.store(row_weight_pointer + row, row_weight, mask=row_in_range)
    tl.store(row_max_pointer + row, shift, mask=row_in_range)
    tl.store(log_denominator_pointer + row, log_denominator, mask=row_in_range)
    tl.store(target_mass_pointer + row, target_mass, mask=row_in_range)


@autotune(configs=REDUCE_CONFIGS, key=[])
@triton.jit
def cross_entropy_reduce_kernel(
    loss_pointer,  # (rows,) per-row losses, fp32 (fp64 for fp64), contiguous
    row_weight_pointer,  # (rows,) each row's part of mean's denominator, contiguous (MEAN)
    result_pointer,  # () the reduced loss, in the logits' dtype
    total_weight_pointer,  # () mean's denominator, compute dtype (MEAN; read by the backward)
    rows,  # number of rows
    MEAN: tl.constexpr,  # divide the sum by the summed row weights
    BLOCK_ROWS: tl.constexpr,  # rows per step
):
    """Sum (or weighted mean) of the per-row losses, by one program in a fixed order."""
    total = tl.zeros((BLOCK_ROWS,), loss_pointer.dtype.element_ty)
    total_weight = tl.zeros((BLOCK_ROWS,), loss_pointer.dtype.element_ty)
    for start in range(0, rows, BLOCK_ROWS):
        row = start + tl.arange(0, BLOCK_ROWS).to(tl.int64)
        total += tl.load(loss_pointer + row, mask=row < rows, other=0.0)
        if MEAN:
            total_weight += tl.load(row_weight_pointer + row, mask=row < rows, other=0.0)
    result = tl.sum(total, axis=0)
    if MEAN:  # torch divides 0 by 0 (NaN) when no row counts, also when only the smoothing term is nonzero
        weight_sum = tl.sum(total_weight, axis=0)
        result = tl.where(weight_sum == 0, float("nan"), result / tl.where(weight_sum == 0, 1.0, weight_sum))
        tl.store(total_weight_pointer, weight_sum)
    tl.store(result_pointer, result.to(result_pointer.dtype.element_ty))


@autotune(configs=ROW_CONFIGS, key=["classes"])
@triton.jit
def cross_entropy_backward_kernel(
    logits_pointer,  # (batch, classes, spatial), any strides
    target_pointer,  # class indices (batch, spatial) or probabilities (batch, classes, spatial), any strides
    weight_pointer,  # (classes,) class weights (read with WEIGHTED)
    row_max_pointer,  # (rows,) saved by the forward, contiguous
    log_denominator_pointer,  # (rows,) saved by the forward, contiguous
    target_mass_pointer,  # (rows,) saved by the forward, contiguous
    grad_output_pointer,  # (batch, spatial) for reduction "none"; a scalar (strides 0) for "sum" and "mean"
    total_weight_pointer,  # () mean's denominator (read with MEAN)
    grad_logits_pointer,  # (batch, classes, spatial), any strides: the result
    grad_target_pointer,  # (batch, classes, spatial), any strides: the probabilities' gradient (GRAD_TARGET)
    rows,  # batch * spatial
    classes,  # number of classes
    spatial,  # product of the dimensions after the class dimension
    logits_stride_batch, logits_stride_class, logits_stride_spatial,  # logits strides, in elements
    target_stride_batch, target_stride_class, target_stride_spatial,  # target strides, in elements
    weight_stride,  # weight stride, in elements
    grad_output_stride_batch, grad_output_stride_spatial,  # grad_output strides (0 for a scalar)
    grad_logits_stride_batch, grad_logits_stride_class, grad_logits_stride_spatial,  # result strides
    grad_target_stride_batch, grad_target_stride_class, grad_target_stride_spatial,  # grad_target strides
    ignore_index,  # class index whose rows are left out
    label_smoothing,  # e in [0, 1], rounded to fp32 (a float argument is fp32)
    label_smoothing_rest,  # e minus its fp32 rounding: with it, fp64 logits see e to about 2**-48
    SOFT_TARGETS: tl.constexpr,  # target holds probabilities
    WEIGHTED: tl.constexpr,  # weight is given
    SMOOTHING: tl.constexpr,  # label_smoothing > 0
    MEAN: tl.constexpr,  # the forward reduced with "mean"
    GRAD_TARGET: tl.constexpr,  # write the probabilities' gradient
    BLOCK_ROWS: tl.constexpr,  # rows per program
    BLOCK_CLASSES: tl.constexpr,  # classes per step
):
    """``(M p_j - s_j - u [j == t]) * grad_output[row]`` (/ the summed weights for mean); 0 for ignored rows and
    NaN for rows with a bad class index."""
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS).to(tl.int64)
    row_in_range = row < rows
    batch_index, spatial_index = row // spatial, row % spatial
    logits_row = logits_pointer + batch_index * logits_stride_batch + spatial_index * logits_stride_spatial
    target_row = target_pointer + batch_index * target_stride_batch + spatial_index * target_stride_spatial
    grad_logits_row = (grad_logits_pointer + batch_index * grad_logits_stride_batch
                       + spatial_index * grad_logits_stride_spatial)
    grad_target_row = (grad_target_pointer + batch_index * grad_target_stride_batch
                       + spatial_index * grad_target_stride_spatial)
    compute_dtype = tl.float64 if logits_pointer.dtype.element_ty == tl.float64 else tl.float32
    label_smoothing = tl.cast(label_smoothing, compute_dtype) + tl.cast(label_smoothing_rest, compute_dtype)
    row_max = tl.load(row_max_pointer + row, mask=row_in_range, other=0.0)
    log_denominator = tl.load(log_denominator_pointer + row, mask=row_in_range, other=0.0)
    target_mass = tl.load(target_mass_pointer + row, mask=row_in_range, other=0.0)
    scale = tl.load(grad_output_pointer + batch_index * grad_output_stride_batch
                    + spatial_index * grad_output_stride_spatial, mask=row_in_range, other=0.0).to(compute_dtype)
    if MEAN:
        total_weight = tl.load(total_weight_pointer)
        scale = tl.where(total_weight == 0, float("nan"), scale / tl.where(total_weight == 0, 1.0, total_weight))
    target = tl.zeros((BLOCK_ROWS,), tl.int64)
    target_share = tl.zeros((BLOCK_ROWS,), compute_dtype)
    if not SOFT_TARGETS:
        target, valid, out_of_range = _class_targets(target_row, row_in_range, ignore_index, classes)
        scale = tl.where(out_of_range, float("nan"), tl.where(valid, scale, 0.0))
        target_share = tl.where(valid, 1.0 - label_smoothing, 0.0).to(compute_dtype)
        if WEIGHTED:
            target_share *= tl.load(weight_pointer + target * weight_stride, mask=valid, other=0.0).to(compute_dtype)
    for start in range(0, classes, BLOCK_CLASSES):
        class_index = start + tl.arange(0, BLOCK_CLASSES).to(tl.int64)
        in_range = row_in_range[:, None] & (class_index < classes)[None, :]
        logits = tl.load(logits_row[:, None] + class_index[None, :] * logits_stride_class, mask=in_range,
                         other=float("-inf")).to(compute_dtype)
        log_probability = (logits - row_max[:, None]) - log_denominator[:, None]
        grad = tl.exp(log_probability) * target_mass[:, None]
        if SOFT_TARGETS or SMOOTHING:
            grad -= _smoothing_share(target_row, weight_pointer, class_index, in_range, logits, classes,
                                     target_stride_class, weight_stride, label_smoothing, SOFT_TARGETS, WEIGHTED)
        if not SOFT_TARGETS:
            grad -= tl.where(class_index[None, :] == target[:, None], target_share[:, None], 0.0)
        grad *= scale[:, None]
        tl.store(grad_logits_row[:, None] + class_index[None, :] * grad_logits_stride_class,
                 grad.to(grad_logits_pointer.dtype.element_ty), mask=in_range)
        if GRAD_TARGET:  # d loss / d y_j = -(1 - e) w_j log p_j
            grad_target = -(1.0 - label_smoothing) * log_probability * scale[:, None]
            if WEIGHTED:
                weight = tl.load(weight_pointer + class_index * weight_stride, mask=class_index < classes, other=0.0)
                grad_target *= weight.to(compute_dtype)[None, :]
            tl.store(grad_target_row[:, None] + class_index[None, :] * grad_target_stride_class,
                     grad_target.to(grad_target_pointer.dtype.element_ty), mask=in_range)


# Interpreter-only tiling: every class in one block and as many rows as fit INTERPRETER_MAX_BLOCK elements, so a
# launch is a handful of programs (the interpreter pays per program and per tile operation).
def _interpreter_row_tiles(rows: int, classes: int) -> dict:
    block_classes = interpreter_block(classes)
    return {"BLOCK_CLASSES": block_classes,
            "BLOCK_ROWS": interpreter_block(rows, cap=max(1, INTERPRETER_MAX_BLOCK // block_classes), minimum=1)}


def _row_tiles(rows: int, classes: int) -> dict:
    """Launch meta-parameters: none on the GPU (autotuned); in the interpreter :func:`_interpreter_row_tiles`."""
    return _interpreter_row_tiles(rows, classes) if INTERPRET else {}


def new_target_error_record(device: torch.device) -> torch.Tensor:
    """An empty error record for :func:`cross_entropy_forward`: (count, minimum, maximum) of bad class indices.
    Filled on the device (no host-to-device copy, which would wait for the device)."""
    record = torch.empty(3, dtype=torch.int64, device=device)
    clear_target_errors(record)
    return record


def clear_target_errors(record: torch.Tensor) -> None:
    record[0].fill_(0)
    record[1].fill_(torch.iinfo(torch.int64).max)
    record[2].fill_(torch.iinfo(torch.int64).min)


def read_target_errors(record: torch.Tensor) -> tuple[int, int, int]:
    """(count, minimum, maximum) of the bad class indices recorded; reading waits for the device."""
    count, low, high = record.tolist()
    return count, low, high


def _split_float(value: float) -> tuple[float, float]:
    """``value`` as its fp32 rounding and the rest, two fp32 kernel arguments whose sum is ``value`` to 2**-48."""
    rounded = float(torch.tensor(value, dtype=torch.float32))
    return rounded, value - rounded


def _strides(tensor: torch.Tensor | None, dims: int) -> tuple[int, ...]:
    return (0,) * dims if tensor is None else tuple(tensor.stride())


def cross_entropy_forward(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                          error_record: torch.Tensor, *, ignore_index: int, reduction: str, label_smoothing: float,
                          loss_shape: tuple[int, ...]):
    """Loss of ``logits`` (batch, classes, spatial) against ``target``: class indices (batch, spatial), int64 or
    uint8, or probabilities shaped like ``logits``; ``weight`` (classes,) or None. Bad class indices are recorded
    in ``error_record`` (:func:`new_target_error_record`) and make their rows NaN. Returns ``(loss, saved)``: the
    loss as torch returns it for ``reduction`` (shape ``loss_shape`` for "none"; in the logits' dtype), and what
    :func:`cross_entropy_backward` needs (each row's max logit, log-denominator and target mass; mean's
    denominator, a 0-D tensor)."""
    check_device("input", logits)
    batch, classes, spatial = logits.shape
    rows = batch * spatial
    soft_targets = target.dim() == 3
    compute_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    statistics = [torch.empty(rows, device=logits.device, dtype=compute_dtype) for _ in range(3)]
    if reduction == "none":
        per_row = torch.empty(loss_shape, device=logits.device, dtype=logits.dtype)
    else:
        per_row = torch.empty(rows, device=logits.device, dtype=compute_dtype)
    row_weight = torch.empty(rows if reduction == "mean" else 0, device=logits.device, dtype=compute_dtype)
    total_weight = torch.empty((), device=logits.device, dtype=compute_dtype)
    target_strides = target.stride() if soft_targets else (target.stride(0), 0, target.stride(1))
    if rows:
        grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_ROWS"]),)
        launcher(cross_entropy_forward_kernel)[grid](
            logits, target, logits if weight is None else weight, per_row, row_weight, *statistics, error_record,
            rows, classes, spatial, *logits.stride(), *target_strides, _strides(weight, 1)[0], ignore_index,
            *_split_float(label_smoothing), SOFT_TARGETS=soft_targets, WEIGHTED=weight is not None,
            SMOOTHING=label_smoothing > 0.0, MEAN=reduction == "mean", **_row_tiles(rows, classes))
    saved = (*statistics, total_weight)
    if reduction == "none":
        return per_row, saved
    result = torch.empty((), device=logits.device, dtype=logits.dtype)
    meta = {"BLOCK_ROWS": interpreter_block(rows)} if INTERPRET else {}
    launcher(cross_entropy_reduce_kernel)[(1,)](per_row, row_weight, result, total_weight, rows,
                                                MEAN=reduction == "mean", **meta)
    return result, saved


def cross_entropy_backward(grad_output: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                           weight: torch.Tensor | None, saved: tuple[torch.Tensor, ...], *, ignore_index: int,
                           reduction: str, label_smoothing: float, grad_target: bool = False):
    """Gradients ``(grad_logits, grad_target)`` given ``grad_output`` ((batch, spatial) for reduction "none", a
    scalar otherwise) and what :func:`cross_entropy_forward` saved: ``grad_logits`` has the layout of ``logits``
    where that is dense (else contiguous); ``grad_target`` (probability targets, with ``grad_target``) likewise for
    ``target``, else None."""
    check_device("grad_output", grad_output)
    batch, classes, spatial = logits.shape
    rows = batch * spatial
    soft_targets = target.dim() == 3
    grad_logits = torch.empty_like(logits)
    grad_probabilities = torch.empty_like(target) if grad_target else None
    if grad_logits.numel() == 0:
        return grad_logits, grad_probabilities
    grad_output_strides = grad_output.stride() if reduction == "none" else (0, 0)
    target_strides = target.stride() if soft_targets else (target.stride(0), 0, target.stride(1))
    grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_ROWS"]),)
    launcher(cross_entropy_backward_kernel)[grid](
        logits, target, logits if weight is None else weight, *saved[:3], grad_output, saved[3], grad_logits,
        grad_logits if grad_probabilities is None else grad_probabilities, rows, classes, spatial, *logits.stride(),
        *target_strides, _strides(weight, 1)[0], *grad_output_strides, *grad_logits.stride(),
        *_strides(grad_probabilities, 3), ignore_index, *_split_float(label_smoothing), SOFT_TARGETS=soft_targets,
        WEIGHTED=weight is not None, SMOOTHING=label_smoothing > 0.0, MEAN=reduction == "mean",
        GRAD_TARGET=grad_target, **_row_tiles(rows, classes))
    return grad_logits, grad_probabilities
