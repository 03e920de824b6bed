"""Dropout with Philox random numbers generated in the kernel: nothing of the input's size is stored.

The scheme, shared with every kernel that fuses dropout (linear's epilogue): element ``i`` of a tensor (its flat,
row-major index in the logical shape) survives iff ``tl.rand(seed, i) >= p``; survivors are scaled by
``1 / (1 - p)``. The backward regenerates the same mask from the same seed. So a fused dropout and a standalone
dropout over the same output, with the same seed, drop exactly the same elements.
"""

import triton
import triton.language as tl


@triton.jit
def dropout_keep(seed, index, p):
    """True where element ``index`` survives dropout with probability ``p`` under ``seed``."""
    return tl.rand(seed, index) >= p
