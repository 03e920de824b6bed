"""NaN, inf and -inf propagate through every op, every provider and every fused epilogue (conv's and linear's
ReLU, max-pool's window max, LRN's power, cross-entropy's logsumexp) exactly as through torch: the same NaN
positions, the same infinities, finite values within the tolerance, forward and backward.

Each case builds small finite operands, sprinkles NaN/inf/-inf into a drawn non-empty subset of its data operands
(the input, and conv's and linear's bias; :func:`tests.helpers.with_nonfinite`), and compares the provider's call
with torch's on the same values in fp64 (:func:`tests.helpers.compare_with_torch`). Weights stay finite: where a
non-finite weight meets a zero (a padding tap, a gradient the ReLU masked), 0 * inf is NaN in some of torch's
backends and skipped in others (torch's own fp32 and fp64 CPU convolutions disagree), so there is no one torch
behaviour to match. Dropout is compared with torch's own formula, input * mask / (1-p),
on the provider's mask (a dropped NaN or inf becomes NaN, as 0 * inf is).

Shrinking is off: each example runs interpreter kernels, and the first failing example is reported as drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from tests.helpers import DEVICE, ON_GPU, assert_close, compare_with_torch, random_cotangent, with_nonfinite
from tritonnet import available_kernels, functional

DTYPES = [torch.float32, torch.float16]


def provider_dtypes(provider: str) -> list[torch.dtype]:
    """The dtypes a provider is checked in: torch's CPU kernels lack fp16 for some ops (local_response_norm's
    avg_pool3d), so the "torch" provider is checked in fp32 off the GPU."""
    return DTYPES if provider != "torch" or ON_GPU else [torch.float32]


@dataclass(frozen=True)
class Case:
    """One op (a registry name) with fixed options: ``operands(draw, dtype)`` draws finite operands (a dict of
    keyword arguments whose floating tensors may be sprinkled) and ``options`` are the call's other keywords."""

    op: str
    operands: Callable
    options: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "-".join([self.op, *(f"{key}={value}" for key, value in self.options.items())])


def _tensor(draw, shape, dtype, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    values = torch.randn(shape, generator=generator, dtype=torch.float64) * scale
    return values.to(dtype).to(DEVICE).requires_grad_()


def conv2d_operands(draw, dtype):
    batch, in_channels, out_channels = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel, padding, stride = draw(st.integers(1, 3)), draw(st.integers(0, 1)), draw(st.integers(1, 2))
    height, width = draw(st.integers(kernel, 5)), draw(st.integers(kernel, 5))
    return {"input": _tensor(draw, (batch, in_channels, height, width), dtype),
            "weight": _tensor(draw, (out_channels, in_channels, kernel, kernel), dtype, 0.5),
            "bias": _tensor(draw, (out_channels,), dtype), "stride": stride, "padding": padding}


def linear_operands(draw, dtype):
    rows, in_features, out_features = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 5))
    return {"input": _tensor(draw, (rows, in_features), dtype),
            "weight": _tensor(draw, (out_features, in_features), dtype, 0.5),
            "bias": _tensor(draw, (out_features,), dtype)}


def max_pool2d_operands(draw, dtype):
    kernel = draw(st.integers(1, 3))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(kernel, 6)),
             draw(st.integers(kernel, 6)))
    return {"input": _tensor(draw, shape, dtype), "kernel_size": kernel, "stride": draw(st.integers(1, 2)),
            "padding": draw(st.integers(0, kernel // 2)), "ceil_mode": draw(st.booleans())}


def local_response_norm_operands(draw, dtype):
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return {"input": _tensor(draw, shape, dtype), "size": draw(st.integers(1, 5)),
            "k": draw(st.sampled_from([1.0, 2.0]))}


def cross_entropy_operands(draw, dtype):
    # Two classes or more: with one, the gradient is exactly 0 in every finite row (1 - 1), and a rounding error of
    # 1e-8 on terms of size 1 would have no scale to be measured against.
    rows, classes = draw(st.integers(1, 4)), draw(st.integers(2, 6))
    target = torch.tensor(draw(st.lists(st.integers(0, classes - 1), min_size=rows, max_size=rows)), device=DEVICE)
    return {"input": _tensor(draw, (rows, classes), dtype), "target": target,
            "reduction": draw(st.sampled_from(["none", "mean", "sum"])),
            "label_smoothing": draw(st.sampled_from([0.0, 0.1]))}


def dropout_operands(draw, dtype):
    return {"input": _tensor(draw, (draw(st.integers(1, 4)), draw(st.integers(1, 16))), dtype),
            "p": draw(st.sampled_from([0.25, 0.5]))}


CASES = [
    Case("conv2d", conv2d_operands), Case("conv2d", conv2d_operands, {"relu": True}),
    Case("linear", linear_operands), Case("linear", linear_operands, {"relu": True}),
    Case("max_pool2d", max_pool2d_operands), Case("local_response_norm", local_response_norm_operands),
    Case("cross_entropy", cross_entropy_operands), Case("dropout", dropout_operands),
]

# Cases whose providers do not propagate NaN/inf as torch does today: (case name, provider) -> reason.
KNOWN_DEFECTS: dict[tuple[str, str], str] = {}


def _params():
    covered = {case.op for case in CASES}
    assert covered == set(available_kernels()), f"ops without a non-finite case: {set(available_kernels()) - covered}"
    for case in CASES:
        for provider in available_kernels()[case.op]:
            reason = KNOWN_DEFECTS.get((case.name, provider))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(case, provider, id=f"{case.name}-{provider}", marks=marks)


def check_dropout(call: Callable, input: torch.Tensor, p: float) -> None:
    """The provider's dropout of ``input`` against torch's formula input * mask / (1 - p) on the same mask (read
    from a call on ones with the same seed), forward and backward."""
    torch.manual_seed(0)
    kept = call(torch.ones_like(input.detach()), p) != 0
    torch.manual_seed(0)
    output = call(input, p)
    scale = kept.to(torch.float64) / (1 - p)
    assert_close(output, input.detach().double() * scale, dtype=input.dtype, name="dropout output")
    cotangent = random_cotangent(output, seed=0)
    (gradient,) = torch.autograd.grad(output, input, cotangent.to(output.dtype))
    assert_close(gradient, cotangent * scale, dtype=input.dtype, name="dropout gradient")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, in the interpreter, on purpose-made NaN/inf
@pytest.mark.parametrize("case, provider", list(_params()))
@settings(phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(data=st.data())
def test_nonfinite_values_propagate_like_torch(case, provider, data):
    dtype = data.draw(st.sampled_from(provider_dtypes(provider)), label="dtype")
    operands = case.operands(data.draw, dtype)
    floating = [key for key, value in operands.items() if isinstance(value, torch.Tensor)
                and value.is_floating_point() and key != "weight"]
    sprinkled = data.draw(st.lists(st.sampled_from(floating), min_size=1, unique=True), label="sprinkled operands")
    for key in sprinkled:
        operands[key] = data.draw(with_nonfinite(operands[key]), label=key)
    operation = getattr(functional, case.op)
    if case.op == "dropout":
        check_dropout(partial(operation, provider=provider), operands["input"], operands["p"])
        return
    compare_with_torch(partial(operation, **case.options, provider=provider),
                       partial(operation, **case.options, provider="torch"), [], operands, dtype, seed=0,
                       name=f"{case.name} ({provider}, {dtype}, non-finite in {', '.join(sprinkled)})")
