"""On CUDA the ops are ``torch.library.triton_op``s: AOTAutograd (torch.compile's tracer) decomposes each into its
Triton launches, the ``triton_kernel_wrapper_functional`` nodes Inductor compiles, so no opaque ``tritonnet::*``
node is left but those of the ops that stay custom_ops on CUDA (tritonnet/ops/_library.py says why). In the
interpreter every op is an opaque custom_op.

This machine may have no GPU: a ``TRITON_INTERPRET=0`` child process traces alexnet-small's training step on meta
tensors under FakeTensorMode (nothing launches), with the launch recorder's stand-in architecture in place of a CUDA
device's, and reports the graphs' nodes."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from kernels.launches import gpu_mode_environment
from tritonnet.ops._library import OPAQUE_ON_CUDA, TRITON_OPS

# The kernels of alexnet-small's step on a GPU that the ops converted to triton_ops launch (the linear and dropout
# kernels and the cross-entropy forward belong to ops that stay opaque).
TRACED_KERNELS = {"conv2d_forward_kernel", "conv2d_input_grad_kernel", "conv2d_weight_grad_kernel",
                  "lrn_forward_kernel", "lrn_backward_kernel", "max_pool2d_forward_kernel",
                  "max_pool2d_backward_kernel", "cross_entropy_backward_kernel"}


def _capturing(graphs: list):
    """An AOTAutograd compiler that keeps each graph it is given and runs it as it is."""
    from torch._functorch.aot_autograd import make_boxed_func

    def capture(graph_module, example_inputs):
        graphs.append(graph_module)
        return make_boxed_func(graph_module)

    return capture


def _traced_training_step() -> dict:
    """The kernels named by the wrapper nodes and the tritonnet ops left in alexnet-small's forward and backward
    graphs as AOTAutograd traces them (call in a ``TRITON_INTERPRET=0`` process)."""
    from torch._functorch.aot_autograd import aot_function
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
    from torch._subclasses.fake_tensor import FakeTensorMode

    from kernels import runtime
    from tritonnet.models import create_model
    from tritonnet.registry import lookup

    graphs = []
    runtime.set_recording_architecture(runtime.ARCHITECTURES[90])
    with FakeTensorMode(allow_non_fake_inputs=True):
        with torch.device("meta"):
            model = create_model("alexnet-small", 10).train()
            images = torch.empty(2, 3, model.input_size, model.input_size)
            labels = torch.zeros(2, dtype=torch.int64)
        parameters = dict(model.named_parameters())

        def loss(parameters, images, labels):
            logits = torch.func.functional_call(model, parameters, (images,))
            return lookup("cross_entropy", "triton")(logits, labels, None, -100, "mean", 0.0)

        loss = aot_function(loss, fw_compiler=_capturing(graphs), bw_compiler=_capturing(graphs))(parameters, images,
                                                                                                labels)
    loss.backward()  # outside the mode: the backward graph, compiled now, is copied with its constants (real tensors)
    kernels, ops = set(), set()
    for graph_module in graphs:
        for node in graph_module.graph.nodes:
            if node.target is torch.ops.higher_order.triton_kernel_wrapper_functional:
                kernels.add(kernel_side_table.get_kernel(node.kwargs["kernel_idx"]).fn.__name__)
            elif isinstance(node.target, torch._ops.OpOverload) and node.target.namespace == "tritonnet":
                ops.add(node.target._opname)
    return {"graphs": len(graphs), "kernels": sorted(kernels), "ops": sorted(ops)}


def test_interpreter_ops_stay_opaque_under_aot_autograd():
    from torch._functorch.aot_autograd import aot_function

    assert not TRITON_OPS
    graphs = []
    pool = lambda input: torch.ops.tritonnet.max_pool2d_forward(  # noqa: E731
        input, [2, 2], [2, 2], [0, 0], [1, 1], False, False, False)[0]
    aot_function(pool, fw_compiler=_capturing(graphs))(torch.randn(1, 2, 4, 4))
    assert "torch.ops.tritonnet.max_pool2d_forward" in graphs[0].code


def test_gpu_training_step_traces_to_triton_kernels_but_for_the_opaque_ops():
    done = subprocess.run([sys.executable, "-m", "tests.test_triton_ops"], env=gpu_mode_environment(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-8000:]
    traced = json.loads(done.stdout.splitlines()[-1])
    assert traced["graphs"] == 2  # forward and backward
    assert TRACED_KERNELS <= set(traced["kernels"]), traced
    assert set(traced["ops"]) <= OPAQUE_ON_CUDA, traced


if __name__ == "__main__":
    print(json.dumps(_traced_training_step()))
