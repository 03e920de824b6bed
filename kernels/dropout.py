"""Dropout with Philox random numbers generated in the kernel: nothing of the input's size is stored.

The scheme, shared with every kernel that fuses dropout (linear's epilogue): element ``i`` of a tensor (its flat,
row-major index in the logical shape) survives iff ``tl.rand(seed, i) >= p``; survivors are scaled by
``1 / (1 - p)``. The backward regenerates the same mask from the same seed. So a fused dropout and a standalone
dropout over the same output, with the same seed, drop exactly the same elements.

The index may be int32 or int64: since triton 3.4 (triton-lang/triton#6832) ``tl.rand`` runs the 32-bit Philox for
both, a 64-bit offset filling two counter words with its halves, so both give the same mask wherever an int32 index
reaches. (Older triton ran a 64-bit Philox for int64 offsets: a different stream.) The standalone kernel indexes in
int64, so any size works.

The scale ``1 / (1 - p)`` is rounded to fp32 and the product computed in fp32 (fp64 for fp64), as torch's CUDA
kernel does; ``p == 1`` scales by 0 instead of dividing by 0.
"""

import torch
import triton
import triton.language as tl

from kernels.gpu_compile import CompileCase
from kernels.runtime import INTERPRET, check_device, interpreter_block

# An elementwise kernel: 1024 elements per program (8 per thread, 16-byte accesses in fp16) is near the best block
# on every recent GPU, so there is no autotuning (which would also replay an in-place launch).
GPU_BLOCK = 1024
GPU_WARPS = 4


@triton.jit
def dropout_keep(seed, index, p):
    """True where element ``index`` survives dropout with probability ``p`` under ``seed``."""
    return tl.rand(seed, index) >= p


@triton.jit
def dropout_kernel(
    input_ptr,  # contiguous, numel elements
    output_ptr,  # contiguous, numel elements, same dtype (may be input_ptr: in place)
    numel,  # number of elements
    p,  # probability of dropping an element
    scale,  # 1 / (1 - p), or 0 when p == 1
    seed,  # Philox seed of this dropout call
    BLOCK: tl.constexpr,  # elements per program
):
    """``output[i] = input[i] * keep(i) * scale``. The forward applies it to the input, the backward to the output's
    gradient with the same seed: the same mask. A multiply (not a select), so NaN and inf propagate as in torch."""
    index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = index < numel
    value = tl.load(input_ptr + index, mask=inside)
    factor = dropout_keep(seed, index, p).to(tl.float32) * scale
    tl.store(output_ptr + index, (value * factor).to(output_ptr.dtype.element_ty), mask=inside)


def apply_dropout(input: torch.Tensor, p: float, seed: int, *, inplace: bool = False) -> torch.Tensor:
    """``input`` with seed ``seed``'s dropout mask for probability ``p`` applied (0 < p <= 1). A non-contiguous input
    is read through a contiguous copy (the mask follows the logical row-major index); with ``inplace`` the result is
    written back into ``input``, which is returned."""
    check_device("input", input)
    source = input.contiguous()
    output = source if inplace else torch.empty_like(source)
    numel = source.numel()
    if numel:
        block = interpreter_block(numel) if INTERPRET else GPU_BLOCK
        warps = {} if INTERPRET else {"num_warps": GPU_WARPS}
        scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
        dropout_kernel[(triton.cdiv(numel, block),)](source, output, numel, p, scale, seed, BLOCK=block, **warps)
    if inplace and output is not input:
        input.copy_(output)
        return input
    return output


def compile_cases() -> list[CompileCase]:
    """Each dtype, plus the specialisation for 2**31 elements or more (numel passed as i64)."""
    return [CompileCase("dropout", dropout_kernel,
                        {"input_ptr": f"*{dtype}", "output_ptr": f"*{dtype}", "numel": numel, "p": "fp32",
                         "scale": "fp32", "seed": "i32", "BLOCK": "constexpr"},
                        {"BLOCK": GPU_BLOCK}, dtype, num_warps=GPU_WARPS)
            for dtype, numel in (("fp32", "i32"), ("fp16", "i32"), ("bf16", "i32"), ("fp32", "i64"))]
