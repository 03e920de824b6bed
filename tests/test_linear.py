"""linear's Triton provider against torch in fp64: the forward and every gradient over the whole argument space
(leading dimensions, odd sizes, strided inputs, bias, ReLU, dropout, eval mode, dtypes); the fused dropout's mask
against the project's Philox scheme; the refusal of every kind of bad argument; and the GPU config choice."""

import pytest
import torch
import triton
import triton.language as tl
from hypothesis import given, settings
from hypothesis import strategies as st

import tritonnet
from tritonnet.kernels import linear as linear_kernels
from tritonnet.kernels.dropout import dropout_keep
from tritonnet.kernels.runtime import INTERPRET, interpreter_block
from tests.helpers import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close
from tritonnet.ops.dropout import draw_seed
from tritonnet.ops.linear import linear, torch_linear


@triton.jit(do_not_specialize=["seed"])
def _keep_mask_kernel(mask_pointer, count, seed, p, BLOCK: tl.constexpr):
    index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    tl.store(mask_pointer + index, dropout_keep(seed, index, p).to(tl.int8), mask=index < count)


def keep_mask(seed: int, shape: tuple[int, int], p: float) -> torch.Tensor:
    """The project's dropout mask for a (rows, columns) output: element i of the flattened output survives iff
    ``dropout_keep(seed, i, p)``. Computed by its own kernel, independent of the linear kernels."""
    count = shape[0] * shape[1]
    mask = torch.empty(count, dtype=torch.int8, device=DEVICE)
    block = interpreter_block(count) if INTERPRET else 1024
    if count:
        _keep_mask_kernel[(triton.cdiv(count, block),)](mask, count, seed, p, BLOCK=block)
    return mask.view(shape).bool()


def seed_after(manual_seed: int) -> int:
    """The Philox seed a dropout call draws first after ``torch.manual_seed(manual_seed)``."""
    torch.manual_seed(manual_seed)
    return int(draw_seed())


def strided(data: torch.Tensor, layout: str) -> torch.Tensor:
    """``data`` in the given memory layout (same values): contiguous, every other element of a twice-wider tensor
    along the last dimension, (2-D only) the transpose of a contiguous tensor, or its first element expanded (stride
    0: other values, the same for every element)."""
    if layout == "expanded":
        return data.reshape(-1)[:1].expand(data.shape)
    if layout == "every other feature":
        wide = torch.zeros(*data.shape[:-1], 2 * data.shape[-1], dtype=data.dtype, device=data.device)
        wide[..., ::2] = data
        return wide[..., ::2]
    if layout == "transposed" and data.dim() == 2:
        return data.t().contiguous().t()
    return data.contiguous()


@st.composite
def linear_problems(draw):
    """Every shape and layout a user can pass: 1-D, 2-D and 3-D inputs, odd sizes from 1 to 300, bias on/off, strided
    inputs and weights, dtypes and value scales. (ReLU and dropout are parametrized, so each combination is drawn.)"""
    in_features = draw(st.integers(1, 300))
    out_features = draw(st.integers(1, 300))
    rank = draw(st.sampled_from([1, 2, 2, 3]))
    leading = {1: (), 2: (draw(st.integers(1, 300)),), 3: (draw(st.integers(1, 5)), draw(st.integers(1, 60)))}[rank]
    return dict(
        input_shape=(*leading, in_features),
        out_features=out_features,
        bias=draw(st.booleans()),
        dropout_p=draw(st.sampled_from([0.5]) | st.floats(0.01, 0.95)),
        dtype=draw(st.sampled_from(FLOAT_DTYPES)),
        scale=draw(st.sampled_from([0.01, 1.0, 4.0])),
        input_layout=draw(st.sampled_from(["contiguous", "every other feature", "transposed"])),
        weight_layout=draw(st.sampled_from(["contiguous", "every other feature", "transposed"])),
        bias_layout=draw(st.sampled_from(["contiguous", "every other feature", "expanded"])),
        manual_seed=draw(st.integers(0, 2**31 - 1)),
    )


def check_against_torch(input_shape, out_features, bias, relu, dropout_p, training, dtype, scale, input_layout,
                        weight_layout, manual_seed, bias_layout="contiguous"):
    """Forward and all three gradients of the Triton provider against torch in fp64. The dropout mask comes from the
    seed scheme (``keep_mask``); the ReLU mask of the backward reference is the forward's own decision
    (``output > 0``), so that a pre-activation within rounding of zero cannot flip between the two."""
    generator = torch.Generator().manual_seed(manual_seed)
    in_features = input_shape[-1]
    make = lambda *shape: (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype).to(DEVICE)
    input = strided(make(*input_shape), input_layout).requires_grad_()
    weight = strided(make(out_features, in_features), weight_layout).requires_grad_()
    bias_tensor = strided(make(out_features), bias_layout).requires_grad_() if bias else None

    torch.manual_seed(manual_seed)
    output = linear(input, weight, bias_tensor, relu=relu, dropout_p=dropout_p, training=training, provider="triton")
    assert output.shape == (*input_shape[:-1], out_features) and output.dtype == dtype

    rows = output.reshape(-1, out_features).shape[0]
    as64 = lambda tensor: tensor.detach().to(torch.float64)
    expected = torch_linear(as64(input), as64(weight), as64(bias_tensor) if bias else None, relu, 0.0, False)
    dropout_on = training and dropout_p > 0.0
    if dropout_on:
        keep = keep_mask(seed_after(manual_seed), (rows, out_features), dropout_p).view(output.shape)
        assert (output[~keep] == 0).all(), "an element the seed scheme drops is not zero"
        expected = expected * keep / (1.0 - dropout_p)
    assert_close(output, expected, dtype=dtype, reduction_length=in_features, name="output")

    grad_output = make(*output.shape)
    inputs = (input, weight) + ((bias_tensor,) if bias else ())
    grads = torch.autograd.grad(output, inputs, grad_output)
    grad_pre = as64(grad_output)
    if relu:
        grad_pre = grad_pre * (output.detach() > 0)
    if dropout_on:
        grad_pre = grad_pre * keep / (1.0 - dropout_p)
    grad_pre = grad_pre.reshape(rows, out_features)
    expected_grads = (grad_pre @ as64(weight), grad_pre.t() @ as64(input).reshape(rows, in_features),
                      grad_pre.sum(0))
    assert_close(grads[0], expected_grads[0].view(input_shape), dtype=dtype, reduction_length=out_features,
                 name="grad_input")
    assert_close(grads[1], expected_grads[1], dtype=dtype, reduction_length=rows, name="grad_weight")
    if bias:
        assert_close(grads[2], expected_grads[2], dtype=dtype, reduction_length=rows, name="grad_bias")


@pytest.mark.parametrize("dropout", ["off", "on", "eval mode"])
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@settings(max_examples=max(2, settings.default.max_examples // 3))  # 6 parametrizations share the profile's budget
@given(linear_problems())
def test_linear_forward_and_gradients_match_torch(relu, dropout, problem):
    if dropout == "off":
        problem["dropout_p"] = 0.0
    check_against_torch(relu=relu, training=dropout != "eval mode", **problem)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_linear_matches_torch_at_thousands_of_features(dtype):
    """AlexNet-like widths, with several programs along every dimension in both modes."""
    check_against_torch(input_shape=(64, 2048), out_features=1000, bias=True, relu=True, dropout_p=0.5,
                        training=True, dtype=dtype, scale=1.0, input_layout="contiguous",
                        weight_layout="contiguous", manual_seed=7)


@pytest.mark.skipif(not INTERPRET, reason="on a GPU the autotuner owns the tiles")
@pytest.mark.parametrize("relu", [False, True])
def test_linear_with_small_tiles_matches_torch(monkeypatch, relu):
    """Many tiles in every direction: the grouped program order (two groups of row tiles, the last one partial),
    partial tiles at every edge, several reduction steps in each GEMM."""
    monkeypatch.setattr(linear_kernels, "_tiles", lambda rows, out_features, in_features: {
        "BLOCK_ROWS": 16, "BLOCK_OUT": 16, "BLOCK_IN": 16})
    check_against_torch(input_shape=(200, 40), out_features=70, bias=True, relu=relu, dropout_p=0.3, training=True,
                        dtype=torch.float32, scale=1.0, input_layout="transposed", weight_layout="contiguous",
                        manual_seed=1)


@pytest.mark.parametrize("shape", [(0, 5, 4), (3, 0, 4), (3, 5, 0)], ids=["no rows", "no in_features",
                                                                          "no out_features"])
@pytest.mark.parametrize("relu", [False, True])
def test_linear_empty_dimensions_match_torch(shape, relu):
    rows, in_features, out_features = shape
    input = torch.randn(rows, in_features, device=DEVICE, requires_grad=True)
    weight = torch.randn(out_features, in_features, device=DEVICE, requires_grad=True)
    bias = torch.randn(out_features, device=DEVICE, requires_grad=True)
    results = []
    for provider in ("triton", "torch"):
        output = linear(input, weight, bias, relu=relu, provider=provider)
        grads = torch.autograd.grad(output, (input, weight, bias), torch.ones_like(output))
        results.append((output, *grads))
    for name, actual, expected in zip(("output", "grad_input", "grad_weight", "grad_bias"), *results):
        assert_close(actual, expected, name=name)


def test_fused_dropout_keeps_a_binomial_fraction():
    rows, out_features, p = 64, 512, 0.3
    weight = torch.eye(out_features, device=DEVICE)
    input = torch.rand(rows, out_features, device=DEVICE) + 1.0  # strictly positive: only dropout zeroes
    kept = int((linear(input, weight, dropout_p=p, provider="triton") != 0).sum())
    count = rows * out_features
    sigma = (count * p * (1 - p)) ** 0.5
    assert abs(kept - count * (1 - p)) < 5 * sigma, f"kept {kept} of {count} at p={p}"


def test_fused_dropout_same_seed_same_mask_and_new_seed_new_mask():
    input = torch.rand(33, 70, device=DEVICE) + 1.0
    weight = torch.rand(90, 70, device=DEVICE)
    torch.manual_seed(3)
    first = linear(input, weight, relu=True, dropout_p=0.5, provider="triton")
    second = linear(input, weight, relu=True, dropout_p=0.5, provider="triton")
    torch.manual_seed(3)
    again = linear(input, weight, relu=True, dropout_p=0.5, provider="triton")
    assert torch.equal(first, again)
    assert not torch.equal(first == 0, second == 0)


@pytest.mark.parametrize("relu", [False, True])
def test_linear_backward_uses_the_forwards_mask(relu):
    """The backward regenerates the mask of *its* forward call, however many dropout calls came in between."""
    input = torch.randn(17, 40, device=DEVICE, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(23, 40, device=DEVICE, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(23, device=DEVICE, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(11)
    output = linear(input, weight, bias, relu=relu, dropout_p=0.4, provider="triton")
    linear(input, weight, bias, relu=relu, dropout_p=0.4, provider="triton")  # another call, another seed
    grad_output = torch.randn_like(output)
    grad_input, grad_weight, grad_bias = torch.autograd.grad(output, (input, weight, bias), grad_output)
    keep = keep_mask(seed_after(11), output.shape, 0.4)
    pre_activation = (input @ weight.t() + bias).detach()
    grad_pre = grad_output * keep / 0.6 * ((pre_activation > 0) if relu else 1.0)
    assert_close(grad_input, grad_pre @ weight.detach(), reduction_length=23, name="grad_input")
    assert_close(grad_weight, grad_pre.t() @ input.detach(), reduction_length=17, name="grad_weight")
    assert_close(grad_bias, grad_pre.sum(0), reduction_length=17, name="grad_bias")


@pytest.mark.skipif("triton" not in tritonnet.available_kernels()["dropout"],
                    reason="needs the standalone Triton dropout provider")
def test_fused_dropout_equals_standalone_dropout_with_the_same_seed():
    input = torch.randn(31, 50, device=DEVICE)
    weight = torch.randn(45, 50, device=DEVICE)
    torch.manual_seed(5)
    fused = linear(input, weight, relu=True, dropout_p=0.5, provider="triton")
    unfused = linear(input, weight, relu=True, provider="triton")
    torch.manual_seed(5)
    standalone = tritonnet.functional.dropout(unfused, 0.5, provider="triton")
    assert torch.equal(fused == 0, standalone == 0)
    assert_close(fused, standalone, reduction_length=50)


@pytest.mark.parametrize("variant", ["eval mode", "p=0"])
def test_linear_without_active_dropout_equals_no_dropout_and_draws_no_seed(variant):
    input = torch.randn(9, 30, device=DEVICE, requires_grad=True)
    weight = torch.randn(20, 30, device=DEVICE, requires_grad=True)
    extras = dict(dropout_p=0.5, training=False) if variant == "eval mode" else dict(dropout_p=0.0, training=True)
    state = torch.get_rng_state()
    output = linear(input, weight, relu=True, provider="triton", **extras)
    assert torch.equal(torch.get_rng_state(), state)
    plain = linear(input, weight, relu=True, provider="triton")
    assert torch.equal(output, plain)
    grad_output = torch.randn_like(output)
    for got, expected in zip(torch.autograd.grad(output, (input, weight), grad_output),
                             torch.autograd.grad(plain, (input, weight), grad_output)):
        assert torch.equal(got, expected)


@pytest.mark.parametrize("relu, dropout_p", [(False, 0.0), (True, 0.0), (False, 0.3), (True, 0.3)])
def test_linear_gradcheck_and_gradgradcheck_fp64(relu, dropout_p):
    """First and second derivatives (the backward is differentiable: see tritonnet/ops/linear.py)."""
    generator = torch.Generator().manual_seed(0)
    make = lambda *shape: torch.randn(*shape, dtype=torch.float64, generator=generator).to(DEVICE).requires_grad_()
    input, weight, bias = make(2, 2, 5), make(3, 5), make(3)

    def function(input, weight, bias):
        torch.manual_seed(0)  # the same mask on every evaluation
        return linear(input, weight, bias, relu=relu, dropout_p=dropout_p, provider="triton")

    assert torch.autograd.gradcheck(function, (input, weight, bias), fast_mode=True)
    input, weight, bias = make(2, 3), make(2, 3), make(2)
    assert torch.autograd.gradgradcheck(function, (input, weight, bias), fast_mode=True)


@pytest.mark.parametrize("relu", [False, True])
def test_linear_hessian_vector_product_matches_torch(relu):
    """``create_graph=True`` through autograd.grad and through .backward: the second derivative of
    ``linear(x, w).pow(3).sum()`` as torch's (65.06 at this seed where the backward once returned 0.0)."""
    generator = torch.Generator().manual_seed(0)
    input = torch.randn(4, 6, dtype=torch.float64, generator=generator).to(DEVICE)
    weight = torch.randn(5, 6, dtype=torch.float64, generator=generator).to(DEVICE)
    vector = torch.randn(4, 6, dtype=torch.float64, generator=generator).to(DEVICE)
    results = {}
    for provider in ("triton", "torch"):
        leaves = [tensor.clone().requires_grad_() for tensor in (input, weight)]
        (grad,) = torch.autograd.grad(linear(*leaves, relu=relu, provider=provider).pow(3).sum(), leaves[0],
                                      create_graph=True)
        (grad * vector).sum().backward()
        results[provider] = [leaf.grad for leaf in leaves]
    for actual, expected in zip(results["triton"], results["torch"]):
        assert actual is not None and expected.abs().max() > 0
        assert_close(actual, expected, reduction_length=30)


def test_linear_relu_keeps_nan_and_infinities_like_torch():
    """relu(NaN) = NaN, relu(-inf) = 0, relu(inf) = inf in the fused epilogue, and a NaN output passes the gradient
    as torch's relu does (tl.maximum and PTX max.f32 would turn NaN into 0)."""
    input = torch.tensor([[float("nan")], [float("inf")], [-float("inf")], [-1.0], [2.0]], device=DEVICE)
    results = {}
    for provider in ("triton", "torch"):
        leaf = input.clone().requires_grad_()
        output = linear(leaf, torch.ones(1, 1, device=DEVICE), relu=True, provider=provider)
        output.backward(torch.full_like(output, 3.0))
        results[provider] = (output.detach(), leaf.grad)
    for actual, expected in zip(results["triton"], results["torch"]):
        torch.testing.assert_close(actual, expected, equal_nan=True)


@pytest.mark.parametrize("input_shape", [(6, 12), (2, 3, 12)])
def test_linear_output_can_be_modified_in_place(input_shape):
    input = torch.randn(*input_shape, device=DEVICE, requires_grad=True)
    weight = torch.randn(10, 12, device=DEVICE, requires_grad=True)
    output = linear(input, weight, provider="triton")
    output.mul_(2.0)
    (grad,) = torch.autograd.grad(output.sum(), weight)
    assert_close(grad, 2.0 * input.detach().reshape(-1, 12).sum(0).expand(10, 12), reduction_length=6)


def test_linear_saves_no_mask_and_no_output_without_relu():
    input = torch.randn(8, 12, device=DEVICE, requires_grad=True)
    weight = torch.randn(10, 12, device=DEVICE, requires_grad=True)
    for relu, saved_count in ((False, 2), (True, 3)):
        output = linear(input, weight, relu=relu, dropout_p=0.5, provider="triton")
        saved = [tensor for tensor in output.grad_fn.saved_tensors if tensor is not None]
        assert len(saved) == saved_count
        assert all(tensor.dtype == input.dtype for tensor in saved)


def test_gpu_configs_are_chosen_by_dtype_and_precision():
    """Tensor-core tiles for fp16/bf16/TF32, FMA tiles for IEEE fp32 and fp64."""
    configs = linear_kernels.FORWARD_CONFIGS
    for dtype, precision, expected in [(torch.float16, "ieee", configs.tensor_cores),
                                       (torch.bfloat16, "ieee", configs.tensor_cores),
                                       (torch.float32, "tf32", configs.tensor_cores),
                                       (torch.float32, "ieee", configs.fma), (torch.float64, "ieee", configs.fma)]:
        named_args = {"input_pointer": torch.empty(1, dtype=dtype), "rows": 1}
        assert configs.prune(configs.all, named_args, INPUT_PRECISION=precision) == expected


def _tensors(dtype=torch.float32):
    return torch.randn(4, 6, device=DEVICE, dtype=dtype), torch.randn(5, 6, device=DEVICE, dtype=dtype)


@pytest.mark.parametrize("call, error, message", [
    (lambda x, w: linear(x[:, :5], w), ValueError, "in_features"),
    (lambda x, w: linear(x, w.half()), TypeError, "weight has dtype"),
    (lambda x, w: linear(x, w, torch.randn(4, device=DEVICE)), ValueError, "out_features"),
    (lambda x, w: linear(x, w, torch.randn(5, 1, device=DEVICE)), ValueError, "bias must be a 1-D"),
    (lambda x, w: linear(x, w, torch.randn(5, device=DEVICE).half()), TypeError, "bias has dtype"),
    (lambda x, w: linear(x, w[0]), ValueError, "weight must be a 2-D"),
    (lambda x, w: linear(x[0, 0], w), ValueError, "input must be a"),
    (lambda x, w: linear(x.int(), w.int()), TypeError, "input must have dtype"),
    (lambda x, w: linear(x, w, dropout_p=1.0), ValueError, "dropout_p"),
    (lambda x, w: linear(x, w, dropout_p=-0.1), ValueError, "dropout_p"),
    (lambda x, w: linear(x, w, dropout_p=float("nan")), ValueError, "dropout_p"),
    (lambda x, w: linear(x, w, dropout_p="0.5"), TypeError, "dropout_p"),
    (lambda x, w: linear(x, w, relu=1), TypeError, "relu"),
    (lambda x, w: linear(x, w, training="yes"), TypeError, "training"),
], ids=["in_features mismatch", "weight dtype", "bias size", "bias rank", "bias dtype", "weight rank", "0-D input",
        "integer input", "dropout_p=1", "negative dropout_p", "NaN dropout_p", "string dropout_p", "relu not bool",
        "training not bool"])
def test_linear_refuses_bad_arguments(call, error, message):
    input, weight = _tensors()
    with pytest.raises(error, match=message):
        call(input, weight)


@pytest.mark.skipif(not ON_GPU, reason="needs a second device")
def test_linear_refuses_mixed_devices():
    input, weight = _tensors()
    with pytest.raises(ValueError, match="weight is on"):
        linear(input, weight.cpu())
