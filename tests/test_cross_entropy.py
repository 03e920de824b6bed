"""cross_entropy's Triton provider against torch in fp64: losses and gradients over batch sizes, class counts (1 to
1000+), reductions, ignore_index, label smoothing, target dtypes and layouts, extreme and fp16 logits; gradcheck; and
the refusal of every kind of bad argument."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernels import cross_entropy as cross_entropy_kernels
from kernels.runtime import INTERPRET
from tests.helpers import DEVICE, FLOAT_DTYPES, assert_close
from tritonnet.ops.cross_entropy import REDUCTIONS, cross_entropy

TARGET_DTYPES = [torch.int64, torch.int32, torch.int16, torch.uint8]


@st.composite
def cross_entropy_problems(draw):
    """Batches of 1 to 64 rows (or a single unbatched row), 1 to 1100 classes, every reduction, ignored targets,
    label smoothing, every accepted target dtype, strided logits and targets, dtypes and logit scales."""
    classes = draw(st.integers(1, 12) | st.integers(13, 1100))
    rows = draw(st.integers(1, 64))
    target_dtype = draw(st.sampled_from(TARGET_DTYPES if classes <= 255 else TARGET_DTYPES[:3]))
    ignore_index = draw(st.sampled_from([-100, 0, classes - 1] if target_dtype != torch.uint8 else [0, 255]))
    return dict(
        rows=rows,
        classes=classes,
        unbatched=draw(st.booleans()) if rows == 1 else False,
        reduction=draw(st.sampled_from(REDUCTIONS)),
        ignore_index=ignore_index,
        ignored_fraction=draw(st.sampled_from([0.0, 0.3, 0.3, 1.0])),
        label_smoothing=draw(st.sampled_from([0.0, 0.1]) | st.floats(0.0, 1.0)),
        dtype=draw(st.sampled_from(FLOAT_DTYPES)),
        target_dtype=target_dtype,
        scale=draw(st.sampled_from([1.0, 10.0, 1e3])),
        layout=draw(st.sampled_from(["contiguous", "transposed", "strided"])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def make_problem(rows, classes, unbatched, ignore_index, ignored_fraction, dtype, target_dtype, scale, layout, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, classes, generator=generator, dtype=torch.float64) * scale).to(dtype)
    target = torch.randint(0, classes, (rows,), generator=generator)
    target[torch.rand(rows, generator=generator) < ignored_fraction] = ignore_index
    target = target.to(target_dtype)
    if layout == "transposed":
        logits = logits.t().contiguous().t()
    elif layout == "strided":
        logits = torch.stack([logits, torch.zeros_like(logits)], dim=-1)[..., 0]
        target = torch.stack([target, torch.zeros_like(target)], dim=-1)[:, 0]
    logits, target = logits.to(DEVICE), target.to(DEVICE)
    if unbatched:
        logits, target = logits[0], target[0]
    return logits.requires_grad_(), target


def check_against_torch(logits, target, reduction, ignore_index, label_smoothing, reduction_length):
    """Loss and gradient of the Triton provider against the torch provider on the same logits in fp64."""
    arguments = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    loss = cross_entropy(logits, target, **arguments, provider="triton")
    expected_dtype_and_shape = cross_entropy(logits.detach(), target, **arguments, provider="torch")
    assert loss.dtype == expected_dtype_and_shape.dtype and loss.shape == expected_dtype_and_shape.shape
    logits64 = logits.detach().to(torch.float64).requires_grad_()
    expected = cross_entropy(logits64, target, **arguments, provider="torch")
    assert_close(loss, expected, dtype=logits.dtype, reduction_length=reduction_length, name="loss")

    grad_output = torch.rand_like(expected) + 0.5
    (grad,) = torch.autograd.grad(loss, logits, grad_output.to(loss.dtype))
    (expected_grad,) = torch.autograd.grad(expected, logits64, grad_output.to(loss.dtype).to(torch.float64))
    assert_close(grad, expected_grad, dtype=logits.dtype, reduction_length=reduction_length, name="grad_input")


@given(cross_entropy_problems())
def test_cross_entropy_loss_and_gradient_match_torch(problem):
    reduction = problem.pop("reduction")
    label_smoothing = problem.pop("label_smoothing")
    logits, target = make_problem(**problem)
    check_against_torch(logits, target, reduction, problem["ignore_index"], label_smoothing,
                        reduction_length=problem["classes"] * (problem["rows"] if reduction != "none" else 1))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_is_stable_for_extreme_logits(dtype, label_smoothing):
    """Logits of +-1e4 (beyond exp's range even in fp32) with targets on the largest, the smallest and a middle one,
    rows of all-equal logits, and one class far above the rest."""
    logits = torch.tensor([[1e4, -1e4, 0.0, 5.0], [-1e4, -1e4, -1e4, 1e4], [1e4, 1e4, 1e4, 1e4],
                           [-1e4, -1e4, -1e4, -1e4], [3e3, -3e3, 2e3, 1e4]], dtype=dtype, device=DEVICE)
    target = torch.tensor([1, 3, 2, 0, 1], device=DEVICE)
    for reduction in REDUCTIONS:
        check_against_torch(logits.clone().requires_grad_(), target, reduction, -100, label_smoothing,
                            reduction_length=4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_cross_entropy_fp16_logits_over_imagenet_classes(dtype):
    """AlexNet's loss layer: 128 x 1000, where torch's own fp16 label-smoothing sum overflows (hence the fp64
    reference)."""
    logits, target = make_problem(128, 1000, False, -100, 0.0, dtype, torch.int64, 8.0, "contiguous", 3)
    check_against_torch(logits, target, "mean", -100, 0.1, reduction_length=128 * 1000)


def test_cross_entropy_online_softmax_across_class_blocks(monkeypatch):
    """Rows longer than one class block, with a max that grows from block to block (rescaling the running sum) or
    sits in the first block. In the interpreter the tiles are shrunk to force many blocks; on a GPU 5000 classes
    take several of the autotuned blocks."""
    classes = 5000
    if INTERPRET:
        monkeypatch.setattr(cross_entropy_kernels, "_row_tiles", lambda rows, classes: {"BLOCK_ROWS": 2,
                                                                                      "BLOCK_CLASSES": 16})
        classes = 100
    rising = torch.linspace(-60.0, 60.0, classes, dtype=torch.float64)
    logits = torch.stack([rising, rising.flip(0), torch.randn(classes, dtype=torch.float64) * 20, rising * 0])
    target = torch.tensor([0, classes - 1, classes // 2, -100])
    for reduction in REDUCTIONS:
        check_against_torch(logits.float().to(DEVICE).requires_grad_(), target.to(DEVICE), reduction, -100, 0.2,
                            reduction_length=classes * 4)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_of_one_unbatched_row_matches_torch(reduction):
    logits = torch.randn(9, device=DEVICE, requires_grad=True)
    check_against_torch(logits, torch.tensor(4, device=DEVICE), reduction, -100, 0.1, reduction_length=9)


def test_cross_entropy_per_row_loss_can_be_modified_in_place():
    logits = torch.randn(9, device=DEVICE, requires_grad=True)
    loss = cross_entropy(logits, torch.tensor(4, device=DEVICE), reduction="none", provider="triton")
    loss.mul_(3.0)
    (grad,) = torch.autograd.grad(loss, logits)
    expected = torch.softmax(logits.detach(), 0) - torch.nn.functional.one_hot(torch.tensor(4), 9).to(DEVICE)
    assert_close(grad, 3.0 * expected, reduction_length=9)


@pytest.mark.parametrize("target_dtype", TARGET_DTYPES)
def test_cross_entropy_accepts_every_integer_target_dtype(target_dtype):
    logits = torch.randn(6, 20, device=DEVICE)
    target = torch.tensor([0, 19, 3, 3, 7, 250 if target_dtype == torch.uint8 else -100], device=DEVICE)
    ignore_index = 250 if target_dtype == torch.uint8 else -100
    expected = cross_entropy(logits, target, ignore_index=ignore_index, reduction="none", provider="triton")
    loss = cross_entropy(logits, target.to(target_dtype), ignore_index=ignore_index, reduction="none",
                         provider="triton")
    assert torch.equal(loss, expected)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_with_every_target_ignored_matches_torch(reduction):
    """mean gives NaN (0 / 0), sum gives 0, and every gradient is 0, as torch's."""
    logits = torch.randn(4, 6, device=DEVICE, requires_grad=True)
    target = torch.full((4,), -100, device=DEVICE)
    loss = cross_entropy(logits, target, reduction=reduction, label_smoothing=0.1, provider="triton")
    expected = cross_entropy(logits, target, reduction=reduction, label_smoothing=0.1, provider="torch")
    assert torch.equal(loss.isnan(), expected.isnan()) and torch.equal(loss.nan_to_num(), expected.nan_to_num())
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_of_an_empty_batch_matches_torch(reduction):
    logits = torch.randn(0, 5, device=DEVICE, requires_grad=True)
    target = torch.zeros(0, dtype=torch.int64, device=DEVICE)
    loss = cross_entropy(logits, target, reduction=reduction, provider="triton")
    expected = cross_entropy(logits, target, reduction=reduction, provider="torch")
    assert loss.shape == expected.shape
    assert torch.equal(loss.isnan(), expected.isnan()) and torch.equal(loss.nan_to_num(), expected.nan_to_num())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_cross_entropy_gradcheck_fp64(reduction, label_smoothing):
    logits = torch.randn(5, 7, dtype=torch.float64, device=DEVICE, requires_grad=True)
    target = torch.tensor([0, 6, -100, 3, 3], device=DEVICE)
    assert torch.autograd.gradcheck(
        lambda logits: cross_entropy(logits, target, reduction=reduction, label_smoothing=label_smoothing,
                                     provider="triton"), (logits,))


def test_cross_entropy_saves_two_numbers_per_row_beside_its_inputs():
    logits = torch.randn(6, 50, device=DEVICE, requires_grad=True)
    target = torch.randint(0, 50, (6,), device=DEVICE)
    loss = cross_entropy(logits, target, provider="triton")
    saved = loss.grad_fn.saved_tensors
    extra = [tensor for tensor in saved if tensor.data_ptr() not in (logits.data_ptr(), target.data_ptr())]
    assert sum(tensor.numel() for tensor in extra) <= 2 * logits.shape[0] + 1


def _logits_and_target():
    return torch.randn(4, 5, device=DEVICE), torch.tensor([0, 1, 2, 3], device=DEVICE)


@pytest.mark.parametrize("call, error, message", [
    (lambda x, t: cross_entropy(x, t, weight=torch.ones(5, device=DEVICE)), ValueError, "class weights"),
    (lambda x, t: cross_entropy(x, torch.softmax(x, 1)), ValueError, "target must be a 1-D"),
    (lambda x, t: cross_entropy(x, t.float()), TypeError, "target must have dtype"),
    (lambda x, t: cross_entropy(x, t[:3]), ValueError, "batch size"),
    (lambda x, t: cross_entropy(x, t + 2), ValueError, r"outside \[0, 5\)"),
    (lambda x, t: cross_entropy(x, t - 1), ValueError, r"outside \[0, 5\)"),
    (lambda x, t: cross_entropy(x, t, ignore_index=2.0), TypeError, "ignore_index"),
    (lambda x, t: cross_entropy(x, t, reduction="avg"), ValueError, "reduction"),
    (lambda x, t: cross_entropy(x, t, label_smoothing=1.5), ValueError, "label_smoothing"),
    (lambda x, t: cross_entropy(x, t, label_smoothing=-0.1), ValueError, "label_smoothing"),
    (lambda x, t: cross_entropy(x.int(), t), TypeError, "input must have dtype"),
    (lambda x, t: cross_entropy(x[None], t), ValueError, "input must be a"),
    (lambda x, t: cross_entropy(x[0], t), ValueError, "target must be a 0-D"),
], ids=["class weights", "probability targets", "float targets", "batch mismatch", "target too large",
        "negative target", "float ignore_index", "unknown reduction", "label_smoothing above 1",
        "negative label_smoothing", "integer logits", "3-D logits", "unbatched logits with batched target"])
def test_cross_entropy_refuses_bad_arguments(call, error, message):
    logits, target = _logits_and_target()
    with pytest.raises(error, match=message):
        call(logits, target)


def test_cross_entropy_accepts_out_of_range_ignore_index_targets():
    logits, target = _logits_and_target()
    target[1] = 77
    loss = cross_entropy(logits, target, ignore_index=77, provider="triton")
    assert_close(loss, cross_entropy(logits, target, ignore_index=77, provider="torch"), reduction_length=5)
