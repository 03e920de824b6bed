"""torch.compile, torch.export and torch.profiler over the registered ops (``torch.ops.tritonnet.*``): alexnet-small
compiles to one graph with no breaks for each provider, with the outputs and gradients of eager; a change of provider
under ``use_kernels`` recompiles; the exported graph and the profile name our ops."""

import pytest
import torch
import torch._dynamo.testing
import torch._inductor.config

import tritonnet
from tests.helpers import assert_close
from tritonnet import functional as F
from tritonnet.models import create_model

# The triton provider's graph is our opaque ops and a few torch ops, which Inductor builds in seconds. The torch
# provider's net is all torch ops: Inductor's CPU code for it takes minutes to build on a small machine and, in torch
# 2.13, gives zero gradients to everything below the classifier (eager and aot_eager agree), so it compiles with
# aot_eager, which traces the same forward and backward graphs.
BACKENDS = {"triton": "inductor", "torch": "aot_eager"}
BATCH = 2


def _alexnet_small() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("alexnet-small", 10).train()
    images = torch.randn(BATCH, 3, model.input_size, model.input_size)
    return model, images, torch.randint(0, 10, (BATCH,))


def _loss_function(model):
    return lambda images, labels: F.cross_entropy(model(images), labels)


def _step(loss_function, model, images, labels):
    """Loss and parameter gradients of one step, the dropout seeds drawn after ``torch.manual_seed(1)``."""
    torch.manual_seed(1)
    loss = loss_function(images, labels)
    return loss, torch.autograd.grad(loss, list(model.parameters()))


@pytest.mark.parametrize("provider", BACKENDS)
def test_alexnet_small_compiles_to_one_graph_with_eager_outputs_and_gradients(provider):
    model, images, labels = _alexnet_small()
    with tritonnet.use_kernels(all=provider):
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(_loss_function(model))(images, labels)
        assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
        eager_loss, eager_gradients = _step(_loss_function(model), model, images, labels)
        torch._dynamo.reset()
        # fallback_random: the compiled graph draws the dropout seeds from torch's generator as eager does.
        with torch._inductor.config.patch(fallback_random=True):
            compiled = torch.compile(_loss_function(model), fullgraph=True, backend=BACKENDS[provider])
            loss, gradients = _step(compiled, model, images, labels)
    assert_close(loss, eager_loss, name="loss")
    for (name, _), gradient, eager_gradient in zip(model.named_parameters(), gradients, eager_gradients):
        assert_close(gradient, eager_gradient, name=f"{name}'s gradient", reduction_length=1024)


def test_changing_the_provider_under_use_kernels_recompiles():
    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append(str(graph_module.graph))
        return graph_module.forward

    torch._dynamo.reset()
    compiled = torch.compile(lambda x: F.local_response_norm(x, 3), backend=recording_backend, fullgraph=True)
    x = torch.randn(1, 4, 2, 2)
    with tritonnet.use_kernels(local_response_norm="torch"):
        reference = compiled(x)
    with tritonnet.use_kernels(local_response_norm="triton"):
        ours = compiled(x)
    with tritonnet.use_kernels(local_response_norm="torch"):
        compiled(x)
    assert len(graphs) == 2, "the provider change did not recompile (or a repeated choice did)"
    assert "tritonnet.local_response_norm_forward" not in graphs[0]
    assert "tritonnet.local_response_norm_forward" in graphs[1]
    assert_close(ours, reference)


def test_dropout_draws_a_new_seed_per_call_under_compile():
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: F.dropout(x, 0.5, provider="triton"), fullgraph=True)
    x = torch.ones(256)
    first, second = compiled(x), compiled(x)
    assert not torch.equal(first, second), "the seed was baked into the compiled graph"
    with torch._inductor.config.patch(fallback_random=True):
        torch._dynamo.reset()
        compiled = torch.compile(lambda x: F.dropout(x, 0.5, provider="triton"), fullgraph=True)
        torch.manual_seed(5)
        expected = F.dropout(x, 0.5, provider="triton")
        torch.manual_seed(5)
        assert torch.equal(compiled(x), expected), "torch.manual_seed does not reproduce compiled dropout"


def test_exported_alexnet_small_names_our_ops():
    model, images, _ = _alexnet_small()
    with tritonnet.use_kernels(all="triton"):
        exported = torch.export.export(model.eval(), (images,))
    graph = str(exported.graph)
    for op in ("conv2d_forward", "local_response_norm_forward", "max_pool2d_forward", "linear_forward"):
        assert f"tritonnet.{op}" in graph, op
    assert_close(exported.module()(images), model(images))


def test_profiler_shows_each_op_by_its_registered_name():
    model, images, labels = _alexnet_small()
    with torch.profiler.profile() as profile:
        _step(_loss_function(model), model, images, labels)
    names = {event.key for event in profile.key_averages()}
    for op in ("conv2d_forward", "conv2d_backward", "local_response_norm_forward", "local_response_norm_backward",
               "max_pool2d_forward", "max_pool2d_backward", "linear_forward", "linear_backward",
               "cross_entropy_forward", "cross_entropy_backward"):
        assert f"tritonnet::{op}" in names, op


@pytest.mark.parametrize("name, provider", [
    ("alexnet", "triton"),
    pytest.param("alexnet", "torch", marks=pytest.mark.slow),
    pytest.param("alexnet-torchvision", "triton", marks=pytest.mark.slow),
    pytest.param("alexnet-torchvision", "torch", marks=pytest.mark.slow),
])
def test_full_size_models_trace_to_one_graph_on_meta_tensors(name, provider):
    """The paper's and torchvision's geometry traced on meta tensors (shapes only: the fakes stand in for the
    kernels), since running them in the interpreter takes minutes."""
    model = create_model(name, 1000).to("meta").train()
    images = torch.empty(BATCH, 3, model.input_size, model.input_size, device="meta")
    labels = torch.zeros(BATCH, dtype=torch.int64, device="meta")
    with tritonnet.use_kernels(all=provider):
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(_loss_function(model))(images, labels)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons


@pytest.mark.parametrize("name", ["alexnet", "alexnet-torchvision"])
def test_full_size_models_export_on_meta_tensors_naming_our_ops(name):
    model = create_model(name, 1000).to("meta").eval()
    images = torch.empty(BATCH, 3, model.input_size, model.input_size, device="meta")
    with tritonnet.use_kernels(all="triton"):
        graph = str(torch.export.export(model, (images,)).graph)
    for op in ("conv2d_forward", "max_pool2d_forward", "linear_forward"):
        assert f"tritonnet.{op}" in graph, op
