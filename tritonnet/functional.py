"""tritonnet's functional API: the same names and signatures as ``torch.nn.functional`` (plus fusions), so a call
drops in. Every function takes a keyword-only ``provider=`` that overrides the registry for that call.

Each op lives in its own file under ``tritonnet/ops``: its argument checks, its ``"torch"`` reference provider and
its ``"triton"`` provider, a ``torch.autograd.Function`` over registered operators (``torch.ops.tritonnet.*``) that
launch the kernels in ``kernels/``.
"""

from tritonnet.ops.conv import conv2d
from tritonnet.ops.cross_entropy import cross_entropy
from tritonnet.ops.dropout import dropout
from tritonnet.ops.linear import linear
from tritonnet.ops.lrn import local_response_norm
from tritonnet.ops.maxpool import max_pool2d


def conv2d_relu(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, provider=None):
    """``relu(conv2d(...))`` in one kernel: the ReLU is applied to the accumulator before the store."""
    return conv2d(input, weight, bias, stride, padding, dilation, groups, relu=True, provider=provider)


__all__ = ["conv2d", "conv2d_relu", "cross_entropy", "dropout", "linear", "local_response_norm", "max_pool2d"]
