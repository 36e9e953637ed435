"""A small CNN image classifier whose penultimate layer is a feature space for Fréchet distances.

Three stages of two 3×3 convolutions (BatchNorm, SiLU) at C, 2C and 4C channels with 2×2 average pooling
between them, global average pooling, a hidden layer of `features` units (SiLU) and a linear layer to the
class logits. Inputs are images in model units ([-1, 1], as `data.to_unit` makes them), at their own size
and channels.

BatchNorm, as in Inception, not a per-image normalization: in eval mode it applies the statistics of the
training data, so the features of an image do not depend on its batch, and they still see its brightness and
contrast (GroupNorm or InstanceNorm after the first convolution would remove most of x → a x + b, and a
Fréchet distance in such features would not notice samples that are too dark or washed out).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Stage(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class Classifier(nn.Module):
    def __init__(self, in_channels: int, classes: int, *, channels: int = 32, features: int = 128,
                 dropout: float = 0.0):
        super().__init__()
        widths = (channels, 2 * channels, 4 * channels)
        self.stages = nn.ModuleList(Stage(a, b) for a, b in zip((in_channels,) + widths[:-1], widths))
        self.hidden = nn.Linear(widths[-1], features)
        self.out = nn.Linear(features, classes)
        self.dropout = dropout

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [-1, 1] → (B, features) penultimate activations."""
        for i, stage in enumerate(self.stages):
            if i and min(x.shape[-2:]) >= 2:
                x = F.avg_pool2d(x, 2, ceil_mode=True)
            x = stage(x)
        return F.silu(self.hidden(x.mean((-2, -1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, classes)."""
        h = F.dropout(self.features(x), p=self.dropout, training=self.training)
        return self.out(h)


class NoisyClassifier(nn.Module):
    """A noise-conditional classifier p(y | z_t) for classifier guidance: the U-Net's encoder half (nets/unet.py's
    residual blocks, the noise label embedded the same way) at C, 2C, 4C channels with a down-sampling block
    between resolutions, then GroupNorm, SiLU, global average pooling and a linear layer to the class logits.
    GroupNorm rather than BatchNorm: its output must not depend on the other items of the batch, whose noise
    levels differ. Input: the process state in data layout, stacked along channels (B, k·C, H, W)."""

    def __init__(self, in_channels: int, classes: int, *, channels: int = 32, channel_mult=(1, 2, 2),
                 num_blocks: int = 1, dropout: float = 0.0):
        super().__init__()
        from .embeddings import PositionalEmbedding, xavier_
        from .unet import Block, _group_norm

        emb = 4 * channels
        self.embed = PositionalEmbedding(channels)
        self.map0 = xavier_(nn.Linear(channels, emb))
        self.map1 = xavier_(nn.Linear(emb, emb))
        self.conv_in = xavier_(nn.Conv2d(in_channels, channels, 3, padding=1))
        self.blocks = nn.ModuleList()
        cout = channels
        for level, mult in enumerate(channel_mult):
            if level > 0:
                self.blocks.append(Block(cout, cout, emb, down=True, dropout=dropout))
            for _ in range(num_blocks):
                cin, cout = cout, channels * mult
                self.blocks.append(Block(cin, cout, emb, dropout=dropout))
        self.norm_out = _group_norm(cout)
        self.out = xavier_(nn.Linear(cout, classes))

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Class logits (B, classes) of states x at noise labels `label` (B,)."""
        emb = F.silu(self.map1(F.silu(self.map0(self.embed(label)))))
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.norm_out(h)).mean((-2, -1)))
