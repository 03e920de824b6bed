"""Argument checks shared by every op: bad input gets a ValueError/TypeError naming the argument and what was
expected, before anything is launched."""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _dtype_names(dtypes) -> str:
    return ", ".join(str(dtype).replace("torch.", "") for dtype in dtypes)


def check_tensor(name: str, value, *, ndim: int | Sequence[int] | None = None, layout: str = "",
                 dtypes=FLOAT_DTYPES) -> torch.Tensor:
    """``value`` is a tensor of one of ``dtypes`` with ``ndim`` dimensions (``layout`` names them, e.g. "N, C, H, W")."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in allowed:
            wanted = " or ".join(f"{d}-D" for d in allowed)
            described = f" ({layout})" if layout else ""
            raise ValueError(f"{name} must be a {wanted} tensor{described}, got shape {tuple(value.shape)}")
    if dtypes is not None and value.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype {_dtype_names(dtypes)}; got {str(value.dtype).replace('torch.', '')}")
    return value


def check_like(name: str, value: torch.Tensor, reference_name: str, reference: torch.Tensor) -> None:
    """``value`` lives on the same device and has the same dtype as ``reference``."""
    if value.device != reference.device:
        raise ValueError(f"{name} is on {value.device} but {reference_name} is on {reference.device}")
    if value.dtype != reference.dtype:
        raise TypeError(f"{name} has dtype {value.dtype} but {reference_name} has dtype {reference.dtype}")


def check_int(name: str, value, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
                include_minimum: bool = True, include_maximum: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    low_ok = minimum is None or (value >= minimum if include_minimum else value > minimum)
    high_ok = maximum is None or (value <= maximum if include_maximum else value < maximum)
    if not math.isfinite(value) or not low_ok or not high_ok:
        low = "" if minimum is None else ("[" if include_minimum else "(") + f"{minimum}"
        high = "" if maximum is None else f"{maximum}" + ("]" if include_maximum else ")")
        raise ValueError(f"{name} must be a finite number in {low or '(-inf'}, {high or 'inf)'}; got {value}")
    return value


def as_pair(name: str, value, *, minimum: int | None = None) -> tuple[int, int]:
    """An int or a sequence of one or two ints, as torch accepts for kernel_size/stride/padding."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            value = (value[0], value[0])
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return (check_int(f"{name}[0]", value[0], minimum=minimum), check_int(f"{name}[1]", value[1], minimum=minimum))
    single = check_int(name, value, minimum=minimum)
    return (single, single)
