"""nn.Module layers over :mod:`tritonnet.functional`.

Each layer subclasses its ``torch.nn`` twin, so parameters have the same names, shapes and default initialisation
(``weight``, ``bias``), state_dicts move both ways, and optimizers, hooks, DDP and torch.compile treat them as usual.
Only ``forward`` changes: it calls tritonnet's op, with the layer's ``provider`` (None: the registry decides, see
:mod:`tritonnet.registry`). Conv2d and Linear take fusions (``relu=``, ``dropout=``) that their kernels apply in
the epilogue.
"""

from __future__ import annotations

import torch
from torch import nn

from tritonnet import functional as F
from tritonnet.registry import provider_for


class _ProviderMixin:
    """A per-layer provider override, checked when the layer is built."""

    op: str

    def _set_provider(self, provider: str | None) -> None:
        if provider is not None:
            provider_for(self.op, provider)  # raises on an unknown provider, naming it
        self.provider = provider

    def _provider_repr(self) -> str:
        return "" if self.provider is None else f", provider={self.provider!r}"


class Conv2d(_ProviderMixin, nn.Conv2d):
    """``torch.nn.Conv2d`` (zero padding only) with ``relu=True`` fusing the ReLU into the convolution kernel."""

    op = "conv2d"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, *, relu: bool = False, provider: str | None = None,
                 device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         device=device, dtype=dtype)
        self.relu = relu
        self._set_provider(provider)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                        relu=self.relu, provider=self.provider)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", relu=True" if self.relu else "") + self._provider_repr()


class Linear(_ProviderMixin, nn.Linear):
    """``torch.nn.Linear``; ``relu=True`` and ``dropout=p`` apply ``dropout(relu(x W^T + b))`` in the GEMM's
    epilogue (dropout only in training mode)."""

    op = "linear"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, relu: bool = False,
                 dropout: float = 0.0, provider: str | None = None, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.relu = relu
        self.dropout = dropout
        self._set_provider(provider)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear(input, self.weight, self.bias, relu=self.relu, dropout_p=self.dropout,
                        training=self.training, provider=self.provider)

    def extra_repr(self) -> str:
        fused = (", relu=True" if self.relu else "") + (f", dropout={self.dropout}" if self.dropout else "")
        return super().extra_repr() + fused + self._provider_repr()


class LocalResponseNorm(_ProviderMixin, nn.LocalResponseNorm):
    """``torch.nn.LocalResponseNorm`` (alpha is divided by size, as in torch, Caffe and cuda-convnet)."""

    op = "local_response_norm"

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, *,
                 provider: str | None = None):
        super().__init__(size, alpha, beta, k)
        self._set_provider(provider)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.local_response_norm(input, self.size, self.alpha, self.beta, self.k, provider=self.provider)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._provider_repr()


class MaxPool2d(_ProviderMixin, nn.MaxPool2d):
    """``torch.nn.MaxPool2d``."""

    op = "max_pool2d"

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False, *, provider: str | None = None):
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
        self._set_provider(provider)

    def forward(self, input: torch.Tensor):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices, provider=self.provider)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._provider_repr()


class Dropout(_ProviderMixin, nn.Dropout):
    """``torch.nn.Dropout``; the Triton provider stores a seed, not a mask."""

    op = "dropout"

    def __init__(self, p: float = 0.5, inplace: bool = False, *, provider: str | None = None):
        super().__init__(p, inplace)
        self._set_provider(provider)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.dropout(input, self.p, self.training, self.inplace, provider=self.provider)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._provider_repr()


class CrossEntropyLoss(_ProviderMixin, nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` over logits and class indices (no class weights)."""

    op = "cross_entropy"

    def __init__(self, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0, *,
                 provider: str | None = None):
        super().__init__(ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
        self._set_provider(provider)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(input, target, None, self.ignore_index, self.reduction, self.label_smoothing,
                               provider=self.provider)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}" + self._provider_repr()


__all__ = ["Conv2d", "CrossEntropyLoss", "Dropout", "Linear", "LocalResponseNorm", "MaxPool2d"]
