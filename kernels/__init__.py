"""Pure Triton kernels and the launch functions that size their grids and allocate outputs.

Nothing here imports ``tritonnet``. Importing this package first decides whether kernels run on the GPU or in
Triton's interpreter (see :mod:`kernels.runtime`), because Triton reads ``TRITON_INTERPRET`` when a kernel is
decorated: it must be settled before any kernel module is imported.
"""

from kernels import runtime  # noqa: F401  (must run before any @triton.jit below this package)
