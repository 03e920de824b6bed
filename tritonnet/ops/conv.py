"""2-D convolution (cross-correlation, as torch) with bias and an optional fused ReLU."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonnet.ops._checks import as_pair, check_int, check_like, check_tensor
from tritonnet.registry import lookup, register

OP = "conv2d"


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1, *, relu: bool = False, provider: str | None = None) -> torch.Tensor:
    """``torch.nn.functional.conv2d``; with ``relu=True`` returns ``relu(conv2d(...))`` computed in one kernel.

    ``input`` is (N, C_in, H, W) or (C_in, H, W); ``weight`` is (C_out, C_in / groups, kH, kW).
    """
    check_tensor("input", input, ndim=(3, 4), layout="N, C_in, H, W or C_in, H, W")
    check_tensor("weight", weight, ndim=4, layout="C_out, C_in / groups, kH, kW")
    check_like("weight", weight, "input", input)
    groups = check_int("groups", groups, minimum=1)
    out_channels, channels_per_group = weight.shape[0], weight.shape[1]
    in_channels = input.shape[-3]
    if out_channels % groups != 0:
        raise ValueError(f"weight's out channels ({out_channels}) must be divisible by groups ({groups})")
    if in_channels != channels_per_group * groups:
        raise ValueError(f"input has {in_channels} channels but weight expects {channels_per_group} x groups "
                         f"({groups}) = {channels_per_group * groups}")
    if bias is not None:
        check_tensor("bias", bias, ndim=1, layout="C_out")
        check_like("bias", bias, "input", input)
        if bias.shape[0] != out_channels:
            raise ValueError(f"bias must have {out_channels} elements (weight's out channels), got {bias.shape[0]}")
    stride = as_pair("stride", stride, minimum=1)
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise ValueError("padding='same' needs stride 1, as in torch")
            padding = "same"
        else:
            raise ValueError(f"padding must be an int, a pair of ints, 'valid' or 'same'; got {padding!r}")
    else:
        padding = as_pair("padding", padding, minimum=0)
    dilation = as_pair("dilation", dilation, minimum=1)
    if not isinstance(relu, bool):
        raise TypeError(f"relu must be a bool, got {relu!r}")
    if padding != "same":
        for axis, name in enumerate(("height", "width")):
            extent = input.shape[-2 + axis] + 2 * padding[axis]
            window = dilation[axis] * (weight.shape[2 + axis] - 1) + 1
            if extent < window:
                raise ValueError(f"kernel {name} ({weight.shape[2 + axis]}) is larger than the padded input {name} "
                                 f"({extent})")
    return lookup(OP, provider)(input, weight, bias, stride, padding, dilation, groups, relu)


@register(OP, "torch")
def torch_conv2d(input, weight, bias, stride, padding, dilation, groups, relu):
    output = F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    return F.relu(output) if relu else output
