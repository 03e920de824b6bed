"""local_response_norm: every provider against the torch reference computed in fp64, forward and backward, over
the shapes, windows, constants, dtypes and layouts a user can pass; gradcheck; what is saved for the backward; NaN
parity for bases <= 0; and each kind of invalid argument."""

import math
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st


from tritonnet.kernels import layout
from tritonnet.kernels import lrn as lrn_kernels
from tritonnet.kernels.runtime import interpreter_block
from tests.helpers import DEVICE, FLOAT_DTYPES, assert_close
from tritonnet import available_kernels
from tritonnet.ops.lrn import OP, local_response_norm

PROVIDERS = [name for name in available_kernels()[OP] if name != "torch"]


LAYOUTS = ["contiguous", "channels_last", "strided", "channel_slice", "expanded", "transposed"]


def draw_layout(draw, data: torch.Tensor, layout: str) -> torch.Tensor:
    """``data``'s values in ``layout``: contiguous; channels innermost in memory (NHWC-like, any number of dims); every
    other position of the last dim; channels 1.. of a larger tensor; expanded from one sample, or from one position of
    the last dim, where ``data`` allows (stride 0: several elements share memory); or the last two dims transposed."""
    if layout == "channels_last":
        return data.movedim(1, -1).contiguous().movedim(-1, 1)
    if layout == "strided":
        wide = torch.zeros(*data.shape[:-1], 2 * data.shape[-1], dtype=data.dtype, device=data.device)
        wide[..., ::2] = data
        return wide[..., ::2]
    if layout == "channel_slice":
        return torch.cat([torch.zeros_like(data[:, :1]), data], 1)[:, 1:]
    if layout == "expanded":
        dim = draw(st.sampled_from([0, data.dim() - 1]))
        return data.narrow(dim, 0, 1).expand(data.shape)
    if layout == "transposed" and data.dim() >= 4:
        return data.transpose(-1, -2).contiguous().transpose(-1, -2)
    return data


@st.composite
def lrn_inputs(draw, dtypes=FLOAT_DTYPES):
    """(input, size, alpha, beta, k): 3-D to 5-D inputs with odd, tiny and non-square extents, windows from 1 to
    past the channel count (odd and even), in every layout of :data:`LAYOUTS`."""
    batch = draw(st.integers(1, 3))
    channels = draw(st.integers(1, 20))
    spatial = draw(st.lists(st.integers(1, 9), min_size=1, max_size=3))
    size = draw(st.integers(1, channels + 2))
    alpha = draw(st.sampled_from([1e-4, 0.05, 0.5, 2.0]))
    beta = draw(st.floats(0.0, 2.0))
    k = draw(st.floats(0.25, 3.0))
    dtype = draw(st.sampled_from(dtypes))
    scale = draw(st.sampled_from([0.1, 1.0, 4.0]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = (torch.randn([batch, channels, *spatial], generator=generator, dtype=torch.float64) * scale).to(dtype)
    return draw_layout(draw, x.to(DEVICE), draw(st.sampled_from(LAYOUTS))), size, alpha, beta, k


@st.composite
def gradients(draw, output: torch.Tensor) -> torch.Tensor:
    """A gradient for ``output`` in any layout of :data:`LAYOUTS` (``sum().backward()`` sends an expanded one)."""
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    values = torch.randn(output.shape, generator=generator, dtype=torch.float64).to(output.dtype).to(DEVICE)
    return draw_layout(draw, values, draw(st.sampled_from(LAYOUTS)))


def reference(x, size, alpha, beta, k, grad_output=None):
    """torch's local_response_norm in fp64 on the same values: the output, and the input's gradient."""
    x64 = x.detach().to(torch.float64).contiguous().requires_grad_(grad_output is not None)
    output = local_response_norm(x64, size, alpha, beta, k, provider="torch")
    if grad_output is None:
        return output, None
    (grad_input,) = torch.autograd.grad(output, x64, grad_output.to(torch.float64).contiguous())
    return output, grad_input


def layout_of(tensor_or_strides, shape):
    """The strides that matter (those of dims longer than 1: a size-1 dim's stride is arbitrary)."""
    strides = tensor_or_strides if isinstance(tensor_or_strides, tuple) else tensor_or_strides.stride()
    return tuple(stride for stride, extent in zip(strides, shape) if extent > 1)


def torch_strides(x, size, alpha, beta, k):
    """The strides of torch's output for ``x`` in its layout (values in fp64, which keeps a dense layout as it is;
    where torch's own decomposition cannot view a layout, ``torch.empty_like``'s)."""
    try:
        return F.local_response_norm(x.detach().to(torch.float64), size, alpha, beta, k).stride()
    except RuntimeError:
        return torch.empty_like(x).stride()


@pytest.mark.parametrize("provider", PROVIDERS)
@given(case=lrn_inputs())
def test_lrn_forward_matches_torch(provider, case):
    x, size, alpha, beta, k = case
    with torch.no_grad():
        output = local_response_norm(x, size, alpha, beta, k, provider=provider)
    expected, _ = reference(x, size, alpha, beta, k)
    assert output.dtype == x.dtype and output.shape == x.shape
    assert_close(output, expected, dtype=x.dtype, reduction_length=size)
    assert layout_of(output, x.shape) == layout_of(torch_strides(x, size, alpha, beta, k), x.shape)


def assert_forward_and_backward_match_torch(x, size, alpha, beta, k, grad_output, run):
    """``run(x, grad_output) -> (output, grad_input)`` against torch's in fp64, values and memory formats."""
    output, grad_input = run(x, grad_output)
    expected_output, expected_grad = reference(x, size, alpha, beta, k, grad_output)
    assert_close(output, expected_output, dtype=x.dtype, reduction_length=size)
    # Each input gradient sums over the two windows around its channel.
    assert_close(grad_input, expected_grad, dtype=x.dtype, reduction_length=2 * size, name="grad_input")
    output_strides = torch_strides(x, size, alpha, beta, k)
    assert layout_of(output, x.shape) == layout_of(output_strides, x.shape), (output.stride(), output_strides)
    # The gradient in the input's memory format, whatever the layout of the gradient it came from.
    assert layout_of(grad_input, x.shape) == layout_of(output_strides, x.shape), (grad_input.stride(), output_strides)
    return output, grad_input


def through_provider(size, alpha, beta, k, provider):
    def run(x, grad_output):
        x = x.detach().requires_grad_()
        output = local_response_norm(x, size, alpha, beta, k, provider=provider)
        output.backward(grad_output)
        return output, x.grad
    return run


def through_kernels(size, alpha, beta, k, band_matrix):
    """The launch functions called with the path chosen by keyword (``beta != 0``)."""
    def run(x, grad_output):
        output, base_power = lrn_kernels.lrn_forward(x, size, alpha, beta, k, True, band_matrix=band_matrix)
        return output, lrn_kernels.lrn_backward(x, base_power, grad_output, size, alpha, beta, k,
                                                band_matrix=band_matrix)
    return run


@pytest.mark.parametrize("provider", PROVIDERS)
@given(case=lrn_inputs(), data=st.data())
def test_lrn_backward_matches_torch(provider, case, data):
    x, size, alpha, beta, k = case
    grad_output = data.draw(gradients(x))
    output, _ = assert_forward_and_backward_match_torch(*case, grad_output, through_provider(*case[1:], provider))
    with torch.no_grad():  # the inference path (nothing saved) gives the same output
        assert torch.equal(local_response_norm(x, *case[1:], provider=provider), output)


@pytest.mark.parametrize("band_matrix", [True, False])
@settings(max_examples=10)
@given(case=lrn_inputs(), data=st.data())
def test_lrn_kernels_match_torch_on_both_paths(band_matrix, case, data):
    """Each path (the interpreter's band-matrix product, the GPU's channel walk), chosen by the launch functions'
    keyword, in every layout of the input and of the gradient."""
    x, size, alpha, beta, k = case
    beta = beta or 0.5
    run = through_kernels(size, alpha, beta, k, band_matrix)
    assert_forward_and_backward_match_torch(x, size, alpha, beta, k, data.draw(gradients(x)), run)


@pytest.mark.parametrize("band_matrix", [True, False])
def test_lrn_kernels_take_layouts_beyond_four_position_dims(band_matrix):
    """A 7-D view, every other element of each spatial dim, whose six position dims do not merge to four: read
    through a copy in the output's layout, still torch's values, in torch's memory format."""
    data = torch.randn(2, 3, 4, 4, 4, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x = data.to(DEVICE)[:, :, ::2, ::2, ::2, ::2, ::2]
    assert lrn_kernels._position_walk(torch.empty_like(x), [x]) is None
    assert_forward_and_backward_match_torch(x, 3, 0.5, 0.75, 1.0, fixed_gradient(x),
                                            through_kernels(3, 0.5, 0.75, 1.0, band_matrix))


@pytest.mark.parametrize("band_matrix", [True, False])
def test_lrn_kernels_give_the_same_result_with_a_64_bit_index(band_matrix):
    """The flat index over positions is int32 unless a tensor needs 64 bits; forced wide, the same result."""
    x = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    x = x.contiguous(memory_format=torch.channels_last)
    run = through_kernels(3, 0.5, 0.75, 1.0, band_matrix)
    narrow = run(x, fixed_gradient(x))
    with mock.patch.object(layout, "MAX_INDEX_BLOCK", 2**31):
        wide = run(x, fixed_gradient(x))
    assert all(torch.equal(a, b) for a, b in zip(narrow, wide))


def fixed_gradient(x, seed=0):
    return torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)).to(x)


@settings(max_examples=6)
@given(case=lrn_inputs(), tile=st.sampled_from([2**8, 2**9, 2**10]))
def test_lrn_band_path_tiles_spanning_samples_match_torch(case, tile):
    """The band-matrix path's tiles are positions across the batch: with tiles small enough that a batch takes
    several programs, wherever their boundaries fall, the result is torch's."""
    x, size, alpha, beta, k = case
    with mock.patch.object(lrn_kernels, "INTERPRETER_TILE", tile):
        assert_forward_and_backward_match_torch(x, size, alpha, beta or 0.5, k, fixed_gradient(x),
                                                through_kernels(size, alpha, beta or 0.5, k, band_matrix=True))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape, size", [
    ((5, 3, 7), 3),  # tiles cut samples in two (7 does not divide 16)
    ((1, 20, 5, 7), 5),  # batch 1, 20 channels
    ((37, 6, 1), 4),  # spatial size 1: every column is a sample; even window
    ((3, 17, 2, 3, 3), 6),  # 5-D, 17 channels
])
def test_lrn_band_path_tiles_of_16_positions_match_torch(dtype, shape, size):
    """Tiles of 16 positions: several per batch and a partial last one, on odd channel counts."""
    columns = shape[0] * math.prod(shape[2:])
    assert columns > 16 and columns % 16, "several tiles, the last one partial"
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(size)).to(dtype).to(DEVICE)
    with mock.patch.object(lrn_kernels, "INTERPRETER_TILE", 16 * interpreter_block(shape[1])):
        assert_forward_and_backward_match_torch(x, size, 0.5, 0.75, 1.5, fixed_gradient(x),
                                                through_kernels(size, 0.5, 0.75, 1.5, band_matrix=True))


@pytest.mark.skipif(DEVICE.type == "cuda", reason="fp64 gradcheck is for the interpreter")
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape, size, tile", [((1, 5, 3), 3, None), ((1, 4, 2, 3), 2, None),
                                               ((1, 3, 2, 1, 2), 6, None), ((2, 1, 3), 1, None),
                                               ((2, 2, 9), 3, 16 * 16)])  # 16-column tiles: 2 of them, across samples
def test_lrn_gradcheck_fp64(provider, shape, size, tile):
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(size)).to(DEVICE)
    with mock.patch.object(lrn_kernels, "INTERPRETER_TILE", tile or lrn_kernels.INTERPRETER_TILE):
        assert torch.autograd.gradcheck(lambda t: local_response_norm(t, size, 0.7, 0.75, 1.3, provider=provider),
                                        (x.requires_grad_(),), fast_mode=True)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_lrn_alexnet_constants_match_torch(provider):
    """AlexNet's LRN (size 5, alpha 1e-4, beta 0.75, k 2) on post-ReLU activations, 96 channels."""
    x = torch.randn(2, 96, 5, 7, device=DEVICE).relu_().mul_(30).requires_grad_()
    output = local_response_norm(x, 5, 1e-4, 0.75, 2.0, provider=provider)
    grad_output = torch.randn_like(output)
    output.backward(grad_output)
    expected_output, expected_grad = reference(x, 5, 1e-4, 0.75, 2.0, grad_output)
    assert_close(output, expected_output, reduction_length=5)
    assert_close(x.grad, expected_grad, reduction_length=10, name="grad_input")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_lrn_saves_only_the_input_and_one_accumulator_per_element(provider, dtype, memory_format):
    x = torch.randn(2, 6, 4, 5, dtype=dtype, device=DEVICE).contiguous(memory_format=memory_format).requires_grad_()
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        local_response_norm(x, 5, 1e-4, 0.75, 2.0, provider=provider)
    saved_bytes = sum(tensor.numel() * tensor.element_size() for tensor in saved)
    accumulator_bytes = 8 if dtype == torch.float64 else 4
    assert saved_bytes <= x.numel() * (x.element_size() + accumulator_bytes), [(t.shape, t.dtype) for t in saved]
    assert any(tensor.data_ptr() == x.data_ptr() for tensor in saved), "the input is saved, not copied"


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (2, 0, 3, 3), (2, 3, 0, 5), (1, 2, 0)])
def test_lrn_empty_input_gives_empty_output_and_gradient(provider, shape):
    x = torch.randn(shape, device=DEVICE).requires_grad_()
    output = local_response_norm(x, 3, provider=provider)
    assert output.shape == x.shape
    output.sum().backward()
    assert x.grad.shape == x.shape


def window_sum(values, before, after):
    """sum_{j = c - before}^{c + after} values[:, j], zero outside the channels."""
    padded = torch.nn.functional.pad(values.movedim(1, -1), (before, after))
    return padded.unfold(-1, before + after + 1, 1).sum(-1).movedim(-1, 1)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, in the interpreter, on purpose-made NaN/inf
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("beta", [0.75, 1.0, 2.0])
def test_lrn_negative_base_matches_torch_nan_for_nan(provider, beta):
    """torch accepts any k: where the base is negative, pow is NaN for a fractional beta and signed for an integer
    one. Here k = -1 and the window sums straddle it, so bases are negative in some places and positive in others."""
    generator = torch.Generator().manual_seed(int(beta * 4))
    x = (torch.randn(2, 7, 4, 3, generator=generator, dtype=torch.float64) * 1.5).to(DEVICE)
    alpha, k, size = 1.0, -1.0, 3
    base = k + alpha / size * window_sum(x.square(), size // 2, (size - 1) // 2)
    near_zero = (base.abs() < 0.2).to(torch.float64)  # out and its gradient are ill-conditioned there
    away_from_zero = near_zero == 0
    # dx[j] involves the bases of the channels c whose window holds j: c in [j - after, j + before].
    gradient_away_from_zero = window_sum(near_zero, (size - 1) // 2, size // 2) == 0
    assert (base < 0).any() and (base > 0).any()
    x = x.to(torch.float32).requires_grad_()
    output = local_response_norm(x, size, alpha, beta, k, provider=provider)
    grad_output = torch.ones_like(output)
    output.backward(grad_output)
    expected_output, expected_grad = reference(x, size, alpha, beta, k, grad_output)
    assert torch.equal(output.isnan(), expected_output.isnan())
    assert output.isnan().any() == (not float(beta).is_integer())
    keep = away_from_zero & ~expected_output.isnan()
    assert_close(output[keep], expected_output[keep], reduction_length=size)
    # A gradient is NaN wherever any base in its window is; compare where torch's is finite.
    finite = expected_grad.isfinite() & gradient_away_from_zero
    assert torch.equal(x.grad.isnan(), expected_grad.isnan())
    assert_close(x.grad[finite], expected_grad[finite], reduction_length=2 * size, name="grad_input")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, in the interpreter, on purpose-made NaN/inf
@pytest.mark.parametrize("band_matrix", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("alpha, beta", [(1e-4, 0.75), (0.5, 2.0), (0.0, 0.75), (0.5, 1.0), (-0.01, 1.5)])
def test_lrn_nan_and_inf_inputs_match_torch(band_matrix, layout, alpha, beta):
    """NaN, +inf and -inf inputs (alone and side by side in one window) give NaN and infinities exactly where torch's
    output and input gradient have them (for beta > 1 torch's chain rule also makes NaN beside an infinity, as
    0 * inf), and torch's values elsewhere. The band-matrix path sums windows by a matrix product, where an infinity
    would reach every channel through the band's zeros unless handled."""
    x = torch.randn(3, 7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    x[0, 2, 1], x[1, 4, 3], x[2, 0, 0] = math.inf, -math.inf, math.nan
    x[0, 5, 4], x[0, 6, 4] = math.inf, -math.inf
    x = x.to(torch.float32).to(DEVICE)[..., None]
    x = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
    grad_output = fixed_gradient(x, 8)
    output, grad_input = through_kernels(3, alpha, beta, 1.0, band_matrix)(x, grad_output)
    expected_output, expected_grad = reference(x, 3, alpha, beta, 1.0, grad_output)
    for actual, expected, name in ((output, expected_output, "output"), (grad_input, expected_grad, "grad_input")):
        assert torch.equal(actual.isnan(), expected.isnan()), f"{name}: NaN in other places than torch's"
        assert torch.equal(actual.isinf(), expected.isinf()), f"{name}: infinities in other places than torch's"
        assert actual.isnan().any()
        assert_close(actual, expected, reduction_length=6, name=name)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, in the interpreter, on purpose-made NaN/inf
@pytest.mark.parametrize("provider", PROVIDERS)
def test_lrn_zero_base_gives_torch_nan(provider):
    """k = 0 and an all-zero window: 0 / 0 ** beta is NaN in torch, and here."""
    x = torch.zeros(1, 4, 3, device=DEVICE)
    x[0, 0, 0] = 1.0
    output = local_response_norm(x, 2, 1e-4, 0.75, 0.0, provider=provider)
    expected, _ = reference(x, 2, 1e-4, 0.75, 0.0)
    assert torch.equal(output.isnan(), expected.isnan()) and output.isnan().any()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_lrn_beta_zero_is_the_identity_even_where_the_base_is_zero(provider):
    x = torch.zeros(1, 3, 4, device=DEVICE)
    x[0, 1, 1] = 2.0
    x.requires_grad_()
    output = local_response_norm(x, 2, 1e-4, 0.0, 0.0, provider=provider)
    grad_output = torch.arange(12.0, device=DEVICE).view(1, 3, 4)
    output.backward(grad_output)
    expected_output, expected_grad = reference(x, 2, 1e-4, 0.0, 0.0, grad_output)
    assert torch.equal(output, expected_output.float()) and torch.equal(x.grad, expected_grad.float())


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("grad_output_requires_grad", [False, True])
@pytest.mark.parametrize("call", ["backward", "autograd.grad"])
def test_lrn_refuses_double_backward_with_a_clear_error(provider, grad_output_requires_grad, call):
    """The Triton backward is not differentiable: create_graph=True is refused, never answered with a gradient that
    silently does not depend on the input."""
    x = torch.randn(2, 5, 3, dtype=torch.float64, device=DEVICE).requires_grad_()
    output = local_response_norm(x, 3, 0.5, 0.75, 1.0, provider=provider)
    grad_output = torch.randn_like(output).requires_grad_(grad_output_requires_grad)
    with pytest.raises(RuntimeError, match="double backward .* provider='torch'"):
        if call == "backward":
            output.backward(grad_output, create_graph=True)
        else:
            torch.autograd.grad(output, x, grad_output, create_graph=True)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shape", [(2, 6, 5), (2, 6, 3, 4), (1, 6, 2, 3, 2)])
def test_lrn_under_autocast_returns_torch_dtype(provider, autocast_dtype, dtype, shape):
    """Under autocast torch's LRN returns fp32 for fp16/bf16 inputs where its decomposition hits an fp32-listed op
    (CPU: avg_pool3d, for 4-D and up; CUDA: pow); the gradient comes back in the input's dtype."""
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(dtype).to(DEVICE)
    x.requires_grad_()
    with torch.autocast(DEVICE.type, dtype=autocast_dtype):
        output = local_response_norm(x, 3, 0.5, 0.75, 1.0, provider=provider)
        expected = F.local_response_norm(x, 3, 0.5, 0.75, 1.0)
    assert output.dtype == expected.dtype
    assert_close(output, expected.detach(), dtype=x.dtype, reduction_length=3)
    output.sum().backward()
    assert x.grad.dtype == x.dtype


@pytest.mark.parametrize("provider", ["torch", *PROVIDERS])
@pytest.mark.parametrize("arguments, error, message", [
    (dict(input=[[[1.0]]]), TypeError, "input must be a torch.Tensor"),
    (dict(input=torch.ones(2, 3)), ValueError, "input must be a 3-D"),
    (dict(input=torch.ones(2, 3, 4, dtype=torch.int32)), TypeError, "input must have dtype"),
    (dict(size=0), ValueError, "size must be >= 1"),
    (dict(size=2.5), TypeError, "size must be an int"),
    (dict(size=True), TypeError, "size must be an int"),
    (dict(alpha=math.nan), ValueError, "alpha must be a finite number"),
    (dict(beta="0.75"), TypeError, "beta must be a number"),
    (dict(k=math.inf), ValueError, "k must be a finite number"),
])
def test_lrn_rejects_invalid_arguments(provider, arguments, error, message):
    call = dict(input=torch.ones(1, 3, 4, device=DEVICE), size=3, alpha=1e-4, beta=0.75, k=1.0) | arguments
    with pytest.raises(error, match=message):
        local_response_norm(**call, provider=provider)
