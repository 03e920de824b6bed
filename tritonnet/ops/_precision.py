"""The dtypes the matmul-like ops (conv2d, linear) compute in: autocast, and the interpreter's bf16.

- Under ``torch.autocast`` torch casts conv2d's and linear's floating-point operands (except fp64) to the autocast
  dtype. Our autograd Functions are not torch ops, so autocast never sees them: :func:`autocast_operands` does the
  same cast at the top of the public functions, so ``--amp`` runs the Triton kernels in bf16/fp16 as it runs
  torch's. Max-pool and dropout follow their input's dtype, as torch's do under autocast; LRN returns the dtype
  torch's returns (fp32 for some inputs, see tritonnet/ops/lrn.py).
- Triton's interpreter multiplies bf16 ``tl.dot`` operands wrongly (triton 3.9: errors around 1e11 on values near
  1). :func:`computes_in_fp32` says when the providers run a bf16 call in fp32 and round the result to bf16
  (``runtime.ALGORITHMS.bf16_through_fp32``: in the interpreter), so CPU runs give right answers (more precise than
  a GPU's bf16 GEMM); on a GPU bf16 runs natively.
"""

from __future__ import annotations

import torch

from tritonnet.kernels.runtime import ALGORITHMS


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type``; never for a device autocast does not know (meta tensors, which
    trace a model's shapes without computing it)."""
    return device_type != "meta" and torch.is_autocast_enabled(device_type)


def autocast_operands(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """``tensors`` cast as torch's autocast casts a conv2d's or linear's operands on their device: floating-point
    tensors other than fp64 go to the autocast dtype. Unchanged outside autocast."""
    device_type = next(tensor.device.type for tensor in tensors if tensor is not None)
    if not autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(tensor.to(dtype) if tensor is not None and tensor.is_floating_point()
                 and tensor.dtype != torch.float64 else tensor for tensor in tensors)


def computes_in_fp32(dtype: torch.dtype, *, bf16_through_fp32: bool = ALGORITHMS.bf16_through_fp32) -> bool:
    """Whether a matmul-like op in this ``dtype`` runs in fp32 (bf16 with ``bf16_through_fp32``; see above)."""
    return bf16_through_fp32 and dtype == torch.bfloat16


def in_fp32(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """``tensors`` in fp32 (autograd carries the gradients back through the cast)."""
    return tuple(None if tensor is None else tensor.float() for tensor in tensors)
