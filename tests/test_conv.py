"""conv2d's Triton provider against torch: forward (bias, fused ReLU), input, weight and bias gradients over every
argument a user can pass, fp64 gradcheck, the paper's layer geometries, both reduction walks of the kernels, and the
refusal of every kind of bad argument."""

import pytest
import torch
import torch.nn.functional as torch_functional
from hypothesis import given, settings
from hypothesis import strategies as st

from tritonnet.kernels import conv as conv_kernels
from tritonnet.kernels.gpu_compile import kernel_parameters
from tests.helpers import DEVICE, FLOAT_DTYPES, LAYOUTS, ON_GPU, assert_close, in_layout
from tritonnet.ops.conv import conv2d


@st.composite
def conv_problems(draw):
    """Shapes, geometry, options, dtype, value scale and layout, drawn over everything torch accepts."""
    groups = draw(st.sampled_from([1, 1, 2, 3, "depthwise"]))
    if groups == "depthwise":
        groups = draw(st.integers(1, 5))
        in_per_group, out_per_group = 1, draw(st.integers(1, 2))
    else:  # 16 channels per group take the kernels' channels-inner walk, fewer the flat one
        in_per_group = draw(st.sampled_from([1, 2, 3, 4, 16]))
        out_per_group = draw(st.sampled_from([1, 2, 3, 5, 16]))
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (1, 1) if draw(st.booleans()) else (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, kernel[0])), draw(st.integers(0, kernel[1])))
    if stride == (1, 1) and draw(st.integers(0, 4)) == 0:
        padding = draw(st.sampled_from(["same", "valid"]))
    pad = (0, 0) if isinstance(padding, str) else padding
    window = [dilation[axis] * (kernel[axis] - 1) + 1 for axis in range(2)]
    height = draw(st.integers(max(1, window[0] - 2 * pad[0]), max(1, window[0] - 2 * pad[0]) + 9))
    width = draw(st.integers(max(1, window[1] - 2 * pad[1]), max(1, window[1] - 2 * pad[1]) + 9))
    return dict(
        batch=draw(st.integers(1, 3)), unbatched=draw(st.integers(0, 5)) == 0, groups=groups,
        in_channels=in_per_group * groups, out_channels=out_per_group * groups, height=height, width=width,
        kernel=kernel, stride=stride if stride[0] != stride[1] or draw(st.booleans()) else stride[0],
        padding=padding, dilation=dilation, bias=draw(st.booleans()), relu=draw(st.booleans()),
        dtype=draw(st.sampled_from(FLOAT_DTYPES)), scale=draw(st.sampled_from([0.01, 1.0, 10.0])),
        layout=draw(st.sampled_from(LAYOUTS)), weight_layout=draw(st.sampled_from(LAYOUTS)),
        bias_layout=draw(st.sampled_from(BIAS_LAYOUTS)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


# A bias may also be one value expanded (stride 0), as torch.tensor([b]).expand(C) gives.
BIAS_LAYOUTS = [*LAYOUTS, "expanded"]


def make_tensor(shape, dtype, scale, generator, layout="contiguous"):
    """Random values rounded to ``dtype``, on the device, in the drawn memory layout."""
    data = (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(dtype)
    if layout == "expanded":
        return data[:1].to(DEVICE).expand(shape)
    return in_layout(data, layout)


def result_format(*tensors):
    """torch's memory format for conv2d's output and input gradient: channels-last when the input or the weight is
    (and not also contiguous)."""
    channels_last = any(tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()
                        for tensor in tensors if tensor.dim() == 4)
    return torch.channels_last if channels_last else torch.contiguous_format


def reference(input, weight, bias, output_mask, grad_output, **geometry):
    """torch's conv2d in fp64 on the same (rounded) values: output before ReLU, and gradients of
    ``sum(grad_output * output_mask * conv)``, i.e. through a ReLU with the given mask."""
    leaves = [tensor.detach().cpu().double().requires_grad_() for tensor in (input, weight)]
    leaves.append(bias.detach().cpu().double().requires_grad_() if bias is not None else None)
    output = torch_functional.conv2d(*leaves, **geometry)
    gradient = grad_output.detach().cpu().double() * output_mask.cpu()
    grads = torch.autograd.grad(output, [leaf for leaf in leaves if leaf is not None], gradient)
    return output.detach(), grads


@given(conv_problems())
def test_conv2d_forward_and_gradients_match_torch(problem):
    generator = torch.Generator().manual_seed(problem["seed"])
    dtype, scale = problem["dtype"], problem["scale"]
    kernel_h, kernel_w = problem["kernel"]
    shape = (problem["in_channels"], problem["height"], problem["width"])
    input = make_tensor(shape if problem["unbatched"] else (problem["batch"], *shape), dtype, scale, generator,
                        problem["layout"]).requires_grad_()
    weight = make_tensor((problem["out_channels"], problem["in_channels"] // problem["groups"], kernel_h, kernel_w),
                         dtype, 1.0, generator, problem["weight_layout"]).requires_grad_()
    bias = None
    if problem["bias"]:
        bias = make_tensor((problem["out_channels"],), dtype, scale, generator, problem["bias_layout"]).requires_grad_()
    geometry = dict(stride=problem["stride"], padding=problem["padding"], dilation=problem["dilation"],
                    groups=problem["groups"])

    output = conv2d(input, weight, bias, **geometry, relu=problem["relu"])
    grad_output = make_tensor(output.shape, dtype, 1.0, generator)
    grads = torch.autograd.grad(output, [t for t in (input, weight, bias) if t is not None], grad_output)

    # ReLU's gradient mask is taken from our own output, so an fp16 output rounding to 0 can't flip the comparison
    mask = (output.detach() > 0).double() if problem["relu"] else torch.ones(output.shape, dtype=torch.float64)
    expected, expected_grads = reference(input, weight, bias, mask, grad_output, **geometry)
    if problem["relu"]:
        expected = expected.clamp(min=0)
    window = (problem["in_channels"] // problem["groups"]) * kernel_h * kernel_w
    pixels = output.numel() // problem["out_channels"]
    assert output.dtype == dtype and output.shape == expected.shape
    torch_output = torch_functional.conv2d(input.detach(), weight.detach(), None, **geometry)
    assert output.is_contiguous(memory_format=torch.channels_last) == torch_output.is_contiguous(
        memory_format=torch.channels_last), "the output's memory format differs from torch's"
    if input.dim() == 4:
        assert grads[0].is_contiguous(memory_format=result_format(input, weight)), "grad_input's memory format"
    assert grads[1].is_contiguous(memory_format=result_format(weight)), "grad_weight is not in the weight's format"
    assert_close(output, expected, reduction_length=window, name="output")
    # each input pixel receives at most out_channels_per_group x kernel taps terms
    assert_close(grads[0], expected_grads[0], reduction_length=problem["out_channels"] // problem["groups"]
                 * kernel_h * kernel_w, name="grad_input")
    assert_close(grads[1], expected_grads[1], reduction_length=pixels, name="grad_weight")
    if bias is not None:
        assert_close(grads[2], expected_grads[2], reduction_length=pixels, name="grad_bias")


@settings(max_examples=6)
@given(conv_problems(), st.booleans())
def test_both_reduction_walks_match_torch(problem, relu):
    """The flat and channels-inner walks over (channel, kh, kw) both hold for any channel count (the launch picks
    one by channel count; here each is forced)."""
    generator = torch.Generator().manual_seed(problem["seed"])
    kernel = problem["kernel"]
    groups = problem["groups"]
    input = make_tensor((problem["batch"], problem["in_channels"], problem["height"], problem["width"]),
                        torch.float64 if not ON_GPU else torch.float32, 1.0, generator, problem["layout"])
    weight = make_tensor((problem["out_channels"], problem["in_channels"] // groups, *kernel), input.dtype, 1.0,
                         generator)
    padding = problem["padding"] if not isinstance(problem["padding"], str) else (0, 0)
    if problem["padding"] == "same":
        padding = tuple(d * (k - 1) // 2 for d, k in zip(problem["dilation"], kernel))
    stride = problem["stride"] if isinstance(problem["stride"], tuple) else (problem["stride"],) * 2
    sides = (padding[0], padding[0], padding[1], padding[1])
    expected = torch_functional.conv2d(input, weight, None, stride, padding, problem["dilation"], groups)
    if relu:
        expected = expected.clamp(min=0)
    grad_output = make_tensor(expected.shape, input.dtype, 1.0, generator)
    for channels_inner in (False, True):
        output = conv_kernels.conv2d_forward(input, weight, None, stride, sides, problem["dilation"], groups, relu,
                                             channels_inner=channels_inner)
        saved = output if relu else None
        grad_input = conv_kernels.conv2d_input_grad(grad_output, saved, weight, input.shape,
                                                    conv_kernels.dense_format(input), stride, sides,
                                                    problem["dilation"], groups, channels_inner=channels_inner)
        grad_weight, _ = conv_kernels.conv2d_weight_grad(input, grad_output, saved, weight.shape, weight.dtype,
                                                         stride, sides, problem["dilation"], groups, False,
                                                         channels_inner=channels_inner)
        mask = (output > 0).double() if relu else torch.ones(output.shape, dtype=torch.float64)
        _, (expected_input, expected_weight) = reference(input, weight, None, mask, grad_output, stride=stride,
                                                         padding=padding, dilation=problem["dilation"], groups=groups)
        assert_close(output, expected, reduction_length=weight[0].numel(), name=f"output (inner={channels_inner})")
        assert_close(grad_input, expected_input, reduction_length=weight.shape[0] * kernel[0] * kernel[1],
                     name=f"grad_input (inner={channels_inner})")
        assert_close(grad_weight, expected_weight, reduction_length=output.numel() // output.shape[1],
                     name=f"grad_weight (inner={channels_inner})")


@pytest.mark.skipif(ON_GPU, reason="fp64 runs in the interpreter only")
@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_gradcheck_fp64(relu):
    generator = torch.Generator().manual_seed(0)
    input = torch.randn(2, 4, 6, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(6, 2, 3, 2, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, generator=generator, requires_grad=True)
    geometry = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
    # gradcheck's finite differences need every pre-activation away from ReLU's kink
    assert torch_functional.conv2d(input, weight, bias, **geometry).abs().min() > 1e-2
    assert torch.autograd.gradcheck(lambda x, w, b: conv2d(x, w, b, **geometry, relu=relu), (input, weight, bias),
                                    fast_mode=True)


# The paper's conv1 and conv2 (docs/alexnet.md): their windows, strides, paddings, groups and image sizes. Full-size
# conv1 takes ~10-30 s in the interpreter, so the default suite runs it with fewer out channels and the slow one in
# full.
PAPER_LAYERS = {
    "conv1": dict(in_channels=3, out_channels=96, kernel=11, stride=4, padding=0, groups=1, size=227, output_size=55),
    "conv2": dict(in_channels=96, out_channels=256, kernel=5, stride=1, padding=2, groups=2, size=27, output_size=27),
}


def check_layer(layer, batch, in_channels, out_channels, dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    input = make_tensor((batch, in_channels, layer["size"], layer["size"]), dtype, 1.0, generator).requires_grad_()
    weight = make_tensor((out_channels, in_channels // layer["groups"], layer["kernel"], layer["kernel"]), dtype,
                         0.1, generator).requires_grad_()
    bias = make_tensor((out_channels,), dtype, 0.1, generator).requires_grad_()
    geometry = dict(stride=layer["stride"], padding=layer["padding"], groups=layer["groups"])
    output = conv2d(input, weight, bias, **geometry, relu=True)
    assert output.shape == (batch, out_channels, layer["output_size"], layer["output_size"])
    grad_output = make_tensor(output.shape, dtype, 1.0, generator)
    grads = torch.autograd.grad(output, (input, weight, bias), grad_output)
    expected, expected_grads = reference(input, weight, bias, (output.detach() > 0).double(), grad_output,
                                         **geometry)
    window = in_channels // layer["groups"] * layer["kernel"] ** 2
    pixels = output.numel() // out_channels
    assert_close(output, expected.clamp(min=0), reduction_length=window, name="output")
    for name, actual, wanted, length in zip(("grad_input", "grad_weight", "grad_bias"), grads, expected_grads,
                                            (out_channels // layer["groups"] * layer["kernel"] ** 2, pixels, pixels)):
        assert_close(actual, wanted, reduction_length=length, name=name)


@pytest.mark.parametrize("name, batch, in_channels, out_channels", [("conv1", 1, 3, 8), ("conv2", 2, 96, 256)])
def test_paper_layer_forward_and_backward(name, batch, in_channels, out_channels):
    """conv2 at full size (27x27, 96 -> 256 channels, 5x5, padding 2, groups 2); conv1's geometry (227x227, 11x11,
    stride 4 -> 55x55) with 8 of its 96 out channels."""
    check_layer(PAPER_LAYERS[name], batch, in_channels, out_channels)


@pytest.mark.slow
def test_paper_conv1_full_size_forward_and_backward():
    layer = PAPER_LAYERS["conv1"]
    check_layer(layer, 2, layer["in_channels"], layer["out_channels"])


def test_conv2d_relu_propagates_nan_like_torch():
    input = torch.ones(1, 1, 3, 3, device=DEVICE)
    input[0, 0, 1, 1] = float("nan")
    weight = -torch.ones(2, 1, 1, 1, device=DEVICE)
    output = conv2d(input, weight, relu=True)
    expected = torch.relu(torch_functional.conv2d(input, weight))
    torch.testing.assert_close(output, expected, equal_nan=True)


@pytest.mark.parametrize("shape", [(0, 4, 5, 5), (0, 4, 3, 2)])
def test_conv2d_empty_batch_gives_empty_output_and_zero_gradients(shape):
    input = torch.randn(shape, device=DEVICE, requires_grad=True)
    weight = torch.randn(6, 2, 3, 2, device=DEVICE, requires_grad=True)
    bias = torch.randn(6, device=DEVICE, requires_grad=True)
    output = conv2d(input, weight, bias, padding=1, groups=2, relu=True)
    assert output.shape == torch_functional.conv2d(input, weight, bias, padding=1, groups=2).shape
    output.sum().backward()
    for tensor in (input, weight, bias):
        assert tensor.grad is not None and tensor.grad.shape == tensor.shape and not tensor.grad.any()


def test_conv2d_refuses_images_too_large_for_int32_offsets():
    image = torch.zeros(1, 1, 1, 1, device=DEVICE).expand(1, 2**15, 2**8, 2**8)  # 2**31 elements, no storage
    with pytest.raises(ValueError, match="int32"):
        conv2d(image, torch.zeros(1, 2**15, 1, 1, device=DEVICE))


def tensor(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype, device=DEVICE)


@pytest.mark.parametrize("arguments, error, message", [
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(2, 3, 3, 3)), ValueError, "input has 4 channels"),
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(3, 2, 3, 3), groups=2), ValueError, "divisible by groups"),
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(3, 2, 3, 3), groups=3), ValueError, "input has 4 channels"),
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(2, 4, 3, 3), groups=0), ValueError, "groups must be >= 1"),
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(0, 4, 3, 3)), ValueError, "weight must have at least one element"),
    (dict(input=tensor(1, 4, 2, 5), weight=tensor(2, 4, 3, 3)), ValueError, "kernel height .* larger"),
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(2, 4, 3, 3), padding=(0, 2), dilation=(1, 5)), ValueError,
     "kernel width .* larger"),
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(2, 4, 3, 3), bias=tensor(3)), ValueError, "bias must have 2"),
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(2, 4, 3, 3), bias=tensor(2, 1)), ValueError, "bias must be a 1-D"),
    (dict(input=tensor(4, 5), weight=tensor(2, 4, 3, 3)), ValueError, "input must be a 3-D or 4-D"),
    (dict(input=tensor(1, 1, 4, 5, 5), weight=tensor(2, 4, 3, 3)), ValueError, "input must be a 3-D or 4-D"),
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(2, 4, 3)), ValueError, "weight must be a 4-D"),
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(2, 4, 3, 3, dtype=torch.float16)), TypeError, "weight has dtype"),
    (dict(input=tensor(1, 4, 5, 5, dtype=torch.int32), weight=tensor(2, 4, 3, 3)), TypeError, "input must have dtype"),
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(2, 4, 3, 3), stride=0), ValueError, "stride must be >= 1"),
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(2, 4, 3, 3), stride=(1, 2, 3)), ValueError, "stride must be"),
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(2, 4, 3, 3), padding=-1), ValueError, "padding must be >= 0"),
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(2, 4, 3, 3), padding="full"), ValueError, "padding must be"),
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(2, 4, 3, 3), padding="same", stride=2), ValueError,
     "'same' needs stride 1"),
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(2, 4, 3, 3), dilation=0), ValueError, "dilation must be >= 1"),
    (dict(input=tensor(1, 4, 5, 5), weight=tensor(2, 4, 3, 3), relu=1), TypeError, "relu must be a bool"),
    (dict(input=[[1.0]], weight=tensor(2, 4, 3, 3)), TypeError, "input must be a torch.Tensor"),
])
def test_conv2d_refuses_bad_arguments(arguments, error, message):
    with pytest.raises(error, match=message):
        conv2d(**arguments)


@pytest.mark.skipif(not ON_GPU, reason="the interpreter takes CPU tensors")
def test_conv2d_refuses_cpu_tensors_on_gpu():
    with pytest.raises(ValueError, match="CUDA tensor"):
        conv2d(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 1, 1))


@pytest.mark.parametrize("separate_relu_gradient", [False, True], ids=["fused mask", "separate mask"])
def test_conv2d_relu_keeps_nan_and_infinities_like_torch_forward_and_backward(separate_relu_gradient):
    """relu(NaN) = NaN, relu(-inf) = 0, relu(inf) = inf, and the backward passes the gradient where the output is
    NaN (torch's threshold_backward), with ReLU's gradient fused into the kernels or applied in a separate pass."""
    values = torch.tensor([float("nan"), float("inf"), -float("inf"), 2.0, -3.0, 0.0, 1.0, -1.0, 5.0])
    input = values.view(1, 1, 3, 3).to(DEVICE)
    weight = torch.ones(2, 1, 1, 1, device=DEVICE)
    weight[1] = -1.0
    output = conv_kernels.conv2d_forward(input, weight, None, (1, 1), (0, 0, 0, 0), (1, 1), 1, True)
    leaves = [tensor.clone().requires_grad_() for tensor in (input, weight)]
    expected = torch.relu(torch_functional.conv2d(*leaves))
    torch.testing.assert_close(output, expected.detach(), equal_nan=True)
    grad_output = torch.arange(1.0, 19.0, device=DEVICE).view(expected.shape)
    expected_grads = torch.autograd.grad(expected, leaves, grad_output)
    grads = conv_kernels.conv2d_backward(grad_output, input, weight, output, (1, 1), (0, 0, 0, 0), (1, 1), 1,
                                         needs_input_grad=True, needs_weight_grad=True, needs_bias_grad=False,
                                         separate_relu_gradient=separate_relu_gradient)
    torch.testing.assert_close(grads[0], expected_grads[0], equal_nan=True)
    torch.testing.assert_close(grads[1], expected_grads[1], equal_nan=True)


@pytest.mark.parametrize("flat_walk", [False, True], ids=["gpu walk", "interpreter walk"])
@pytest.mark.parametrize("separate_relu_gradient", [False, True], ids=["fused mask", "separate mask"])
def test_conv2d_backward_matches_torch_with_every_algorithm(separate_relu_gradient, flat_walk):
    """Both choices of each ALGORITHMS entry conv reads, through the launch functions' keywords, on channels-last
    tensors with 16 channels (where the GPU and interpreter walks differ: channels inner vs flat for a 1x3 window)."""
    generator = torch.Generator().manual_seed(3)
    dtype = torch.float32 if ON_GPU else torch.float64
    input = make_tensor((2, 16, 5, 6), dtype, 1.0, generator, "channels last")
    weight = make_tensor((8, 16, 1, 3), dtype, 1.0, generator, "channels last")
    bias = make_tensor((8,), dtype, 1.0, generator)
    geometry = dict(stride=(1, 2), padding=(1, 1), dilation=(1, 1), groups=1)
    sides = (1, 1, 1, 1)
    output = conv_kernels.conv2d_forward(input, weight, bias, (1, 2), sides, (1, 1), 1, True,
                                         flat_walk=flat_walk)
    grad_output = make_tensor(output.shape, dtype, 1.0, generator, "channels last")
    grads = conv_kernels.conv2d_backward(grad_output, input, weight, output, (1, 2), sides, (1, 1), 1,
                                         needs_input_grad=True, needs_weight_grad=True, needs_bias_grad=True,
                                         separate_relu_gradient=separate_relu_gradient,
                                         flat_walk=flat_walk)
    expected, expected_grads = reference(input, weight, bias, (output > 0).double(), grad_output, **geometry)
    assert_close(output, expected.clamp(min=0), reduction_length=16 * 3, name="output")
    for name, actual, wanted in zip(("grad_input", "grad_weight", "grad_bias"), grads, expected_grads):
        assert_close(actual, wanted, reduction_length=output.numel() // 8, name=name)
    assert output.is_contiguous(memory_format=torch.channels_last)
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    assert grads[1].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("bias, expected", [(torch.tensor([5.0]).expand(4), [6.0, 6.0, 6.0, 6.0]),
                                            (torch.arange(8.0)[::2], [1.0, 3.0, 5.0, 7.0])],
                         ids=["expanded", "every other element"])
def test_conv2d_reads_the_bias_through_its_strides(bias, expected):
    output = conv2d(torch.ones(1, 1, 2, 2, device=DEVICE), torch.ones(4, 1, 1, 1, device=DEVICE), bias.to(DEVICE))
    assert output[0, :, 0, 0].tolist() == expected and (output == output[:, :, :1, :1]).all()


class _LaunchSpy:
    """Stands in for a kernel: records the tensors each launch passes, then launches the kernel."""

    def __init__(self, kernel):
        self.kernel, self.tensors = kernel, []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.tensors += [arg for arg in args if isinstance(arg, torch.Tensor)]
            return self.kernel[grid](*args, **kwargs)
        return launch


@pytest.mark.parametrize("layout", ["contiguous", "channels last"])
def test_conv2d_kernels_read_the_weight_where_it_lives(monkeypatch, layout):
    """No launch copies the weight: the forward and input-gradient kernels get the weight's own storage and strides
    (a channels-last model's weights stay channels-last), and the weight gradient comes back in its format."""
    spies = {name: _LaunchSpy(getattr(conv_kernels, name)) for name in ("conv2d_forward_kernel",
                                                                        "conv2d_input_grad_kernel")}
    for name, spy in spies.items():
        monkeypatch.setattr(conv_kernels, name, spy)
    generator = torch.Generator().manual_seed(0)
    input = make_tensor((2, 16, 4, 4), torch.float32, 1.0, generator, layout).requires_grad_()
    weight = make_tensor((16, 16, 3, 3), torch.float32, 1.0, generator, layout).requires_grad_()
    output = conv2d(input, weight, padding=1, relu=True)
    output.backward(torch.ones_like(output))
    for name, spy in spies.items():
        assert any(tensor.data_ptr() == weight.data_ptr() and tensor.stride() == weight.stride()
                   for tensor in spy.tensors), f"{name} was not given the weight itself"
    memory_format = torch.channels_last if layout == "channels last" else torch.contiguous_format
    assert output.is_contiguous(memory_format=memory_format)
    assert input.grad.is_contiguous(memory_format=memory_format)
    assert weight.grad.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_refuses_double_backward_in_every_path(relu):
    """The backward is not differentiable: a second derivative raises through autograd.grad (with allow_unused too)
    and through .backward alike, for the input's and the weight's gradient, so none silently comes back as None or
    zero. First derivatives, with or without create_graph, still work."""
    generator = torch.Generator().manual_seed(0)
    input = torch.randn(1, 2, 4, 4, generator=generator).to(DEVICE).requires_grad_()
    weight = torch.randn(3, 2, 3, 3, generator=generator).to(DEVICE).requires_grad_()
    bias = torch.randn(3, generator=generator).to(DEVICE).requires_grad_()
    loss = lambda: conv2d(input, weight, bias, padding=1, relu=relu).pow(3).sum()  # noqa: E731
    for leaf in (input, weight):
        (grad,) = torch.autograd.grad(loss(), leaf, create_graph=True)
        assert grad.shape == leaf.shape
        for target in (input, weight):
            with pytest.raises(RuntimeError, match="cannot be differentiated"):
                torch.autograd.grad(grad.sum(), target, allow_unused=True)
    loss().backward(create_graph=True)
    with pytest.raises(RuntimeError, match="cannot be differentiated"):
        (input.grad.sum() + weight.grad.sum()).backward()
    (grad,) = torch.autograd.grad(loss(), input)
    assert grad.shape == input.shape and not grad.requires_grad


def test_weight_gradient_split_fills_whole_waves():
    """The split count from the real tile count, SMs and blocks per SM. At batch 128 on 132 SMs with the 64x64x32
    tile (3 blocks per SM: 396 slots): conv2 (100 tiles, 2916 steps of 32 pixels) splits 27 ways, 2700 blocks in 7
    waves (the former 4-way split ran 400 blocks: a second wave for 4 blocks); conv3 (216 tiles, 676 steps) 11 ways,
    2376 blocks, exactly 6 waves."""
    from tritonnet.kernels.runtime import ARCHITECTURES

    h200 = ARCHITECTURES[90]  # 132 SMs, 2048 threads, 233,472 B of shared memory and 65,536 registers per SM
    assert (h200.multiprocessors, h200.threads_per_multiprocessor) == (132, 2048)
    tile = next(config for config in conv_kernels.WEIGHT_GRAD_CONFIGS
                if config.kwargs == dict(BLOCK_OUT_CHANNELS=64, BLOCK_WINDOW=64, BLOCK_PIXELS=32))
    assert conv_kernels.blocks_per_processor(tile, 2, h200) == 3
    splits = conv_kernels.weight_grad_splits
    assert splits(100, 132, 3, 2916) == 27 and -(-100 * 27 // 396) == 7
    assert splits(216, 132, 3, 676) == 11 and 216 * 11 == 6 * 396
    assert splits(100, 132, 3, 2916) == splits(100, 132, 3, 2916)  # a pure function: the same shapes, one order

    def modelled_time(tiles, count, steps, slots=396):
        return -(-tiles * count // slots) * (-(-steps // count) + conv_kernels.SPLIT_COST_STEPS)

    for tiles, steps in ((100, 2916), (216, 676), (7, 100_000), (5000, 3000), (1, 1)):
        chosen = splits(tiles, 132, 3, steps)
        assert 1 <= chosen <= max(1, steps // conv_kernels.MINIMUM_STEPS_PER_SPLIT)
        assert all(modelled_time(tiles, chosen, steps) <= modelled_time(tiles, other, steps)
                   for other in range(1, max(1, steps // conv_kernels.MINIMUM_STEPS_PER_SPLIT) + 1))
    assert splits(792, 132, 3, 3000) == 1  # exactly two full waves: a split would only add partial sums
    assert splits(64, 132, 3, 10) == 1  # too few steps to share


def test_autotune_buckets_are_powers_of_two_covering_the_size():
    """Autotuner keys carry batch or pixel counts rounded up to a power of two, so a last partial batch reuses the
    tuning of the full ones (128 and 100 images share a key; 128 and 129 do not)."""
    from tritonnet.kernels.runtime import autotune_bucket

    assert [autotune_bucket(size) for size in (1, 2, 3, 100, 128, 129)] == [1, 2, 4, 128, 128, 256]
    for kernel in (conv_kernels.conv2d_forward_kernel, conv_kernels.conv2d_weight_grad_kernel):
        assert "pixels_bucket" in [name for name, _ in kernel_parameters(kernel)]
    assert "batch_bucket" in [name for name, _ in kernel_parameters(conv_kernels.conv2d_input_grad_kernel)]
