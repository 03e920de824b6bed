"""dropout: the Triton provider's mask is reproducible under torch.manual_seed, changes with the seed, keeps a
binomial fraction, scales survivors exactly, is regenerated (not saved) by the backward, and the edge cases (eval,
p = 0, p = 1, in place, empty, non-contiguous, too large) behave as torch's dropout does. tl.rand is slow in the
interpreter: tensors stay at a few thousand elements."""

import math
from unittest import mock

import pytest
import torch
import triton
import triton.language as tl
from hypothesis import given, settings
from hypothesis import strategies as st

from tritonnet.kernels.dropout import apply_dropout, dropout_keep
from tritonnet.kernels import layout
from tritonnet.kernels.layout import collapse_dims
from tests.helpers import DEVICE, FLOAT_DTYPES
from tritonnet import available_kernels
from tritonnet.ops.dropout import OP, dropout

PROVIDERS = [name for name in available_kernels()[OP] if name != "torch"]


def scaled(x, p):
    """A survivor's exact value: x times 1 / (1 - p) rounded to fp32, computed in fp32 (fp64 for fp64)."""
    accumulator = torch.float64 if x.dtype == torch.float64 else torch.float32
    return (x.to(accumulator) * torch.tensor(1.0 / (1.0 - p), dtype=torch.float32).to(accumulator)).to(x.dtype)


def nonzero_input(shape, dtype, seed):
    """Values in [1, 2) with random signs: a survivor is never 0, so the mask is ``output != 0``."""
    generator = torch.Generator().manual_seed(seed)
    values = (1 + torch.rand(shape, generator=generator, dtype=torch.float64))
    signs = torch.randint(0, 2, shape, generator=generator) * 2 - 1
    return (values * signs).to(dtype).to(DEVICE)


@pytest.mark.parametrize("provider", PROVIDERS)
@given(shape=st.lists(st.integers(1, 17), min_size=1, max_size=4).filter(lambda s: math.prod(s) <= 4096),
       p=st.floats(0.01, 0.99), dtype=st.sampled_from(FLOAT_DTYPES), seed=st.integers(0, 2**31 - 1))
def test_dropout_keeps_a_binomial_fraction_and_scales_survivors_exactly(provider, shape, p, dtype, seed):
    x = nonzero_input(shape, dtype, seed)
    torch.manual_seed(seed)
    output = dropout(x, p, provider=provider)
    kept = output != 0
    assert torch.equal(output[kept], scaled(x, p)[kept])
    numel, expected = x.numel(), x.numel() * (1 - p)
    assert abs(int(kept.sum()) - expected) <= 6 * math.sqrt(numel * p * (1 - p)) + 1, (int(kept.sum()), expected)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_dropout_kept_counts_spread_like_a_binomial_across_calls(provider):
    """16 calls on 4096 elements at p = 0.3: the total kept is within 6 sigma of its mean, and the per-call counts
    vary about as much as a binomial's (a mask that never changes, or changes little, fails)."""
    x = torch.ones(4096, device=DEVICE)
    torch.manual_seed(1)
    counts = torch.tensor([float((dropout(x, 0.3, provider=provider) != 0).sum()) for _ in range(16)])
    mean, sigma = 4096 * 0.7, math.sqrt(4096 * 0.7 * 0.3)
    assert abs(float(counts.sum()) - 16 * mean) <= 6 * sigma * math.sqrt(16)
    assert 0.3 * sigma < float(counts.std()) < 2.5 * sigma


@pytest.mark.parametrize("provider", PROVIDERS)
def test_dropout_is_reproducible_under_manual_seed(provider):
    x = nonzero_input((37, 51), torch.float32, 0).requires_grad_()
    grad_output = torch.randn(37, 51, device=DEVICE)
    runs = []
    for _ in range(2):
        torch.manual_seed(1234)
        output = dropout(x, 0.4, provider=provider)
        (grad,) = torch.autograd.grad(output, x, grad_output)
        runs.append((output, grad))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_dropout_different_seeds_give_different_masks(provider):
    """Another manual_seed, or the next call under the same one: independent masks, which at p = 0.5 agree on about
    half the elements."""
    x = torch.ones(2048, device=DEVICE)
    torch.manual_seed(0)
    first, next_call = (dropout(x, 0.5, provider=provider) != 0 for _ in range(2))
    torch.manual_seed(1)
    other_seed = dropout(x, 0.5, provider=provider) != 0
    for other in (next_call, other_seed):
        assert 0.4 < float((first == other).float().mean()) < 0.6


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_dropout_backward_regenerates_the_forward_mask(provider, dtype):
    x = nonzero_input((3, 5, 67), dtype, 7).requires_grad_()
    grad_output = nonzero_input((3, 5, 67), dtype, 8)
    torch.manual_seed(3)
    output = dropout(x, 0.35, provider=provider)
    output.backward(grad_output)
    kept = output != 0
    assert torch.equal(x.grad, torch.where(kept, scaled(grad_output, 0.35), torch.zeros_like(grad_output)))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_dropout_saves_no_tensor_for_backward(provider):
    x = torch.randn(64, 32, device=DEVICE).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda tensor: saved.append(tensor) or tensor, lambda t: t):
        output = dropout(x, 0.5, provider=provider)
    output.sum().backward()
    assert saved == [], [(tensor.shape, tensor.dtype) for tensor in saved]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_dropout_gradcheck_and_gradgradcheck_fp64(provider, layout):
    if DEVICE.type == "cuda":
        pytest.skip("fp64 gradcheck is for the interpreter")
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = in_layout(x.to(DEVICE), layout).requires_grad_()

    def seeded(t):
        torch.manual_seed(5)  # the same mask on every call gradcheck makes
        return dropout(t, 0.3, provider=provider)

    assert torch.autograd.gradcheck(seeded, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(seeded, (x,), fast_mode=True)


@pytest.mark.parametrize("provider", ["torch", *PROVIDERS])
@pytest.mark.parametrize("p, training", [(0.5, False), (0.0, True), (0.0, False)])
@pytest.mark.parametrize("inplace", [False, True])
def test_dropout_eval_mode_and_p_zero_return_the_input_itself(provider, p, training, inplace):
    x = torch.randn(4, 5, device=DEVICE)
    assert dropout(x, p, training, inplace, provider=provider) is x


@pytest.mark.parametrize("provider", ["torch", *PROVIDERS])
def test_dropout_empty_input_is_returned(provider):
    x = torch.empty(0, 3, device=DEVICE)
    assert dropout(x, 0.5, provider=provider) is x


@pytest.mark.parametrize("provider", ["torch", *PROVIDERS])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, in the interpreter: inf * 0
def test_dropout_p_one_gives_zeros_and_zero_gradient_like_torch(provider):
    x = torch.tensor([1.5, -2.0, 0.0, math.inf, math.nan] * 20, device=DEVICE).requires_grad_()
    output = dropout(x, 1.0, provider=provider)
    expected = x.detach() * 0  # torch multiplies by zero: NaN and inf give NaN
    assert torch.equal(output.isnan(), expected.isnan())
    assert torch.equal(output[~expected.isnan()], expected[~expected.isnan()])
    output.backward(torch.ones_like(output))
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_dropout_propagates_nan_and_inf_like_torch(provider):
    """torch multiplies by the mask, so a dropped NaN or inf becomes NaN; a kept one stays NaN or inf."""
    x = torch.tensor([math.nan, math.inf, -math.inf, 1.0] * 64, device=DEVICE)
    torch.manual_seed(2)
    output = dropout(x, 0.5, provider=provider)
    torch.manual_seed(2)
    kept = dropout(torch.ones_like(x), 0.5, provider=provider) != 0
    assert torch.equal(output.isnan(), x.isnan() | (~kept & x.isinf()))
    assert torch.equal(output[kept & x.isinf()], x[kept & x.isinf()])


@pytest.mark.parametrize("provider", ["torch", *PROVIDERS])
def test_dropout_in_place_refuses_a_leaf_that_requires_grad(provider):
    x = torch.randn(8, device=DEVICE).requires_grad_()
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        dropout(x, 0.5, inplace=True, provider=provider)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("contiguous", [True, False])
def test_dropout_in_place_writes_the_input_and_backpropagates(provider, contiguous):
    leaf = nonzero_input((40, 30), torch.float32, 4).requires_grad_()
    torch.manual_seed(9)
    expected = dropout(leaf.detach().t() if not contiguous else leaf.detach(), 0.25, provider=provider)
    intermediate = leaf * 1
    target = intermediate.t() if not contiguous else intermediate
    torch.manual_seed(9)
    output = dropout(target, 0.25, inplace=True, provider=provider)
    assert output is target and torch.equal(target, expected)
    output.backward(torch.ones_like(output))
    kept = (expected != 0).t() if not contiguous else expected != 0
    assert torch.equal(leaf.grad, torch.where(kept, scaled(torch.ones_like(leaf), 0.25), 0.0))


def in_layout(data, layout):
    """``data``'s values in ``layout``: contiguous, channels-last (channels innermost in memory, any number of dims),
    every other element of the last dim, transposed (first and last dims), or expanded along the first dim (stride
    0: several elements share memory)."""
    if layout == "channels_last" and data.dim() >= 3:
        return data.movedim(1, -1).contiguous().movedim(-1, 1)
    if layout == "strided":
        wide = torch.zeros(*data.shape[:-1], 2 * data.shape[-1], dtype=data.dtype, device=data.device)
        wide[..., ::2] = data
        return wide[..., ::2]
    if layout == "transposed" and data.dim() >= 2:
        return data.transpose(0, -1).contiguous().transpose(0, -1)
    if layout == "expanded":
        return data[:1].expand(data.shape)
    return data


DROPOUT_LAYOUTS = ["contiguous", "channels_last", "strided", "transposed", "expanded"]


@pytest.mark.parametrize("provider", PROVIDERS)
@settings(max_examples=20)
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=5).filter(lambda s: math.prod(s) <= 2048),
       layout=st.sampled_from(DROPOUT_LAYOUTS), grad_layout=st.sampled_from(DROPOUT_LAYOUTS),
       dtype=st.sampled_from(FLOAT_DTYPES), seed=st.integers(0, 2**31 - 1))
def test_dropout_mask_follows_the_logical_index_in_every_layout(provider, shape, layout, grad_layout, dtype, seed):
    """The mask is a function of (seed, logical index): the output of any layout equals the output of its contiguous
    copy, keeps torch's memory format, and the backward (its gradient in any layout) drops the same elements."""
    x = in_layout(nonzero_input(shape, dtype, seed), layout).requires_grad_()
    torch.manual_seed(seed)
    output = dropout(x, 0.4, provider=provider)
    torch.manual_seed(seed)
    assert torch.equal(output, dropout(x.detach().contiguous(), 0.4, provider=provider))
    assert output.stride() == torch.nn.functional.dropout(x.detach(), 0.4).stride()
    grad_output = in_layout(nonzero_input(shape, dtype, seed + 1), grad_layout)
    output.backward(grad_output)
    expected = torch.where(output != 0, scaled(grad_output, 0.4), torch.zeros_like(grad_output))
    assert torch.equal(x.grad, expected)


def test_dropout_gives_the_same_mask_with_a_64_bit_index():
    """The flat index is int32 unless a tensor needs 64 bits; forced wide, the same result."""
    x = in_layout(nonzero_input((3, 4, 5), torch.float32, 5), "channels_last")
    seed = torch.tensor(99, device=x.device)
    narrow = apply_dropout(x, 0.5, seed)
    with mock.patch.object(layout, "MAX_INDEX_BLOCK", 2**31):
        assert torch.equal(apply_dropout(x, 0.5, seed), narrow)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_dropout_beyond_four_dims_of_strides_follows_the_logical_index(provider):
    """Every other element of each of six dims (no two merge, more than the kernel addresses): walked through a
    contiguous copy, the same mask as the contiguous input's."""
    x = nonzero_input((4, 4, 4, 4, 4, 4), torch.float32, 3)[::2, ::2, ::2, ::2, ::2, ::2]
    assert collapse_dims(x.shape, [torch.empty_like(x).stride(), x.stride()]) is None
    torch.manual_seed(8)
    output = dropout(x, 0.5, provider=provider)
    torch.manual_seed(8)
    assert torch.equal(output, dropout(x.contiguous(), 0.5, provider=provider))


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("layout", ["channels_last", "strided", "transposed"])
def test_dropout_in_place_keeps_the_layout_and_the_mask(provider, layout):
    x = in_layout(nonzero_input((2, 3, 4, 5), torch.float32, 1), layout)
    torch.manual_seed(4)
    expected = dropout(x.contiguous(), 0.5, provider=provider)
    strides = x.stride()
    torch.manual_seed(4)
    assert dropout(x, 0.5, inplace=True, provider=provider) is x
    assert x.stride() == strides and torch.equal(x, expected)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_dropout_in_place_refuses_an_expanded_input(provider):
    x = torch.ones(1, 6, device=DEVICE).expand(4, 6)
    with pytest.raises(ValueError, match="sharing memory"):
        dropout(x, 0.5, inplace=True, provider=provider)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_dropout_double_backward_matches_the_formula(provider):
    """d/dx of grad(sum(dropout(x)^2), x) = 2 mask scale^2: the backward is itself differentiable, also when the
    first gradient's seed comes from a grad_output that does not require grad."""
    x = nonzero_input((6, 7), torch.float64, 2).requires_grad_()
    torch.manual_seed(6)
    output = dropout(x, 0.3, provider=provider)
    (first,) = torch.autograd.grad(output.square().sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), x)
    scale = torch.tensor(1 / 0.7, dtype=torch.float32).double()
    assert torch.allclose(second, (output != 0).double() * 2 * scale * scale)


@triton.jit
def _keep_mask_kernel(output_pointer, seed, p, first_index, numel, INDEX_64_BITS: tl.constexpr, BLOCK: tl.constexpr):
    """What a fused kernel does: dropout_keep for flat indices first_index + [0, numel), in int32 or int64."""
    position = tl.arange(0, BLOCK)
    if INDEX_64_BITS:
        index = first_index.to(tl.int64) + position
    else:
        index = first_index + position
    tl.store(output_pointer + position, dropout_keep(seed, index, p).to(tl.int8), mask=position < numel)


def keep_mask(seed, p, first_index, numel, index_64_bits):
    mask = torch.empty(numel, dtype=torch.int8, device=DEVICE)
    _keep_mask_kernel[(1,)](mask, seed, p, first_index, numel, INDEX_64_BITS=index_64_bits,
                            BLOCK=triton.next_power_of_2(numel))
    return mask.bool()


@pytest.mark.parametrize("index_64_bits", [False, True])
def test_dropout_keep_in_a_fused_kernel_drops_what_the_standalone_op_drops(index_64_bits):
    """The scheme shared with fused kernels: the same seed drops the same flat indices, whether a kernel indexes in
    int32 or int64."""
    numel, seed, p = 3000, 424242, 0.45
    standalone = apply_dropout(torch.ones(numel, device=DEVICE), p, torch.tensor(seed, device=DEVICE)) != 0
    assert torch.equal(keep_mask(seed, p, 0, numel, index_64_bits), standalone)


def test_dropout_keep_does_not_wrap_past_2_to_the_32():
    """Indices past 2**32 (a tensor that large is indexed in int64) get their own numbers, not those of index - 2**32."""
    low, high = keep_mask(7, 0.5, 0, 2048, True), keep_mask(7, 0.5, 2**32, 2048, True)
    assert 0.4 < float((low == high).float().mean()) < 0.6


@pytest.mark.parametrize("provider", ["torch", *PROVIDERS])
@pytest.mark.parametrize("arguments, error, message", [
    (dict(input=[1.0, 2.0]), TypeError, "input must be a torch.Tensor"),
    (dict(input=torch.ones(4, dtype=torch.int64)), TypeError, "input must have dtype"),
    (dict(p=-0.1), ValueError, "p must be a finite number in \\[0.0, 1.0\\]"),
    (dict(p=1.5), ValueError, "p must be a finite number in \\[0.0, 1.0\\]"),
    (dict(p=math.nan), ValueError, "p must be a finite number"),
    (dict(p="0.5"), TypeError, "p must be a number"),
    (dict(training=1), TypeError, "training must be a bool"),
    (dict(inplace=None), TypeError, "inplace must be a bool"),
])
def test_dropout_rejects_invalid_arguments(provider, arguments, error, message):
    call = dict(input=torch.ones(4, device=DEVICE), p=0.5, training=True, inplace=False) | arguments
    with pytest.raises(error, match=message):
        dropout(**call, provider=provider)
