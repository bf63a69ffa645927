"""A convolutional classifier f for DecNN (the paper's Appendix A.6): blocks whose outputs differ in shape.

Each block's output h_l (C_l, H_l, W_l) reaches the shared decoder through its own small adapter (see
``SharedDecoder``), since one decoder cannot take inputs of different shapes directly.
"""

from __future__ import annotations

import torch
from torch import nn

from decnn_cli.data.spec import DataSpec
from decnn_cli.models.classifiers import LayeredClassifier, Normalize


class CNNClassifier(LayeredClassifier):
    """x (B, C, H, W) in [0, 1] -> (logits (B, K), [h_1 .. h_L] each (B, C_l, H_l, W_l)).

    Block l is a 3x3 convolution and a ReLU; every second block halves the resolution (stride 2) while the
    feature map is at least 8 pixels wide, and doubles the channels. The head is linear on the flattened last map
    (averaging it away instead costs MNIST about four points of accuracy: the blocks' receptive field is small).
    """

    def __init__(self, spec: DataSpec, depth: int, channels: int, dropout: float):
        super().__init__()
        self.normalize = Normalize(spec.mean, spec.std)
        c_in, height, width = spec.in_shape
        blocks, shapes, maps = [], [], channels
        for i in range(depth):
            stride = 2 if i % 2 == 1 and min(height, width) >= 8 else 1
            if stride == 2:
                maps *= 2
                height, width = (height + 1) // 2, (width + 1) // 2
            blocks.append(nn.Conv2d(c_in, maps, 3, stride=stride, padding=1))
            shapes.append((maps, height, width))
            c_in = maps
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in * height * width, spec.num_outputs)
        self.hidden_shapes: list[tuple[int, ...]] = shapes

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """What the first block reads: x normalised."""
        return self.normalize(x)

    def flat(self, h_last: torch.Tensor) -> torch.Tensor:
        """The head reads the last map flattened."""
        return h_last.flatten(1)


def cnn(spec: DataSpec, depth: int = 8, channels: int = 32, dropout: float = 0.0) -> CNNClassifier:
    return CNNClassifier(spec, depth, channels, dropout)
