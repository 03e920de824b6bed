"""One training step of the paper's AlexNet in channels-last, as a GPU would run it (recorded on meta tensors in a
GPU-mode process, so nothing full-size runs here): every convolution takes the fast channels-inner walk with unit
channel strides, and the only activation copy in the whole step is the flatten before fc6."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

COPY_OPS = ("aten.clone", "aten._to_copy", "aten.copy_", "aten.contiguous")


def record_step() -> dict:
    """(In a ``TRITON_INTERPRET=0`` process.) The conv launches and the tensor copies of one alexnet training step at
    batch 128 in bf16, channels-last, on sm_90."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from tritonnet.kernels.launches import LaunchRecorder
    from tritonnet.models import create_model
    from tritonnet.registry import lookup

    class CopyLog(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.copies = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            name = str(func.overloadpacket)
            if name in COPY_OPS:
                source = args[1] if name == "aten.copy_" else args[0]
                self.copies.append({"op": name, "shape": list(source.shape), "from": list(source.stride()),
                                    "to": list(result.stride())})
            return result

    dtype = torch.bfloat16
    with torch.device("meta"):
        model = create_model("alexnet", 1000).to(dtype=dtype, memory_format=torch.channels_last).train()
        images = torch.empty(128, 3, 227, 227, dtype=dtype).contiguous(memory_format=torch.channels_last)
        labels = torch.empty(128, dtype=torch.int64)
    log = CopyLog()
    with LaunchRecorder(90) as recorder, log:
        loss = lookup("cross_entropy", "triton")(model(images), labels, None, -100, "mean", 0.0)
        loss.backward()
    convs = []
    for launch in recorder.launches:
        if launch.kernel.startswith("conv2d_"):
            arguments = {argument.name: argument for argument in launch.arguments}
            convs.append({
                "kernel": launch.kernel, "config": launch.configs[0].label, "grid": list(launch.grids[0]),
                "channels_inner": arguments["CHANNELS_INNER"].value,
                "channel_strides": {name: argument.value for name, argument in arguments.items()
                                    if name.endswith("_channel_stride")},
                "window_channels": arguments["in_channels_per_group"].value
                if "in_channels_per_group" in arguments else None})
    return {"convs": convs, "copies": log.copies}


@pytest.fixture(scope="module")
def step():
    from tritonnet.kernels.launches import gpu_mode_environment

    done = subprocess.run([sys.executable, os.path.abspath(__file__)], env=gpu_mode_environment(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_conv_launch_walks_contiguous_channels(step):
    convs = step["convs"]
    kernels = {conv["kernel"] for conv in convs}
    assert kernels == {"conv2d_forward_kernel", "conv2d_input_grad_kernel", "conv2d_weight_grad_kernel"}
    assert len(convs) == 5 + 4 + 5  # conv1 needs no input gradient (the images do not require grad)
    for conv in convs:
        assert set(conv["channel_strides"].values()) == {1}, conv  # specialised to 1: contiguous channel runs
    # conv1 reduces over only 3 input channels: its flat walk covers the 3 x 11 x 11 window in 16-wide chunks
    # (1% padding) where a channels-inner chunk would pad 3 channels to 16. Every other launch walks channels inner.
    flat = [conv for conv in convs if not conv["channels_inner"]]
    assert [conv["kernel"] for conv in flat] == ["conv2d_forward_kernel", "conv2d_weight_grad_kernel"], flat
    # The channels-inner launches keep the large tiles (128 pixels or 128 channels a side), not the 64x64x16
    # gather tile that non-unit channel strides are pruned to.
    assert all("=128," in conv["config"] for conv in convs if conv["channels_inner"]), convs


def test_the_flatten_before_fc6_is_the_only_activation_copy(step):
    assert step["copies"] == [{"op": "aten.clone", "shape": [128, 256, 6, 6], "from": [9216, 1, 1536, 256],
                               "to": [9216, 36, 6, 1]}]


if __name__ == "__main__":
    print(json.dumps(record_step()))
