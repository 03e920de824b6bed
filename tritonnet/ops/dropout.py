"""Dropout: zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

As torch does: with ``training=False``, ``p == 0`` or an empty input, the input itself is returned; ``p == 1`` gives
zeros (times the input, so NaN stays NaN); ``inplace=True`` writes into the input and returns it, and autograd
refuses it on a leaf that requires grad.

The ``"triton"`` provider draws one seed per call from torch's default generator (:func:`draw_seed`, so
``torch.manual_seed`` reproduces a run) and saves only that seed and ``p`` for the backward, which regenerates the
mask (the scheme is in ``kernels/dropout.py``). The mask is a function of the seed and each element's logical
(row-major) index, so it is the same for an element whatever the layout of the input or of the gradient the backward
receives. Any strides are read in place (no copy), and the output has the input's memory format, as torch's has.
The backward is dropout of the gradient with the same seed, itself differentiable: double backward works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonnet.kernels.dropout import apply_dropout
from tritonnet.ops._checks import check_float, check_tensor
from tritonnet.ops._library import fake_or_recorded, operator
from tritonnet.registry import lookup, register

OP = "dropout"


def draw_seed() -> torch.Tensor:
    """A Philox seed for one dropout call, a 0-D int64 CPU tensor drawn from torch's default CPU generator, so
    ``torch.manual_seed`` reproduces a run (on every device) and the backward regenerates the forward's mask from it.
    A tensor, not an int: under ``torch.compile`` it is drawn in the graph, anew on every call, and reaches the ops
    as an argument (an int would be read once at trace time and baked into the graph)."""
    return torch.randint(0, 2**31 - 1, (), dtype=torch.int64)


def seed_on(seed: torch.Tensor, device: torch.device) -> torch.Tensor:
    """:func:`draw_seed`'s tensor on ``device``, where the kernels load it (a copy that does not wait for the device;
    a tensor, so a traced graph carries it as data). Refused under CUDA-graph capture: a captured copy would replay
    the seed drawn at capture, the same mask on every replay."""
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        raise RuntimeError("tritonnet's dropout cannot be captured in a CUDA graph: its seed is drawn on the host, so "
                           "every replay would drop the same elements; use provider='torch' for dropout under CUDA "
                           "graphs")
    return seed.to(device, non_blocking=True)


def dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
            *, provider: str | None = None) -> torch.Tensor:
    """``torch.nn.functional.dropout`` with a choice of provider."""
    check_tensor("input", input)
    p = check_float("p", p, minimum=0.0, maximum=1.0)
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {training!r}")
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace must be a bool, got {inplace!r}")
    return lookup(OP, provider)(input, p, training, inplace)


@register(OP, "torch")
def torch_dropout(input, p, training, inplace):
    return F.dropout(input, p, training, inplace)


@operator("dropout", mutates_args=())
def dropout_op(input: torch.Tensor, p: float, seed: torch.Tensor) -> torch.Tensor:
    """``torch.ops.tritonnet.dropout``: ``input * keep(seed) / (1 - p)``
    (:func:`tritonnet.kernels.dropout.apply_dropout`, 0 < p <= 1), ``seed`` from :func:`draw_seed`. Differentiable:
    its backward is itself with the same seed."""
    return apply_dropout(input, p, seed_on(seed, input.device))


@fake_or_recorded(dropout_op)
def _dropout_fake(input, p, seed):
    return torch.empty_like(input)


@operator("dropout_", mutates_args=("input",))
def dropout_in_place_op(input: torch.Tensor, p: float, seed: torch.Tensor) -> None:
    """``torch.ops.tritonnet.dropout_``: :func:`dropout_op` written into ``input``."""
    apply_dropout(input, p, seed_on(seed, input.device), inplace=True)


@fake_or_recorded(dropout_in_place_op)
def _dropout_in_place_fake(input, p, seed):
    return None


def _dropout_context(ctx, inputs, output):
    _, ctx.p, ctx.seed = inputs  # the seed, a 0-D CPU tensor, is kept as an attribute: nothing is saved


def _dropout_backward(ctx, grad_output):
    return dropout_op(grad_output, ctx.p, ctx.seed), None, None


dropout_op.register_autograd(_dropout_backward, setup_context=_dropout_context)


class DropoutMaskFunction(torch.autograd.Function):
    """``input * keep(seed) / (1 - p)``. Linear in the input, so its backward is the same function of the gradient,
    with the same seed: only ``p`` and the seed are kept, and higher derivatives work too."""

    @staticmethod
    def forward(ctx, input, p, seed, inplace):
        ctx.p, ctx.seed = p, seed
        if not inplace:
            return dropout_op(input, p, seed)
        ctx.mark_dirty(input)
        dropout_in_place_op(input, p, seed)
        return input

    @staticmethod
    def backward(ctx, grad_output):
        return dropout_op(grad_output, ctx.p, ctx.seed), None, None, None


@register(OP, "triton")
def triton_dropout(input, p, training, inplace):
    if not training or p == 0 or input.numel() == 0:
        return input
    return DropoutMaskFunction.apply(input, p, draw_seed(), inplace)
