"""What every test shares: the device and dtypes of this mode, the one tolerance rule, and a comparison that says
where the largest mismatch is."""

from __future__ import annotations

import math

import torch

from kernels.runtime import INTERPRET

DEVICE = torch.device("cpu" if INTERPRET or not torch.cuda.is_available() else "cuda")
ON_GPU = DEVICE.type == "cuda"

# Dtypes each mode can check. The interpreter's tl.dot gives wrong bf16 results (triton 3.9), and fp64 is only
# useful there (gradcheck); bf16 numerics are checked on a GPU.
FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16] if ON_GPU else [torch.float32, torch.float16,
                                                                               torch.float64]
DOT_DTYPES = [torch.float32, torch.float16, torch.bfloat16] if ON_GPU else [torch.float32, torch.float16,
                                                                             torch.float64]

_EPS = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7, torch.float32: 2.0 ** -23, torch.float64: 2.0 ** -52}


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def tolerance(dtype: torch.dtype, reduction_length: int = 1) -> float:
    """Relative error allowed for a result stored in ``dtype`` that sums ``reduction_length`` terms in the
    accumulator dtype (fp32, or fp64 for fp64): rounding of the stored result, plus accumulation error growing
    like sqrt(length). Used both relative to each element and relative to the largest reference magnitude, since
    a sum may cancel to near zero."""
    stored = _EPS[dtype]
    accumulated = _EPS[accumulator_dtype(dtype)]
    if dtype == torch.float32 and ON_GPU and torch.backends.cuda.matmul.allow_tf32:
        accumulated = 2.0 ** -10
    return 4 * stored + 16 * accumulated * math.sqrt(max(1, reduction_length))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, dtype: torch.dtype | None = None,
                 reduction_length: int = 1, scale: float | None = None, name: str = "output") -> None:
    """``|actual - expected| <= tol * (|expected| + scale)`` elementwise, with ``tol`` from :func:`tolerance` and
    ``scale`` the largest reference magnitude unless given. On failure, say where and by how much."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    dtype = dtype or actual.dtype
    actual64 = actual.detach().to(torch.float64).cpu()
    expected64 = expected.detach().to(torch.float64).cpu()
    if actual64.numel() == 0:
        return
    nan_mismatch = torch.isnan(actual64) != torch.isnan(expected64)
    assert not nan_mismatch.any(), f"{name}: NaN where the reference has none (or the reverse), first at " \
                                   f"{tuple(int(i) for i in nan_mismatch.nonzero()[0])}"
    finite = torch.isfinite(expected64)
    inf_mismatch = ~finite & (actual64 != expected64) & ~torch.isnan(expected64)
    assert not inf_mismatch.any(), f"{name}: infinities differ, first at " \
                                   f"{tuple(int(i) for i in inf_mismatch.nonzero()[0])}"
    tol = tolerance(dtype, reduction_length)
    magnitude = expected64[finite].abs()
    scale = float(magnitude.max()) if scale is None and magnitude.numel() else (scale or 0.0)
    error = torch.where(finite, (actual64 - expected64).abs(), torch.zeros_like(actual64))
    allowed = tol * (expected64.abs() + scale)
    excess = torch.where(finite, error - allowed, torch.zeros_like(error))
    if (excess > 0).any():
        worst = int(torch.argmax(excess))
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), actual64.shape))
        bad = int((excess > 0).sum())
        raise AssertionError(
            f"{name}: {bad} of {actual64.numel()} elements out of tolerance ({tol:.2e} relative, scale {scale:.3g}; "
            f"dtype {dtype}, reduction length {reduction_length}). Worst at index {index}: got "
            f"{float(actual64[index]):.8g}, expected {float(expected64[index]):.8g}, error {float(error[index]):.3g} "
            f"> allowed {float(allowed[index]):.3g}")


LAYOUTS = ["contiguous", "channels last", "strided view"]


def in_layout(data: torch.Tensor, layout: str) -> torch.Tensor:
    """``data`` on the test device in one of :data:`LAYOUTS`: contiguous, channels-last (4-D only; others stay
    contiguous), or a strided view (every other column of a wider tensor)."""
    if layout == "channels last" and data.dim() == 4:
        return data.to(DEVICE).contiguous(memory_format=torch.channels_last)
    if layout == "strided view":
        wide = torch.zeros(*data.shape[:-1], 2 * data.shape[-1], dtype=data.dtype)
        wide[..., ::2] = data
        return wide.to(DEVICE)[..., ::2]
    return data.to(DEVICE)
