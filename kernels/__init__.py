"""Pure Triton kernels and the launch functions that size their grids and allocate outputs: the package
``tritonnet.kernels`` (this folder is installed under that name; see ``tritonnet/__init__.py``).

Nothing here imports the rest of tritonnet, except the launch recorder, which builds the models it records. Importing
this package first decides whether kernels run on the GPU or in Triton's interpreter (see :mod:`.runtime`), because
Triton reads ``TRITON_INTERPRET`` when a kernel is decorated: it must be settled before any kernel module is imported.
"""

from . import runtime  # noqa: F401  (must run before any @triton.jit below this package)
