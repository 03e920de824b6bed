"""tritonnet: neural-network layers as OpenAI Triton kernels, composed into AlexNet.

The repository's ``kernels/`` folder is the subpackage ``tritonnet.kernels``: an installed wheel holds it at
``tritonnet/kernels``, a checkout keeps it beside ``tritonnet/``, where :func:`_bind_checkout_kernels` loads it under
that name (run from a checkout, an editable install of another checkout would otherwise lend its copy). Never import
the folder as a top-level ``kernels``: that name is Hugging Face's kernel hub on PyPI, and a second copy of every
kernel module would keep its own autotune and algorithm state.

Importing tritonnet first imports ``tritonnet.kernels``, which decides GPU or interpreter mode before any kernel is
decorated (see ``kernels/runtime.py``).
"""

import importlib.util
import os
import sys


def _bind_checkout_kernels() -> None:
    """Registers a checkout's ``kernels/`` folder as ``tritonnet.kernels``; an installed wheel needs nothing."""
    package = os.path.dirname(os.path.abspath(__file__))
    folder = os.path.join(os.path.dirname(package), "kernels")
    if "tritonnet.kernels" in sys.modules or os.path.isdir(os.path.join(package, "kernels")):
        return
    spec = importlib.util.spec_from_file_location("tritonnet.kernels", os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules["tritonnet.kernels"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["tritonnet.kernels"]
        raise


_bind_checkout_kernels()

from tritonnet import kernels  # noqa: E402  (sets TRITON_INTERPRET when there is no GPU, before any kernel)
from tritonnet.kernels.runtime import INTERPRET  # noqa: E402
from tritonnet import functional, models, nn  # noqa: E402
from tritonnet.registry import available_kernels, parse_kernels, provider_for, use_kernels  # noqa: E402

__version__ = "0.1.0"

__all__ = ["INTERPRET", "available_kernels", "functional", "kernels", "models", "nn", "parse_kernels", "provider_for",
           "use_kernels"]
