"""tritonnet.nn.from_torch: any torch model onto tritonnet's kernels, with the same state_dict and outputs."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

import tritonnet
from tests.helpers import assert_close
from tritonnet import nn as tnn


def torchvision_style_alexnet(width: int = 8, classes: int = 10) -> nn.Module:
    """torchvision's AlexNet layout (features / avgpool / classifier with its ReLU and Dropout slots, the same
    state_dict keys), at small widths so the interpreter runs it in a second."""

    class AlexNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, width, kernel_size=5, stride=2, padding=2), nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(width, 2 * width, kernel_size=3, padding=1), nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(2 * width, 2 * width, kernel_size=3, padding=1), nn.ReLU(inplace=True))
            self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
            self.classifier = nn.Sequential(
                nn.Dropout(p=0.5), nn.Linear(2 * width * 4, 4 * width), nn.ReLU(inplace=True),
                nn.Dropout(p=0.5), nn.Linear(4 * width, classes))

        def forward(self, images):
            features = self.avgpool(self.features(images))
            return self.classifier(torch.flatten(features, 1))

    return AlexNet()


def vgg_style_sequential(width: int = 4, classes: int = 5) -> nn.Sequential:
    """A VGG-style stack with BatchNorm (which stays torch's) and an LRN, as a bare nn.Sequential."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, width, 3, padding=1)), ("bn1", nn.BatchNorm2d(width)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(width, width, 3, padding=1)), ("relu2", nn.ReLU()),
        ("norm", nn.LocalResponseNorm(3, k=2.0)), ("pool", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()), ("fc", nn.Linear(width * 16, classes))]))


TRITON = {op: "triton" for op in tritonnet.available_kernels()}
MODELS = {"torchvision-alexnet": (torchvision_style_alexnet, 31), "vgg": (vgg_style_sequential, 8)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_from_torch_keeps_state_dict_and_outputs(name):
    build, size = MODELS[name]
    torch.manual_seed(0)
    original = build().eval()
    converted = tnn.from_torch(original)
    assert converted is not original
    assert list(converted.state_dict()) == list(original.state_dict())
    for key, value in original.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key
    images = torch.randn(2, 3, size, size)
    with tritonnet.use_kernels(**TRITON):
        output = converted(images)
    expected = original(images)
    assert_close(output, expected, reduction_length=200)
    ours = [module for module in converted.modules() if isinstance(module, tnn._ProviderMixin)]
    assert ours, "nothing was converted"
    assert not any(type(module) in (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.LocalResponseNorm, nn.Dropout)
                   for module in converted.modules())


def test_from_torch_folds_relu_only_inside_sequential_and_leaves_the_rest():
    model = vgg_style_sequential()
    converted = tnn.from_torch(model)
    assert isinstance(converted.conv1, tnn.Conv2d) and not converted.conv1.relu  # BatchNorm sits between
    assert isinstance(converted.relu1, nn.ReLU)
    assert isinstance(converted.conv2, tnn.Conv2d) and converted.conv2.relu
    assert isinstance(converted.relu2, nn.Identity)
    assert type(converted.bn1) is nn.BatchNorm2d and type(converted.flatten) is nn.Flatten
    assert isinstance(converted.fc, tnn.Linear) and not converted.fc.relu
    alexnet = tnn.from_torch(torchvision_style_alexnet())
    assert alexnet.classifier[1].relu and isinstance(alexnet.classifier[2], nn.Identity)
    assert isinstance(alexnet.classifier[0], tnn.Dropout) and not alexnet.classifier[4].relu


def test_from_torch_gradients_match_the_original():
    torch.manual_seed(1)
    original = vgg_style_sequential().double().train()  # fp64: conv1's bias gradient before BatchNorm is ~0
    converted = tnn.from_torch(original)
    images = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    target = torch.tensor([1, 3])
    loss_fn = tnn.from_torch(nn.CrossEntropyLoss(label_smoothing=0.1))
    assert isinstance(loss_fn, tnn.CrossEntropyLoss)
    with tritonnet.use_kernels(**TRITON):
        loss_fn(converted(images), target).backward()
    nn.CrossEntropyLoss(label_smoothing=0.1)(original(images), target).backward()
    # Relative to the largest gradient: conv1's bias gradient is zero but for rounding (BatchNorm follows it).
    scale = max(float(parameter.grad.abs().max()) for parameter in original.parameters())
    for (name, ours), theirs in zip(converted.named_parameters(), original.parameters()):
        assert_close(ours.grad, theirs.grad, reduction_length=200, scale=scale, name=name)


def test_from_torch_inplace_and_round_trip_with_to_torch():
    model = vgg_style_sequential()
    same = tnn.from_torch(model, inplace=True)
    assert same is model and isinstance(model.conv2, tnn.Conv2d)
    back = tnn.to_torch(same)
    assert type(back.conv2) is tnn.TorchConv2d and back.conv2.relu
    assert list(back.state_dict()) == list(model.state_dict())
    assert isinstance(tnn.from_torch(nn.Conv2d(3, 4, 3)), tnn.Conv2d)


def test_from_torch_leaves_layers_it_cannot_run():
    circular = nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular")
    assert tnn.from_torch(nn.Sequential(circular))[0].padding_mode == "circular"
    assert type(tnn.from_torch(nn.Sequential(circular))[0]) is nn.Conv2d
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        tnn.from_torch("alexnet")


def test_package_exposes_nn_models_and_functional():
    import importlib

    package = importlib.reload(importlib.import_module("tritonnet"))
    assert package.nn.from_torch is tnn.from_torch
    assert callable(package.models.alexnet_small) and callable(package.functional.conv2d)
