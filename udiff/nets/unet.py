"""A DDPM++-shaped U-Net (Song et al. 2021, as configured in EDM for CIFAR-10), written for speed.

Same shape as EDM's `SongUNet` with the DDPM++ settings, so training and sampling speed compare 1:1:
positional noise embedding → 2-layer MLP; per resolution `num_blocks` residual blocks (GroupNorm, SiLU,
3×3 convs, additive embedding, dropout, skip scale 1/sqrt 2), a down-sampling block between resolutions
(2×2 average + conv), self-attention at `attn_resolutions`, a decoder mirroring it with one extra block
per resolution and skip concatenation, GroupNorm-SiLU-conv head. Attention is
`scaled_dot_product_attention` (flash kernels on CUDA); the network runs in channels_last and bf16
under autocast when the trainer asks for it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import ClassEmbedding, PositionalEmbedding, xavier_

PRESETS = {
    # EDM's DDPM++ CIFAR-10 network (≈56M parameters at 32×32×3).
    "ddpmpp": dict(channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,), dropout=0.13),
    # 28×28 (Fashion-)MNIST.
    "small-28": dict(channels=64, channel_mult=(1, 2, 2), num_blocks=2, attn_resolutions=(7,), dropout=0.1),
    # 8×8 digits.
    "tiny-8": dict(channels=32, channel_mult=(1, 2), num_blocks=2, attn_resolutions=(4,), dropout=0.1),
}


def auto_preset(resolution: int) -> str:
    return "tiny-8" if resolution <= 8 else "small-28" if resolution <= 28 else "ddpmpp"


class GroupNorm(nn.GroupNorm):
    """GroupNorm that runs in its input's dtype. Autocast lists group_norm as a float32 op, so under bf16
    autocast every norm would write a float32 activation that the next convolution casts back: twice the
    memory traffic of the whole network. The kernel accumulates its statistics in float32 either way."""

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


def _group_norm(c: int) -> GroupNorm:
    """GroupNorm with EDM's group count min(32, C/4), lowered to a divisor of C when it is not one."""
    g = min(32, max(1, c // 4))
    while c % g:
        g -= 1
    return GroupNorm(num_groups=g, num_channels=c, eps=1e-6)


class Block(nn.Module):
    """Residual block with optional 2× resampling and single-head self-attention."""

    def __init__(self, cin, cout, emb, *, up=False, down=False, attention=False, dropout=0.0):
        super().__init__()
        self.up, self.down, self.dropout = up, down, dropout
        self.norm0 = _group_norm(cin)
        self.conv0 = xavier_(nn.Conv2d(cin, cout, 3, padding=1))
        self.affine = xavier_(nn.Linear(emb, cout))
        self.norm1 = _group_norm(cout)
        self.conv1 = xavier_(nn.Conv2d(cout, cout, 3, padding=1), gain=1e-5)
        self.skip = xavier_(nn.Conv2d(cin, cout, 1)) if (cin != cout or up or down) else None
        self.attention = attention
        if attention:
            self.norm2 = _group_norm(cout)
            self.qkv = xavier_(nn.Conv2d(cout, 3 * cout, 1), gain=math.sqrt(0.2))
            self.proj = xavier_(nn.Conv2d(cout, cout, 1), gain=1e-5)

    def _resample(self, x):
        if self.down:
            return F.avg_pool2d(x, 2)
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x, emb):
        h = self.conv0(self._resample(F.silu(self.norm0(x))))
        h = F.silu(self.norm1(h + self.affine(emb)[:, :, None, None].to(h.dtype)))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        skip = self._resample(x)
        x = (h + (self.skip(skip) if self.skip is not None else skip)) * math.sqrt(0.5)
        if self.attention:
            b, c, hh, ww = x.shape
            q, k, v = self.qkv(self.norm2(x)).reshape(b, 3, 1, c, hh * ww).transpose(-1, -2).unbind(1)
            a = F.scaled_dot_product_attention(q, k, v)  # (b, 1, hw, c)
            x = (self.proj(a.transpose(-1, -2).reshape(b, c, hh, ww)) + x) * math.sqrt(0.5)
        return x


def fourier_features(x: torch.Tensor, exponents) -> torch.Tensor:
    """sin and cos(2^n 2 pi x) for each n of `exponents` and each channel of x (B, C, H, W) → (B, 2 len·C, H, W):
    VDM's input features (Kingma et al. 2021, eq. 34 / App. C; n in {6, 7} in its code), which let the network
    see the finest bits of z at high SNR."""
    if not exponents:
        return x[:, :0]
    freqs = torch.tensor([2.0 ** n * 2.0 * math.pi for n in exponents], dtype=x.dtype, device=x.device)
    h = x.unsqueeze(1) * freqs.reshape(1, -1, 1, 1, 1)  # (B, F, C, H, W)
    return torch.cat([h.sin(), h.cos()], 1).flatten(1, 2)


class UNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, resolution: int, *, channels: int = 128,
                 channel_mult=(2, 2, 2), num_blocks: int = 4, attn_resolutions=(16,), dropout: float = 0.1,
                 emb_mult: int = 4, fourier=(), fourier_channels: int = 0, classes: int = 0):
        super().__init__()
        # Fourier features of the first `fourier_channels` input channels (the state) are appended to the input
        self.fourier, self.fourier_channels = tuple(fourier), int(fourier_channels) if fourier else 0
        in_channels += 2 * len(self.fourier) * self.fourier_channels
        emb = channels * emb_mult
        self.embed = PositionalEmbedding(channels)
        self.label_embed = ClassEmbedding(classes, channels)  # added to the noise embedding (EDM's map_label)
        self.map0 = xavier_(nn.Linear(channels, emb))
        self.map1 = xavier_(nn.Linear(emb, emb))
        blk = dict(emb=emb, dropout=dropout)

        self.enc = nn.ModuleList()
        skips = []
        cout = channels
        self.conv_in = xavier_(nn.Conv2d(in_channels, channels, 3, padding=1))
        skips.append(channels)
        for level, mult in enumerate(channel_mult):
            res = resolution >> level
            if level > 0:
                self.enc.append(Block(cout, cout, down=True, **blk))
                skips.append(cout)
            for _ in range(num_blocks):
                cin, cout = cout, channels * mult
                self.enc.append(Block(cin, cout, attention=res in attn_resolutions, **blk))
                skips.append(cout)

        self.dec = nn.ModuleList()
        self.dec_cat = []  # whether each decoder block takes a skip connection
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = resolution >> level
            if level == len(channel_mult) - 1:
                self.dec.append(Block(cout, cout, attention=True, **blk))
                self.dec.append(Block(cout, cout, **blk))
            else:
                self.dec.append(Block(cout, cout, up=True, **blk))
            self.dec_cat += [False] * (1 if level < len(channel_mult) - 1 else 2)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), channels * mult
                self.dec.append(Block(cin, cout, attention=(idx == num_blocks and res in attn_resolutions), **blk))
                self.dec_cat.append(True)
        self.norm_out = _group_norm(cout)
        self.conv_out = xavier_(nn.Conv2d(cout, out_channels, 3, padding=1), gain=1e-5)

    def forward(self, x: torch.Tensor, label: torch.Tensor, class_labels=None) -> torch.Tensor:
        emb = F.silu(self.map1(F.silu(self.map0(self.label_embed(self.embed(label), class_labels)))))
        if self.fourier:
            x = torch.cat([x, fourier_features(x[:, :self.fourier_channels], self.fourier)], 1)
        h = self.conv_in(x)
        hs = [h]
        for block in self.enc:
            h = block(h, emb)
            hs.append(h)
        for block, cat in zip(self.dec, self.dec_cat):
            if cat:
                h = torch.cat([h, hs.pop()], dim=1)
            h = block(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))
