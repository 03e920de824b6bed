"""max_pool2d's Triton provider against torch: forward values, torch's indices (ties and NaNs included), both
backward paths (the GPU's gather and the interpreter's scatter, each checked in either mode), the 1-byte saved state,
and the refusal of every kind of bad argument."""

import math
from unittest import mock

import pytest
import torch
import torch.nn.functional as torch_functional
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import maxpool as maxpool_kernels
from tests.helpers import DEVICE, FLOAT_DTYPES, LAYOUTS, ON_GPU, assert_close, in_layout
from tritonnet.ops.maxpool import max_pool2d

# The kernels widen bf16 to fp32 before comparing or summing (the interpreter's bf16 comparisons are wrong), so bf16
# is checked in both modes; fp64 only in the interpreter.
DTYPES = list(dict.fromkeys([*FLOAT_DTYPES, torch.bfloat16]))

# The backward's two kernels: each mode defaults to one (see kernels/maxpool.py); tests run both.
BACKWARD_PATHS = pytest.mark.parametrize("scatter", [True, False], ids=["scatter", "gather"])


def backward_path(scatter):
    """Within this context the Triton backward scatters from the outputs (True) or gathers at the inputs."""
    return mock.patch.object(maxpool_kernels, "SCATTER_BACKWARD", scatter)


@st.composite
def pooling_problems(draw):
    """Every argument a user can pass (dilation aside), with values that make ties, NaNs and infinities common."""
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    height = draw(st.integers(max(1, kernel[0] - 2 * padding[0]), 15))
    width = draw(st.integers(max(1, kernel[1] - 2 * padding[1]), 15))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 5)), height, width)
    return dict(
        shape=shape[1:] if draw(st.booleans()) else shape,
        kernel_size=kernel if kernel[0] != kernel[1] or draw(st.booleans()) else kernel[0],
        stride=stride if draw(st.booleans()) else None,
        padding=padding,
        ceil_mode=draw(st.booleans()),
        return_indices=draw(st.booleans()),
        dtype=draw(st.sampled_from(DTYPES)),
        values=draw(st.sampled_from(["small integers", "distinct", "with NaN and infinities"])),
        scale=draw(st.sampled_from([1e-3, 1.0, 100.0])),
        layout=draw(st.sampled_from(LAYOUTS)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def make_input(shape, dtype, values, scale, layout, generator):
    """An input tensor with the drawn values, in the drawn memory layout."""
    if values == "distinct":
        data = torch.randn(shape, generator=generator, dtype=torch.float64) * scale
    else:  # ties everywhere: the arg-max must be torch's (the first maximum in row-major window order)
        data = torch.randint(-2, 3, shape, generator=generator).to(torch.float64) * scale
    if values == "with NaN and infinities":
        special = torch.rand(shape, generator=generator)
        data[special < 0.08] = float("nan")
        data[(special >= 0.08) & (special < 0.16)] = float("-inf")
        data[(special >= 0.16) & (special < 0.2)] = float("inf")
    return in_layout(data.to(dtype), layout)


def assert_identical(actual, expected, name):
    """Max-pooling selects input elements: values (NaNs too) and indices must be exactly torch's."""
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{name}: {m}")


def windows_per_element(kernel_size, stride):
    """How many windows can cover one input element: the length of each gradient sum."""
    kernel = (kernel_size,) * 2 if isinstance(kernel_size, int) else kernel_size
    stride = kernel if stride is None else stride
    return math.prod(-(-extent // step) for extent, step in zip(kernel, stride))


@BACKWARD_PATHS
@given(pooling_problems())
def test_max_pool2d_forward_indices_and_gradient_match_torch(scatter, problem):
    generator = torch.Generator().manual_seed(problem["seed"])
    input = make_input(problem["shape"], problem["dtype"], problem["values"], problem["scale"], problem["layout"],
                       generator).requires_grad_()
    arguments = dict(kernel_size=problem["kernel_size"], stride=problem["stride"], padding=problem["padding"],
                     ceil_mode=problem["ceil_mode"], return_indices=problem["return_indices"])
    result = max_pool2d(input, **arguments, provider="triton")
    # The reference runs in fp64 on the same (exactly widened) values: same arg-max, exact gradient sums.
    reference_input = input.detach().to(torch.float64).requires_grad_()
    reference = max_pool2d(reference_input, **arguments, provider="torch")
    output, indices = result if problem["return_indices"] else (result, None)
    reference_output, reference_indices = reference if problem["return_indices"] else (reference, None)

    assert output.dtype == input.dtype
    assert_identical(output.to(torch.float64), reference_output.detach(), "output")
    if indices is not None:
        assert indices.dtype == torch.int64
        assert_identical(indices, reference_indices, "indices")

    grad_output = torch.randn(output.shape, generator=generator, dtype=torch.float64).to(input.dtype).to(DEVICE)
    with backward_path(scatter):
        (grad_input,) = torch.autograd.grad(output, input, grad_output)
    (reference_grad,) = torch.autograd.grad(reference_output, reference_input, grad_output.to(torch.float64))
    assert_close(grad_input, reference_grad, dtype=input.dtype,
                 reduction_length=windows_per_element(problem["kernel_size"], problem["stride"]), name="grad_input")


@BACKWARD_PATHS
@settings(max_examples=8)
@given(pooling_problems())
def test_gradient_lands_on_torchs_element_among_ties(scatter, problem):
    """Small-integer inputs tie in most windows and small-integer gradients sum exactly in any dtype, so each
    input's gradient must equal torch's exactly, and the totals must match: every output's gradient lands once."""
    generator = torch.Generator().manual_seed(problem["seed"])
    input = make_input(problem["shape"], problem["dtype"], "small integers", 1.0, problem["layout"], generator)
    arguments = dict(kernel_size=problem["kernel_size"], stride=problem["stride"], padding=problem["padding"],
                     ceil_mode=problem["ceil_mode"])
    grad_output = None
    gradients = []
    for provider in ("triton", "torch"):
        leaf = input.detach().requires_grad_()
        output = max_pool2d(leaf, **arguments, provider=provider)
        if grad_output is None:
            grad_output = torch.randint(-3, 4, output.shape, generator=generator).to(output)
        with backward_path(scatter):
            gradients.append(torch.autograd.grad(output, leaf, grad_output)[0])
    assert_identical(gradients[0], gradients[1], "grad_input")
    assert gradients[0].double().sum() == grad_output.double().sum()


def test_nan_wins_its_window_and_the_last_nan_is_chosen_like_torch():
    input = torch.tensor([[[[1.0, math.nan, 3.0], [math.nan, 0.0, 5.0], [2.0, 2.0, 2.0]]]], device=DEVICE)
    output, indices = max_pool2d(input, 2, 1, return_indices=True, provider="triton")
    reference_output, reference_indices = torch_functional.max_pool2d(input, 2, 1, return_indices=True)
    assert_identical(output, reference_output, "output")
    assert_identical(indices, reference_indices, "indices")
    assert indices[0, 0, 0, 0] == 3  # two NaNs in the first window: torch keeps the later one


def test_windows_of_only_minus_infinity_pick_their_first_element_inside_the_input():
    input = torch.full((1, 1, 4, 5), float("-inf"), device=DEVICE)
    output, indices = max_pool2d(input, 3, 2, padding=1, ceil_mode=True, return_indices=True, provider="triton")
    assert_identical(indices, torch_functional.max_pool2d(input, 3, 2, 1, ceil_mode=True, return_indices=True)[1],
                     "indices")
    assert torch.isneginf(output).all()


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pooled_size_matches_torch_including_ceil_mode_correction(ceil_mode):
    for size in range(1, 16):
        for kernel in range(1, 6):
            for stride in range(1, 7):
                for padding in range(kernel // 2 + 1):
                    if size + 2 * padding < kernel:
                        continue
                    expected = torch_functional.max_pool2d(torch.zeros(1, 1, 1, size), (1, kernel), (1, stride),
                                                           (0, padding), ceil_mode=ceil_mode).shape[-1]
                    assert maxpool_kernels.pooled_size(size, kernel, stride, padding, ceil_mode) == expected, \
                        (size, kernel, stride, padding)


# AlexNet's three pools: full shapes on a GPU, one image and two channels in the interpreter.
@pytest.mark.parametrize("shape", [(128, 96, 55, 55), (128, 256, 27, 27), (128, 256, 13, 13)])
@pytest.mark.parametrize("dtype", DTYPES[:2] if not ON_GPU else DTYPES)
@BACKWARD_PATHS
def test_alexnet_pools_match_torch(shape, dtype, scatter):
    if not ON_GPU:
        shape = (1, 2, *shape[2:])
    input = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype).to(DEVICE).requires_grad_()
    output, indices = max_pool2d(input, 3, 2, return_indices=True, provider="triton")
    reference_output, reference_indices = torch_functional.max_pool2d(input, 3, 2, return_indices=True)
    assert_identical(output, reference_output, "output")
    assert_identical(indices, reference_indices, "indices")
    grad_output = torch.randn_like(output)
    with backward_path(scatter):
        (grad_input,) = torch.autograd.grad(output, input, grad_output)
    (reference_grad,) = torch.autograd.grad(reference_output, input, grad_output)
    assert_close(grad_input, reference_grad, reduction_length=4, name="grad_input")


@pytest.mark.parametrize("kernel_size, stride, padding, ceil_mode", [
    ((3, 2), (2, 1), (1, 0), True),
    (2, 3, 1, False),
    (3, 1, 1, False),
])
@BACKWARD_PATHS
def test_max_pool2d_gradcheck_fp64(kernel_size, stride, padding, ceil_mode, scatter):
    # Distinct values, 0.1 apart: the finite-difference step never changes a window's arg-max.
    input = torch.randperm(2 * 5 * 6, generator=torch.Generator().manual_seed(0)).reshape(1, 2, 5, 6) / 10
    input = input.to(torch.float64).to(DEVICE).requires_grad_()
    with backward_path(scatter):
        assert torch.autograd.gradcheck(
            lambda x: max_pool2d(x, kernel_size, stride, padding, ceil_mode=ceil_mode, provider="triton"), (input,))


@pytest.mark.parametrize("return_indices", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 9, 7), (3, 9, 7)])
def test_autograd_saves_only_one_byte_per_output(shape, return_indices):
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    input = torch.randn(shape, device=DEVICE, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = max_pool2d(input, 3, 2, padding=1, return_indices=return_indices, provider="triton")
    output = result[0] if return_indices else result
    assert [(tensor.element_size(), tensor.numel()) for tensor in saved] == [(1, output.numel())]
    output.sum().backward()  # and the backward runs from that alone
    assert input.grad.shape == input.shape


def test_empty_batch_gives_empty_output_and_gradient():
    input = torch.randn(0, 3, 8, 8, device=DEVICE, requires_grad=True)
    output, indices = max_pool2d(input, 3, 2, return_indices=True, provider="triton")
    assert output.shape == indices.shape == (0, 3, 3, 3)
    output.sum().backward()
    assert input.grad.shape == input.shape


@BACKWARD_PATHS
def test_planes_split_into_index_chunks_still_match_torch(monkeypatch, scatter):
    """Grids are split into chunks of whole planes (so per-element indices stay int32); force many small chunks."""
    monkeypatch.setattr(maxpool_kernels, "INDEX_CHUNK", 64)
    monkeypatch.setattr(maxpool_kernels, "SCATTER_BACKWARD", scatter)
    input = torch.randn(3, 5, 7, 6, generator=torch.Generator().manual_seed(0)).to(DEVICE).requires_grad_()
    output, indices = max_pool2d(input, 3, 2, padding=1, ceil_mode=True, return_indices=True, provider="triton")
    reference_output, reference_indices = torch_functional.max_pool2d(input, 3, 2, 1, ceil_mode=True,
                                                                      return_indices=True)
    assert_identical(output, reference_output, "output")
    assert_identical(indices, reference_indices, "indices")
    grad_output = torch.randn_like(output)
    assert_close(torch.autograd.grad(output, input, grad_output)[0],
                 torch.autograd.grad(reference_output, input, grad_output)[0], reduction_length=4, name="grad_input")


def test_interpreter_scatters_the_backward_and_the_gpu_gathers_it():
    """The scatter's sum order depends on atomics on a GPU; there the deterministic gather is the default."""
    assert maxpool_kernels.SCATTER_BACKWARD is not ON_GPU


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@BACKWARD_PATHS
def test_half_precision_gradients_are_summed_in_fp32(dtype, scatter):
    """The centre of a 5x5 input is the arg-max of all four 3x3 stride-2 windows, whose gradients are 1024 and then
    half a spacing of the dtype at 1024, another half and a whole one. Summed in fp32 they make 1024 + 2 spacings,
    which the dtype represents; summed in the dtype each half spacing would round away (ties to even)."""
    spacing = 1024 * torch.finfo(dtype).eps
    input = torch.zeros(1, 1, 5, 5, dtype=dtype, device=DEVICE)
    input[0, 0, 2, 2] = 1
    input.requires_grad_()
    output = max_pool2d(input, 3, 2, provider="triton")
    grad_output = torch.tensor([[[[1024, spacing / 2], [spacing / 2, spacing]]]], dtype=dtype, device=DEVICE)
    assert ((grad_output[0, 0, 0, 0] + grad_output[0, 0, 0, 1]) + grad_output[0, 0, 1, 0]).item() == 1024
    with backward_path(scatter):
        (grad_input,) = torch.autograd.grad(output, input, grad_output)
    assert grad_input[0, 0, 2, 2].item() == 1024 + 2 * spacing
    assert torch.count_nonzero(grad_input) == 1


def _input(*shape, dtype=torch.float32):
    """Zeros of ``shape``; huge shapes are a broadcast view of one element (the checks run before any copy)."""
    return torch.zeros((1,) * len(shape), dtype=dtype, device=DEVICE).expand(shape)


@pytest.mark.parametrize("call, error, message", [
    (lambda: max_pool2d(_input(1, 1, 4, 4), 0), ValueError, "kernel_size must be >= 1"),
    (lambda: max_pool2d(_input(1, 1, 4, 4), (2, 0)), ValueError, r"kernel_size\[1\] must be >= 1"),
    (lambda: max_pool2d(_input(1, 1, 4, 4), 2, stride=0), ValueError, "stride must be >= 1"),
    (lambda: max_pool2d(_input(1, 1, 4, 4), 3, padding=2), ValueError, "padding must be at most half"),
    (lambda: max_pool2d(_input(1, 1, 4, 4), 3, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: max_pool2d(_input(1, 1, 4, 4), (2, 2, 2)), ValueError, "kernel_size must be an int or a pair"),
    (lambda: max_pool2d(_input(1, 1, 4, 4), 2, dilation=2, provider="triton"), ValueError, "dilation must be 1"),
    (lambda: max_pool2d(_input(4, 4), 2), ValueError, r"input must be a 3-D or 4-D tensor"),
    (lambda: max_pool2d(_input(1, 1, 1, 4, 4), 2), ValueError, r"input must be a 3-D or 4-D tensor"),
    (lambda: max_pool2d(_input(1, 1, 2, 5), 3), ValueError, "input height 2 with padding 0 is smaller than the window"),
    (lambda: max_pool2d(_input(1, 0, 4, 4), 2), ValueError, "non-zero channels, height and width"),
    (lambda: max_pool2d(_input(1, 1, 4, 4), 2, ceil_mode=1), TypeError, "ceil_mode must be a bool"),
    (lambda: max_pool2d(_input(1, 1, 4, 4), 2, return_indices="yes"), TypeError, "return_indices must be a bool"),
    (lambda: max_pool2d(_input(1, 1, 4, 4, dtype=torch.int32), 2), TypeError, "input must have dtype"),
    (lambda: max_pool2d([[1.0]], 2), TypeError, "input must be a torch.Tensor"),
    (lambda: max_pool2d(_input(1, 1, 17, 17), 17, provider="triton"), ValueError,
     r"kernel_size \(17, 17\) has 289 elements"),
    (lambda: max_pool2d(_input(1, 1, 2**15, 2**15), 2, provider="triton"), ValueError,
     "input planes of 32768 x 32768 elements are too large"),
    (lambda: max_pool2d(_input(2**15, 2**15, 2, 2), 2, provider="triton"), ValueError,
     r"input has 32768 x 32768 \(batch x channels\) planes, too many"),
])
def test_invalid_arguments_are_refused_by_name(call, error, message):
    with pytest.raises(error, match=message):
        call()
