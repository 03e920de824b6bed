"""On CUDA the ops are ``torch.library.triton_op``s: AOTAutograd (torch.compile's tracer) decomposes each into its
Triton launches, the ``triton_kernel_wrapper_functional`` nodes Inductor compiles, so no opaque ``tritonnet::*``
node is left but those of the ops that stay custom_ops on CUDA (tritonnet/ops/_library.py says why). In the
interpreter every op is an opaque custom_op.

This machine may have no GPU: a ``TRITON_INTERPRET=0`` child process traces alexnet-small's training step, and the
dropout ops it does not use, on meta tensors under FakeTensorMode (nothing launches), with the launch recorder's
stand-in architecture in place of a CUDA device's, and reports the graphs' nodes."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from tritonnet.kernels.launches import gpu_mode_environment
from tritonnet.ops._library import OPAQUE_ON_CUDA, TRITON_OPS

# The kernels alexnet-small's step launches on a GPU but the cross-entropy forward's, whose op stays opaque.
TRACED_KERNELS = {"conv2d_forward_kernel", "conv2d_input_grad_kernel", "conv2d_weight_grad_kernel",
                  "lrn_forward_kernel", "lrn_backward_kernel", "max_pool2d_forward_kernel",
                  "max_pool2d_backward_kernel", "linear_forward_kernel", "linear_grad_input_kernel",
                  "linear_grad_weight_kernel", "cross_entropy_backward_kernel"}


def _capturing(graphs: list):
    """An AOTAutograd compiler that keeps each graph it is given and runs it as it is."""
    from torch._functorch.aot_autograd import make_boxed_func

    def capture(graph_module, example_inputs):
        graphs.append(graph_module)
        return make_boxed_func(graph_module)

    return capture


def _traced(loss_function, inputs: list) -> dict:
    """The kernels named by the wrapper nodes and the tritonnet ops left in the forward and backward graphs of
    ``loss_function(*inputs)`` as AOTAutograd traces them. ``inputs`` are meta tensors (or lists and dicts of them)
    made under the fake mode in force."""
    from torch._functorch.aot_autograd import aot_function
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table

    graphs = []
    loss = aot_function(loss_function, fw_compiler=_capturing(graphs), bw_compiler=_capturing(graphs))(*inputs)
    with torch._subclasses.fake_tensor.unset_fake_temporarily():
        loss.backward()  # the backward graph, compiled now, is copied with its constants: real tensors
    kernels, ops = set(), set()
    for graph_module in graphs:
        for node in graph_module.graph.nodes:
            if node.target is torch.ops.higher_order.triton_kernel_wrapper_functional:
                kernels.add(kernel_side_table.get_kernel(node.kwargs["kernel_idx"]).fn.__name__)
            elif isinstance(node.target, torch._ops.OpOverload) and node.target.namespace == "tritonnet":
                ops.add(node.target._opname)
    return {"graphs": len(graphs), "kernels": sorted(kernels), "ops": sorted(ops)}


def _traced_cases() -> dict:
    """:func:`_traced` for alexnet-small's training step and for the dropout ops it does not use (standalone, in place,
    and a linear layer's without ReLU), on the launch recorder's stand-in for an H200 (call in a
    ``TRITON_INTERPRET=0`` process)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from tritonnet.kernels import runtime
    from tritonnet import functional as F
    from tritonnet.models import create_model
    from tritonnet.registry import lookup

    runtime.set_recording_architecture(runtime.ARCHITECTURES[90])
    with FakeTensorMode(allow_non_fake_inputs=True):
        with torch.device("meta"):
            model = create_model("alexnet-small", 10).train()
            images = torch.empty(2, 3, model.input_size, model.input_size)
            labels = torch.zeros(2, dtype=torch.int64)
            weight = torch.empty(8, 16, requires_grad=True)
            input = torch.empty(4, 16, requires_grad=True)

        def training_loss(parameters, images, labels):
            logits = torch.func.functional_call(model, parameters, (images,))
            return lookup("cross_entropy", "triton")(logits, labels, None, -100, "mean", 0.0)

        def dropouts_loss(weight, input):
            hidden = F.linear(input, weight, dropout_p=0.5, provider="triton")
            return (F.dropout(hidden, 0.5, provider="triton").sum()
                    + F.dropout(hidden * 2, 0.25, inplace=True, provider="triton").sum())

        return {"alexnet-small": _traced(training_loss, [dict(model.named_parameters()), images, labels]),
                "dropouts": _traced(dropouts_loss, [weight, input])}


def test_interpreter_ops_stay_opaque_under_aot_autograd():
    from torch._functorch.aot_autograd import aot_function

    assert not TRITON_OPS
    graphs = []
    pool = lambda input: torch.ops.tritonnet.max_pool2d_forward(  # noqa: E731
        input, [2, 2], [2, 2], [0, 0], [1, 1], False, False, False)[0]
    aot_function(pool, fw_compiler=_capturing(graphs))(torch.randn(1, 2, 4, 4))
    assert "torch.ops.tritonnet.max_pool2d_forward" in graphs[0].code


def test_gpu_steps_trace_to_triton_kernels_but_for_the_opaque_ops():
    done = subprocess.run([sys.executable, "-m", "tests.test_triton_ops"], env=gpu_mode_environment(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-8000:]
    traced = json.loads(done.stdout.splitlines()[-1])
    assert [case["graphs"] for case in traced.values()] == [2, 2]  # forward and backward
    step, dropouts = traced["alexnet-small"], traced["dropouts"]
    assert TRACED_KERNELS <= set(step["kernels"]), step
    assert set(step["ops"]) <= OPAQUE_ON_CUDA, step
    assert {"dropout_kernel", "linear_forward_kernel", "linear_dropout_grad_kernel"} <= set(dropouts["kernels"])
    assert dropouts["ops"] == [], dropouts


if __name__ == "__main__":
    print(json.dumps(_traced_cases()))
