"""local_response_norm: every provider against the torch reference computed in fp64, forward and backward, over
the shapes, windows, constants, dtypes and layouts a user can pass; gradcheck; what is saved for the backward; NaN
parity for bases <= 0; and each kind of invalid argument."""

import math
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import lrn as lrn_kernels
from kernels.runtime import interpreter_block
from tests.helpers import DEVICE, FLOAT_DTYPES, assert_close
from tritonnet import available_kernels
from tritonnet.ops.lrn import OP, local_response_norm

PROVIDERS = [name for name in available_kernels()[OP] if name != "torch"]


@st.composite
def lrn_inputs(draw, dtypes=FLOAT_DTYPES):
    """(input, size, alpha, beta, k): 3-D to 5-D inputs with odd, tiny and non-square extents, windows from 1 to
    past the channel count (odd and even), contiguous or not (channels-last-like, strided slice, sliced channels)."""
    batch = draw(st.integers(1, 3))
    channels = draw(st.integers(1, 20))
    spatial = draw(st.lists(st.integers(1, 9), min_size=1, max_size=3))
    size = draw(st.integers(1, channels + 2))
    alpha = draw(st.sampled_from([1e-4, 0.05, 0.5, 2.0]))
    beta = draw(st.floats(0.0, 2.0))
    k = draw(st.floats(0.25, 3.0))
    dtype = draw(st.sampled_from(dtypes))
    scale = draw(st.sampled_from([0.1, 1.0, 4.0]))
    layout = draw(st.sampled_from(["contiguous", "channels_last", "strided", "channel_slice"]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))

    def sample(shape):
        return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(dtype).to(DEVICE)

    if layout == "channels_last":  # channels innermost in memory
        x = sample([batch, *spatial, channels]).movedim(-1, 1)
    elif layout == "strided":  # every other position of the last dimension
        x = sample([batch, channels, *spatial[:-1], 2 * spatial[-1]])[..., ::2]
    elif layout == "channel_slice":  # channels 1.. of a larger tensor
        x = sample([batch, channels + 1, *spatial])[:, 1:]
    else:
        x = sample([batch, channels, *spatial])
    return x, size, alpha, beta, k


def reference(x, size, alpha, beta, k, grad_output=None):
    """torch's local_response_norm in fp64 on the same values: the output, and the input's gradient."""
    x64 = x.detach().to(torch.float64).requires_grad_(grad_output is not None)
    output = local_response_norm(x64, size, alpha, beta, k, provider="torch")
    if grad_output is None:
        return output, None
    (grad_input,) = torch.autograd.grad(output, x64, grad_output.to(torch.float64))
    return output, grad_input


@pytest.mark.parametrize("provider", PROVIDERS)
@given(case=lrn_inputs())
def test_lrn_forward_matches_torch(provider, case):
    x, size, alpha, beta, k = case
    with torch.no_grad():
        output = local_response_norm(x, size, alpha, beta, k, provider=provider)
    expected, _ = reference(x, size, alpha, beta, k)
    assert output.dtype == x.dtype and output.shape == x.shape
    assert_close(output, expected, dtype=x.dtype, reduction_length=size)


def assert_forward_and_backward_match_torch(x, size, alpha, beta, k, provider):
    """``provider``'s output and input gradient against torch's in fp64; returns the output and the input."""
    x = x.detach().requires_grad_()
    output = local_response_norm(x, size, alpha, beta, k, provider=provider)
    grad_output = torch.randn(output.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(size))
    grad_output = grad_output.to(x.dtype).to(DEVICE)
    output.backward(grad_output)
    expected_output, expected_grad = reference(x, size, alpha, beta, k, grad_output)
    assert_close(output, expected_output, dtype=x.dtype, reduction_length=size)
    # Each input gradient sums over the two windows around its channel.
    assert_close(x.grad, expected_grad, dtype=x.dtype, reduction_length=2 * size, name="grad_input")
    return output, x


@pytest.mark.parametrize("provider", PROVIDERS)
@given(case=lrn_inputs())
def test_lrn_backward_matches_torch(provider, case):
    output, x = assert_forward_and_backward_match_torch(*case, provider)
    with torch.no_grad():  # the inference path (nothing saved) gives the same output
        assert torch.equal(local_response_norm(x, *case[1:], provider=provider), output)


@pytest.mark.skipif(DEVICE.type == "cuda", reason="the interpreter's choice between the two kernel paths")
@pytest.mark.parametrize("provider", PROVIDERS)
@settings(max_examples=6)
@given(case=lrn_inputs())
def test_lrn_channel_walk_path_matches_torch_in_the_interpreter(provider, case):
    """The interpreter takes the band-matrix path whenever the channels fit; with that path switched off, the
    shifted-load walk across channels (the GPU's path) still gives torch's output and gradient."""
    with mock.patch.object(lrn_kernels, "INTERPRETER_MATMUL_MAX_CHANNELS", 0):
        assert_forward_and_backward_match_torch(*case, provider)


@pytest.mark.skipif(DEVICE.type == "cuda", reason="the interpreter's tiles")
@pytest.mark.parametrize("provider", PROVIDERS)
@settings(max_examples=6)
@given(case=lrn_inputs(), tile=st.sampled_from([2**8, 2**9, 2**10]))
def test_lrn_band_path_tiles_spanning_samples_match_torch_in_the_interpreter(provider, case, tile):
    """The band-matrix path's tiles are (sample, position) columns across the batch: with tiles small enough that a
    batch takes several programs, wherever their boundaries fall, the result is torch's."""
    with mock.patch.object(lrn_kernels, "INTERPRETER_TILE", tile):
        assert_forward_and_backward_match_torch(*case, provider)


@pytest.mark.skipif(DEVICE.type == "cuda", reason="the interpreter's tiles")
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape, size", [
    ((5, 3, 7), 3),  # tiles cut samples in two (7 does not divide 16)
    ((1, 20, 5, 7), 5),  # batch 1, 20 channels
    ((37, 6, 1), 4),  # spatial size 1: every column is a sample; even window
    ((3, 17, 2, 3, 3), 6),  # 5-D, 17 channels
])
def test_lrn_band_path_tiles_of_16_columns_match_torch_in_the_interpreter(provider, dtype, shape, size):
    """Tiles of 16 (sample, position) columns: several per batch and a partial last one, on odd channel counts."""
    columns = shape[0] * math.prod(shape[2:])
    assert columns > 16 and columns % 16, "several tiles, the last one partial"
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(size)).to(dtype).to(DEVICE)
    with mock.patch.object(lrn_kernels, "INTERPRETER_TILE", 16 * interpreter_block(shape[1])):
        assert_forward_and_backward_match_torch(x, size, 0.5, 0.75, 1.5, provider)


@pytest.mark.skipif(DEVICE.type == "cuda", reason="fp64 gradcheck is for the interpreter")
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape, size, tile", [((1, 5, 3), 3, None), ((1, 4, 2, 3), 2, None),
                                               ((1, 3, 2, 1, 2), 6, None), ((2, 1, 3), 1, None),
                                               ((2, 2, 9), 3, 16 * 16)])  # 16-column tiles: 2 of them, across samples
def test_lrn_gradcheck_fp64(provider, shape, size, tile):
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(size)).to(DEVICE)
    with mock.patch.object(lrn_kernels, "INTERPRETER_TILE", tile or lrn_kernels.INTERPRETER_TILE):
        assert torch.autograd.gradcheck(lambda t: local_response_norm(t, size, 0.7, 0.75, 1.3, provider=provider),
                                        (x.requires_grad_(),))


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
def test_lrn_saves_only_the_input_and_one_accumulator_per_element(provider, dtype):
    x = torch.randn(2, 6, 4, 5, dtype=dtype, device=DEVICE).requires_grad_()
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        local_response_norm(x, 5, 1e-4, 0.75, 2.0, provider=provider)
    saved_bytes = sum(tensor.numel() * tensor.element_size() for tensor in saved)
    accumulator_bytes = 8 if dtype == torch.float64 else 4
    assert saved_bytes <= x.numel() * (x.element_size() + accumulator_bytes), [(t.shape, t.dtype) for t in saved]
    assert any(tensor.data_ptr() == x.data_ptr() for tensor in saved), "the contiguous input is saved, not copied"


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


INTERPRETER_PATHS = ["band matrix", "channel walk"] if DEVICE.type != "cuda" else ["gpu"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, in the interpreter, on purpose-made NaN/inf
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("path", INTERPRETER_PATHS)
@pytest.mark.parametrize("alpha, beta", [(1e-4, 0.75), (0.5, 2.0), (0.0, 0.75)])
def test_lrn_nan_and_inf_inputs_match_torch(provider, path, alpha, beta):
    """NaN, +inf and -inf inputs (alone and side by side in one window) reach exactly the outputs torch's do; the
    input gradient is NaN only where torch's is (torch's is NaN in more places: beside an infinity, for some
    betas) and equal wherever torch's is not NaN. The band-matrix path sums windows by a matrix product, where an
    infinity would reach every channel through the band's zeros unless handled."""
    x = torch.randn(3, 7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    x[0, 2, 1], x[1, 4, 3], x[2, 0, 0] = math.inf, -math.inf, math.nan
    x[0, 5, 4], x[0, 6, 4] = math.inf, -math.inf
    x = x.to(torch.float32).to(DEVICE).requires_grad_()
    grad_output = torch.randn(x.shape, generator=torch.Generator().manual_seed(8)).to(DEVICE)
    with mock.patch.object(lrn_kernels, "INTERPRETER_MATMUL_MAX_CHANNELS", 0 if path == "channel walk" else 1024):
        output = local_response_norm(x, 3, alpha, beta, 1.0, provider=provider)
        output.backward(grad_output)
    expected_output, expected_grad = reference(x, 3, alpha, beta, 1.0, grad_output)
    for actual, expected, name in ((output, expected_output, "output"), (x.grad, expected_grad, "grad_input")):
        defined = ~expected.isnan()
        assert not (actual.isnan() & defined).any(), f"{name}: NaN where torch's is not"
        assert torch.equal(actual[defined].isinf(), expected[defined].isinf()), f"{name}: infinities differ"
        finite = expected.isfinite()
        assert_close(actual[finite], expected[finite], reduction_length=6, name=name)
    assert torch.equal(output.isnan(), expected_output.isnan()) and output.isnan().any()


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


@pytest.mark.parametrize("provider", PROVIDERS)
def test_lrn_refuses_samples_of_2_to_the_31_elements(provider):
    x = torch.zeros(1, 1, 1, device=DEVICE).expand(1, 2**16, 2**15)  # no memory behind it
    with pytest.raises(ValueError, match="fewer than 2\\*\\*31"):
        local_response_norm(x, 5, provider=provider)


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
