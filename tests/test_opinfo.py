"""PyTorch's own sample inputs (``op_db``'s OpInfos and ``module_db``'s ModuleInfos) through tritonnet's Triton ops
and modules, compared with torch: every forward value and every input (and parameter) gradient.

Each sample either matches torch within the one tolerance rule (``tests/helpers.py``), or is refused with a
ValueError/TypeError/NotImplementedError by an entry of :data:`REFUSALS`: a predicate over the call's named arguments
with its reason. Both directions are checked, so a new refusal fails, and so does an entry that no longer refuses
(its message asks to remove it). :data:`KNOWN_WRONG` holds samples that answer silently wrong (strict expected
failures, empty while every sample matches).

The reference for fp16/bf16/fp32 samples is torch's op in fp64 on the same (rounded) inputs, so the comparison
measures our rounding only. Dropout is compared structurally: each element is either dropped (0) or kept and
scaled by 1/(1-p); its gradient uses the same mask; training=False is the identity.

max_pool2d's OpInfo yields 1,440 samples (10 input shapes and layouts times 144 keyword combinations); a deterministic
covering subset keeps every pair of argument values (shape and layout included) in every dtype, and every full
keyword combination in fp64. Run with ``-rP`` to see each op's count of samples, matches and refusals.
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass
from functools import partial
from typing import Callable

import pytest
import torch

import tritonnet.nn
from tests.helpers import DEVICE, ON_GPU, assert_close, compare_with_torch, fresh_leaf, random_cotangent
from tritonnet import functional

pytest.importorskip("expecttest", reason="torch's OpInfo database needs the expecttest package")
common_methods_invocations = pytest.importorskip("torch.testing._internal.common_methods_invocations")
common_modules = pytest.importorskip("torch.testing._internal.common_modules")

PROVIDER = "triton"
REFUSED_WITH = (ValueError, TypeError, NotImplementedError)
CHECKED_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Entry:
    """Samples picked out by ``applies`` (a predicate over the call's named arguments), and why."""

    reason: str
    applies: Callable[[dict], bool]


def _pair(value) -> tuple:
    return tuple(value) * (2 // len(value)) if isinstance(value, (tuple, list)) else (value, value)


def _is_floating(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


# Samples our ops refuse today, per op (the registry's op names), as predicates over the named arguments of the
# functional call (for modules: the constructor's and forward's arguments together, which use the same names).
REFUSALS: dict[str, list[Entry]] = {
    "conv2d": [
        Entry("fp64 runs in the interpreter only; the GPU kernels take fp32, fp16 and bf16",
              lambda arguments: ON_GPU and arguments["input"].dtype == torch.float64),
    ],
}

# Samples that answer silently wrong today: strict expected failures (each must still mismatch).
KNOWN_WRONG: dict[str, list[Entry]] = {}

OPS = ("conv2d", "max_pool2d", "local_response_norm", "linear", "cross_entropy", "dropout")
MODULES = {  # torch's module -> ours; ours subclass torch's, so constructors and state_dicts are the same
    torch.nn.Conv2d: tritonnet.nn.Conv2d,
    torch.nn.Linear: tritonnet.nn.Linear,
    torch.nn.MaxPool2d: tritonnet.nn.MaxPool2d,
    torch.nn.LocalResponseNorm: tritonnet.nn.LocalResponseNorm,
    torch.nn.Dropout: tritonnet.nn.Dropout,
    torch.nn.CrossEntropyLoss: tritonnet.nn.CrossEntropyLoss,
}


def matching(entries: list[Entry], arguments: dict) -> Entry | None:
    return next((entry for entry in entries if entry.applies(arguments)), None)


# ---------------------------------------------------------------------------------------------------------------------
# Running one call and comparing it with torch


def check_dropout(ours: Callable, input: torch.Tensor, p: float, training: bool, name: str) -> None:
    """Dropout's output and gradient, structurally: training=False (or p=0) returns the input; otherwise each
    element is 0 or input/(1-p), and the gradient is the cotangent through the same mask."""
    input = fresh_leaf(input)
    output = ours(input)
    assert output.shape == input.shape and output.dtype == input.dtype, f"{name}: shape or dtype differs"
    if not training or p == 0:
        assert torch.equal(output, input), f"{name}: training={training}, p={p} must return the input unchanged"
        return
    kept = output != 0
    if p == 1:
        assert not kept.any(), f"{name}: p=1 must drop everything"
    expected = torch.where(kept, input.detach().double() / (1 - p), torch.zeros((), dtype=torch.float64))
    assert_close(output, expected, dtype=input.dtype, name=f"{name} kept values")
    if input.requires_grad:
        cotangent = random_cotangent(output, seed=0).to(input.dtype)
        (gradient,) = torch.autograd.grad(output, input, cotangent)
        expected_gradient = torch.where(kept, cotangent.double() / (1 - p), torch.zeros((), dtype=torch.float64))
        assert_close(gradient, expected_gradient, dtype=input.dtype, name=f"{name} gradient")


# ---------------------------------------------------------------------------------------------------------------------
# Outcomes: match, refused (by an entry), wrong (by a KNOWN_WRONG entry)


@dataclass
class Tally:
    """Per (op or module, dtype): how many samples ran, matched, were refused (by reason) or known wrong."""

    samples: int = 0
    matched: int = 0
    refused: dict | None = None
    wrong: dict | None = None

    def count(self, table: str, reason: str) -> None:
        counts = getattr(self, table) or {}
        counts[reason] = counts.get(reason, 0) + 1
        setattr(self, table, counts)

    def line(self, label: str) -> str:
        refused = "; ".join(f"{count} x {reason}" for reason, count in (self.refused or {}).items())
        wrong = "; ".join(f"{count} x {reason}" for reason, count in (self.wrong or {}).items())
        return f"{label} | {self.samples} | {self.matched} | {refused or 0} | {wrong or 0}"


def _expect_failure(run: Callable[[], None], failures: tuple, tally: Tally, table: str, entry: Entry,
                    message: str) -> None:
    """Run a sample an entry says must fail with one of ``failures``; count it under the entry's reason, or fail the
    test with ``message`` when it no longer does."""
    try:
        run()
    except failures:
        tally.count(table, entry.reason)
        return
    pytest.fail(message)


def run_sample(op: str, arguments: dict, tally: Tally, name: str, run: Callable[[], None]) -> None:
    """Run one sample against the op's REFUSALS and KNOWN_WRONG entries; fail the test, naming the sample, when its
    outcome is not the one they predict."""
    tally.samples += 1
    refusal = matching(REFUSALS.get(op, []), arguments)
    if refusal is not None:
        _expect_failure(run, REFUSED_WITH, tally, "refused", refusal,
                        f"{name}: expected refusal ({refusal.reason}) no longer refuses; remove that entry from "
                        f"REFUSALS in tests/test_opinfo.py")
        return
    wrong = matching(KNOWN_WRONG.get(op, []), arguments)
    if wrong is not None:
        _expect_failure(run, (AssertionError,), tally, "wrong", wrong,
                        f"{name}: known-wrong sample ({wrong.reason}) now matches torch; remove that entry from "
                        f"KNOWN_WRONG in tests/test_opinfo.py")
        return
    try:
        run()
    except REFUSED_WITH as error:
        pytest.fail(f"{name}: refused ({type(error).__name__}: {error}) but no entry of REFUSALS expects it")
    tally.matched += 1


# ---------------------------------------------------------------------------------------------------------------------
# Sample selection: a deterministic covering subset


def covering_subset(features: list[dict], *, whole_keys: tuple[str, ...] = ()) -> list[int]:
    """Indices of a subset of samples (given by their ``features``, name -> hashable value) in which every pair of
    feature values that occurs together in some sample occurs together in a chosen one, and so does every
    combination of the ``whole_keys`` features. Greedy (the sample adding the most uncovered requirements first,
    ties to the earliest), so the choice is deterministic."""

    def requirements(sample: dict) -> set:
        items = sorted(sample.items(), key=lambda item: item[0])
        needed = set(itertools.combinations(items, 2))
        if whole_keys:
            needed.add(tuple((key, sample[key]) for key in whole_keys))
        return needed

    needs = [requirements(sample) for sample in features]
    uncovered = set().union(*needs)
    chosen = []
    while uncovered:
        best = max(range(len(needs)), key=lambda index: (len(needs[index] & uncovered), -index))
        chosen.append(best)
        uncovered -= needs[best]
    return sorted(chosen)


def _feature(value):
    if isinstance(value, torch.Tensor):
        layout = "channels last" if value.dim() == 4 and value.is_contiguous(memory_format=torch.channels_last) \
            and not value.is_contiguous() else "contiguous"
        return tuple(value.shape), layout
    return repr(value)


def max_pool2d_features(sample) -> dict:
    shape, layout = _feature(sample.input)
    return {"shape": shape, "layout": layout, **{key: _feature(value) for key, value in sample.kwargs.items()}}


# ---------------------------------------------------------------------------------------------------------------------
# OpInfo samples through tritonnet.functional


def _opinfo(op: str):
    name = f"nn.functional.{op}"
    found = [info for info in common_methods_invocations.op_db if info.name == name and not info.variant_test_name]
    assert len(found) == 1, f"op_db has {len(found)} entries named {name!r}"
    return found[0]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _opinfo_cases():
    """(op, dtype) for every dtype of ours that the op's OpInfo lists for this device."""
    for op in OPS:
        listed = _opinfo(op).supported_dtypes(DEVICE.type)
        for dtype in CHECKED_DTYPES:
            if dtype in listed:
                yield pytest.param(op, dtype, id=f"{op}-{_dtype_name(dtype)}")


def _samples(info, op: str, dtype: torch.dtype) -> list:
    torch.manual_seed(0)
    samples = list(info.sample_inputs(DEVICE, dtype, requires_grad=True))
    if op == "max_pool2d":
        whole = tuple(samples[0].kwargs) if dtype == torch.float64 else ()
        samples = [samples[index] for index in covering_subset([max_pool2d_features(s) for s in samples],
                                                                whole_keys=whole)]
    return samples


def bind(function: Callable, *args, **kwargs) -> dict:
    """The call's arguments by parameter name (defaults left out), as REFUSALS' predicates see them."""
    return dict(inspect.signature(function).bind(*args, **kwargs).arguments)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("op, dtype", list(_opinfo_cases()))
def test_opinfo_samples_match_torch(op, dtype):
    """Every OpInfo sample of ``op`` in ``dtype`` (a covering subset for max_pool2d) through the Triton provider
    matches torch, or is refused as REFUSALS says: the forward in every dtype the OpInfo lists for this device, and
    every input gradient in fp64 (the modules' samples check fp32 gradients; the gradient kernels are the same)."""
    info = _opinfo(op)
    ours = partial(getattr(functional, op), provider=PROVIDER)
    tally = Tally()
    for index, sample in enumerate(_samples(info, op, dtype)):
        name = f"{op} {dtype} sample {index} ({sample.summary()})"
        arguments = bind(getattr(functional, op), sample.input, *sample.args, **sample.kwargs)
        if op == "dropout":
            p, training = arguments.get("p", 0.5), arguments.get("training", True)
            run = partial(check_dropout, partial(ours, p=p, training=training), sample.input, p, training, name)
        else:
            run = partial(compare_with_torch, ours, info.op, [sample.input, *sample.args], sample.kwargs, dtype,
                          seed=index, name=name, gradients=dtype == torch.float64)
        run_sample(op, arguments, tally, name, run)
    print(tally.line(f"{op} | {_dtype_name(dtype)}"))


# ---------------------------------------------------------------------------------------------------------------------
# ModuleInfo samples through tritonnet.nn

PARAMETER = "parameter."  # prefix naming a module's parameters among a call's keyword values


def module_call(module: torch.nn.Module) -> Callable:
    """``module``'s forward as a function of its inputs and, as ``parameter.<name>`` keywords, its parameters."""

    def call(*args, **kwargs):
        parameters = {key[len(PARAMETER):]: kwargs.pop(key) for key in list(kwargs) if key.startswith(PARAMETER)}
        return torch.func.functional_call(module, parameters, args, kwargs)

    return call


def _module_info(torch_class):
    return next((info for info in common_modules.module_db if info.module_cls is torch_class), None)


EVAL = "eval"  # the description of a derived Dropout sample run in eval mode


def _dropout_module_samples(dtype: torch.dtype) -> list:
    """module_db has no nn.Dropout entry: its samples are the dropout OpInfo's, as the constructor's p and the
    module's train/eval mode."""
    samples = []
    for sample in _opinfo("dropout").sample_inputs(DEVICE, dtype, requires_grad=True):
        constructor = common_modules.FunctionInput(sample.kwargs.get("p", 0.5))
        samples.append(common_modules.ModuleInput(constructor, common_modules.FunctionInput(sample.input),
                                                  desc="training" if sample.kwargs.get("training", True) else EVAL))
    return samples


def _module_dtypes(torch_class) -> tuple:
    info = _module_info(torch_class)
    return info.dtypes if info is not None else _opinfo("dropout").supported_dtypes(DEVICE.type)


def _module_cases():
    """(module class, dtype) for every dtype of ours that the module's ModuleInfo lists."""
    for torch_class in MODULES:
        listed = _module_dtypes(torch_class)
        for dtype in CHECKED_DTYPES:
            if dtype in listed:
                yield pytest.param(torch_class, dtype, id=f"{torch_class.__name__}-{_dtype_name(dtype)}")


@pytest.mark.parametrize("torch_class, dtype", list(_module_cases()))
def test_module_samples_match_torch(torch_class, dtype):
    """Every ModuleInfo sample: tritonnet.nn's module built with the same constructor arguments and loaded with the
    torch module's state_dict matches it (output, input gradients and parameter gradients), or is refused as
    REFUSALS says."""
    info = _module_info(torch_class)
    torch.manual_seed(0)
    if info is None:
        samples = _dropout_module_samples(dtype)
    else:
        samples = info.module_inputs_func(info, device=DEVICE, dtype=dtype, requires_grad=True, training=True)
    our_class = MODULES[torch_class]
    tally = Tally()
    for index, sample in enumerate(samples):
        constructor, forward = sample.constructor_input, sample.forward_input
        name = f"{torch_class.__name__} {dtype} sample {index} ({sample.desc or 'plain'}: " \
               f"{constructor.args} {constructor.kwargs})"
        torch_module = torch_class(*constructor.args, **constructor.kwargs).to(device=DEVICE, dtype=dtype)
        arguments = {**bind(torch_class, *constructor.args, **constructor.kwargs),
                     **bind(torch_module.forward, *forward.args, **forward.kwargs)}
        training = sample.desc != EVAL

        def run(sample=sample, torch_module=torch_module, name=name, index=index, training=training):
            constructor, forward = sample.constructor_input, sample.forward_input
            our_module = our_class(*constructor.args, **constructor.kwargs, provider=PROVIDER)
            our_module.to(device=DEVICE, dtype=dtype).train(training)
            our_module.load_state_dict(torch_module.state_dict())
            if torch_class is torch.nn.Dropout:
                p = our_module.p
                check_dropout(our_module, forward.args[0], p, training, name)
                return
            # Buffers too (CrossEntropyLoss's class weight), so the fp64 reference sees them in fp64.
            parameters = {PARAMETER + key: value for key, value in
                          [*torch_module.named_parameters(), *torch_module.named_buffers()]}
            compare_with_torch(module_call(our_module), module_call(torch_module.train(training)),
                               list(forward.args), {**forward.kwargs, **parameters}, dtype, seed=index, name=name)

        run_sample(our_class.op, arguments, tally, name, run)
    print(tally.line(f"{torch_class.__name__} | {_dtype_name(dtype)}"))
