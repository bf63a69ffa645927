"""The shared generative decoder g: any hidden activation h_l -> an input-shaped image in [0, 1].

One decoder serves every layer (Eq. 4). An MLP classifier has equal-width layers, which feed g directly; a
classifier whose layers differ in shape (the CNN) maps each layer into g's code space with a small adapter.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class MLPDecoder(nn.Module):
    """A small MLP body: code (N, code_dim) -> image (N, C, H, W). For CPU-sized runs."""

    def __init__(self, code_dim: int, out_shape: tuple[int, int, int], hidden: int):
        super().__init__()
        self.out_shape = out_shape
        self.net = nn.Sequential(nn.Linear(code_dim, hidden), nn.ReLU(), nn.Linear(hidden, math.prod(out_shape)))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid_(self.net(code)).view(-1, *self.out_shape)  # in place: the linear output is fresh


class UpBlock(nn.Module):
    """ResNet BasicBlock run backwards: optional 2x nearest upsampling, two 3x3 convs, a skip connection."""

    def __init__(self, c_in: int, c_out: int, upsample: bool):
        super().__init__()
        self.upsample = upsample
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
            if c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.skip(x))


class ResNetDecoder(nn.Module):
    """ResNet-18-style decoder (4 stages of 2 blocks, 8c -> 4c -> 2c -> c channels, three 2x upsamplings).

    code (N, code_dim) -> linear -> (N, 8c, s, s) with s = ceil(H / 8) -> stages -> (N, C, 8s, 8s), resized
    to (H, W) when 8s != H (28 -> 32 -> 28 for MNIST).
    """

    def __init__(self, code_dim: int, out_shape: tuple[int, int, int], channels: int):
        super().__init__()
        self.out_shape = out_shape
        c, h, w = out_shape
        self.start = (math.ceil(h / 8), math.ceil(w / 8))
        widths = [8 * channels, 4 * channels, 2 * channels, channels]
        self.fc = nn.Linear(code_dim, widths[0] * self.start[0] * self.start[1])
        blocks = []
        for stage, width in enumerate(widths):
            c_in = widths[max(stage - 1, 0)]
            blocks += [UpBlock(c_in, width, upsample=stage > 0), UpBlock(width, width, upsample=False)]
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(channels, c, 3, padding=1)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        z = self.fc(code).view(code.shape[0], -1, *self.start)
        out = self.head(self.blocks(z))
        if out.shape[-2:] != self.out_shape[1:]:
            out = F.interpolate(out, size=self.out_shape[1:], mode="bilinear", align_corners=False)
        return torch.sigmoid(out)


def _adapter(shape: tuple[int, ...], code_dim: int) -> nn.Module:
    """h_l of ``shape`` -> a code (B, code_dim): feature maps are first pooled to at most 7x7."""
    if len(shape) == 1:
        return nn.Linear(shape[0], code_dim)
    channels, height, width = shape
    pooled = (min(height, 7), min(width, 7))
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(pooled), nn.Flatten(), nn.Linear(channels * pooled[0] * pooled[1], code_dim)
    )


class SharedDecoder(nn.Module):
    """g with its per-layer adapters (identity when every hidden layer is a vector of the same width)."""

    def __init__(
        self,
        hidden_shapes: list[tuple[int, ...]],
        out_shape: tuple[int, int, int],
        body: str,
        mlp_hidden: int = 512,
        channels: int = 64,
        code_dim: int = 256,
        groups: int = 0,
    ):
        super().__init__()
        uniform = len(set(hidden_shapes)) == 1 and len(hidden_shapes[0]) == 1
        if uniform:
            self.adapters = None
            code_dim = hidden_shapes[0][0]
        else:
            self.adapters = nn.ModuleList(_adapter(shape, code_dim) for shape in hidden_shapes)
        self.num_layers = len(hidden_shapes)
        self.code_dim = code_dim
        self.body = (
            MLPDecoder(code_dim, out_shape, mlp_hidden)
            if body == "mlp"
            else ResNetDecoder(code_dim, out_shape, channels)
        )
        # g(h_l, a): a learned code per protected group a, added to the layer's code (a fader-style decoder).
        self.attribute = nn.Embedding(groups, code_dim) if groups else None

    def condition(self, codes: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Codes (..., B, code_dim) plus the code of each row's protected group (B,): unchanged unless g is
        conditioned on the attribute. Without ``groups`` (inputs whose attribute is not known: sampled paths,
        outliers) each row's group is drawn uniformly, so its decoding shows a drawn value of the attribute."""
        if self.attribute is None:
            return codes
        if groups is None:
            groups = torch.randint(self.attribute.num_embeddings, codes.shape[-2:-1], device=codes.device)
        return codes + self.attribute(groups.long()).to(codes.dtype)

    def code(self, index: int, h: torch.Tensor) -> torch.Tensor:
        """g's input for rows of layer ``index`` (0-based): h (B, ...) -> (B, code_dim)."""
        return h if self.adapters is None else self.adapters[index](h)

    def _codes(self, hidden: list[torch.Tensor]) -> torch.Tensor:
        if self.adapters is None:
            return torch.stack(hidden)  # (L, B, width)
        return torch.stack([adapt(h) for adapt, h in zip(self.adapters, hidden, strict=True)])

    def decode_all(self, hidden: list[torch.Tensor], groups: torch.Tensor | None = None) -> torch.Tensor:
        """Decode every layer in one batched call: L tensors (B, ...) -> (L, B, C, H, W); ``groups`` (B,): the
        protected group of each example, for a decoder conditioned on it (``condition``)."""
        codes = self.condition(self._codes(hidden), groups)
        images = self.body(codes.flatten(0, 1))  # (L * B, C, H, W)
        return images.view(len(hidden), -1, *images.shape[1:])

    def decode_selected(
        self, hidden: list[torch.Tensor], layer: torch.Tensor, groups: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode layer ``layer[b]`` (0-based) of each example b: L tensors (B, ...), layer (B,) -> (B, C, H, W);
        ``groups`` as in ``decode_all``."""
        rows = torch.arange(layer.shape[0], device=layer.device)
        if self.adapters is None:
            code = torch.stack(hidden)[layer, rows]  # (B, width)
        else:
            # Adapt only the rows that chose each layer: adapters of large early feature maps are not cheap.
            code = hidden[0].new_zeros(layer.shape[0], self.code_dim)  # filled row by row below
            for index, (adapt, h) in enumerate(zip(self.adapters, hidden, strict=True)):
                chosen = (layer == index).nonzero().squeeze(1)
                code = code.index_copy(0, chosen, adapt(h[chosen]))
        return self.body(self.condition(code, groups))
