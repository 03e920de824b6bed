"""One file per op family: argument checks, the public function that dispatches through the registry, the
``"torch"`` reference provider and the ``"triton"`` provider (a ``torch.autograd.Function`` over the registered
operators ``torch.ops.tritonnet.*`` that wrap ``kernels``; see _library.py)."""
