"""max_pool2d's Triton provider against torch: forward values, torch's indices (ties, NaNs and empty windows
included), both backward paths (the GPU's gather and the interpreter's scatter, each checked in either mode through
the launch function's ``scatter`` keyword), any memory format in and torch's memory format out, dilation, double
backward, the 1-byte saved state, and the refusal of every kind of bad argument."""

import inspect
import math
from unittest import mock

import pytest
import torch
import torch.nn.functional as torch_functional
from hypothesis import given, settings
from hypothesis import strategies as st

from tritonnet.kernels import maxpool as maxpool_kernels
from tritonnet.kernels.runtime import ALGORITHMS
from tests.helpers import DEVICE, FLOAT_DTYPES, LAYOUTS, ON_GPU, assert_close, in_layout
from tritonnet.ops.maxpool import max_pool2d

# The kernels widen bf16 to fp32 before comparing or summing (the interpreter's bf16 comparisons are wrong), so bf16
# is checked in both modes; fp64 only in the interpreter.
DTYPES = list(dict.fromkeys([*FLOAT_DTYPES, torch.bfloat16]))
DEFAULT_SCATTER = ALGORITHMS.maxpool_scatter_backward


def pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def pool_with_both_gradients(input, grad_output_for, *, kernel_size, stride=None, padding=0, dilation=1,
                             ceil_mode=False, return_indices=False):
    """Pool ``input`` with the Triton provider, then differentiate it with ``grad_output_for(output)``: through
    autograd (the default backward path), and through the backward launch function with each ``scatter`` choice,
    from the offsets autograd saved. Returns ``(result, grad_output, autograd_gradient, {scatter: gradient})``."""
    saved = []
    leaf = input.detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(lambda tensor: saved.append(tensor) or tensor, lambda tensor: tensor):
        result = max_pool2d(leaf, kernel_size, stride, padding, dilation, ceil_mode, return_indices, provider="triton")
    output = result[0] if return_indices else result
    grad_output = grad_output_for(output)
    (autograd_gradient,) = torch.autograd.grad(output, leaf, grad_output)
    (offsets,) = saved
    unbatched = input.dim() == 3
    input_shape = (1, *input.shape) if unbatched else tuple(input.shape)
    memory_format = torch.contiguous_format if unbatched else maxpool_kernels.output_memory_format(input)
    window = (pair(kernel_size), pair(kernel_size if stride is None else stride), pair(padding), pair(dilation))
    gradients = {}
    for scatter in (True, False):
        gradient = maxpool_kernels.max_pool2d_backward(grad_output.unsqueeze(0) if unbatched else grad_output,
                                                       offsets, input_shape, *window, memory_format, scatter=scatter)
        gradients[scatter] = gradient.squeeze(0) if unbatched else gradient
    torch.testing.assert_close(autograd_gradient, gradients[DEFAULT_SCATTER], rtol=0, atol=0, equal_nan=True)
    return result, grad_output, autograd_gradient, gradients


@st.composite
def pooling_problems(draw):
    """Every argument a user can pass, in every memory format, with values that make ties, NaNs and infinities
    common."""
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    dilation = draw(st.sampled_from([(1, 1), (1, 1), (2, 2), (1, 3), (3, 2)]))
    spans = [dilation[axis] * (kernel[axis] - 1) + 1 for axis in range(2)]
    height = draw(st.integers(max(1, spans[0] - 2 * padding[0]), max(1, spans[0] - 2 * padding[0]) + 10))
    width = draw(st.integers(max(1, spans[1] - 2 * padding[1]), max(1, spans[1] - 2 * padding[1]) + 10))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 5)), height, width)
    return dict(
        shape=shape[1:] if draw(st.booleans()) else shape,
        kernel_size=kernel if kernel[0] != kernel[1] or draw(st.booleans()) else kernel[0],
        stride=stride if draw(st.booleans()) else None,
        padding=padding,
        dilation=dilation if dilation[0] != dilation[1] or draw(st.booleans()) else dilation[0],
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
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=0, atol=0, equal_nan=True,
                               msg=lambda message: f"{name}: {message}")


def windows_per_element(kernel_size, stride, dilation=1):
    """How many windows can cover one input element: the length of each gradient sum."""
    kernel, dilation = pair(kernel_size), pair(dilation)
    stride = kernel if stride is None else pair(stride)
    return math.prod(-(-((extent - 1) * spread + 1) // step) for extent, step, spread in zip(kernel, stride, dilation))


def torch_reference(input, **arguments):
    """torch's result in fp64 on the same (exactly widened) values: same arg-max, exact gradient sums."""
    reference_input = input.detach().to(torch.float64).requires_grad_()
    return reference_input, torch_functional.max_pool2d(reference_input, **arguments)


@given(pooling_problems())
def test_max_pool2d_forward_indices_and_both_gradients_match_torch(problem):
    generator = torch.Generator().manual_seed(problem["seed"])
    input = make_input(problem["shape"], problem["dtype"], problem["values"], problem["scale"], problem["layout"],
                       generator)
    arguments = dict(kernel_size=problem["kernel_size"], stride=problem["stride"], padding=problem["padding"],
                     dilation=problem["dilation"], ceil_mode=problem["ceil_mode"],
                     return_indices=problem["return_indices"])
    result, grad_output, _, gradients = pool_with_both_gradients(
        input, lambda output: torch.randn(output.shape, generator=generator, dtype=torch.float64).to(output),
        **arguments)
    reference_input, reference = torch_reference(input, **arguments)
    output, indices = result if problem["return_indices"] else (result, None)
    reference_output, reference_indices = reference if problem["return_indices"] else (reference, None)

    assert output.dtype == input.dtype
    assert_identical(output.to(torch.float64), reference_output.detach(), "output")
    # Memory formats as torch gives them for this very input (the fp64 copy above may be laid out differently).
    same_dtype_input = input.detach().requires_grad_()
    same_dtype = torch_functional.max_pool2d(same_dtype_input, **{**arguments, "return_indices": True})
    assert output.stride() == same_dtype[0].stride()
    if indices is not None:
        assert indices.dtype == torch.int64
        assert_identical(indices, reference_indices, "indices")
        assert indices.stride() == same_dtype[1].stride()
    (reference_grad,) = torch.autograd.grad(reference_output, reference_input, grad_output.to(torch.float64))
    expected_grad_stride = torch.autograd.grad(same_dtype[0], same_dtype_input, grad_output)[0].stride()
    for scatter, grad_input in gradients.items():
        assert grad_input.stride() == expected_grad_stride, f"scatter={scatter}"
        assert_close(grad_input, reference_grad, dtype=input.dtype, name=f"grad_input (scatter={scatter})",
                     reduction_length=windows_per_element(problem["kernel_size"], problem["stride"],
                                                          problem["dilation"]))


@settings(max_examples=8)
@given(pooling_problems())
def test_gradient_lands_on_torchs_element_among_ties(problem):
    """Small-integer inputs tie in most windows and small-integer gradients sum exactly in any dtype, so each
    input's gradient must equal torch's exactly on both paths, and the totals must match: every output's gradient
    lands once (windows holding no input element aside: torch drops their gradient)."""
    generator = torch.Generator().manual_seed(problem["seed"])
    input = make_input(problem["shape"], problem["dtype"], "small integers", 1.0, problem["layout"], generator)
    arguments = dict(kernel_size=problem["kernel_size"], stride=problem["stride"], padding=problem["padding"],
                     dilation=problem["dilation"], ceil_mode=problem["ceil_mode"])
    _, grad_output, _, gradients = pool_with_both_gradients(
        input, lambda output: torch.randint(-3, 4, output.shape, generator=generator).to(output), **arguments)
    leaf = input.detach().requires_grad_()
    expected = torch.autograd.grad(torch_functional.max_pool2d(leaf, **arguments), leaf, grad_output)[0]
    for scatter, gradient in gradients.items():
        assert_identical(gradient, expected, f"grad_input (scatter={scatter})")


def test_nan_wins_its_window_and_the_last_nan_is_chosen_like_torch():
    input = torch.tensor([[[[1.0, math.nan, 3.0], [math.nan, 0.0, 5.0], [2.0, 2.0, 2.0]]]], device=DEVICE)
    output, indices = max_pool2d(input, 2, 1, return_indices=True, provider="triton")
    reference_output, reference_indices = torch_functional.max_pool2d(input, 2, 1, return_indices=True)
    assert_identical(output, reference_output, "output")
    assert_identical(indices, reference_indices, "indices")
    assert indices[0, 0, 0, 0] == 3  # two NaNs in the first window: torch keeps the later one


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_and_infinities_pool_and_route_gradients_like_torch_in_every_layout(layout):
    """Dilated 3x3 windows over NaN, +inf and -inf: a window with a NaN pools to its last NaN, one with +inf to its
    first +inf, one of only -inf to its first element inside the input; each output's gradient goes to the element
    torch's index names, on both backward paths."""
    data = torch.full((2, 3, 7, 8), -math.inf)
    data[0, 0, 1, 1] = data[0, 0, 3, 3] = data[1, 2, 5, 6] = math.nan
    data[0, 1, 2, 2] = data[0, 1, 4, 2] = data[1, 0, 0, 0] = math.inf
    data[1, 1] = torch.arange(56.0).reshape(7, 8) % 5
    input = in_layout(data, layout)
    arguments = dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True, return_indices=True)
    (output, indices), grad_output, _, gradients = pool_with_both_gradients(
        input, lambda output: torch.arange(1.0, output.numel() + 1).reshape(output.shape).to(output), **arguments)
    leaf = input.detach().requires_grad_()
    reference_output, reference_indices = torch_functional.max_pool2d(leaf, **arguments)
    assert_identical(output, reference_output, "output")
    assert_identical(indices, reference_indices, "indices")
    expected = torch.autograd.grad(reference_output, leaf, grad_output)[0]
    for scatter, gradient in gradients.items():
        assert_identical(gradient, expected, f"grad_input (scatter={scatter})")


def test_windows_of_only_minus_infinity_pick_their_first_element_inside_the_input():
    input = torch.full((1, 1, 4, 5), float("-inf"), device=DEVICE)
    output, indices = max_pool2d(input, 3, 2, padding=1, ceil_mode=True, return_indices=True, provider="triton")
    assert_identical(indices, torch_functional.max_pool2d(input, 3, 2, 1, ceil_mode=True, return_indices=True)[1],
                     "indices")
    assert torch.isneginf(output).all()


@pytest.mark.parametrize("layout", ["contiguous", "channels last"])
def test_window_holding_no_input_element_gives_minus_infinity_and_drops_its_gradient_like_torch(layout):
    """Kernel 3, padding 1, dilation 5 over 3 rows: the window's rows are -1, 4 and 9, none inside the input; with
    ceil_mode torch still makes that one output. It is -inf, its index is the first position past the padding
    (row 4, column 4: outside the plane), and torch's backward drops its gradient."""
    input = in_layout(torch.randn(2, 3, 3, 3, generator=torch.Generator().manual_seed(0)), layout)
    arguments = dict(kernel_size=3, stride=10, padding=1, dilation=5, ceil_mode=True, return_indices=True)
    (output, indices), _, _, gradients = pool_with_both_gradients(input, torch.ones_like, **arguments)
    reference_output, reference_indices = torch_functional.max_pool2d(input, **arguments)
    assert_identical(output, reference_output, "output")
    assert_identical(indices, reference_indices, "indices")
    assert torch.isneginf(output).all() and (indices == 4 * 3 + 4).all()
    for scatter, gradient in gradients.items():
        assert_identical(gradient, torch.zeros_like(gradient), f"grad_input (scatter={scatter})")


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pooled_size_matches_torch_including_dilation_and_ceil_mode_correction(ceil_mode):
    """torch's output extent, and its refusal where that extent is below 1 (a window larger than the padded input
    without ceil_mode), over every small size and a sample of dilations."""
    for size in range(1, 13):
        for kernel in range(1, 6):
            for stride in range(1, 7):
                for padding in range(kernel // 2 + 1):
                    for dilation in (1, 2, 5):
                        ours = maxpool_kernels.pooled_size(size, kernel, stride, padding, dilation, ceil_mode)
                        arguments = ((1, kernel), (1, stride), (0, padding), (1, dilation), ceil_mode)
                        try:
                            expected = torch_functional.max_pool2d(torch.zeros(1, 1, 1, size), *arguments).shape[-1]
                        except RuntimeError:
                            assert ours < 1, (size, kernel, stride, padding, dilation)
                            with pytest.raises(ValueError, match="output size .* is too small"):
                                max_pool2d(torch.zeros(1, 1, 1, size), *arguments)
                            continue
                        assert ours == expected, (size, kernel, stride, padding, dilation)


# AlexNet's three pools: full shapes on a GPU, one image and two channels in the interpreter; channels-last, the
# models' layout on a GPU.
@pytest.mark.parametrize("shape", [(128, 96, 55, 55), (128, 256, 27, 27), (128, 256, 13, 13)])
@pytest.mark.parametrize("dtype", DTYPES[:2] if not ON_GPU else DTYPES)
def test_alexnet_pools_match_torch(shape, dtype):
    if not ON_GPU:
        shape = (1, 2, *shape[2:])
    input = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype).to(DEVICE)
    input = input.contiguous(memory_format=torch.channels_last)
    (output, indices), grad_output, _, gradients = pool_with_both_gradients(input, torch.randn_like, kernel_size=3,
                                                                            stride=2, return_indices=True)
    leaf = input.detach().requires_grad_()
    reference_output, reference_indices = torch_functional.max_pool2d(leaf, 3, 2, return_indices=True)
    assert_identical(output, reference_output, "output")
    assert_identical(indices, reference_indices, "indices")
    assert output.is_contiguous(memory_format=torch.channels_last)
    (reference_grad,) = torch.autograd.grad(reference_output, leaf, grad_output)
    for scatter, gradient in gradients.items():
        assert gradient.is_contiguous(memory_format=torch.channels_last)
        assert_close(gradient, reference_grad, reduction_length=4, name=f"grad_input (scatter={scatter})")


@pytest.mark.parametrize("kernel_size, stride, padding, dilation, ceil_mode", [
    ((3, 2), (2, 1), (1, 0), 1, True),
    (2, 3, 1, 1, False),
    (3, 1, 1, (2, 1), False),
])
def test_max_pool2d_gradcheck_fp64(kernel_size, stride, padding, dilation, ceil_mode):
    # Distinct values, 0.1 apart: the finite-difference step never changes a window's arg-max.
    input = torch.randperm(2 * 5 * 6, generator=torch.Generator().manual_seed(0)).reshape(1, 2, 5, 6) / 10
    input = input.to(torch.float64).to(DEVICE).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda tensor: max_pool2d(tensor, kernel_size, stride, padding, dilation, ceil_mode, provider="triton"),
        (input,))


def test_max_pool2d_gradgradcheck_fp64():
    """The backward is linear in the output gradient, so it is differentiable: its own gradient with respect to
    the output gradient picks each output's arg-max, and with respect to the input it is zero."""
    input = torch.randperm(4 * 5, generator=torch.Generator().manual_seed(0)).reshape(1, 1, 4, 5) / 10
    input = input.to(torch.float64).to(DEVICE).requires_grad_()
    assert torch.autograd.gradgradcheck(
        lambda tensor: max_pool2d(tensor, (2, 3), 1, 1, (2, 1), True, provider="triton"), (input,))


def test_double_backward_matches_torch_through_backward_and_grad():
    """``autograd.grad(..., create_graph=True)`` then ``.backward()``: the output gradient's gradient is torch's."""
    input = in_layout(torch.randn(2, 3, 7, 6, generator=torch.Generator().manual_seed(1)), "channels last")
    input.requires_grad_()
    weights = torch.arange(float(input.numel()), device=DEVICE).reshape(input.shape)
    results = []
    for provider in ("triton", "torch"):
        output = max_pool2d(input, 3, 2, padding=1, dilation=(1, 2), provider=provider)
        grad_output = torch.linspace(-1, 1, output.numel(), device=DEVICE).reshape(output.shape).requires_grad_()
        (grad_input,) = torch.autograd.grad(output, input, grad_output, create_graph=True)
        (grad_input * weights).sum().backward()
        results.append(grad_output.grad)
    assert_identical(results[0], results[1], "grad of grad_output")


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


@pytest.mark.parametrize("layout", ["channels last", "strided view"])
def test_forward_and_backward_read_any_strides_without_copying(layout):
    input = in_layout(torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(0)), layout)

    def refuse_copy(*args, **kwargs):
        raise AssertionError("max_pool2d copied a tensor with .contiguous()")

    with mock.patch.object(torch.Tensor, "contiguous", refuse_copy):
        # The output gradient is a zero-stride view, as ``output.sum().backward()`` passes.
        _, _, _, gradients = pool_with_both_gradients(
            input, lambda output: torch.ones((), device=DEVICE).expand(output.shape), kernel_size=3, stride=2,
            padding=1)
    leaf = input.detach().requires_grad_()
    torch_functional.max_pool2d(leaf, 3, 2, 1).sum().backward()
    for scatter, gradient in gradients.items():
        assert_identical(gradient, leaf.grad, f"grad_input (scatter={scatter})")


def test_empty_batch_gives_empty_output_and_gradient():
    input = torch.randn(0, 3, 8, 8, device=DEVICE, requires_grad=True)
    output, indices = max_pool2d(input, 3, 2, return_indices=True, provider="triton")
    assert output.shape == indices.shape == (0, 3, 3, 3)
    output.sum().backward()
    assert input.grad.shape == input.shape


@pytest.mark.parametrize("layout", ["channels last", "strided view"])
def test_images_split_into_index_chunks_still_match_torch(monkeypatch, layout):
    """Grids are split into chunks of whole images (so per-element offsets stay int32); force one image per chunk,
    and a strided view whose images span more than a chunk (copied dense first)."""
    monkeypatch.setattr(maxpool_kernels, "INDEX_CHUNK", 64)
    input = in_layout(torch.randn(3, 2, 5, 6, generator=torch.Generator().manual_seed(0)), layout)
    arguments = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, return_indices=True)
    (output, indices), grad_output, _, gradients = pool_with_both_gradients(input, torch.randn_like, **arguments)
    leaf = input.detach().requires_grad_()
    reference_output, reference_indices = torch_functional.max_pool2d(leaf, **arguments)
    assert_identical(output, reference_output, "output")
    assert_identical(indices, reference_indices, "indices")
    (reference_grad,) = torch.autograd.grad(reference_output, leaf, grad_output)
    for scatter, gradient in gradients.items():
        assert_close(gradient, reference_grad, reduction_length=4, name=f"grad_input (scatter={scatter})")


def test_interpreter_scatters_the_backward_and_the_gpu_gathers_it():
    """The scatter's sum order depends on atomics on a GPU; there the deterministic gather is the default, taken
    from the one policy as the launch function's keyword."""
    assert ALGORITHMS.maxpool_scatter_backward is not ON_GPU
    default = inspect.signature(maxpool_kernels.max_pool2d_backward).parameters["scatter"].default
    assert default is ALGORITHMS.maxpool_scatter_backward


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_gradients_are_summed_in_fp32(dtype):
    """The centre of a 5x5 input is the arg-max of all four 3x3 stride-2 windows, whose gradients are 1024 and then
    half a spacing of the dtype at 1024, another half and a whole one. Summed in fp32 they make 1024 + 2 spacings,
    which the dtype represents; summed in the dtype each half spacing would round away (ties to even)."""
    spacing = 1024 * torch.finfo(dtype).eps
    input = torch.zeros(1, 1, 5, 5, dtype=dtype, device=DEVICE)
    input[0, 0, 2, 2] = 1
    grad_output = torch.tensor([[[[1024, spacing / 2], [spacing / 2, spacing]]]], dtype=dtype, device=DEVICE)
    assert ((grad_output[0, 0, 0, 0] + grad_output[0, 0, 0, 1]) + grad_output[0, 0, 1, 0]).item() == 1024
    _, _, _, gradients = pool_with_both_gradients(input, lambda output: grad_output, kernel_size=3, stride=2)
    for gradient in gradients.values():
        assert gradient[0, 0, 2, 2].item() == 1024 + 2 * spacing
        assert torch.count_nonzero(gradient) == 1


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
    (lambda: max_pool2d(_input(1, 1, 4, 4), 2, dilation=0), ValueError, "dilation must be >= 1"),
    # torch's rule bounds the padding by the undilated kernel, and a dilated window must fit the padded input
    (lambda: max_pool2d(_input(1, 1, 9, 9), 3, padding=2, dilation=5), ValueError, "padding must be at most half"),
    (lambda: max_pool2d(_input(1, 1, 3, 3), 3, padding=1, dilation=3), ValueError,
     r"output size \(0, 0\) is too small"),
    (lambda: max_pool2d(_input(4, 4), 2), ValueError, r"input must be a 3-D or 4-D tensor"),
    (lambda: max_pool2d(_input(1, 1, 1, 4, 4), 2), ValueError, r"input must be a 3-D or 4-D tensor"),
    (lambda: max_pool2d(_input(1, 1, 2, 5), 3), ValueError, r"output size \(0, 1\) is too small"),
    (lambda: max_pool2d(_input(1, 0, 4, 4), 2), ValueError, "non-zero channels, height and width"),
    (lambda: max_pool2d(_input(1, 1, 4, 4), 2, ceil_mode=1), TypeError, "ceil_mode must be a bool"),
    (lambda: max_pool2d(_input(1, 1, 4, 4), 2, return_indices="yes"), TypeError, "return_indices must be a bool"),
    (lambda: max_pool2d(_input(1, 1, 4, 4, dtype=torch.int32), 2), TypeError, "input must have dtype"),
    (lambda: max_pool2d([[1.0]], 2), TypeError, "input must be a torch.Tensor"),
    (lambda: max_pool2d(_input(1, 1, 17, 17), 17, provider="triton"), ValueError,
     r"kernel_size \(17, 17\) has 289 elements"),
    (lambda: max_pool2d(_input(1, 2, 2**15, 2**14), 2, provider="triton"), ValueError,
     r"input images of 2 x 32768 x 16384 \(channels x height x width\) elements are too large"),
    (lambda: max_pool2d(_input(2**18, 2**13, 2**8, 2**8), 2, provider="triton"), ValueError,
     "input batch of 262144 images of 536870912 elements is too large"),
])
def test_invalid_arguments_are_refused_by_name(call, error, message):
    with pytest.raises(error, match=message):
        call()
