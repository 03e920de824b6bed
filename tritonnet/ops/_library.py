"""What the registered PyTorch operators (``torch.ops.tritonnet.*``) share.

Each op file registers its kernels' launch functions as ``torch.library.custom_op``s in the ``tritonnet`` namespace,
each with a fake implementation that gives the real op's shapes, dtypes and strides without launching a kernel, and
its ``torch.autograd.Function`` calls those ops. So ``torch.compile`` traces a model into one graph (the ops are
opaque nodes, the fakes give their shapes), ``torch.export`` names them, ``torch.profiler`` shows each as
``tritonnet::<op>``, and ``torch.library.opcheck`` checks them.

Schemas have no optional returns: a gradient the caller did not ask for comes back as an empty placeholder
(:func:`placeholder`), which :func:`asked_for` turns back into None.
"""

from __future__ import annotations

import torch

from tritonnet.kernels import runtime

NAMESPACE = "tritonnet"


def qualified(name: str) -> str:
    """``"tritonnet::<name>"``, the name an op is registered and profiled under."""
    return f"{NAMESPACE}::{name}"


def placeholder(reference: torch.Tensor) -> torch.Tensor:
    """An empty tensor standing in for a result that was not asked for."""
    return reference.new_empty(0)


def asked_for(tensor: torch.Tensor, needed: bool) -> torch.Tensor | None:
    """``tensor`` where it was asked for, else None (its :func:`placeholder`)."""
    return tensor if needed else None


def fake_or_recorded(op):
    """Decorator registering a fake implementation for ``op``. While tritonnet.kernels.launches records a step, meta
    tensors stand in for a GPU's and the launch functions must run, since their launches are what is recorded: then the
    op's own implementation runs instead. Tracing (torch.compile, torch.export, opcheck) always gets the fake."""
    implementation = op._init_fn

    def decorate(fake):
        def fake_unless_recording(*args, **kwargs):
            if runtime._recording_architecture is not None and torch._guards.detect_fake_mode() is None:
                return implementation(*args, **kwargs)
            return fake(*args, **kwargs)

        op.register_fake(fake_unless_recording)
        return fake

    return decorate
