"""cross_entropy's Triton provider against torch: losses and gradients over torch's whole signature (class indices
and probabilities, class weights, ignore_index, label smoothing, unbatched, (N, C) and K-dimensional inputs, every
reduction, int64 and uint8 targets, contiguous, classes-last, strided and expanded tensors, extreme, infinite and NaN
logits); gradcheck; the device-side check of bad class indices; double backward and autocast; and the refusal of
every kind of bad argument."""

import math

import pytest
import torch
import torch.nn.functional as torch_functional
from hypothesis import given
from hypothesis import strategies as st

from tritonnet.kernels import cross_entropy as cross_entropy_kernels
from tritonnet.kernels.runtime import INTERPRET
from tests.helpers import DEVICE, FLOAT_DTYPES, ON_GPU, assert_close
from tritonnet.ops import cross_entropy as cross_entropy_ops
from tritonnet.ops.cross_entropy import REDUCTIONS, cross_entropy, raise_deferred_target_errors

TARGET_DTYPES = [torch.int64, torch.uint8]
LAYOUTS = ["contiguous", "classes last", "strided", "expanded"]


@st.composite
def cross_entropy_problems(draw):
    """Unbatched rows, (N, C) batches of 1 to 64 rows and (N, C, d1, ..., dk) maps; 1 to 1100 classes; class
    indices (int64 or uint8, some ignored) or probabilities; class weights (some zero) or none; label smoothing;
    every reduction; dtypes and logit scales; every tensor contiguous, classes-last, strided or expanded."""
    kind = draw(st.sampled_from(["unbatched", "batched", "spatial"]))
    classes = draw(st.integers(1, 12) | st.integers(13, 1100 if kind != "spatial" else 40))
    shape = {"unbatched": (classes,), "batched": (draw(st.integers(1, 64)), classes),
             "spatial": (draw(st.integers(1, 3)), classes, *draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
             }[kind]
    probabilities = draw(st.booleans())
    target_dtype = draw(st.sampled_from(TARGET_DTYPES if classes <= 255 else TARGET_DTYPES[:1]))
    if probabilities:
        ignore_index = draw(st.sampled_from([-100, -1]))
    elif target_dtype == torch.uint8:
        ignore_index = draw(st.sampled_from([0, classes - 1, 255]))
    else:
        ignore_index = draw(st.sampled_from([-100, 0, classes - 1]))
    return dict(
        shape=shape,
        probabilities=probabilities,
        target_dtype=target_dtype,
        ignore_index=ignore_index,
        ignored_fraction=draw(st.sampled_from([0.0, 0.3, 0.3, 1.0])),
        weighted=draw(st.booleans()),
        reduction=draw(st.sampled_from(REDUCTIONS)),
        label_smoothing=draw(st.sampled_from([0.0, 0.1]) | st.floats(0.0, 1.0)),
        dtype=draw(st.sampled_from(FLOAT_DTYPES)),
        scale=draw(st.sampled_from([1.0, 10.0, 1e3])),
        logits_layout=draw(st.sampled_from(LAYOUTS)),
        target_layout=draw(st.sampled_from(LAYOUTS)),
        weight_layout=draw(st.sampled_from(["contiguous", "strided", "expanded"])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def in_layout(data: torch.Tensor, layout: str, class_dimension: int | None = None) -> torch.Tensor:
    """``data`` on the test device: contiguous; with the class dimension innermost in memory ("classes last",
    channels-last for 4-D); every other element of a wider tensor ("strided"); or a stride-0 view ("expanded", of the
    first dimension and, past the class dimension, of the last; the values repeat)."""
    data = data.to(DEVICE)
    if data.dim() == 0 or layout == "contiguous":
        return data
    if layout == "classes last":
        if class_dimension is None or data.dim() < 2:
            return data
        return data.movedim(class_dimension, -1).contiguous().movedim(-1, class_dimension)
    if layout == "strided":
        wide = torch.zeros(*data.shape[:-1], 2 * data.shape[-1], dtype=data.dtype, device=DEVICE)
        wide[..., ::2] = data
        return wide[..., ::2]
    expanded = data[:1].expand(data.shape)
    if data.dim() > 2 and data.shape[-1] > 1:  # a spatial dimension no single stride can walk with the others
        expanded = expanded[..., :1].expand(data.shape)
    return expanded


def make_problem(shape, probabilities, target_dtype, ignore_index, ignored_fraction, weighted, dtype, scale,
                 logits_layout, target_layout, weight_layout, seed):
    generator = torch.Generator().manual_seed(seed)
    class_dimension = 0 if len(shape) == 1 else 1
    classes = shape[class_dimension]
    logits = (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(dtype)
    index_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    if probabilities:
        target = torch.softmax(torch.randn(shape, generator=generator, dtype=torch.float64) * 3, class_dimension)
        target = target.to(dtype)
    else:
        target = torch.randint(0, classes, index_shape, generator=generator)
        target[torch.rand(index_shape, generator=generator) < ignored_fraction] = ignore_index
        target = target.to(target_dtype)
    weight = None
    if weighted:
        weight = torch.rand(classes, generator=generator, dtype=torch.float64) * 2
        weight[torch.rand(classes, generator=generator) < 0.2] = 0.0
        weight = in_layout(weight.to(dtype), weight_layout)
    logits = in_layout(logits, logits_layout, class_dimension)
    target = in_layout(target, target_layout, class_dimension if probabilities else None)
    return logits.requires_grad_(), target.requires_grad_() if probabilities else target, weight


def check_against_torch(logits, target, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0, *,
                        reduction_length, sum_gradient=False):
    """Loss and gradients (with respect to the logits, and to probability targets) of the Triton provider against
    torch's ``cross_entropy`` on the same values in fp64."""
    arguments = dict(weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    loss = cross_entropy(logits, target, **arguments, provider="triton")
    expected_dtype_and_shape = cross_entropy(logits.detach(), target.detach(), **arguments, provider="torch")
    assert loss.dtype == expected_dtype_and_shape.dtype and loss.shape == expected_dtype_and_shape.shape
    wide = dict(arguments, weight=None if weight is None else weight.double())
    logits64 = logits.detach().double().requires_grad_()
    target64 = target.detach().double().requires_grad_() if target.is_floating_point() else target
    expected = torch_functional.cross_entropy(logits64, target64 if target.is_floating_point() else target.long(),
                                              **wide)
    assert_close(loss, expected, dtype=logits.dtype, reduction_length=reduction_length, name="loss")

    inputs, inputs64 = [logits], [logits64]
    if target.requires_grad:
        inputs.append(target)
        inputs64.append(target64)
    grad_output = torch.ones_like(expected) if sum_gradient else torch.rand_like(expected) + 0.5
    if sum_gradient:  # loss.sum()'s gradient arrives as an expanded (stride-0) tensor
        grads = torch.autograd.grad(loss.sum(), inputs)
    else:
        grads = torch.autograd.grad(loss, inputs, grad_output.to(loss.dtype))
    expected_grads = torch.autograd.grad(expected, inputs64, grad_output.to(loss.dtype).double())
    for name, grad, expected_grad in zip(["grad_input", "grad_target"], grads, expected_grads):
        assert_close(grad, expected_grad, dtype=logits.dtype, reduction_length=reduction_length, name=name)


@given(cross_entropy_problems(), st.booleans())
def test_cross_entropy_loss_and_gradients_match_torch(problem, sum_gradient):
    reduction, label_smoothing = problem.pop("reduction"), problem.pop("label_smoothing")
    logits, target, weight = make_problem(**problem)
    shape = problem["shape"]
    classes = shape[0 if len(shape) == 1 else 1]
    check_against_torch(logits, target, weight, reduction, problem["ignore_index"], label_smoothing,
                        reduction_length=classes * (math.prod(shape) // classes if reduction != "none" else 1),
                        sum_gradient=sum_gradient)


# PyTorch's own OpInfo samples for nn.functional.cross_entropy (common_methods_invocations), which import too
# slowly for this suite: each shape with class indices and with probabilities, and the keyword arguments.
OPINFO_SHAPES = [(2, 3), (2, 3, 1), (2, 3, 1, 2), (2, 3, 1, 2, 3)]
OPINFO_KEYWORDS = [{}, {"reduction": "mean"}, {"reduction": "sum"}, {"reduction": "none"}, {"weight": True},
                   {"weight": True, "reduction": "sum"}, {"weight": True, "reduction": "none"}]


@pytest.mark.parametrize("shape, keywords", [(shape, {}) for shape in OPINFO_SHAPES]
                         + [((2, 3), keywords) for keywords in OPINFO_KEYWORDS[1:]]
                         + [((2, 3), {"ignore_index": 1})])
def test_cross_entropy_matches_torch_on_its_opinfo_samples(shape, keywords):
    generator = torch.Generator().manual_seed(len(shape))
    logits = torch.randn(shape, generator=generator, dtype=torch.float64).to(DEVICE).requires_grad_()
    weight = torch.rand(shape[1], generator=generator, dtype=torch.float64).to(DEVICE) if "weight" in keywords \
        else None
    arguments = dict(keywords, weight=weight)
    index_target = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=generator).to(DEVICE)
    check_against_torch(logits, index_target, **arguments, reduction_length=math.prod(shape))
    if "ignore_index" not in keywords:
        probabilities = torch.rand(shape, generator=generator, dtype=torch.float64).to(DEVICE).requires_grad_()
        check_against_torch(logits, probabilities, **arguments, reduction_length=math.prod(shape))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_cross_entropy_is_stable_for_extreme_logits(dtype):
    """Logits of +-1e4 (beyond exp's range even in fp32) with targets on the largest, the smallest and a middle one,
    rows of all-equal logits, and one class far above the rest; class indices and probabilities."""
    logits = torch.tensor([[1e4, -1e4, 0.0, 5.0], [-1e4, -1e4, -1e4, 1e4], [1e4, 1e4, 1e4, 1e4],
                           [-1e4, -1e4, -1e4, -1e4], [3e3, -3e3, 2e3, 1e4]], dtype=dtype, device=DEVICE)
    target = torch.tensor([1, 3, 2, 0, 1], device=DEVICE)
    probabilities = torch.softmax(torch.arange(20.0).view(5, 4), 1).to(dtype).to(DEVICE)
    cases = [(target, reduction, 0.2) for reduction in REDUCTIONS] + [(target, "none", 0.0)]
    cases += [(probabilities, "none", 0.2), (probabilities, "mean", 0.0)]
    for kind, reduction, label_smoothing in cases:
        check_against_torch(logits.clone().requires_grad_(), kind, None, reduction, -100, label_smoothing,
                            reduction_length=4)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's, for the interpreter's arithmetic on inf and NaN
@pytest.mark.parametrize("probabilities", [False, True], ids=["class indices", "probabilities"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_matches_torch_for_infinite_and_nan_logits(probabilities, weighted, label_smoothing):
    """-inf on a non-target class, on the target, on a zero-weight class, on every class; a NaN; each also on an
    ignored row: the losses and gradients are infinite, NaN or finite exactly where torch's are."""
    inf, nan = float("inf"), float("nan")
    logits = torch.tensor([[-inf, 1.0, 2.0, 0.5], [1.0, -inf, 0.0, 2.0], [0.0, 1.0, -inf, 3.0],
                           [-inf, -inf, -inf, -inf], [1.0, nan, 0.0, 2.0], [1.0, nan, 0.0, 2.0],
                           [-inf, -inf, -inf, -inf]], dtype=torch.float64, device=DEVICE)
    target = torch.tensor([1, 1, 3, 0, 2, -100, -100], device=DEVICE)
    if probabilities:
        target = torch.tensor([[0.0, 0.5, 0.5, 0.0], [0.2, 0.3, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0],
                               [0.25] * 4, [0.1, 0.0, 0.4, 0.5], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
                              dtype=torch.float64, device=DEVICE)
    weight = torch.tensor([1.0, 2.0, 0.0, 0.5], dtype=torch.float64, device=DEVICE) if weighted else None
    for reduction in REDUCTIONS:
        check_against_torch(logits.clone().requires_grad_(), target, weight, reduction, -100, label_smoothing,
                            reduction_length=4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_cross_entropy_fp16_logits_over_imagenet_classes(dtype):
    """AlexNet's loss layer: 128 x 1000, where torch's own fp16 label-smoothing sum overflows (hence the fp64
    reference)."""
    generator = torch.Generator().manual_seed(3)
    logits = (torch.randn(128, 1000, generator=generator) * 8).to(dtype).to(DEVICE).requires_grad_()
    target = torch.randint(0, 1000, (128,), generator=generator).to(DEVICE)
    check_against_torch(logits, target, None, "mean", -100, 0.1, reduction_length=128 * 1000)


def test_cross_entropy_online_softmax_across_class_blocks(monkeypatch):
    """Rows longer than one class block, with a max that grows from block to block (rescaling the running sums) or
    sits in the first block, with probability targets and weights. In the interpreter the tiles are shrunk to force
    many blocks; on a GPU 5000 classes take several of the autotuned blocks."""
    classes = 5000
    if INTERPRET:
        monkeypatch.setattr(cross_entropy_kernels, "_row_tiles", lambda rows, classes: {"BLOCK_ROWS": 4,
                                                                                      "BLOCK_CLASSES": 16})
        classes = 60
    rising = torch.linspace(-60.0, 60.0, classes, dtype=torch.float64)
    logits = torch.stack([rising, rising.flip(0), torch.randn(classes, dtype=torch.float64) * 20, rising * 0])
    logits = logits.float().to(DEVICE)
    target = torch.tensor([0, classes - 1, classes // 2, -100], device=DEVICE)
    probabilities = torch.softmax(torch.randn(4, classes, dtype=torch.float64), 1).float().to(DEVICE)
    weight = torch.rand(classes).to(DEVICE)
    for reduction in REDUCTIONS:
        for kind in (target, probabilities.requires_grad_()):
            check_against_torch(logits.clone().requires_grad_(), kind, weight, reduction, -100, 0.2,
                                reduction_length=classes * 4)


def test_cross_entropy_reads_k_dimensional_logits_in_place():
    """(N, C, H, W) logits, contiguous or channels-last, reach the kernels as a view (the class stride is passed),
    and the gradient comes back in the logits' memory format."""
    for memory_format in (torch.contiguous_format, torch.channels_last):
        logits = torch.randn(2, 5, 3, 4, device=DEVICE).contiguous(memory_format=memory_format).requires_grad_()
        loss = cross_entropy(logits, torch.randint(0, 5, (2, 3, 4), device=DEVICE), provider="triton")
        assert logits.data_ptr() in [tensor.data_ptr() for tensor in loss.grad_fn.saved_tensors if tensor is not None]
        (grad,) = torch.autograd.grad(loss, logits)
        assert grad.stride() == logits.stride()


def test_cross_entropy_per_row_loss_can_be_modified_in_place():
    logits = torch.randn(9, device=DEVICE, requires_grad=True)
    loss = cross_entropy(logits, torch.tensor(4, device=DEVICE), reduction="none", provider="triton")
    loss.mul_(3.0)
    (grad,) = torch.autograd.grad(loss, logits)
    expected = torch.softmax(logits.detach(), 0) - torch_functional.one_hot(torch.tensor(4), 9).to(DEVICE)
    assert_close(grad, 3.0 * expected, reduction_length=9)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", [None, "zero"], ids=["unweighted", "zero weights"])
def test_cross_entropy_with_no_counted_target_matches_torch(reduction, weight):
    """Every target ignored, or every weight zero: mean gives NaN (0 / 0), sum gives 0, as torch's; the gradients of
    ignored rows are 0 and those of zero-weight rows under mean NaN, as torch's."""
    logits = torch.randn(4, 6, device=DEVICE, requires_grad=True)
    if weight is None:
        target = torch.full((4,), -100, device=DEVICE)
    else:
        target, weight = torch.tensor([0, 1, 2, -100], device=DEVICE), torch.zeros(6, device=DEVICE)
    loss = cross_entropy(logits, target, weight, reduction=reduction, label_smoothing=0.1, provider="triton")
    expected = cross_entropy(logits, target, weight, reduction=reduction, label_smoothing=0.1, provider="torch")
    assert torch.equal(loss.isnan(), expected.isnan()) and torch.equal(loss.nan_to_num(), expected.nan_to_num())
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    (expected_grad,) = torch.autograd.grad(expected.sum(), logits)
    assert torch.equal(grad.isnan(), expected_grad.isnan())
    assert_close(grad.nan_to_num(), expected_grad.nan_to_num(), reduction_length=6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("probabilities", [False, True], ids=["class indices", "probabilities"])
def test_cross_entropy_of_an_empty_batch_matches_torch(reduction, probabilities):
    logits = torch.randn(0, 5, device=DEVICE, requires_grad=True)
    target = torch.zeros(0, 5, device=DEVICE) if probabilities else torch.zeros(0, dtype=torch.int64, device=DEVICE)
    loss = cross_entropy(logits, target, reduction=reduction, provider="triton")
    expected = cross_entropy(logits, target, reduction=reduction, provider="torch")
    assert loss.shape == expected.shape
    assert torch.equal(loss.isnan(), expected.isnan()) and torch.equal(loss.nan_to_num(), expected.nan_to_num())


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_gradcheck_fp64(reduction):
    """Class indices with weights over (N, C, d) logits, and probabilities (whose gradient is checked too), with
    label smoothing (the smoothing-free terms are compared with torch above). Fast mode: a random projection of the
    Jacobian, a few kernel launches rather than two per element."""
    label_smoothing = 0.3
    logits = torch.randn(3, 4, 2, dtype=torch.float64, device=DEVICE, requires_grad=True)
    target = torch.tensor([[0, 3], [-100, 1], [2, 2]], device=DEVICE)
    weight = torch.rand(4, dtype=torch.float64, device=DEVICE) + 0.5
    probabilities = torch.rand(3, 4, 2, dtype=torch.float64, device=DEVICE, requires_grad=True)
    arguments = dict(reduction=reduction, label_smoothing=label_smoothing, provider="triton")
    assert torch.autograd.gradcheck(lambda logits: cross_entropy(logits, target, weight, **arguments), (logits,),
                                    fast_mode=True)
    assert torch.autograd.gradcheck(lambda logits, probabilities: cross_entropy(logits, probabilities, **arguments),
                                    (logits, probabilities), fast_mode=True)


def test_cross_entropy_saves_three_numbers_per_row_beside_its_inputs():
    logits = torch.randn(6, 50, device=DEVICE, requires_grad=True)
    target = torch.randint(0, 50, (6,), device=DEVICE)
    loss = cross_entropy(logits, target, provider="triton")
    saved = loss.grad_fn.saved_tensors
    extra = [tensor for tensor in saved
             if tensor is not None and tensor.data_ptr() not in (logits.data_ptr(), target.data_ptr())]
    assert sum(tensor.numel() for tensor in extra) <= 3 * logits.shape[0] + 1


@pytest.mark.parametrize("target_dtype", TARGET_DTYPES)
def test_cross_entropy_names_bad_class_indices(target_dtype):
    """Bad indices (even 10**12, which an unmasked gather would read far outside the logits) raise a ValueError
    naming target, the bad values' range and the class count: at once off the GPU, at the next
    raise_deferred_target_errors() on it. A uint8 target of 156 is not ignore_index=-100 (the wrapped -100), as in
    torch."""
    logits = torch.randn(4, 5, device=DEVICE)
    if target_dtype == torch.uint8:
        target, message = torch.tensor([0, 156, 3, 4], dtype=torch.uint8), r"1 class index in \[156, 156\]"
    else:
        target, message = torch.tensor([7, -3, 10**12, -100]), r"3 class indices in \[-3, 1000000000000\]"
    for reduction in REDUCTIONS:
        with pytest.raises(ValueError, match=message + r" outside \[0, 5\) \(input has 5 classes\)"):
            cross_entropy(logits, target.to(DEVICE), reduction=reduction, provider="triton")
            raise_deferred_target_errors()
    raise_deferred_target_errors()  # raising cleared the record


def test_cross_entropy_defers_bad_class_indices_to_raise_deferred_target_errors():
    """The GPU path: the kernels record bad indices on the device and make their losses and gradients NaN; the next
    raise_deferred_target_errors() raises once and clears the record."""
    logits = torch.randn(4, 5, device=DEVICE)
    target = torch.tensor([1, 9, -100, -2], device=DEVICE)
    record = cross_entropy_ops._error_record(logits.device, 5, -100)
    rows = logits[:, :, None], target[:, None]
    loss, saved = cross_entropy_kernels.cross_entropy_forward(*rows, None, record, ignore_index=-100,
                                                              reduction="none", label_smoothing=0.0, loss_shape=(4,))
    assert torch.equal(loss.isnan(), torch.tensor([False, True, False, True], device=DEVICE))
    grad, _ = cross_entropy_kernels.cross_entropy_backward(torch.ones(4, 1, device=DEVICE), *rows, None, saved,
                                                           ignore_index=-100, reduction="none", label_smoothing=0.0)
    assert grad[1].isnan().all() and grad[3].isnan().all() and grad[[0, 2]].isfinite().all()
    for reduction in ("mean", "sum"):
        loss, _ = cross_entropy_kernels.cross_entropy_forward(*rows, None, record, ignore_index=-100,
                                                              reduction=reduction, label_smoothing=0.0, loss_shape=())
        assert loss.isnan()
    with pytest.raises(ValueError, match=r"target held 6 class indices in \[-2, 9\] outside \[0, 5\) \(input has 5 "
                                         r"classes\) other than ignore_index=-100"):
        raise_deferred_target_errors()
    raise_deferred_target_errors()


@pytest.mark.skipif(not ON_GPU, reason="host syncs exist on a GPU only")
def test_cross_entropy_step_never_waits_for_the_gpu():
    """Forward and backward (after the autotuner's first, timing, launch) make no host sync: targets are checked on
    the device."""
    logits = torch.randn(128, 1000, device=DEVICE, requires_grad=True)
    target = torch.randint(0, 1000, (128,), device=DEVICE)
    for reduction in REDUCTIONS:
        cross_entropy(logits, target, reduction=reduction, label_smoothing=0.1).sum().backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for reduction in REDUCTIONS:
            cross_entropy(logits, target, reduction=reduction, label_smoothing=0.1).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    raise_deferred_target_errors()


@pytest.mark.parametrize("call", ["autograd.grad", "backward"])
def test_cross_entropy_refuses_double_backward(call):
    """Second-order gradients would be silently wrong (the backward kernel is not differentiable): create_graph is
    refused with a clear error on every path."""
    logits = torch.randn(3, 4, device=DEVICE, requires_grad=True)
    loss = cross_entropy(logits, torch.tensor([0, 1, 3], device=DEVICE), provider="triton")
    with pytest.raises(RuntimeError, match="double backward"):
        if call == "backward":
            loss.backward(create_graph=True)
        else:
            torch.autograd.grad(loss, logits, create_graph=True)


def test_cross_entropy_computes_in_fp32_under_autocast_as_torch():
    """torch's autocast lists cross_entropy as an fp32 op: half-precision logits, probabilities and weights are
    widened, fp64 stays fp64, and the gradient flows back to the half-precision logits."""
    device_type = DEVICE.type
    half = torch.bfloat16 if device_type == "cpu" else torch.float16
    logits = torch.randn(4, 5, device=DEVICE).to(half).requires_grad_()
    target = torch.tensor([0, 1, 2, 4], device=DEVICE)
    with torch.autocast(device_type, dtype=half):
        for arguments in [(target,), (torch.softmax(logits.detach().float(), 1).to(half),),
                          (target, torch.rand(5, device=DEVICE).to(half))]:
            loss = cross_entropy(logits, *arguments, provider="triton")
            expected = torch_functional.cross_entropy(logits, *arguments)
            assert loss.dtype == expected.dtype == torch.float32
            assert_close(loss, expected, reduction_length=20)
        assert cross_entropy(logits.double(), target, provider="triton").dtype == torch.float64
        (grad,) = torch.autograd.grad(cross_entropy(logits, target, provider="triton"), logits)
    assert grad.dtype == half


def _logits_and_target():
    return torch.randn(4, 5, device=DEVICE), torch.tensor([0, 1, 2, 3], device=DEVICE)


@pytest.mark.parametrize("call, error, message", [
    (lambda x, t: cross_entropy(x, t.float()), TypeError, "target must have dtype int64, uint8"),
    (lambda x, t: cross_entropy(x, t.int()), TypeError, "target must have dtype int64, uint8"),
    (lambda x, t: cross_entropy(x, t.short()), TypeError, "target must have dtype int64, uint8"),
    (lambda x, t: cross_entropy(x, torch.softmax(x, 1).long()), TypeError, "target must have dtype float32"),
    (lambda x, t: cross_entropy(x, torch.softmax(x, 1).double()), TypeError, "target must have dtype float32"),
    (lambda x, t: cross_entropy(x, torch.softmax(x, 1), ignore_index=1), ValueError, "ignore_index=1"),
    (lambda x, t: cross_entropy(x, t[:3]), ValueError, r"class indices of shape \(4,\)"),
    (lambda x, t: cross_entropy(x, "t"), TypeError, "target must be a torch.Tensor"),
    (lambda x, t: cross_entropy(x, t, weight=torch.ones(4, device=DEVICE)), ValueError, "weight has 4 entries"),
    (lambda x, t: cross_entropy(x, t, weight=torch.ones(5, 1, device=DEVICE)), ValueError, "weight must be a 1-D"),
    (lambda x, t: cross_entropy(x, t, weight=torch.ones(5, device=DEVICE).double()), TypeError,
     "weight must have dtype float32"),
    (lambda x, t: cross_entropy(x, t, weight=torch.ones(5, device=DEVICE, requires_grad=True)), ValueError,
     "weight requires grad"),
    (lambda x, t: cross_entropy(x, t, ignore_index=2.0), TypeError, "ignore_index"),
    (lambda x, t: cross_entropy(x, t, reduction="avg"), ValueError, "reduction"),
    (lambda x, t: cross_entropy(x, t, label_smoothing=1.5), ValueError, "label_smoothing"),
    (lambda x, t: cross_entropy(x, t, label_smoothing=-0.1), ValueError, "label_smoothing"),
    (lambda x, t: cross_entropy(x.int(), t), TypeError, "input must have dtype"),
    (lambda x, t: cross_entropy(x[0, 0], t[0]), ValueError, "input must be a 1-D"),
    (lambda x, t: cross_entropy(x[0], t), ValueError, r"class indices of shape \(\)"),
], ids=["float targets of the wrong shape", "int32 targets", "int16 targets", "integer probabilities",
        "probabilities of another dtype", "ignore_index with probabilities", "batch mismatch", "target not a tensor",
        "weight of the wrong length", "2-D weight", "weight of another dtype", "weight requiring grad",
        "float ignore_index", "unknown reduction", "label_smoothing above 1", "negative label_smoothing",
        "integer logits", "0-D logits", "unbatched logits with batched target"])
def test_cross_entropy_refuses_bad_arguments(call, error, message):
    logits, target = _logits_and_target()
    with pytest.raises(error, match=message):
        call(logits, target)


def test_cross_entropy_accepts_out_of_range_ignore_index_targets():
    logits, target = _logits_and_target()
    target[1] = 77
    loss = cross_entropy(logits, target, ignore_index=77, provider="triton")
    assert_close(loss, cross_entropy(logits, target, ignore_index=77, provider="torch"), reduction_length=5)
