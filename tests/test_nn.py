"""tritonnet.nn layers and provider choice at the model level: a layer's provider= beats use_kernels, unknown
names are refused by name, TRITONNET_KERNELS is read and checked, swapping one op changes only that op, all-torch
runs no Triton kernel at all, and to_torch gives the same net from plain torch.nn layers."""

import pytest
import torch
import triton
import triton.language as tl
from torch import nn

import tritonnet
from tests.helpers import DEVICE, assert_close
from tests.spies import add_provider, every_op, record_calls
from tritonnet import registry
from tritonnet import nn as tnn
from tritonnet.models import alexnet_small
from tritonnet.profile import all_providers

LAYERS = {
    "conv2d": lambda **kw: tnn.Conv2d(4, 6, 3, padding=1, relu=True, **kw),
    "linear": lambda **kw: tnn.Linear(5, 3, relu=True, **kw),
    "local_response_norm": lambda **kw: tnn.LocalResponseNorm(3, k=2.0, **kw),
    "max_pool2d": lambda **kw: tnn.MaxPool2d(3, 2, **kw),
    "dropout": lambda **kw: tnn.Dropout(0.5, **kw),
    "cross_entropy": lambda **kw: tnn.CrossEntropyLoss(**kw),
}


def _call(op: str, layer: nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if op == "linear":
        return layer(torch.randn(2, 5, generator=generator).to(DEVICE))
    if op == "cross_entropy":
        return layer(torch.randn(4, 7, generator=generator).to(DEVICE), torch.tensor([0, 6, 3, 1], device=DEVICE))
    return layer(torch.randn(2, 4, 7, 7, generator=generator).to(DEVICE))


def _small_step(model: nn.Module, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, 32, 32, generator=generator).to(DEVICE)
    targets = torch.randint(0, 10, (batch,), generator=generator).to(DEVICE)
    loss = tnn.CrossEntropyLoss()(model(images), targets)
    loss.backward()
    return loss


def test_layers_cover_every_registered_op():
    assert set(LAYERS) == set(tritonnet.available_kernels())


@pytest.mark.parametrize("op", sorted(LAYERS))
def test_layer_provider_beats_use_kernels(monkeypatch, op):
    add_provider(monkeypatch, "spy")
    calls = record_calls(monkeypatch)
    layer = LAYERS[op](provider="torch").to(DEVICE)
    with tritonnet.use_kernels(**every_op("spy")):
        _call(op, layer)
        assert calls == [(op, "torch")]
        layer.provider = None  # no override: the block's choice applies
        _call(op, layer)
    assert calls[-1] == (op, "spy")
    assert "provider='torch'" in repr(LAYERS[op](provider="torch"))


@pytest.mark.parametrize("op", sorted(LAYERS))
def test_layer_refuses_unknown_provider_by_name(op):
    with pytest.raises(ValueError, match=f"unknown provider 'cudnn' for op '{op}'"):
        LAYERS[op](provider="cudnn")


def test_layers_load_their_torch_twins_state_dicts():
    pairs = [(tnn.Conv2d(4, 6, 3, groups=2, relu=True), nn.Conv2d(4, 6, 3, groups=2)),
             (tnn.Linear(5, 3, dropout=0.5), nn.Linear(5, 3))]
    for ours, theirs in pairs:
        ours.load_state_dict(theirs.state_dict(), strict=True)
        theirs.load_state_dict(ours.state_dict(), strict=True)
        assert isinstance(ours, type(theirs))


def test_environment_variable_choices_reach_the_layers(monkeypatch):
    add_provider(monkeypatch, "spy")
    calls = record_calls(monkeypatch)
    monkeypatch.setenv(registry.ENVIRONMENT_VARIABLE, "all=spy,local_response_norm=torch")
    registry.reload_environment()
    try:
        _small_step(alexnet_small().to(DEVICE))
        used = {op: {provider for name, provider in calls if name == op} for op, _ in calls}
        assert used.pop("local_response_norm") == {"torch"}
        assert set(used) == {"conv2d", "max_pool2d", "linear", "cross_entropy"}
        assert all(providers == {"spy"} for providers in used.values()), used
        with tritonnet.use_kernels(local_response_norm="spy"):  # code beats the environment
            assert tritonnet.provider_for("local_response_norm") == "spy"
    finally:
        monkeypatch.delenv(registry.ENVIRONMENT_VARIABLE)
        registry.reload_environment()


@pytest.mark.parametrize("value, message", [
    ("conv2d=cudnn", "unknown provider 'cudnn' for op 'conv2d' in TRITONNET_KERNELS"),
    ("lrn=torch", "unknown op 'lrn' in TRITONNET_KERNELS"),
    ("conv2d:torch", "malformed entry 'conv2d:torch' in TRITONNET_KERNELS"),
    ("all=jax", "unknown provider 'jax' in TRITONNET_KERNELS"),
])
def test_environment_variable_errors_name_the_entry(monkeypatch, value, message):
    monkeypatch.setenv(registry.ENVIRONMENT_VARIABLE, value)
    try:
        with pytest.raises(ValueError, match=message):
            registry.reload_environment()
    finally:
        monkeypatch.delenv(registry.ENVIRONMENT_VARIABLE)
        registry.reload_environment()


@pytest.mark.parametrize("op", sorted(LAYERS))
def test_swapping_one_op_changes_only_that_op(monkeypatch, op):
    add_provider(monkeypatch, "spy", ops=[op])  # a second provider to swap to, whatever exists today
    calls = record_calls(monkeypatch)
    model = nn.Sequential(tnn.Dropout(0.1), alexnet_small()).to(DEVICE)  # every op runs, dropout and loss too
    for base in all_providers():
        for swapped in registry.available_kernels()[op]:
            calls.clear()
            with tritonnet.use_kernels(**{**every_op(base), op: swapped}):
                _small_step(model)
            expected = {name: swapped if name == op else base if base in providers else
                        registry.available_kernels()[name][0] for name, providers in registry.available_kernels().items()}
            assert {name for name, _ in calls} == set(expected)
            assert all(provider == expected[name] for name, provider in calls), (base, swapped, set(calls))


def _launch_a_kernel():
    @triton.jit
    def fill(output, value, BLOCK: tl.constexpr):
        tl.store(output + tl.arange(0, BLOCK), tl.full((BLOCK,), value, tl.float32))

    output = torch.zeros(16, device=DEVICE)
    fill[(1,)](output, 3.0, BLOCK=16)
    return output


def test_all_torch_runs_no_triton_kernel(monkeypatch):
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    def refuse(*args, **kwargs):
        raise AssertionError("a Triton kernel was launched")

    for kernel_class in (JITFunction, InterpretedFunction):
        monkeypatch.setattr(kernel_class, "run", refuse)
    with pytest.raises(AssertionError, match="a Triton kernel was launched"):  # the trap catches launches
        _launch_a_kernel()
    for op, providers in registry.available_kernels().items():
        for provider in providers:
            if provider != "torch":
                monkeypatch.setitem(registry._implementations[op], provider, refuse)

    model = nn.Sequential(tnn.Dropout(0.5), alexnet_small()).to(DEVICE)
    with tritonnet.use_kernels(**tritonnet.parse_kernels("all=torch")):
        _small_step(model)
        _small_step(tnn.to_torch(model))


def test_to_torch_is_the_same_net_in_plain_torch():
    torch.manual_seed(0)
    model = alexnet_small().to(DEVICE).eval()
    twin = tnn.to_torch(model)
    tritonnet_layers = tuple(getattr(tnn, name) for name in tnn.__all__
                             if name not in ("to_torch", "from_torch", "TorchConv2d", "TorchLinear"))
    assert not any(isinstance(module, tritonnet_layers) for module in twin.modules())
    assert any(isinstance(module, tnn.Conv2d) for module in model.modules())  # the original is untouched
    assert twin.state_dict().keys() == model.state_dict().keys()
    assert not twin.training
    images = torch.randn(2, 3, 32, 32, device=DEVICE)
    with tritonnet.use_kernels(**every_op("torch")):  # the same torch ops: all-Triton is test_models' business
        assert_close(model(images), twin(images), name="logits")


def test_to_torch_keeps_dtype_device_and_frozen_parameters():
    model = alexnet_small().to(DEVICE, torch.float64)
    model.features.conv1.weight.requires_grad_(False)
    twin = tnn.to_torch(model)
    assert {parameter.dtype for parameter in twin.parameters()} == {torch.float64}
    assert {parameter.device for parameter in twin.parameters()} == {model.features.conv1.weight.device}
    assert not twin.features.conv1.weight.requires_grad and twin.features.conv2.weight.requires_grad
    single = tnn.to_torch(tnn.LocalResponseNorm(5, k=2.0))
    assert type(single) is nn.LocalResponseNorm and single.k == 2.0
