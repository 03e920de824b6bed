"""What the registered PyTorch operators (``torch.ops.tritonnet.*``) share, and how they are registered.

Each op file registers its kernels' launch functions with :func:`operator` in the ``tritonnet`` namespace, each with
a fake implementation that gives the real op's shapes, dtypes and strides without launching a kernel, and its
``torch.autograd.Function`` calls those ops. So ``torch.compile`` traces a model into one graph, ``torch.export``
names the ops, ``torch.profiler`` shows each as ``tritonnet::<op>``, and ``torch.library.opcheck`` checks them.

How an op is registered depends on where the kernels run (:data:`TRITON_OPS` decides, here only):

- On CUDA, with a torch that has ``torch.library.triton_op`` and ``wrap_triton`` and whose tracing runs an autotuner's
  ``early_config_prune`` (:func:`_torch_traces_our_kernels`), an op is a ``triton_op``: its implementation runs with
  :func:`tritonnet.kernels.runtime.launcher` returning ``wrap_triton(kernel)``, so where torch.compile functionalizes
  a graph (AOTAutograd) the op decomposes into its launches, each a ``triton_kernel_wrapper_functional`` node naming
  its kernel, which Inductor compiles, tunes and schedules with the rest of the graph. ``torch.export`` keeps the op
  itself (recent torch releases do not decompose triton_ops there unless asked). Eager calls launch the kernels
  directly: torch turns wrap_triton off inside a triton_op's own kernel.
- In Triton's interpreter (and with an older torch), an op is an opaque ``torch.library.custom_op``: a graph holds
  ``tritonnet::<op>`` and calls the implementation as it is.

What an implementation may do so that tracing it gives a graph that computes the same: torch ops and launches, and
host code that depends only on shapes, dtypes and the op's arguments. So the dropout seed (a 0-D CPU tensor drawn
anew each call) is copied to the device and loaded by the kernels rather than read on the host, conv's weight
gradient splits its reduction alike for every tile while traced (Inductor, not the launch, picks the tile), and
conv's phase table is a graph constant while traced (a cached device tensor when run).

``cross_entropy_forward`` and ``cross_entropy`` stay opaque custom_ops on CUDA too (:data:`OPAQUE_ON_CUDA`): the
forward kernel counts bad class indices into a per-device record kept between calls (read at the next host
synchronisation, see ``tritonnet/ops/cross_entropy.py``), state outside the op's arguments that a functionalized
graph would copy instead of update.

Schemas have no optional returns: a gradient the caller did not ask for comes back as an empty placeholder
(:func:`placeholder`), which :func:`asked_for` turns back into None.
"""

from __future__ import annotations

import functools

import torch

from tritonnet.kernels import runtime

NAMESPACE = "tritonnet"


def _torch_traces_our_kernels() -> bool:
    """Whether this torch has ``triton_op`` and ``wrap_triton`` and its tracing of a launch runs the autotuner's
    ``early_config_prune``, which the GEMM kernels' tuning uses (kernels/runtime.py: autotune); releases before that
    refuse those kernels."""
    try:
        from torch._higher_order_ops.triton_kernel_wrap import TritonHOPifier
    except ImportError:
        return False
    return (hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")
            and hasattr(TritonHOPifier, "do_prune_configs"))


# Ops registered as triton_ops, visible to Inductor: on CUDA, where torch can trace the kernels.
TRITON_OPS = not runtime.INTERPRET and _torch_traces_our_kernels()
OPAQUE_ON_CUDA = frozenset({"cross_entropy_forward", "cross_entropy"})


def qualified(name: str) -> str:
    """``"tritonnet::<name>"``, the name an op is registered and profiled under."""
    return f"{NAMESPACE}::{name}"


def operator(name: str, *, mutates_args=()):
    """Decorator registering ``implementation`` as ``torch.ops.tritonnet.<name>``: a ``triton_op`` whose launches go
    through ``wrap_triton`` where :data:`TRITON_OPS` holds (and the op is not in :data:`OPAQUE_ON_CUDA`), else a
    ``custom_op``. The schema comes from the implementation's annotations either way."""
    if not TRITON_OPS or name in OPAQUE_ON_CUDA:
        return torch.library.custom_op(qualified(name), mutates_args=mutates_args)

    def register(implementation):
        @functools.wraps(implementation)
        def launching_through_wrap_triton(*args, **kwargs):
            with runtime.launching_through(torch.library.wrap_triton):
                return implementation(*args, **kwargs)

        return torch.library.triton_op(qualified(name), launching_through_wrap_triton, mutates_args=mutates_args)

    return register


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
            if runtime._recording_architecture is not None and not runtime.tracing():
                return implementation(*args, **kwargs)
            return fake(*args, **kwargs)

        op.register_fake(fake_unless_recording)
        return fake

    return decorate
