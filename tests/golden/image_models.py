# SPDX-License-Identifier: Apache-2.0
"""The golden image and attention models (PyTorch, seeded random weights, no training) that
golden_images.py exports, converts and checks against float64 PyTorch.

  unet_attention   8x8 U-Net: conv, GroupNorm, SiLU, strided-conv down-sampling, nearest
                   up-sampling, a skip concat, a sinusoidal time embedding added per channel,
                   two-head self-attention at 4x4 written with torch.einsum
  depthwise_convt  depthwise-separable convs and a ConvTranspose2d up-sampling, scaled by t
  class_guided     class-conditional conv net (nn.Embedding with a null class 10), single-head
                   self-attention written with matmul, run with classifier-free guidance w = 2
  mlp_math         MLP using exp, clamp, sqrt, abs, RMSNorm and F.normalize
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal(t: torch.Tensor, n: int) -> torch.Tensor:
    """[B, 1] times -> [B, 2n] features sin/cos(t * f), f = 1 .. 2^(n-1) times pi."""
    freqs = math.pi * 2.0 ** torch.arange(n, dtype=t.dtype)
    tf = t * freqs[None, :]
    return torch.cat([torch.sin(tf), torch.cos(tf)], dim=1)


class EinsumAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of [B, C, H, W]; 1x1 conv projections,
    scores and mixing written with torch.einsum."""

    def __init__(self, c: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(2, c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, h):
        b, c, hh, ww = h.shape
        q, k, v = self.qkv(self.norm(h)).chunk(3, dim=1)
        dh = c // self.heads
        q = q.reshape(b, self.heads, dh, hh * ww)
        k = k.reshape(b, self.heads, dh, hh * ww)
        v = v.reshape(b, self.heads, dh, hh * ww)
        a = torch.einsum("bhci,bhcj->bhij", q, k) / math.sqrt(dh)
        a = a.softmax(dim=-1)
        o = torch.einsum("bhij,bhcj->bhci", a, v).reshape(b, c, hh, ww)
        return h + self.out(o)


class MatmulAttention(nn.Module):
    """Single-head self-attention in token layout [B, T, C] written with matmul (q @ kᵀ)."""

    def __init__(self, c: int):
        super().__init__()
        self.q, self.k, self.v = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.out = nn.Conv2d(c, c, 1)
        self.scale = 1.0 / math.sqrt(c)

    def forward(self, h):
        b, c, hh, ww = h.shape
        q = self.q(h).reshape(b, c, hh * ww).transpose(1, 2)      # [B, T, C]
        k = self.k(h).reshape(b, c, hh * ww).transpose(1, 2)
        v = self.v(h).reshape(b, c, hh * ww).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(1, 2) * self.scale, dim=-1)
        o = (a @ v).transpose(1, 2).reshape(b, c, hh, ww)
        return h + self.out(o)


class UNetAttention(nn.Module):
    """(a) x [B, 1, 8, 8], t [B, 1]."""

    def __init__(self, c: int = 8, nfreq: int = 4):
        super().__init__()
        self.nfreq = nfreq
        self.temb = nn.Sequential(nn.Linear(2 * nfreq, 32), nn.SiLU(), nn.Linear(32, 3 * c))
        self.c = c
        self.inp = nn.Conv2d(1, c, 3, padding=1)
        self.n1 = nn.GroupNorm(4, c)
        self.down = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.n2 = nn.GroupNorm(4, 2 * c)
        self.attn = EinsumAttention(2 * c, heads=2)
        self.up = nn.Conv2d(3 * c, c, 3, padding=1)
        self.n3 = nn.GroupNorm(4, c)
        self.outp = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, x, t):
        e = self.temb(sinusoidal(t, self.nfreq))
        e1, e2 = e[:, :self.c], e[:, self.c:]
        h1 = F.silu(self.n1(self.inp(x) + e1[:, :, None, None]))
        h2 = F.silu(self.n2(self.down(h1) + e2[:, :, None, None]))
        h2 = self.attn(h2)
        u = F.interpolate(h2, scale_factor=2, mode="nearest")
        h = F.silu(self.n3(self.up(torch.cat([u, h1], dim=1))))
        return self.outp(h)


class DepthwiseConvT(nn.Module):
    """(b) x [B, 2, 8, 8], t [B, 1]: depthwise-separable blocks and a transposed conv."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(2, c, 3, stride=2, padding=1)
        self.dw1, self.pw1 = nn.Conv2d(c, c, 3, padding=1, groups=c), nn.Conv2d(c, 2 * c, 1)
        self.dw2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.pw2 = nn.Conv2d(2 * c, c, 1)
        self.up = nn.ConvTranspose2d(c, 2, 4, stride=2, padding=1)
        self.tin = nn.Linear(1, 1)

    def forward(self, x, t):
        s = torch.tanh(self.tin(t)).reshape(-1, 1, 1, 1)
        h = F.silu(self.stem(x))
        h = F.silu(self.pw1(self.dw1(h))) * (1 + s)
        h = F.silu(self.pw2(self.dw2(h)))
        return self.up(h) + x * s


class ClassGuided(nn.Module):
    """(c) x [B, 1, 8, 8], t [B, 1], y [B] int64 (10 classes, 10 = the null class)."""

    def __init__(self, c: int = 8, classes: int = 10):
        super().__init__()
        self.emb = nn.Embedding(classes + 1, 2 * c)
        self.tproj = nn.Linear(4, 2 * c)
        self.inp = nn.Conv2d(1, c, 3, padding=1)
        self.down = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.attn = MatmulAttention(2 * c)
        self.up = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.outp = nn.Conv2d(2 * c, 1, 3, padding=1)

    def forward(self, x, t, y):
        cond = self.emb(y) + self.tproj(sinusoidal(t, 2))
        h1 = F.silu(self.inp(x))
        h2 = F.silu(self.down(h1) + cond[:, :, None, None])
        h2 = self.attn(h2)
        h = F.silu(torch.cat([self.up(h2), h1], dim=1))
        return self.outp(h)


class MLPMath(nn.Module):
    """(d) x [B, 6], t [B, 1]: exp, clamp, sqrt, abs, RMSNorm, F.normalize."""

    def __init__(self, d: int = 6, h: int = 24):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(d + 1, h), nn.Linear(h, h), nn.Linear(h, d)
        self.g = nn.Parameter(torch.ones(h))

    def rms(self, h):
        return h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * self.g

    def forward(self, x, t):
        h = self.rms(self.l1(torch.cat([x, t], dim=1)))
        h = torch.exp(-0.5 * h.abs()) * torch.clamp(h, -1.5, 1.5)
        h = torch.sqrt(h * h + 1.0) + F.normalize(self.l2(h), dim=-1)
        return self.l3(h)
