"""Dropout: zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonnet.ops._checks import check_float, check_tensor
from tritonnet.registry import lookup, register

OP = "dropout"


def draw_seed() -> int:
    """A Philox seed for one dropout call, drawn from torch's default CPU generator, so ``torch.manual_seed``
    reproduces a run (on every device) and the backward regenerates the forward's mask from it."""
    return int(torch.randint(0, 2**31 - 1, (), dtype=torch.int64))


def dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
            *, provider: str | None = None) -> torch.Tensor:
    """``torch.nn.functional.dropout`` with a choice of provider."""
    check_tensor("input", input)
    p = check_float("p", p, minimum=0.0, maximum=1.0)
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {training!r}")
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace must be a bool, got {inplace!r}")
    return lookup(OP, provider)(input, p, training, inplace)


@register(OP, "torch")
def torch_dropout(input, p, training, inplace):
    return F.dropout(input, p, training, inplace)
