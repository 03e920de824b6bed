"""Local response normalization across channels (Krizhevsky et al. 2012, section 3.3), torch's semantics:

    out[c] = x[c] / (k + alpha / size * sum_{j in window(c)} x[j]^2) ** beta

with ``window(c) = [c - size // 2, c + (size - 1) // 2]`` clipped to the channels (asymmetric for even sizes,
exactly as ``torch.nn.functional.local_response_norm`` pads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonnet.ops._checks import check_float, check_int, check_tensor
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
