"""torchvision's ResNet-18, adapted to small inputs, as a pretrained model m for composition (Sec. 4.2)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

from decnn_cli.data.spec import DataSpec
from decnn_cli.models.classifiers import Normalize


class ResNet18Classifier(nn.Module):
    """x (B, C, H, W) in [0, 1] -> (logits (B, K), []): no hidden layers are exposed for decoding.

    The stem is a 3x3 stride-1 convolution (for 28-64 px inputs) followed by torchvision's max-pooling, which
    keeps the cost CPU-sized (28 px -> 14 px before the residual stages); the input's channel count replaces
    ImageNet's 3.
    """

    def __init__(self, spec: DataSpec):
        super().__init__()
        self.normalize = Normalize(spec.mean, spec.std)
        self.net = resnet18(weights=None, num_classes=spec.num_outputs)
        self.net.conv1 = nn.Conv2d(spec.in_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.hidden_shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.net(self.normalize(x)), []


def resnet18_classifier(spec: DataSpec) -> ResNet18Classifier:
    return ResNet18Classifier(spec)
