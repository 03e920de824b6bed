"""The provider registry: listing, choosing per block / per call / from the environment, and refusing unknown
names with an error that names them."""

import pytest
import torch

import tritonnet
from tritonnet import functional as F
from tritonnet import registry

OPS = {"local_response_norm", "max_pool2d", "dropout", "conv2d", "linear", "cross_entropy"}


def test_available_kernels_lists_every_op_with_torch_reference():
    kernels = tritonnet.available_kernels()
    assert set(kernels) == OPS
    for op, providers in kernels.items():
        assert "torch" in providers, op
        assert providers[0] == registry.DEFAULT_PROVIDER or registry.DEFAULT_PROVIDER not in providers


def test_use_kernels_chooses_and_restores():
    before = tritonnet.provider_for("dropout")
    with tritonnet.use_kernels(dropout="torch"):
        assert tritonnet.provider_for("dropout") == "torch"
        with tritonnet.use_kernels(local_response_norm="torch"):
            assert tritonnet.provider_for("dropout") == "torch"
            assert tritonnet.provider_for("local_response_norm") == "torch"
    assert tritonnet.provider_for("dropout") == before


def test_explicit_provider_wins_over_context():
    with tritonnet.use_kernels(dropout="triton" if "triton" in tritonnet.available_kernels()["dropout"] else "torch"):
        assert tritonnet.provider_for("dropout", "torch") == "torch"


def test_use_kernels_dispatches_to_the_chosen_implementation(monkeypatch):
    calls = []
    original = registry._implementations["local_response_norm"]["torch"]
    monkeypatch.setitem(registry._implementations["local_response_norm"], "torch",
                        lambda *args: calls.append(args) or original(*args))
    x = torch.randn(1, 4, 3, 3)
    with tritonnet.use_kernels(local_response_norm="torch"):
        F.local_response_norm(x, 3)
    assert len(calls) == 1


@pytest.mark.parametrize("call, message", [
    (lambda: tritonnet.use_kernels(lrn="torch").__enter__(), "unknown op 'lrn'"),
    (lambda: tritonnet.use_kernels(dropout="cuda").__enter__(), "unknown provider 'cuda' for op 'dropout'"),
    (lambda: tritonnet.provider_for("dropout", "numpy"), "unknown provider 'numpy'"),
    (lambda: tritonnet.parse_kernels("dropout"), "malformed entry 'dropout'"),
    (lambda: tritonnet.parse_kernels("dropout=,"), "malformed entry"),
    (lambda: tritonnet.parse_kernels("pool=torch"), "unknown op 'pool'"),
    (lambda: tritonnet.parse_kernels("all=jax"), "unknown provider 'jax'"),
])
def test_unknown_names_are_refused_by_name(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_parse_kernels_reads_pairs_and_all():
    assert tritonnet.parse_kernels(" dropout = torch , conv2d=torch") == {"dropout": "torch", "conv2d": "torch"}
    assert tritonnet.parse_kernels("all=torch") == {op: "torch" for op in OPS}
    assert tritonnet.parse_kernels("") == {}


def test_environment_variable_sets_defaults(monkeypatch):
    monkeypatch.setenv(registry.ENVIRONMENT_VARIABLE, "max_pool2d=torch")
    try:
        registry.reload_environment()
        assert tritonnet.provider_for("max_pool2d") == "torch"
        with tritonnet.use_kernels(max_pool2d=tritonnet.available_kernels()["max_pool2d"][0]):
            assert tritonnet.provider_for("max_pool2d") == tritonnet.available_kernels()["max_pool2d"][0]
        monkeypatch.setenv(registry.ENVIRONMENT_VARIABLE, "max_pool=torch")
        with pytest.raises(ValueError, match="TRITONNET_KERNELS"):
            registry.reload_environment()
    finally:
        monkeypatch.delenv(registry.ENVIRONMENT_VARIABLE)
        registry.reload_environment()


def test_interpreter_mode_is_set_without_a_gpu():
    import os

    if not torch.cuda.is_available():
        assert os.environ.get("TRITON_INTERPRET") == "1"
        assert tritonnet.INTERPRET


def test_use_kernels_accepts_all_as_the_command_line_does():
    with tritonnet.use_kernels(all="torch"):
        assert {op: tritonnet.provider_for(op) for op in OPS} == tritonnet.parse_kernels("all=torch")
    default = tritonnet.available_kernels()["dropout"][0]
    with tritonnet.use_kernels(dropout=default, all="torch"):  # a named op wins over all=, whatever the order
        assert tritonnet.provider_for("dropout") == default and tritonnet.provider_for("conv2d") == "torch"
    with pytest.raises(ValueError, match="unknown provider 'jax' in use_kernels()"):
        tritonnet.use_kernels(all="jax").__enter__()
