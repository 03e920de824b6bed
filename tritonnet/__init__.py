"""tritonnet: neural-network layers as OpenAI Triton kernels, composed into AlexNet.

Importing tritonnet first imports ``kernels``, which decides GPU or interpreter mode before any kernel is
decorated (see ``kernels/runtime.py``).
"""

import kernels  # noqa: F401  (sets TRITON_INTERPRET when there is no GPU, before any kernel is decorated)
from kernels.runtime import INTERPRET
from tritonnet import functional, models, nn
from tritonnet.registry import available_kernels, parse_kernels, provider_for, use_kernels

__version__ = "0.1.0"

__all__ = ["INTERPRET", "available_kernels", "functional", "models", "nn", "parse_kernels", "provider_for",
           "use_kernels"]
