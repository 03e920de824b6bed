"""Fully connected layer ``output = dropout(relu(input @ weight^T + bias))`` as one tiled GEMM, and its backward as
two GEMMs whose prologue applies the ReLU (and dropout) mask to the incoming gradient.

Forward. Each program computes a (BLOCK_ROWS x BLOCK_OUT) tile of the output, accumulating ``input @ weight^T`` in
fp32 (fp64 for fp64) over BLOCK_IN-wide slices of the in_features. Programs are numbered in groups of GROUP_ROWS
row tiles (Triton's matmul tutorial): consecutive programs share weight columns while those are still in L2. The
epilogue works on the fp32 accumulator before the single store: + bias, ReLU, dropout. Dropout follows the
project's scheme (``kernels/dropout.py``): element (row, column) of the 2-D output has flat index
``row * out_features + column`` and survives iff ``dropout_keep(seed, index, p)``; survivors are scaled by
``1 / (1 - p)``. So no mask is ever stored, and the fused layer drops exactly the elements a standalone dropout
with the same seed would drop from ``relu(linear(...))``.

Backward. With ``grad_pre`` the gradient with respect to ``input @ weight^T + bias``::

    grad_pre    = grad_output * relu_mask * keep_mask / (1 - p)
    grad_input  = grad_pre @ weight          (rows x in_features, reduction over out_features)
    grad_weight = grad_pre^T @ input         (out_features x in_features, reduction over rows)
    grad_bias   = grad_pre summed over rows  (fused into the grad-weight kernel)

- With ReLU (fc6/fc7), ``grad_pre`` is never materialised. The saved *post-dropout* output carries both masks:
  ``output > 0`` iff the element was kept AND its pre-activation was positive (kept values are scaled up by
  ``1 / (1 - p) >= 1``, so they round to zero only where the pre-activation itself does, where torch's ReLU
  gradient is zero too). Both GEMMs load ``grad_output`` and ``output`` tiles and mask as they load (the
  prologue); the ``1 / (1 - p)`` scale is applied once, to the fp32 accumulator (the epilogue). No random numbers
  are drawn in the backward at all, and saving the pre-dropout ReLU output instead would cost a second
  activation-sized tensor for the same information.
- Without ReLU but with dropout, the keep mask is regenerated from the seed, once per element, by a small
  elementwise pass that writes ``grad_pre`` (a temporary the size of the output, freed when the backward returns);
  the two GEMMs then run without masks. Regenerating Philox inside the GEMM prologues instead would redo it for
  every program that loads the same gradient tile: in_features / BLOCK_IN times in the grad-input GEMM (144 times
  for fc6), some 100 integer operations per element each time, which costs far more than the GEMM itself.

The bias gradient is a row-sum of the same masked gradient tiles the grad-weight kernel loads anyway; every
program accumulates it (a cheap reduction beside the dot) and the programs of the first in_features tile store it.

Precision. fp16 and bf16 use tensor cores with fp32 accumulation. fp32 follows torch's own switch: IEEE fp32 unless
the user enabled TF32 for matmuls (``torch.backends.cuda.matmul.allow_tf32``, set by
``torch.set_float32_matmul_precision("high")``), so the Triton and torch providers agree on what fp32 means.
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from .dropout import dropout_keep
from .relu import relu, relu_gradient
from .runtime import (INTERPRET, autotune, autotune_bucket, check_device, check_dot_dtype, gpu_configs,
                      interpreter_block, launcher, pipelined_shared_memory)

# Interpreter tiles: a whole dimension where it fits (the CPU training demo runs these layers in the interpreter).
INTERPRETER_TILE = 512
GROUP_ROWS = 8


@dataclasses.dataclass(frozen=True)
class GemmConfigs:
    """A GEMM kernel's GPU tiles, in two lists: for tensor cores (fp16, bf16, and fp32 as TF32) and for CUDA-core
    FMA (fp32 with IEEE precision: a different machine, whose fully unrolled FMA dot spills with the wide K steps that
    suit tensor cores). The autotuner times only the list the launch can use."""

    tensor_cores: list[triton.Config]
    fma: list[triton.Config]
    blocks: tuple[str, str, str]  # the output tile's two sides, then the reduction step
    operand: str  # an operand pointer argument: its element size prices the pipelined tiles in shared memory

    @property
    def all(self) -> list:
        return self.tensor_cores + self.fma

    def autotuned(self, key: list[str]):
        """Decorator: autotune a GEMM kernel over these configs, keyed on its ``key`` sizes and its precision."""
        return autotune(configs=self.all, key=[*key, "INPUT_PRECISION"],
                        prune_configs_by={"early_config_prune": self.prune},
                        shared_memory=pipelined_shared_memory(*self.blocks, self.operand))

    def prune(self, configs, named_args, **kwargs) -> list:
        """``early_config_prune`` for triton.autotune: the configs for this launch's dtype and precision."""
        dtype = next(value.dtype for value in named_args.values() if isinstance(value, torch.Tensor))
        tensor_cores = dtype in (torch.float16, torch.bfloat16) or (
            dtype == torch.float32 and kwargs.get("INPUT_PRECISION") == "tf32")
        return self.tensor_cores if tensor_cores else self.fma


# GPU tiles, sized for AlexNet's classifier at batch 128 on H100/H200 and chosen from compile reports (sm_80 and
# sm_90 without spilling, tritonnet.kernels.gpu_compile), untimed. With only 128 rows, a 128x128 output tile would
# give fc6/fc7 32 programs for 132 SMs, so the tiles are narrow enough for 64-256 programs that all stream weights.
# Forward: rows x out_features, reduction over in_features: fc6 128 x 4096 (9216), fc7 128 x 4096 (4096),
# fc8 128 x 1000 (4096).
FORWARD_BLOCKS = ("BLOCK_ROWS", "BLOCK_OUT", "BLOCK_IN")
FORWARD_CONFIGS = GemmConfigs(
    tensor_cores=gpu_configs(FORWARD_BLOCKS, [(128, 64, 64, 8, 3), (64, 64, 128, 4, 3), (64, 32, 128, 4, 4)]),
    fma=gpu_configs(FORWARD_BLOCKS, [(128, 64, 32, 8, 3), (64, 32, 32, 4, 3)]), blocks=FORWARD_BLOCKS,
    operand="input_pointer")
# Grad-input: rows x in_features, reduction over out_features: fc6 128 x 9216 (4096), fc7 128 x 4096 (4096),
# fc8 128 x 4096 (1000).
GRAD_INPUT_BLOCKS = ("BLOCK_ROWS", "BLOCK_IN", "BLOCK_OUT")
GRAD_INPUT_CONFIGS = GemmConfigs(
    tensor_cores=gpu_configs(GRAD_INPUT_BLOCKS, [(128, 64, 64, 8, 3), (64, 128, 64, 8, 3), (64, 64, 128, 8, 3)]),
    fma=gpu_configs(GRAD_INPUT_BLOCKS, [(64, 64, 32, 8, 3), (32, 64, 32, 4, 3)]), blocks=GRAD_INPUT_BLOCKS,
    operand="grad_output_pointer")
# Grad-weight: out_features x in_features, reduction over the batch (128 rows for AlexNet): thousands of programs of
# one or two reduction steps each, bound by writing the weight gradient: two pipeline stages are all two steps use
# (and three of the 64-wide TF32 tiles overflow an A100's 163 KiB per block).
GRAD_WEIGHT_BLOCKS = ("BLOCK_OUT", "BLOCK_IN", "BLOCK_ROWS")
GRAD_WEIGHT_CONFIGS = GemmConfigs(
    tensor_cores=gpu_configs(GRAD_WEIGHT_BLOCKS, [(128, 128, 64, 8, 2), (128, 64, 64, 8, 2), (64, 128, 64, 8, 2)]),
    fma=gpu_configs(GRAD_WEIGHT_BLOCKS, [(128, 64, 32, 8, 3), (64, 32, 32, 4, 3)]), blocks=GRAD_WEIGHT_BLOCKS,
    operand="grad_output_pointer")
# The elementwise pass of the backward without ReLU: Philox-bound; a small tile keeps the random state in registers.
DROPOUT_GRAD_CONFIGS = gpu_configs(("BLOCK_ROWS", "BLOCK_OUT"), [(16, 128, 4, 3)])


@triton.jit
def _output_tile(first_extent, second_extent, BLOCK_FIRST: tl.constexpr, BLOCK_SECOND: tl.constexpr,
                 GROUP: tl.constexpr):
    """This program's tile of a (first_extent x second_extent) output, as int64 indices along both dimensions and
    the tile's number along the second. Programs visit GROUP tiles of the first dimension for each tile of the second
    before moving on, so that the operand tiles they share are reused from L2."""
    tiles_second = tl.cdiv(second_extent, BLOCK_SECOND)
    program = tl.program_id(0)
    programs_per_group = GROUP * tiles_second
    first_start = (program // programs_per_group) * GROUP
    group_size = min(tl.cdiv(first_extent, BLOCK_FIRST) - first_start, GROUP)
    tile_first = first_start + (program % programs_per_group) % group_size
    tile_second = (program % programs_per_group) // group_size
    first = tile_first * BLOCK_FIRST + tl.arange(0, BLOCK_FIRST).to(tl.int64)
    second = tile_second * BLOCK_SECOND + tl.arange(0, BLOCK_SECOND).to(tl.int64)
    return first, second, tile_second


@FORWARD_CONFIGS.autotuned(key=["rows_bucket", "out_features", "in_features"])
@triton.jit
def linear_forward_kernel(
    input_pointer,  # (rows, in_features), any strides
    weight_pointer,  # (out_features, in_features), any strides
    bias_pointer,  # (out_features,); unused without HAS_BIAS
    output_pointer,  # (rows, out_features), contiguous
    rows,  # number of rows of the flattened input (the product of its leading dimensions)
    rows_bucket,  # rows rounded up to a power of two: the autotuner's key only (see autotune_bucket)
    out_features,  # number of output features
    in_features,  # number of input features: the GEMM's reduction length
    input_stride_row, input_stride_feature,  # input strides, in elements
    weight_stride_out, weight_stride_in,  # weight strides, in elements
    bias_stride,  # bias stride, in elements
    seed_pointer,  # the Philox seed of the dropout mask: one int64 (read with DROPOUT)
    dropout_p,  # probability of dropping an element (used with DROPOUT)
    HAS_BIAS: tl.constexpr,  # add the bias in the epilogue
    RELU: tl.constexpr,  # apply ReLU in the epilogue
    DROPOUT: tl.constexpr,  # apply dropout in the epilogue
    INPUT_PRECISION: tl.constexpr,  # tl.dot's input precision for fp32: "ieee" or "tf32"
    BLOCK_ROWS: tl.constexpr,  # output tile height
    BLOCK_OUT: tl.constexpr,  # output tile width
    BLOCK_IN: tl.constexpr,  # reduction step
    GROUP_ROWS: tl.constexpr,  # row tiles per group of the program order
):
    """One (BLOCK_ROWS x BLOCK_OUT) tile of ``dropout(relu(input @ weight^T + bias))``."""
    row, out_feature, _ = _output_tile(rows, out_features, BLOCK_ROWS, BLOCK_OUT, GROUP_ROWS)
    row_in_range = row < rows
    out_in_range = out_feature < out_features
    input_rows = input_pointer + row[:, None] * input_stride_row
    weight_columns = weight_pointer + out_feature[None, :] * weight_stride_out  # of weight^T: (BLOCK_IN, BLOCK_OUT)
    accumulator_dtype = tl.float64 if input_pointer.dtype.element_ty == tl.float64 else tl.float32
    accumulator = tl.zeros((BLOCK_ROWS, BLOCK_OUT), dtype=accumulator_dtype)
    for start in range(0, in_features, BLOCK_IN):
        in_feature = start + tl.arange(0, BLOCK_IN).to(tl.int64)
        in_range = in_feature < in_features
        input_block = tl.load(input_rows + in_feature[None, :] * input_stride_feature,
                              mask=row_in_range[:, None] & in_range[None, :], other=0.0)
        weight_block = tl.load(weight_columns + in_feature[:, None] * weight_stride_in,
                               mask=in_range[:, None] & out_in_range[None, :], other=0.0)
        accumulator = tl.dot(input_block, weight_block, accumulator, input_precision=INPUT_PRECISION)

    if HAS_BIAS:
        bias = tl.load(bias_pointer + out_feature * bias_stride, mask=out_in_range, other=0.0)
        accumulator += bias.to(accumulator_dtype)[None, :]
    if RELU:
        accumulator = relu(accumulator)
    flat_index = row[:, None] * out_features + out_feature[None, :]
    if DROPOUT:
        keep = dropout_keep(tl.load(seed_pointer), flat_index, dropout_p)
        accumulator = tl.where(keep, accumulator / (1.0 - dropout_p), 0.0)
    tl.store(output_pointer + flat_index, accumulator.to(output_pointer.dtype.element_ty),
             mask=row_in_range[:, None] & out_in_range[None, :])


@triton.jit
def _masked_grad_output(grad_output_pointer, output_pointer, row, out_feature, in_range, out_features,
                        grad_output_stride_row, grad_output_stride_out, RELU: tl.constexpr):
    """The backward's prologue: a tile of ``grad_output`` (its shape is the broadcast of the int64 indices ``row``
    and ``out_feature``), zero where the saved forward ``output`` (contiguous (rows, out_features); read with RELU)
    is zero or negative: where ReLU or dropout zeroed it (a NaN output passes the gradient, as torch's relu)."""
    grad = tl.load(grad_output_pointer + row * grad_output_stride_row + out_feature * grad_output_stride_out,
                   mask=in_range, other=0.0)
    if RELU:
        output = tl.load(output_pointer + row * out_features + out_feature, mask=in_range, other=0.0)
        grad = relu_gradient(grad, output)
    return grad


@autotune(configs=DROPOUT_GRAD_CONFIGS, key=["rows_bucket", "out_features"])
@triton.jit
def linear_dropout_grad_kernel(
    grad_output_pointer,  # (rows, out_features), any strides
    grad_pre_pointer,  # (rows, out_features), contiguous: the result
    rows, out_features,  # the output's shape
    rows_bucket,  # rows rounded up to a power of two: the autotuner's key only (see autotune_bucket)
    grad_output_stride_row, grad_output_stride_out,  # grad_output strides, in elements
    seed_pointer,  # the Philox seed of the forward's dropout mask: one int64
    dropout_p,  # the forward's dropout probability
    BLOCK_ROWS: tl.constexpr,  # tile height
    BLOCK_OUT: tl.constexpr,  # tile width
):
    """``grad_pre = grad_output * keep / (1 - p)`` for one tile, with the forward's mask (used without ReLU)."""
    row = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS).to(tl.int64)
    out_feature = tl.program_id(1) * BLOCK_OUT + tl.arange(0, BLOCK_OUT).to(tl.int64)
    in_range = (row < rows)[:, None] & (out_feature < out_features)[None, :]
    grad = tl.load(grad_output_pointer + row[:, None] * grad_output_stride_row
                   + out_feature[None, :] * grad_output_stride_out, mask=in_range, other=0.0)
    flat_index = row[:, None] * out_features + out_feature[None, :]
    compute_dtype = tl.float64 if grad_pre_pointer.dtype.element_ty == tl.float64 else tl.float32
    keep = dropout_keep(tl.load(seed_pointer), flat_index, dropout_p)
    grad_pre = tl.where(keep, grad.to(compute_dtype) / (1.0 - dropout_p), 0.0)
    tl.store(grad_pre_pointer + flat_index, grad_pre.to(grad_pre_pointer.dtype.element_ty), mask=in_range)


@GRAD_INPUT_CONFIGS.autotuned(key=["rows_bucket", "in_features", "out_features"])
@triton.jit
def linear_grad_input_kernel(
    grad_output_pointer,  # (rows, out_features), any strides
    output_pointer,  # saved forward output (rows, out_features), contiguous; used with RELU
    weight_pointer,  # (out_features, in_features), any strides
    grad_input_pointer,  # (rows, in_features), contiguous
    rows, in_features,  # the tile grid: the grad-input's shape
    rows_bucket,  # rows rounded up to a power of two: the autotuner's key only (see autotune_bucket)
    out_features,  # the reduction length
    grad_output_stride_row, grad_output_stride_out,  # grad_output strides, in elements
    weight_stride_out, weight_stride_in,  # weight strides, in elements
    dropout_p,  # the forward's dropout probability (used with DROPOUT_SCALE)
    RELU: tl.constexpr,  # mask the gradient where the saved output is not positive
    DROPOUT_SCALE: tl.constexpr,  # scale the result by 1 / (1 - p) (dropout's mask comes with the ReLU mask)
    INPUT_PRECISION: tl.constexpr,  # tl.dot's input precision for fp32: "ieee" or "tf32"
    BLOCK_ROWS: tl.constexpr,  # tile height
    BLOCK_IN: tl.constexpr,  # tile width
    BLOCK_OUT: tl.constexpr,  # reduction step
    GROUP_ROWS: tl.constexpr,  # row tiles per group of the program order
):
    """One (BLOCK_ROWS x BLOCK_IN) tile of ``grad_input = grad_pre @ weight``."""
    row, in_feature, _ = _output_tile(rows, in_features, BLOCK_ROWS, BLOCK_IN, GROUP_ROWS)
    row_in_range = row < rows
    in_in_range = in_feature < in_features
    weight_columns = weight_pointer + in_feature[None, :] * weight_stride_in
    accumulator_dtype = tl.float64 if weight_pointer.dtype.element_ty == tl.float64 else tl.float32
    accumulator = tl.zeros((BLOCK_ROWS, BLOCK_IN), dtype=accumulator_dtype)
    for start in range(0, out_features, BLOCK_OUT):
        out_feature = start + tl.arange(0, BLOCK_OUT).to(tl.int64)
        out_in_range = out_feature < out_features
        grad = _masked_grad_output(grad_output_pointer, output_pointer, row[:, None], out_feature[None, :],
                                   row_in_range[:, None] & out_in_range[None, :], out_features,
                                   grad_output_stride_row, grad_output_stride_out, RELU)
        weight_block = tl.load(weight_columns + out_feature[:, None] * weight_stride_out,
                               mask=out_in_range[:, None] & in_in_range[None, :], other=0.0)
        accumulator = tl.dot(grad.to(weight_block.dtype), weight_block, accumulator, input_precision=INPUT_PRECISION)
    if DROPOUT_SCALE:
        accumulator = accumulator / (1.0 - dropout_p)
    tl.store(grad_input_pointer + row[:, None] * in_features + in_feature[None, :],
             accumulator.to(grad_input_pointer.dtype.element_ty), mask=row_in_range[:, None] & in_in_range[None, :])


@GRAD_WEIGHT_CONFIGS.autotuned(key=["out_features", "in_features", "rows_bucket"])
@triton.jit
def linear_grad_weight_kernel(
    grad_output_pointer,  # (rows, out_features), any strides
    output_pointer,  # saved forward output (rows, out_features), contiguous; used with RELU
    input_pointer,  # (rows, in_features), any strides
    grad_weight_pointer,  # (out_features, in_features), contiguous
    grad_bias_pointer,  # (out_features,), contiguous; written with HAS_BIAS
    out_features, in_features,  # the tile grid: the grad-weight's shape
    rows,  # the reduction length
    rows_bucket,  # rows rounded up to a power of two: the autotuner's key only (see autotune_bucket)
    grad_output_stride_row, grad_output_stride_out,  # grad_output strides, in elements
    input_stride_row, input_stride_feature,  # input strides, in elements
    dropout_p,  # the forward's dropout probability (used with DROPOUT_SCALE)
    HAS_BIAS: tl.constexpr,  # also compute the bias gradient
    RELU: tl.constexpr,  # mask the gradient where the saved output is not positive
    DROPOUT_SCALE: tl.constexpr,  # scale the results by 1 / (1 - p) (dropout's mask comes with the ReLU mask)
    INPUT_PRECISION: tl.constexpr,  # tl.dot's input precision for fp32: "ieee" or "tf32"
    BLOCK_OUT: tl.constexpr,  # tile height
    BLOCK_IN: tl.constexpr,  # tile width
    BLOCK_ROWS: tl.constexpr,  # reduction step
    GROUP_OUT: tl.constexpr,  # out_features tiles per group of the program order
):
    """One (BLOCK_OUT x BLOCK_IN) tile of ``grad_weight = grad_pre^T @ input``; the programs of the first
    in_features tile also store ``grad_bias = sum over rows of grad_pre``."""
    # (one in_features tile when in_features == 0, for the bias gradient)
    out_feature, in_feature, tile_in = _output_tile(out_features, tl.maximum(in_features, 1), BLOCK_OUT, BLOCK_IN,
                                                    GROUP_OUT)
    out_in_range = out_feature < out_features
    in_in_range = in_feature < in_features
    input_columns = input_pointer + in_feature[None, :] * input_stride_feature
    accumulator_dtype = tl.float64 if input_pointer.dtype.element_ty == tl.float64 else tl.float32
    accumulator = tl.zeros((BLOCK_OUT, BLOCK_IN), dtype=accumulator_dtype)
    bias_accumulator = tl.zeros((BLOCK_OUT,), dtype=accumulator_dtype)
    for start in range(0, rows, BLOCK_ROWS):
        row = start + tl.arange(0, BLOCK_ROWS).to(tl.int64)
        row_in_range = row < rows
        grad_transposed = _masked_grad_output(grad_output_pointer, output_pointer, row[None, :], out_feature[:, None],
                                              out_in_range[:, None] & row_in_range[None, :], out_features,
                                              grad_output_stride_row, grad_output_stride_out, RELU)
        input_block = tl.load(input_columns + row[:, None] * input_stride_row,
                              mask=row_in_range[:, None] & in_in_range[None, :], other=0.0)
        accumulator = tl.dot(grad_transposed.to(input_block.dtype), input_block, accumulator,
                             input_precision=INPUT_PRECISION)
        if HAS_BIAS:
            bias_accumulator += tl.sum(grad_transposed.to(accumulator_dtype), axis=1)
    if DROPOUT_SCALE:
        accumulator = accumulator / (1.0 - dropout_p)
        bias_accumulator = bias_accumulator / (1.0 - dropout_p)
    tl.store(grad_weight_pointer + out_feature[:, None] * in_features + in_feature[None, :],
             accumulator.to(grad_weight_pointer.dtype.element_ty), mask=out_in_range[:, None] & in_in_range[None, :])
    if HAS_BIAS:
        if tile_in == 0:
            tl.store(grad_bias_pointer + out_feature, bias_accumulator.to(grad_bias_pointer.dtype.element_ty),
                     mask=out_in_range)


def _input_precision(dtype: torch.dtype) -> str:
    """TF32 for fp32 only where torch itself would use it for matmuls; IEEE otherwise (ignored for fp16/bf16)."""
    if dtype == torch.float32 and not INTERPRET and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _tiles(rows: int, out_features: int, in_features: int) -> dict:
    """Launch meta-parameters: none on the GPU (autotuned), whole dimensions up to INTERPRETER_TILE otherwise."""
    if not INTERPRET:
        return {}
    return {"BLOCK_ROWS": interpreter_block(rows, INTERPRETER_TILE), "BLOCK_OUT": interpreter_block(out_features,
            INTERPRETER_TILE), "BLOCK_IN": interpreter_block(in_features, INTERPRETER_TILE)}


def linear_forward(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool,
                   dropout_p: float, seed: torch.Tensor | None,
                   output_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """``dropout(relu(input @ weight.T + bias))`` for a 2-D ``input`` (rows, in_features); dropout with
    ``dropout_p > 0`` only (``seed`` is then its Philox seed, a 0-D int64 tensor on the input's device, else None).
    Returns a new contiguous tensor of ``output_shape`` (rows x out_features elements; by default (rows,
    out_features))."""
    for name, tensor in (("input", input), ("weight", weight), ("bias", bias)):
        if tensor is not None:
            check_device(name, tensor)
    check_dot_dtype("input", input)
    rows, in_features = input.shape
    out_features = weight.shape[0]
    output = torch.empty(output_shape or (rows, out_features), device=input.device, dtype=input.dtype)
    if output.numel() == 0:
        return output
    grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_ROWS"]) * triton.cdiv(out_features, meta["BLOCK_OUT"]),)
    launcher(linear_forward_kernel)[grid](
        input, weight, bias if bias is not None else weight, output, rows, autotune_bucket(rows), out_features,
        in_features,
        input.stride(0), input.stride(1), weight.stride(0), weight.stride(1), bias.stride(0) if bias is not None else 0,
        output if seed is None else seed, dropout_p, HAS_BIAS=bias is not None, RELU=relu,
        DROPOUT=dropout_p > 0.0, INPUT_PRECISION=_input_precision(input.dtype), GROUP_ROWS=GROUP_ROWS,
        **_tiles(rows, out_features, in_features))
    return output


def dropout_grad(grad_output: torch.Tensor, dropout_p: float, seed: torch.Tensor) -> torch.Tensor:
    """``grad_output * keep / (1 - p)`` with the forward's keep mask, as a new contiguous tensor."""
    rows, out_features = grad_output.shape
    grad_pre = torch.empty((rows, out_features), device=grad_output.device, dtype=grad_output.dtype)
    if grad_pre.numel() == 0:
        return grad_pre
    meta = {} if not INTERPRET else {"BLOCK_ROWS": interpreter_block(rows, INTERPRETER_TILE),
                                     "BLOCK_OUT": interpreter_block(out_features, INTERPRETER_TILE)}
    grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_ROWS"]), triton.cdiv(out_features, meta["BLOCK_OUT"]))
    launcher(linear_dropout_grad_kernel)[grid](grad_output, grad_pre, rows, out_features, autotune_bucket(rows),
                                               grad_output.stride(0), grad_output.stride(1), seed, dropout_p, **meta)
    return grad_pre


def linear_backward(grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
                    output: torch.Tensor | None, relu: bool, dropout_p: float, seed: torch.Tensor | None, *,
                    needs_input_grad: bool, needs_weight_grad: bool, needs_bias_grad: bool):
    """Gradients of :func:`linear_forward` for a 2-D ``input``: ``(grad_input, grad_weight, grad_bias)``, each None
    where not needed. ``output`` is the forward's contiguous output (any shape), needed with ``relu``;
    ``dropout_p`` and ``seed`` are the forward's. The bias gradient comes out of the grad-weight kernel, so asking for
    it alone still runs that kernel."""
    check_device("grad_output", grad_output)
    check_dot_dtype("grad_output", grad_output)
    rows, in_features = input.shape
    out_features = weight.shape[0]
    dropout_scale = dropout_p > 0.0 and relu  # the mask comes with the saved output
    if dropout_p > 0.0 and not relu:
        grad_output = dropout_grad(grad_output, dropout_p, seed)
    mask_source = output if relu else grad_output  # a placeholder pointer when the kernels don't read it
    precision = _input_precision(input.dtype)
    grad_input = grad_weight = grad_bias = None
    if needs_input_grad:
        grad_input = torch.empty((rows, in_features), device=input.device, dtype=input.dtype)
        if grad_input.numel() and out_features == 0:
            grad_input.zero_()
        elif grad_input.numel():
            grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_ROWS"]) * triton.cdiv(in_features, meta["BLOCK_IN"]),)
            launcher(linear_grad_input_kernel)[grid](
                grad_output, mask_source, weight, grad_input, rows, in_features, autotune_bucket(rows), out_features,
                grad_output.stride(0), grad_output.stride(1), weight.stride(0), weight.stride(1), dropout_p,
                RELU=relu, DROPOUT_SCALE=dropout_scale, INPUT_PRECISION=precision, GROUP_ROWS=GROUP_ROWS,
                **_tiles(rows, out_features, in_features))
    if needs_weight_grad or needs_bias_grad:
        grad_weight = torch.empty((out_features, in_features), device=input.device, dtype=input.dtype)
        grad_bias = torch.empty(out_features if needs_bias_grad else 0, device=input.device, dtype=input.dtype)
        if rows == 0:
            grad_weight.zero_()
            grad_bias.zero_()
        elif out_features:
            # At least one in_features tile, so that the bias gradient is stored even with in_features == 0.
            grid = lambda meta: (triton.cdiv(out_features, meta["BLOCK_OUT"])
                                 * max(1, triton.cdiv(in_features, meta["BLOCK_IN"])),)
            launcher(linear_grad_weight_kernel)[grid](
                grad_output, mask_source, input, grad_weight, grad_bias if needs_bias_grad else grad_weight,
                out_features, in_features, rows, autotune_bucket(rows), grad_output.stride(0), grad_output.stride(1),
                input.stride(0), input.stride(1), dropout_p, HAS_BIAS=needs_bias_grad, RELU=relu,
                DROPOUT_SCALE=dropout_scale, INPUT_PRECISION=precision, GROUP_OUT=GROUP_ROWS,
                **_tiles(rows, out_features, in_features))
        grad_bias = grad_bias if needs_bias_grad else None
        grad_weight = grad_weight if needs_weight_grad else None
    return grad_input, grad_weight, grad_bias


# What a typical launch specializes on (contiguous operands, feature counts of real layers): unit strides become
# constants, and row strides and sizes are multiples of 16 (Triton specializes both, which lets it vectorize and
# pipeline the tile loads).
_UNIT_STRIDES = ("input_stride_feature", "weight_stride_in", "grad_output_stride_out", "bias_stride")
_MULTIPLES_OF_16 = ("rows", "out_features", "in_features", "input_stride_row", "weight_stride_out",
                    "grad_output_stride_row")
