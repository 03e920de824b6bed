"""What every test shares: the device and dtypes of this mode, the one tolerance rule, a comparison that says
where the largest mismatch is, one call compared with torch's forward and backward, and a strategy that sprinkles
NaN and infinities into a tensor."""

from __future__ import annotations

import math
from typing import Callable

import torch
from hypothesis import strategies as st

from tritonnet.kernels.runtime import INTERPRET

DEVICE = torch.device("cpu" if INTERPRET or not torch.cuda.is_available() else "cuda")
ON_GPU = DEVICE.type == "cuda"

# Dtypes each mode can check, for every op (the matrix-product ops too). The interpreter's tl.dot gives wrong bf16
# results, and fp64 is only useful there (gradcheck); bf16 numerics are checked on a GPU.
FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16] if ON_GPU else [torch.float32, torch.float16,
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


# ---------------------------------------------------------------------------------------------------------------------
# One call against torch's, forward and backward


def fresh_leaf(value, dtype: torch.dtype | None = None):
    """A fresh copy of a sample's tensor (floating tensors converted to ``dtype`` and requiring grad as the sample
    does); anything else unchanged."""
    if not isinstance(value, torch.Tensor):
        return value
    if not value.is_floating_point():
        return value.detach().clone()
    copy = value.detach().to(dtype or value.dtype).clone()
    return copy.requires_grad_(value.requires_grad)


def _grad_leaves(values) -> list[torch.Tensor]:
    return [value for value in values if isinstance(value, torch.Tensor) and value.requires_grad]


def _differentiable_output(output):
    """The floating-point output gradients flow from (max_pool2d's return_indices gives (values, indices))."""
    return output[0] if isinstance(output, tuple) else output


def random_cotangent(output: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(output.shape, generator=generator, dtype=torch.float64).to(output.device)


def _gradients(output, leaves: list[torch.Tensor], cotangent: torch.Tensor) -> list[torch.Tensor | None]:
    output = _differentiable_output(output)
    if not leaves or not output.requires_grad:
        return [None] * len(leaves)
    return list(torch.autograd.grad(output, leaves, cotangent.to(output.dtype), allow_unused=True))


def _reduction_length(tensors) -> int:
    """A bound on the number of terms any output or gradient element sums: all elements of the call's tensors."""
    return max(1, sum(tensor.numel() for tensor in tensors if isinstance(tensor, torch.Tensor)))


def compare_with_torch(ours: Callable, reference: Callable, args: list, kwargs: dict, dtype: torch.dtype, seed: int,
                       name: str, gradients: bool = True) -> None:
    """``ours(*args, **kwargs)`` against ``reference`` on the same values in fp64: floating outputs within the
    tolerance, integer outputs exactly, and (with ``gradients``) the gradients of every tensor that requires grad
    under one random cotangent. Each side gets its own copies of the tensors."""
    our_args = [fresh_leaf(value) for value in args]
    our_kwargs = {key: fresh_leaf(value) for key, value in kwargs.items()}
    reference_args = [fresh_leaf(value, torch.float64) for value in args]
    reference_kwargs = {key: fresh_leaf(value, torch.float64) for key, value in kwargs.items()}
    output = ours(*our_args, **our_kwargs)
    expected = reference(*reference_args, **reference_kwargs)
    length = _reduction_length([*args, *kwargs.values()])
    outputs = output if isinstance(output, tuple) else (output,)
    expected_outputs = expected if isinstance(expected, tuple) else (expected,)
    assert len(outputs) == len(expected_outputs), f"{name}: {len(outputs)} outputs, torch gives {len(expected_outputs)}"
    for index, (actual, wanted) in enumerate(zip(outputs, expected_outputs)):
        assert actual.dtype == (dtype if wanted.is_floating_point() else wanted.dtype), \
            f"{name}: output {index} has dtype {actual.dtype}"
        if wanted.is_floating_point():
            assert_close(actual, wanted, dtype=dtype, reduction_length=length, name=f"{name} output {index}")
        else:
            assert torch.equal(actual.cpu(), wanted.cpu()), f"{name}: output {index} differs from torch's"
    if not gradients:
        return
    cotangent = random_cotangent(_differentiable_output(expected), seed)
    our_leaves = _grad_leaves([*our_args, *our_kwargs.values()])
    reference_leaves = _grad_leaves([*reference_args, *reference_kwargs.values()])
    for index, (actual, wanted) in enumerate(zip(_gradients(output, our_leaves, cotangent),
                                                 _gradients(expected, reference_leaves, cotangent))):
        if wanted is None:
            assert actual is None or not actual.any(), f"{name}: gradient {index} should be zero"
            continue
        assert actual is not None, f"{name}: no gradient for differentiable argument {index}"
        assert_close(actual, wanted, dtype=dtype, reduction_length=length, name=f"{name} gradient {index}")


# ---------------------------------------------------------------------------------------------------------------------
# Non-finite inputs

NONFINITE_VALUES = (math.nan, math.inf, -math.inf)


@st.composite
def with_nonfinite(draw, data: torch.Tensor, max_count: int = 4) -> torch.Tensor:
    """A copy of ``data`` (any layout; the copy keeps its strides) with 1 to ``max_count`` elements, at drawn
    positions, replaced by drawn values among NaN, inf and -inf. The rest of the values are unchanged."""
    if data.numel() == 0:
        return data.clone()
    count = draw(st.integers(1, min(max_count, data.numel())))
    positions = draw(st.lists(st.integers(0, data.numel() - 1), min_size=count, max_size=count, unique=True))
    values = draw(st.lists(st.sampled_from(NONFINITE_VALUES), min_size=count, max_size=count))
    sprinkled = data.detach().clone()
    indices = torch.unravel_index(torch.tensor(positions), data.shape)
    sprinkled[indices] = torch.tensor(values, dtype=data.dtype, device=data.device)
    return sprinkled.requires_grad_(data.requires_grad)
