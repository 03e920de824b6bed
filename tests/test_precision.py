"""The matmul-like ops (conv2d, linear) under autocast, and bf16 in every mode (see tritonnet/ops/_precision.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tritonnet.functional as tnf
from tests.helpers import DEVICE, assert_close

CONV = dict(stride=1, padding=1, groups=2)


def conv_case(dtype: torch.dtype, generator: torch.Generator):
    input = torch.randn(2, 8, 7, 9, generator=generator).to(DEVICE, dtype)
    weight = (0.3 * torch.randn(12, 4, 3, 3, generator=generator)).to(DEVICE, dtype)
    bias = torch.randn(12, generator=generator).to(DEVICE, dtype)
    return input, weight, bias


def linear_case(dtype: torch.dtype, generator: torch.Generator):
    input = torch.randn(5, 3, 40, generator=generator).to(DEVICE, dtype)
    weight = (0.2 * torch.randn(24, 40, generator=generator)).to(DEVICE, dtype)
    bias = torch.randn(24, generator=generator).to(DEVICE, dtype)
    return input, weight, bias


OPS = {  # name: (case, ours, torch's, reduction length)
    "conv2d": (conv_case, lambda x, w, b: tnf.conv2d(x, w, b, relu=True, provider="triton", **CONV),
               lambda x, w, b: F.relu(F.conv2d(x, w, b, **CONV)), 4 * 9),
    "linear": (linear_case, lambda x, w, b: tnf.linear(x, w, b, relu=True, provider="triton"),
               lambda x, w, b: F.relu(F.linear(x, w, b)), 40),
}


@pytest.mark.parametrize("op", OPS)
def test_bf16_matches_torch_in_every_mode(op):
    """bf16 operands give bf16 results and gradients within bf16's tolerance (the interpreter computes them in
    fp32: its bf16 tl.dot is wrong)."""
    case, ours, reference, length = OPS[op]
    generator = torch.Generator().manual_seed(0)
    tensors = [tensor.requires_grad_() for tensor in case(torch.bfloat16, generator)]
    exact = [tensor.detach().double().requires_grad_() for tensor in tensors]
    output, expected = ours(*tensors), reference(*exact)
    assert output.dtype == torch.bfloat16
    assert_close(output, expected, dtype=torch.bfloat16, reduction_length=length)
    grad = torch.randn(output.shape, generator=generator).to(DEVICE, torch.bfloat16)
    grads = torch.autograd.grad(output, tensors, grad)
    expected_grads = torch.autograd.grad(expected, exact, grad.double())
    for name, actual, wanted in zip(("input", "weight", "bias"), grads, expected_grads):
        assert actual.dtype == torch.bfloat16, name
        assert_close(actual, wanted, dtype=torch.bfloat16, reduction_length=output.numel() // 4, name=name)


@pytest.mark.parametrize("op", OPS)
def test_autocast_casts_operands_as_torch_does(op):
    """Under torch.autocast the Triton provider computes in the autocast dtype and returns it, as torch's op does;
    fp32 parameters get fp32 gradients."""
    case, ours, reference, length = OPS[op]
    generator = torch.Generator().manual_seed(1)
    input, weight, bias = case(torch.float32, generator)
    weight.requires_grad_()
    bias.requires_grad_()
    with torch.autocast(DEVICE.type, dtype=torch.float16):
        output, expected = ours(input, weight, bias), reference(input, weight, bias)
    assert output.dtype == expected.dtype == torch.float16
    assert_close(output, expected, dtype=torch.float16, reduction_length=length)
    output.float().sum().backward()
    assert weight.grad.dtype == bias.grad.dtype == torch.float32


@pytest.mark.parametrize("op", OPS)
def test_autocast_accepts_operands_of_mixed_dtypes(op):
    """An fp16 activation (from an earlier autocast op) with fp32 parameters is what autocast hands a layer; torch
    accepts it there, so must we. Outside autocast the mismatch is refused by name."""
    case, ours, _, _ = OPS[op]
    input, weight, bias = case(torch.float32, torch.Generator().manual_seed(2))
    with torch.autocast(DEVICE.type, dtype=torch.float16):
        assert ours(input.half(), weight, bias).dtype == torch.float16
    with pytest.raises((TypeError, ValueError), match="weight"):
        ours(input.half(), weight, bias)


@pytest.mark.skipif(DEVICE.type == "cuda", reason="the interpreter's bf16 tl.dot")
def test_gemm_kernels_refuse_bf16_in_the_interpreter():
    """Below the ops, the launch functions refuse bf16 in the interpreter rather than return its wrong products."""
    from tritonnet.kernels.conv import conv2d_forward
    from tritonnet.kernels.linear import linear_forward

    input = torch.randn(1, 4, 5, 5, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="input is bf16"):
        conv2d_forward(input, torch.randn(4, 4, 3, 3, dtype=torch.bfloat16), None, (1, 1), (0, 0, 0, 0), (1, 1), 1,
                       False)
    with pytest.raises(TypeError, match="input is bf16"):
        linear_forward(torch.randn(3, 16, dtype=torch.bfloat16), torch.randn(8, 16, dtype=torch.bfloat16), None,
                       False, 0.0, None)


@pytest.mark.parametrize("bf16_through_fp32", [False, True])
def test_bf16_widening_follows_the_algorithms_policy(bf16_through_fp32):
    """Only bf16 is widened, and only where the policy says so (by default ``runtime.ALGORITHMS``: the interpreter);
    the keyword runs either choice in either mode."""
    from tritonnet.kernels.runtime import ALGORITHMS
    from tritonnet.ops._precision import computes_in_fp32

    assert computes_in_fp32(torch.bfloat16, bf16_through_fp32=bf16_through_fp32) is bf16_through_fp32
    assert not any(computes_in_fp32(dtype, bf16_through_fp32=bf16_through_fp32)
                   for dtype in (torch.float16, torch.float32, torch.float64))
    assert computes_in_fp32(torch.bfloat16) is ALGORITHMS.bf16_through_fp32
