"""nn.Module layers over :mod:`tritonnet.functional`.

Each layer subclasses its ``torch.nn`` twin, so parameters have the same names, shapes and default initialisation
(``weight``, ``bias``), state_dicts move both ways, and optimizers, hooks, DDP and torch.compile treat them as usual.
Only ``forward`` changes: it calls tritonnet's op, with the layer's ``provider`` (None: the registry decides, see
:mod:`tritonnet.registry`). Conv2d and Linear take fusions (``relu=``, ``dropout=``) that their kernels apply in
the epilogue.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tritonnet import functional as F
from tritonnet.registry import provider_for


class _ProviderMixin:
    """A per-layer provider override, checked when the layer is built."""

    op: str

    def _set_provider(self, provider: str | None) -> None:
        provider_for(self.op, provider)  # raises on an unknown provider, naming it; reads the environment
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
    """``torch.nn.CrossEntropyLoss``: logits against class indices or class probabilities, with optional class
    ``weight`` (a buffer, as in torch, so state_dicts match)."""

    op = "cross_entropy"

    def __init__(self, weight: torch.Tensor | None = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0, *, provider: str | None = None):
        super().__init__(weight=weight, ignore_index=ignore_index, reduction=reduction,
                         label_smoothing=label_smoothing)
        self._set_provider(provider)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing,
                               provider=self.provider)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}" + self._provider_repr()


class TorchConv2d(nn.Conv2d):
    """Plain PyTorch twin of :class:`Conv2d` (cuDNN convolution, then ``torch.relu``); same parameters."""

    def __init__(self, *args, relu: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.relu = relu

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        output = super().forward(input)
        return torch.relu(output) if self.relu else output


class TorchLinear(nn.Linear):
    """Plain PyTorch twin of :class:`Linear` (cuBLAS GEMM, then ``torch.relu`` and ``torch.nn.functional.dropout``)."""

    def __init__(self, *args, relu: bool = False, dropout: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.relu = relu
        self.dropout = dropout

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        output = super().forward(input)
        if self.relu:
            output = torch.relu(output)
        return torch.nn.functional.dropout(output, self.dropout, self.training) if self.dropout else output


def _same_state(twin: nn.Module, layer: nn.Module) -> nn.Module:
    """``twin`` with ``layer``'s state_dict, ``requires_grad`` flags and training mode."""
    twin.load_state_dict(layer.state_dict())
    for twin_parameter, parameter in zip(twin.parameters(), layer.parameters()):
        twin_parameter.requires_grad_(parameter.requires_grad)
    return twin.train(layer.training)


def _torch_layer(layer: nn.Module) -> nn.Module | None:
    weight = getattr(layer, "weight", None)
    like = {"device": None, "dtype": None} if weight is None else {"device": weight.device, "dtype": weight.dtype}
    if isinstance(layer, Conv2d):
        twin = TorchConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                           layer.dilation, layer.groups, layer.bias is not None, relu=layer.relu, **like)
    elif isinstance(layer, Linear):
        twin = TorchLinear(layer.in_features, layer.out_features, layer.bias is not None, relu=layer.relu,
                           dropout=layer.dropout, **like)
    elif isinstance(layer, LocalResponseNorm):
        twin = nn.LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k)
    elif isinstance(layer, MaxPool2d):
        twin = nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.return_indices,
                            layer.ceil_mode)
    elif isinstance(layer, Dropout):
        twin = nn.Dropout(layer.p, layer.inplace)
    elif isinstance(layer, CrossEntropyLoss):
        twin = nn.CrossEntropyLoss(weight=layer.weight, ignore_index=layer.ignore_index, reduction=layer.reduction,
                                   label_smoothing=layer.label_smoothing)
    else:
        return None
    return _same_state(twin, layer)


def to_torch(module: nn.Module) -> nn.Module:
    """A copy of ``module`` built from plain ``torch.nn`` layers only (no registry, no Triton): "the same net in
    eager PyTorch", with the same state_dict keys and values, for benchmarks and torch.compile baselines."""
    twin = _torch_layer(module)
    if twin is not None:
        return twin
    twin = copy.deepcopy(module)
    for name, child in list(twin.named_modules()):
        replacement = _torch_layer(child)
        if replacement is not None and name:
            parent_name, _, attribute = name.rpartition(".")
            setattr(twin.get_submodule(parent_name), attribute, replacement)
    return twin


def _tritonnet_layer(layer: nn.Module, relu: bool = False) -> nn.Module | None:
    """Our twin of a plain ``torch.nn`` layer (same arguments and state_dict), ``relu=True`` folding a following
    ``nn.ReLU`` into conv2d or linear; None for a layer we have no kernel for (or one of ours already)."""
    if isinstance(layer, _ProviderMixin):
        return None
    weight = getattr(layer, "weight", None)
    like = {} if weight is None else {"device": weight.device, "dtype": weight.dtype}
    if isinstance(layer, nn.Conv2d) and not isinstance(layer, TorchConv2d):
        if layer.padding_mode != "zeros":
            return None  # reflect/replicate/circular padding: tritonnet's conv2d pads with zeros only
        twin = Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                      layer.dilation, layer.groups, layer.bias is not None, relu=relu, **like)
    elif isinstance(layer, nn.Linear) and not isinstance(layer, TorchLinear):
        twin = Linear(layer.in_features, layer.out_features, layer.bias is not None, relu=relu, **like)
    elif isinstance(layer, nn.LocalResponseNorm):
        twin = LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k)
    elif isinstance(layer, nn.MaxPool2d):
        twin = MaxPool2d(layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.return_indices,
                         layer.ceil_mode)
    elif isinstance(layer, nn.Dropout):
        twin = Dropout(layer.p, layer.inplace)
    elif isinstance(layer, nn.CrossEntropyLoss):
        twin = CrossEntropyLoss(layer.weight, layer.ignore_index, layer.reduction, layer.label_smoothing)
    else:
        return None
    return _same_state(twin, layer)


def _swap_children(module: nn.Module) -> None:
    """Replace, depth first, every child of ``module`` that has a tritonnet twin. Inside an ``nn.Sequential`` a
    conv2d or linear directly followed by ``nn.ReLU`` takes the ReLU into its kernel and the ReLU's slot becomes
    ``nn.Identity`` (it has no parameters, so state_dict keys do not change). Elsewhere the data flow is the module's
    own ``forward``, which we cannot see, so nothing is fused."""
    names = list(module._modules)
    folded = set()
    for position, name in enumerate(names):
        child = module._modules[name]
        if child is None or name in folded:
            continue
        following = module._modules[names[position + 1]] if position + 1 < len(names) else None
        fuse = (isinstance(module, nn.Sequential) and isinstance(following, nn.ReLU)
                and isinstance(child, (nn.Conv2d, nn.Linear)))
        twin = _tritonnet_layer(child, relu=fuse)
        if twin is None:
            _swap_children(child)
            continue
        module._modules[name] = twin
        if fuse and twin.relu:
            module._modules[names[position + 1]] = nn.Identity()
            folded.add(names[position + 1])


def from_torch(module: nn.Module, inplace: bool = False) -> nn.Module:
    """``module`` with tritonnet's layers in place of ``torch.nn``'s: ``Conv2d`` (zero padding), ``Linear``,
    ``MaxPool2d``, ``LocalResponseNorm``, ``Dropout`` and ``CrossEntropyLoss``, anywhere in the module tree. A
    ``nn.ReLU`` right after a conv or linear in an ``nn.Sequential`` is folded into that layer's kernel
    (``relu=True``). Everything else (BatchNorm, pooling of other kinds, activations elsewhere) is left as it is.
    The state_dict keys and values are unchanged and the outputs equal the original's, so this is the one-liner for
    "run my model on tritonnet's kernels" (then swap providers per op with :func:`tritonnet.use_kernels`, or profile).

    ``inplace=False`` (the default) returns a converted deep copy; ``inplace=True`` converts ``module`` itself and
    returns it (a bare layer, having no parent to be swapped in, is always returned as a new object). The inverse is
    :func:`to_torch`."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    twin = _tritonnet_layer(module)
    if twin is not None:
        return twin
    converted = module if inplace else copy.deepcopy(module)
    _swap_children(converted)
    return converted


__all__ = ["Conv2d", "CrossEntropyLoss", "Dropout", "Linear", "LocalResponseNorm", "MaxPool2d", "TorchConv2d",
           "TorchLinear", "from_torch", "to_torch"]
