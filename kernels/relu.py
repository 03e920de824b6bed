"""ReLU and its gradient as the fused epilogues and prologues of the GEMM kernels (conv2d, linear) compute them,
with torch's NaN semantics.

    relu(x)               = 0 where x < 0, else x        relu(NaN) = NaN, relu(-inf) = 0, relu(inf) = inf
    gradient(g, output)   = 0 where output <= 0, else g  (torch's threshold_backward: a NaN output passes g)

``tl.maximum(x, 0)`` would compile to PTX ``max.f32``, which returns the non-NaN operand, and so turn NaN into 0
where torch's relu keeps it; a comparison and a select keep it. The gradient compares the saved output the same
way round as torch does, so a NaN output lets the gradient through rather than zeroing it.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def relu(values):
    """``relu(values)``, NaN kept."""
    return tl.where(values < 0, 0.0, values)


@triton.jit
def relu_gradient(gradient, output):
    """``gradient`` where the saved ReLU ``output`` is not ``<= 0`` (so also where it is NaN), else 0."""
    return tl.where(output <= 0, 0.0, gradient)
