"""AlexNet variants built from tritonnet layers.

- :func:`alexnet`: the paper's net (Krizhevsky, Sutskever, Hinton, NIPS 2012): LRN, groups=2 on conv2/4/5 (the
  paper's two GPUs), ReLU -> LRN -> max-pool, dropout 0.5 after fc6 and fc7, the paper's initialisation, 227x227
  input. 60,965,224 parameters at 1000 classes.
- :func:`alexnet_torchvision`: torchvision's layer shapes ("one weird trick": no LRN, no groups), with torchvision's
  state_dict keys, so its checkpoints load with ``strict=True``. 61,100,840 parameters.
- :func:`alexnet_small`: the same layer types sized for 32x32 inputs (the CPU demo and the tests).

Fused forms are used where they exist: conv+ReLU in one kernel, linear+ReLU+dropout in one kernel.

On a GPU the nets run channels-last: ``model.to(memory_format=torch.channels_last)`` makes every conv weight
channels-last (torch converts 4-D parameters), and channels-last images then stay channels-last through the
features; the outputs and gradients are the contiguous net's.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from tritonnet.nn import Conv2d, Dropout, Linear, LocalResponseNorm, MaxPool2d

# LRN as released by the paper's authors: b = a / (k + alpha / n * sum a^2)^beta with n=5, alpha=1e-4, beta=0.75,
# k=2. The paper writes alpha without the 1/n; cuda-convnet2 (layer.py: `scale /= size`) and Caffe divide by n, as
# torch does. We follow the released code: torch's LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2).
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


class AlexNet(nn.Module):
    """``features`` (convolutions), flatten, ``classifier`` (fully connected); ``input_size`` is the side of the
    square input the net is built for."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, input_size: int,
                 avgpool: nn.Module | None = None):
        super().__init__()
        self.features = features
        if avgpool is not None:
            self.avgpool = avgpool
        self.classifier = classifier
        self.input_size = input_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images)
        if hasattr(self, "avgpool"):
            features = self.avgpool(features)
        # The one activation copy of a channels-last net, on purpose: fc6's weight columns are in (channel, h, w)
        # order, the order of torch's and torchvision's checkpoints, so the NHWC features are flattened in NCHW order
        # (torch.flatten copies a channels-last tensor; it is a view of a contiguous one).
        return self.classifier(torch.flatten(features, 1))


def _paper_features(widths: tuple[int, int, int, int, int], first_kernel: int, first_stride: int,
                    first_padding: int, second_kernel: int) -> nn.Sequential:
    c1, c2, c3, c4, c5 = widths
    return nn.Sequential(OrderedDict([
        ("conv1", Conv2d(3, c1, first_kernel, stride=first_stride, padding=first_padding, relu=True)),
        ("lrn1", LocalResponseNorm(LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K)),
        ("pool1", MaxPool2d(3, 2)),
        ("conv2", Conv2d(c1, c2, second_kernel, padding=second_kernel // 2, groups=2, relu=True)),
        ("lrn2", LocalResponseNorm(LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K)),
        ("pool2", MaxPool2d(3, 2)),
        ("conv3", Conv2d(c2, c3, 3, padding=1, relu=True)),
        ("conv4", Conv2d(c3, c4, 3, padding=1, groups=2, relu=True)),
        ("conv5", Conv2d(c4, c5, 3, padding=1, groups=2, relu=True)),
        ("pool5", MaxPool2d(3, 2)),
    ]))


def _paper_classifier(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("fc6", Linear(in_features, hidden, relu=True, dropout=dropout)),
        ("fc7", Linear(hidden, hidden, relu=True, dropout=dropout)),
        ("fc8", Linear(hidden, num_classes)),
    ]))


def _check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")


@torch.no_grad()
def paper_init(model: AlexNet) -> AlexNet:
    """The paper's initialisation (section 5): weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden
    fully connected layers (fc6, fc7), 0 elsewhere. (Caffe reports a flat loss with bias 1 and uses 0.1.)"""
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    for name, layer in [*model.features.named_children(), *model.classifier.named_children()]:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(layer.weight, 0.0, 0.01)
            nn.init.constant_(layer.bias, 1.0 if name in ones else 0.0)
    return model


@torch.no_grad()
def he_init(model: nn.Module) -> nn.Module:
    """He (Kaiming) normal initialisation for ReLU layers and zero biases; the last layer gets std 0.01 so the
    first predictions are near uniform. Trains a small net from scratch in a few hundred steps, which the paper's
    N(0, 0.01) does not."""
    layers = [module for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    for layer in layers:
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)
    nn.init.normal_(layers[-1].weight, 0.0, 0.01)
    return model


def alexnet(num_classes: int = 1000, dropout: float = 0.5) -> AlexNet:
    """The paper's AlexNet for 227x227 inputs."""
    _check_num_classes(num_classes)
    model = AlexNet(_paper_features((96, 256, 384, 384, 256), 11, 4, 0, 5),
                    _paper_classifier(256 * 6 * 6, 4096, num_classes, dropout), input_size=227)
    return paper_init(model)


def alexnet_small(num_classes: int = 10, dropout: float = 0.5) -> AlexNet:
    """AlexNet's layer types and order (LRN, groups=2, overlapping pools, fused fc+ReLU+dropout) sized for 32x32
    inputs: 32x32 -> conv1 5x5 -> pool 15x15 -> conv2 -> pool 7x7 -> conv3-5 -> pool 3x3 -> 256 -> 256 -> classes.
    He initialisation (see :func:`he_init`)."""
    _check_num_classes(num_classes)
    model = AlexNet(_paper_features((32, 64, 96, 96, 64), 5, 1, 2, 5),
                    _paper_classifier(64 * 3 * 3, 256, num_classes, dropout), input_size=32)
    return he_init(model)


def alexnet_torchvision(num_classes: int = 1000, dropout: float = 0.5) -> AlexNet:
    """torchvision's AlexNet (no LRN, no groups, 64-192-384-256-256, dropout before fc6 and fc7, adaptive average
    pool to 6x6) with the same state_dict keys. ReLUs are fused into the preceding layers; ``nn.Identity`` holds
    their places in the Sequentials so the parameter indices (features.0, .3, .6, .8, .10; classifier.1, .4, .6)
    match torchvision's. The adaptive average pool is torch's (an identity at 224x224 input)."""
    _check_num_classes(num_classes)
    features = nn.Sequential(
        Conv2d(3, 64, 11, stride=4, padding=2, relu=True), nn.Identity(), MaxPool2d(3, 2),
        Conv2d(64, 192, 5, padding=2, relu=True), nn.Identity(), MaxPool2d(3, 2),
        Conv2d(192, 384, 3, padding=1, relu=True), nn.Identity(),
        Conv2d(384, 256, 3, padding=1, relu=True), nn.Identity(),
        Conv2d(256, 256, 3, padding=1, relu=True), nn.Identity(), MaxPool2d(3, 2),
    )
    classifier = nn.Sequential(
        Dropout(dropout),
        Linear(256 * 6 * 6, 4096, relu=True, dropout=dropout), nn.Identity(), nn.Identity(),
        Linear(4096, 4096, relu=True), nn.Identity(),
        Linear(4096, num_classes),
    )
    return AlexNet(features, classifier, input_size=224, avgpool=nn.AdaptiveAvgPool2d((6, 6)))


MODELS = {"alexnet": alexnet, "alexnet-torchvision": alexnet_torchvision, "alexnet-small": alexnet_small}


def create_model(name: str, num_classes: int, **kwargs) -> AlexNet:
    """Build a model by its command-line name (see ``MODELS``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name](num_classes=num_classes, **kwargs)


__all__ = ["AlexNet", "MODELS", "alexnet", "alexnet_small", "alexnet_torchvision", "create_model", "he_init",
           "paper_init"]
