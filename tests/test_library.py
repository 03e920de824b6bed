"""The registered operators (``torch.ops.tritonnet.*``) pass ``torch.library.opcheck``: schema (no hidden mutation or
aliasing), fake implementations giving the real op's shapes, dtypes and strides, autograd registration, and
AOTAutograd dispatch with dynamic shapes. Tiny samples, channels-last and contiguous, with and without the optional
parts, so the interpreter's cost stays small."""

import pytest
import torch

from tests.helpers import assert_close
from tritonnet import functional as F
from tritonnet.ops.dropout import draw_seed

CHANNELS_LAST = torch.channels_last


def _randn(*shape, memory_format=torch.contiguous_format, requires_grad=False):
    return torch.randn(*shape).contiguous(memory_format=memory_format).requires_grad_(requires_grad)


def _conv_samples():
    ops = torch.ops.tritonnet
    input, weight, bias = _randn(1, 4, 5, 5), _randn(6, 2, 3, 3), _randn(6)
    geometry = ([1, 1], [1, 1, 1, 1], [1, 1], 2)
    output = ops.conv2d_forward(input, weight, bias, *geometry, True)
    grad_output = _randn(*output.shape)
    channels_last = input.contiguous(memory_format=CHANNELS_LAST)
    return [
        ("conv2d_forward", (input, weight, bias, *geometry, True)),
        ("conv2d_forward", (channels_last, _randn(6, 4, 2, 3), None, [2, 1], [0, 1, 2, 0], [1, 2], 1, False)),
        ("conv2d_backward", (grad_output, input, weight, output, *geometry, [True, True, True])),
        ("conv2d_backward", (grad_output.contiguous(memory_format=CHANNELS_LAST), channels_last, weight, None,
                             *geometry, [True, False, False])),
        ("conv2d", (*(tensor.detach().requires_grad_() for tensor in (input, weight, bias)), *geometry, True)),
    ]


def _lrn_samples():
    input = _randn(2, 5, 3, 2)
    output, base_power = torch.ops.tritonnet.local_response_norm_forward(input, 3, 1e-2, 0.75, 1.0, True)
    hyperparameters = (3, 1e-2, 0.75, 1.0)
    return [
        ("local_response_norm_forward", (input, *hyperparameters, True)),
        ("local_response_norm_forward", (input.contiguous(memory_format=CHANNELS_LAST), 4, 1e-2, 2.0, 2.0, False)),
        ("local_response_norm_backward", (input, base_power, _randn(*input.shape), *hyperparameters)),
        ("local_response_norm", (_randn(2, 5, 3, 2, memory_format=CHANNELS_LAST, requires_grad=True),
                                 *hyperparameters)),
    ]


def _max_pool_samples():
    input = _randn(2, 3, 5, 5)
    window = ([3, 3], [2, 2], [1, 1], [1, 1])
    output, offsets, _ = torch.ops.tritonnet.max_pool2d_forward(input, *window, False, False, False)
    return [
        ("max_pool2d_forward", (input, *window, False, True, False)),
        ("max_pool2d_forward", (input.contiguous(memory_format=CHANNELS_LAST), [2, 3], [1, 2], [0, 1], [2, 1],
                                True, False, True)),
        ("max_pool2d_backward", (_randn(*output.shape, requires_grad=True), offsets, list(input.shape), *window,
                                 False)),
        ("max_pool2d", (_randn(2, 3, 5, 5, memory_format=CHANNELS_LAST, requires_grad=True), *window, True)),
    ]


def _dropout_samples():
    return [
        ("dropout", (_randn(3, 4, requires_grad=True), 0.5, draw_seed())),
        ("dropout", (_randn(2, 3, 4, 4, memory_format=CHANNELS_LAST), 1.0, draw_seed())),
        ("dropout_", (_randn(3, 4), 0.25, draw_seed())),
    ]


def _linear_samples():
    input, weight, bias, seed = _randn(3, 5), _randn(4, 5), _randn(4), draw_seed()
    output = torch.ops.tritonnet.linear_forward(input, weight, bias, True, 0.5, seed, [3, 4])
    return [
        ("linear_forward", (input, weight, bias, True, 0.5, seed, [3, 4])),
        ("linear_forward", (input, weight.t().contiguous().t(), None, False, 0.0, seed, [3, 1, 4])),
        ("linear_backward", (_randn(3, 4), input, weight, output, True, 0.5, seed, [True, True, True])),
        ("linear_backward", (_randn(3, 4), input, weight, None, False, 0.5, seed, [False, True, False])),
        ("linear_dropout_grad", (_randn(3, 4), 0.5, seed)),
        ("linear", (_randn(2, 3, 5, requires_grad=True), weight.detach().requires_grad_(),
                    bias.detach().requires_grad_(), True, 0.5, seed)),
    ]


def _cross_entropy_samples():
    logits, target = _randn(3, 4, 1), torch.tensor([[0], [3], [1]])
    soft_logits = _randn(2, 3, 2)
    soft_target = torch.softmax(_randn(2, 3, 2), dim=1)
    loss, *saved = torch.ops.tritonnet.cross_entropy_forward(logits, target, None, -100, "mean", 0.1, [3, 1])
    _, *soft_saved = torch.ops.tritonnet.cross_entropy_forward(soft_logits, soft_target, None, -100, "none", 0.0,
                                                               [2, 2])
    return [
        ("cross_entropy_forward", (logits, target, None, -100, "mean", 0.1, [3])),
        ("cross_entropy_forward", (logits, target, torch.rand(4), 3, "sum", 0.0, [3])),
        ("cross_entropy_forward", (soft_logits, soft_target, None, -100, "none", 0.0, [2, 2])),
        ("cross_entropy_backward", (torch.tensor(1.5), logits, target, None, saved, -100, "mean", 0.1, False)),
        ("cross_entropy_backward", (_randn(2, 2), soft_logits, soft_target, None, soft_saved, -100, "none", 0.0,
                                    True)),
        ("cross_entropy", (logits.detach().requires_grad_(), target, None, -100, "mean", 0.1)),
        ("cross_entropy", (soft_logits.detach().requires_grad_(), soft_target.detach().requires_grad_(), None, -100,
                           "none", 0.0)),
    ]


SAMPLES = [_conv_samples, _lrn_samples, _max_pool_samples, _dropout_samples, _linear_samples, _cross_entropy_samples]
REGISTERED = {"conv2d_forward", "conv2d_backward", "local_response_norm_forward", "local_response_norm_backward",
              "max_pool2d_forward", "max_pool2d_backward", "dropout", "dropout_", "linear_forward", "linear_backward",
              "linear_dropout_grad", "cross_entropy_forward", "cross_entropy_backward", "conv2d", "local_response_norm",
              "max_pool2d", "linear", "cross_entropy"}


def test_every_registered_op_has_a_sample():
    names = {name for samples in SAMPLES for name, _ in samples()}
    assert names == REGISTERED
    for name in REGISTERED:
        assert hasattr(torch.ops.tritonnet, name), name


@pytest.mark.parametrize("samples", SAMPLES, ids=lambda samples: samples.__name__.strip("_"))
def test_registered_ops_pass_opcheck(samples):
    torch.manual_seed(0)
    for name, arguments in samples():
        results = torch.library.opcheck(getattr(torch.ops.tritonnet, name), arguments)
        assert set(results.values()) == {"SUCCESS"}, (name, results)


def _gradients(output, inputs):
    return torch.autograd.grad(output, inputs, torch.randn_like(output, generator=torch.Generator().manual_seed(1)))


def test_registered_public_ops_give_torchs_outputs_and_gradients():
    """``torch.ops.tritonnet.<op>`` called directly, backward included, against torch (the "torch" provider)."""
    torch.manual_seed(0)
    input, weight, bias = _randn(2, 4, 6, 6, requires_grad=True), _randn(6, 2, 3, 3, requires_grad=True), _randn(6)
    labels = torch.randint(0, 4, (2, 36))
    cases = [
        (lambda x, w: torch.ops.tritonnet.conv2d(x, w, bias, [1, 1], [1, 1, 1, 1], [1, 1], 2, True),
         lambda x, w: F.conv2d(x, w, bias, 1, 1, 1, 2, relu=True, provider="torch"), (input, weight)),
        (lambda x: torch.ops.tritonnet.local_response_norm(x, 3, 0.1, 0.75, 1.0),
         lambda x: F.local_response_norm(x, 3, 0.1, 0.75, 1.0, provider="torch"), (input,)),
        (lambda x: torch.ops.tritonnet.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], False)[0],
         lambda x: F.max_pool2d(x, 3, 2, 1, provider="torch"), (input,)),
        (lambda x, w: torch.ops.tritonnet.linear(x, w, None, True, 0.0, draw_seed()),
         lambda x, w: F.linear(x, w, relu=True, provider="torch"), (input.detach()[0].requires_grad_(),
                                                                     _randn(3, 6, requires_grad=True))),
        (lambda x: torch.ops.tritonnet.cross_entropy(x.flatten(2), labels, None, -100, "none", 0.1),
         lambda x: F.cross_entropy(x, labels.view(2, 6, 6), reduction="none", label_smoothing=0.1,
                                   provider="torch").flatten(1),
         (input,)),
    ]
    for ours, reference, inputs in cases:
        output, expected = ours(*inputs), reference(*inputs)
        assert_close(output, expected, reduction_length=72)
        for gradient, expected_gradient in zip(_gradients(output, inputs), _gradients(expected, inputs)):
            assert_close(gradient, expected_gradient, reduction_length=72, name="gradient")


def test_registered_dropout_is_its_own_backward_with_the_same_seed():
    input, seed = _randn(4, 8, requires_grad=True), draw_seed()
    output = torch.ops.tritonnet.dropout(input, 0.5, seed)
    (gradient,) = torch.autograd.grad(output, input, torch.ones_like(output))
    assert torch.equal(gradient, torch.ops.tritonnet.dropout(torch.ones_like(input), 0.5, seed))
    assert torch.equal(output == 0, gradient == 0)
