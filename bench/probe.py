"""osf on models that no test names, as a new user would try it: Hugging Face architectures (small
configs, random weights) and hand-written models with patterns users write (fused q/k/v split per head,
GroupNorm, pixel shuffle, F.unfold/F.fold, repeat_interleave, reshape_as, grouped and transposed convs,
nn.TransformerEncoder, nn.MultiheadAttention, a TCN, a GRU, float64, a temporal shift, slices of fused
projections and GLU, spectral norm and torch.no_grad() in forward, a float32 autocast block, bilinear,
einsum attention on a raw parameter, a CIFAR ResNet with option-A shortcuts, and more: DLRM's
gather (tril_indices), a hyper-network, unequal splits, straight-through estimators, a style-transfer net, a
non-local block, deformable convs, a weight-shared (universal) transformer, a dense mixture of experts, NeRF,
CBAM, MixNet's mixed kernels, SKNet, LoRA adapters, DINO-style interpolated positions, a Perceiver,
SegNet's unpooling, nn.Transformer with a causal mask, a VQ-VAE with an EMA codebook, grouped-query SDPA
(``enable_gqa``), activation checkpointing, PReLU / InstanceNorm / LocalResponseNorm / RMSNorm, 3-D convs,
an STFT front end, PixelUnshuffle with circular padding, tied conv-transpose weights, a cosine classifier,
forward hooks, an embedding with ``max_norm``, a channels-last model and a bfloat16 one, a dict input, a
siamese encoder, EViT-style top-k token gathering, a KAN layer, ``padding="same"`` with ``nn.Unflatten`` and
``nn.Bilinear``, an orthogonal parametrisation, LayerNorm over C×H×W, a ModuleDict router,
``torch.where`` gating, ``nn.EmbeddingBag``, weight norm, a Conformer block, reflect padding, ConvMixer,
multi-query attention, a highway network, FiLM, PointNet's predicted transform, CondConv's per-sample
kernels, FLASH's gated attention unit, hand-written stochastic depth, a GRU and a ConvLSTM stepped from
``new_zeros`` states, a Mamba-style selective scan, RWKV's token shift, ALiBi biases, circular padding,
a namedtuple output, in-place residuals, ``nn.MultiheadAttention`` with ``kdim``/``vdim``,
``nn.ChannelShuffle``, CaiT-style class attention, BatchNorm1d over tokens, zero channels concatenated
by hand, a 0-d learnt scale, torchvision's RAFT-small optical flow with an int argument and its ResNet-18
FPN backbone).

Per model: the supernet builds; its maximal subnet equals the original (eval mode); for the minimal and two
sampled subnets, running the supernet at the arch (``set_arch``) gives the extracted model's outputs and
gradients, the extracted model gives the outputs of the model built from the arch's rewritten IR, and
``cost()`` gives its exact parameter count; its FLOPs are compared with ``FlopCounterMode`` on the extracted
model; cast to float64, the extracted maximal subnet gives the original's outputs and the minimal one its
float32 outputs (where the original runs in float64).

    python bench/probe.py            # every model (about 15 minutes)
    python bench/probe.py --quick    # 5 models
    python bench/probe.py --only 'encodec|mimi'   # those models, merged into the last full results

Writes bench/results/probe[-quick].json and the ``probe`` section of docs/benchmarks.md (--quick:
docs/benchmarks-quick.md).
"""
from __future__ import annotations

import argparse
import collections
import copy
import math
import re
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import osf  # noqa: E402
from osf.cli.models import HF_ARCHS, resolve  # noqa: E402

SEED = 0
QUICK = ("hf:gpt2", "fused_qkv_split_per_head", "group_norm_fpn", "pixel_shuffle_sr", "temporal_shift")


# ----------------------------------------------------------------------------------------------
# hand-written models

class FusedQKVSplitPerHead(nn.Module):
    """LeViT-style attention: one projection viewed as heads × (q, k, v channels of the head), split."""

    def __init__(self, dim: int = 64, heads: int = 4):
        super().__init__()
        self.heads, self.qkv, self.out, self.norm = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 128), nn.GELU(), nn.Linear(128, dim))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, t, self.heads, -1).transpose(1, 2).split([16, 16, 16], dim=3)
        x = x + self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(x)


class CausalSelfAttention(nn.Module):
    """nanoGPT-style block: separate q/k/v, a causal mask buffer, masked_fill, explicit scale."""

    def __init__(self, dim: int = 48, heads: int = 6):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ln, self.head = nn.LayerNorm(dim), nn.Linear(dim, 7)
        self.register_buffer("mask", torch.tril(torch.ones(16, 16, dtype=torch.bool)))

    def forward(self, x):
        b, t, d = x.shape
        y = self.ln(x)
        q, k, v = (m(y).view(b, t, self.heads, d // self.heads).transpose(1, 2) for m in (self.q, self.k, self.v))
        att = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        att = att.masked_fill(~self.mask[:t, :t], float("-inf")).softmax(-1)
        return self.head(x + self.o((att @ v).transpose(1, 2).contiguous().view(b, t, d)))


class GroupNormFPN(nn.Module):
    """Two levels added after a nearest upsample, then GroupNorm with 4 groups."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.l1, self.l2 = nn.Conv2d(16, 24, 1), nn.Conv2d(32, 24, 1)
        self.norm, self.out = nn.GroupNorm(4, 24), nn.Conv2d(24, 3, 1)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a))
        return self.out(torch.relu(self.norm(self.l1(a) + F.interpolate(self.l2(b), scale_factor=2.0))))


class PixelShuffleSR(nn.Module):
    """ESPCN-style super-resolution: 64 channels shuffled into 16 at twice the resolution."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 32, 5, padding=2), nn.Conv2d(32, 64, 3, padding=1), nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x):
        return self.c3(F.pixel_shuffle(torch.tanh(self.c2(torch.tanh(self.c1(x)))), 2))


class UnfoldFold(nn.Module):
    """Patches by F.unfold, mixed per patch, folded back (VOLO / T2T-style)."""

    def __init__(self):
        super().__init__()
        self.a, self.mix, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Linear(64, 64), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        h = torch.relu(self.a(x))
        cols = F.unfold(h, 2, stride=2)  # B, 16 × 4, windows
        return self.b(F.fold(self.mix(cols.transpose(1, 2)).transpose(1, 2), x.shape[-2:], 2, stride=2))


class RepeatKV(nn.Module):
    """Grouped-query attention with repeat_interleave of the key/value heads."""

    def __init__(self, dim: int = 64, heads: int = 8, kv_heads: int = 2):
        super().__init__()
        self.heads, self.kv_heads = heads, kv_heads
        self.q, self.kv = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim * kv_heads // heads)
        self.o = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        q = self.q(x).view(b, t, self.heads, -1).transpose(1, 2)
        k, v = self.kv(x).view(b, t, 2, self.kv_heads, -1).permute(2, 0, 3, 1, 4)
        k, v = (u.repeat_interleave(self.heads // self.kv_heads, dim=1) for u in (k, v))
        return x + self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d))


class WeightStandardised(nn.Module):
    """Convs whose weights are standardised in forward (batch_norm over the weight, then reshape_as)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1), nn.Linear(32, 5)

    def forward(self, x):
        for conv in (self.a, self.b):
            w = F.batch_norm(conv.weight.reshape(1, conv.out_channels, -1), None, None, training=True)
            x = torch.relu(F.conv2d(x, w.reshape_as(conv.weight), conv.bias, padding=1))
        return self.head(x.mean((2, 3)))


class GroupedConvs(nn.Module):
    """Depthwise conv with a channel multiplier and a grouped transposed conv."""

    def __init__(self):
        super().__init__()
        self.a, self.dw = nn.Conv2d(3, 16, 1), nn.Conv2d(16, 32, 3, padding=1, groups=16)
        self.up, self.b = nn.ConvTranspose2d(32, 32, 2, stride=2, groups=4), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        return self.b(F.relu(self.up(F.relu(self.dw(F.relu(self.a(x)))))))


class UNet(nn.Module):
    def __init__(self, c: int = 16):
        super().__init__()
        self.e1 = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.e2 = nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1, stride=2), nn.BatchNorm2d(2 * c), nn.ReLU())
        self.up, self.d1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2), nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(c, 2, 1)

    def forward(self, x):
        a = self.e1(x)
        return self.out(self.d1(torch.cat([a, self.up(self.e2(a))], 1)))


class Mixer(nn.Module):
    def __init__(self, d: int = 32, n: int = 16, depth: int = 2):
        super().__init__()
        self.embed, self.head = nn.Conv2d(3, d, 4, 4), nn.Linear(d, 10)
        self.blocks = nn.ModuleList(nn.ModuleDict(dict(
            n1=nn.LayerNorm(d), tok=nn.Sequential(nn.Linear(n, 64), nn.GELU(), nn.Linear(64, n)),
            n2=nn.LayerNorm(d), ch=nn.Sequential(nn.Linear(d, 128), nn.GELU(), nn.Linear(128, d)))) for _ in range(depth))

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        for b in self.blocks:
            x = x + b["tok"](b["n1"](x).transpose(1, 2)).transpose(1, 2)
            x = x + b["ch"](b["n2"](x))
        return self.head(x.mean(1))


class TCN(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.out = nn.Conv1d(8, 32, 1), nn.Linear(32, 4)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv1d(32, 48, 3, padding=2, dilation=2), nn.ReLU(),
                                                  nn.Conv1d(48, 32, 1)) for _ in range(3))

    def forward(self, x):
        h = self.inp(x.transpose(1, 2))
        for b in self.blocks:
            h = h + b(h)
        return self.out(h.transpose(1, 2))


class TorchEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.head = nn.Embedding(100, 64), nn.Linear(64, 3)
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(64, 4, 128, batch_first=True, norm_first=True), 2)

    def forward(self, ids):
        return self.head(self.enc(self.emb(ids)).mean(1))


class CrossAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.kv, self.out = nn.Linear(16, 64), nn.Linear(24, 64), nn.Linear(64, 4)
        self.att = nn.MultiheadAttention(64, 8, batch_first=True)

    def forward(self, x, ctx):
        q, kv = self.q(x), self.kv(ctx)
        return self.out(self.att(q, kv, kv, need_weights=False)[0] + q)


class GRUClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.pre, self.gru, self.fc = nn.Embedding(100, 32), nn.Linear(32, 32), nn.GRU(32, 48, batch_first=True), nn.Linear(48, 5)

    def forward(self, ids):
        return self.fc(self.gru(torch.relu(self.pre(self.emb(ids))))[0][:, -1])


class Float64MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 32), nn.Linear(32, 3)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


class TemporalShift(nn.Module):
    """TSM: frames of a clip on the (dynamic) batch, an eighth of the channels shifted back and one forward
    in time by slice assignments into zeros."""

    def __init__(self, frames: int = 4):
        super().__init__()
        self.frames, self.a, self.b, self.c = frames, nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        nt, _, h, w = x.shape
        x = F.relu(self.a(x))
        c = x.shape[1]
        clips, fold = x.view(nt // self.frames, self.frames, c, h, w), c // 8
        out = torch.zeros_like(clips)
        out[:, :-1, :fold] = clips[:, 1:, :fold]
        out[:, 1:, fold:2 * fold] = clips[:, :-1, fold:2 * fold]
        out[:, :, 2 * fold:] = clips[:, :, 2 * fold:]
        return self.c(F.relu(self.b(out.view(nt, c, h, w))))


class GatedBySlices(nn.Module):
    """Gated linear units written as slices of a fused projection, then F.glu; q/k/v cut from one
    projection by slices."""

    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.heads, self.gate, self.glu = heads, nn.Linear(8, 2 * dim), nn.Linear(dim, 2 * dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, 3)

    def forward(self, x):
        h = self.gate(x)
        d = h.shape[-1] // 2
        h = F.glu(self.glu(h[..., :d] * torch.sigmoid(h[..., d:])), -1)
        qkv = self.qkv(h)
        b, t, _ = qkv.shape
        q, k, v = (qkv[..., i * d:(i + 1) * d].view(b, t, self.heads, -1).transpose(1, 2) for i in range(3))
        return self.out(h + F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d))


class SpectralNormCritic(nn.Module):
    """GAN-critic style: spectral-normed layers (power iteration under no_grad in training) and a target
    computed under torch.no_grad() in forward."""

    def __init__(self):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.a, self.b = sn(nn.Conv2d(3, 32, 3, padding=1)), sn(nn.Conv2d(32, 64, 3, stride=2, padding=1))
        self.target, self.head = nn.Linear(64, 64), sn(nn.Linear(64, 1))

    def forward(self, x):
        h = F.leaky_relu(self.b(F.leaky_relu(self.a(x), 0.2)), 0.2).mean((2, 3))
        with torch.no_grad():
            t = torch.sigmoid(self.target(h))
        return self.head(h * t)


class Float32Attention(nn.Module):
    """Attention forced to float32 by an autocast(enabled=False) block (timm efficientvit-style), a
    bilinear readout."""

    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.heads, self.qkv, self.o = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.side, self.read = nn.Linear(dim, 16), nn.Bilinear(dim, 16, 3)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        with torch.autocast(x.device.type, enabled=False):
            att = (q.float() @ k.float().transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1) @ v.float()
        x = x + self.o(att.transpose(1, 2).reshape(b, t, d))
        return self.read(x, torch.tanh(self.side(x)))


class EinsumViT(nn.Module):
    """A ViT written by hand: class token and learnt positions, q/k/v from a raw parameter matrix, einsum
    attention, layer scale, RMSNorm."""

    def __init__(self, d: int = 32, heads: int = 4):
        super().__init__()
        self.heads, self.patch = heads, nn.Conv2d(3, d, 4, 4)
        self.cls, self.pos = nn.Parameter(torch.randn(1, 1, d)), nn.Parameter(torch.randn(1, 5, d))
        self.n1, self.wqkv, self.proj = nn.LayerNorm(d), nn.Parameter(torch.randn(d, 3 * d) * 0.1), nn.Linear(d, d)
        self.g1, self.g2 = nn.Parameter(torch.full((d,), 0.1)), nn.Parameter(torch.full((d,), 0.1))
        self.n2, self.fc1, self.fc2, self.head = nn.RMSNorm(d), nn.Linear(d, 64), nn.Linear(64, d), nn.Linear(d, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        b, n, d = x.shape
        x = torch.cat([self.cls.expand(b, -1, -1), x], 1) + self.pos
        q, k, v = (self.n1(x) @ self.wqkv).reshape(b, n + 1, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        att = torch.einsum("bhqd,bhkd->bhqk", q, k).mul(q.shape[-1] ** -0.5).softmax(-1)
        x = x + self.g1 * self.proj(torch.einsum("bhqk,bhkd->bhqd", att, v).transpose(1, 2).reshape(b, n + 1, d))
        x = x + self.g2 * self.fc2(F.gelu(self.fc1(self.n2(x))))
        return self.head(x[:, 0])


class CifarResNetOptionA(nn.Module):
    """ResNet-20-style CIFAR network: stages of 16/32/64 channels, downsampling shortcuts that subsample
    and pad the channels with zeros (option A)."""

    def __init__(self, blocks: int = 2):
        super().__init__()
        self.stem, self.fc = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()), nn.Linear(64, 10)
        widths = [16] * blocks + [32] * blocks + [64] * blocks
        self.blocks = nn.ModuleList(nn.ModuleDict(dict(
            c1=nn.Conv2d(cin, cout, 3, stride=2 if cin != cout else 1, padding=1, bias=False), n1=nn.BatchNorm2d(cout),
            c2=nn.Conv2d(cout, cout, 3, padding=1, bias=False), n2=nn.BatchNorm2d(cout)))
            for cin, cout in zip([16] + widths[:-1], widths))

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            cin, cout = b["c1"].in_channels, b["c1"].out_channels
            short = x if cin == cout else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, (cout - cin) // 2, (cout - cin) // 2))
            x = F.relu(b["n2"](b["c2"](F.relu(b["n1"](b["c1"](x))))) + short)
        return self.fc(x.mean((2, 3)))


class MessagePassingGNN(nn.Module):
    """A graph network written by hand: messages gathered at the edges' sources, summed into their
    targets by ``index_add_``, node states updated from [state, sum]."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.inp, self.out = nn.Linear(8, width), nn.Linear(width, 3)
        self.msg = nn.ModuleList(nn.Linear(width, width) for _ in range(2))
        self.upd = nn.ModuleList(nn.Linear(2 * width, width) for _ in range(2))

    def forward(self, x, edges):
        h = F.relu(self.inp(x))
        for msg, upd in zip(self.msg, self.upd):
            summed = torch.zeros_like(h).index_add_(0, edges[1], msg(h)[edges[0]])
            h = h + F.relu(upd(torch.cat([h, summed], -1)))
        return self.out(h)


class WaveNet(nn.Module):
    """Dilated causal convs with gated activations (tanh × sigmoid of the two chunks) and summed skips."""

    def __init__(self, width: int = 32, layers: int = 3):
        super().__init__()
        self.inp, self.out = nn.Conv1d(1, width, 1), nn.Conv1d(48, 10, 1)
        self.dilated = nn.ModuleList(nn.Conv1d(width, 2 * width, 2, dilation=2 ** i, padding=2 ** i) for i in range(layers))
        self.res = nn.ModuleList(nn.Conv1d(width, width, 1) for _ in range(layers))
        self.skip = nn.ModuleList(nn.Conv1d(width, 48, 1) for _ in range(layers))

    def forward(self, x):
        h, skips = self.inp(x), 0
        for dilated, res, skip in zip(self.dilated, self.res, self.skip):
            a, b = dilated(h)[..., :h.shape[-1]].chunk(2, dim=1)
            g = torch.tanh(a) * torch.sigmoid(b)
            h, skips = h + res(g), skips + skip(g)
        return self.out(F.relu(skips)).mean(-1)


class VAE(nn.Module):
    """A VAE that samples ``torch.randn_like`` in training and returns (reconstruction, mu, logvar)."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.mu, self.logvar = nn.Linear(64, 16), nn.Linear(64, 16)
        self.dec = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32))

    def forward(self, x):
        h = self.enc(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.dec(z), mu, logvar


class SpatialTransformer(nn.Module):
    """A spatial transformer network: affine matrices regressed from the image warp the stem's features
    (``affine_grid`` + ``grid_sample``) before the classifier."""

    def __init__(self):
        super().__init__()
        self.loc = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(16, 6))
        self.stem, self.body, self.fc = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1), nn.Linear(32, 4)

    def forward(self, x):
        h = F.relu(self.stem(x))
        grid = F.affine_grid(self.loc(x).view(-1, 2, 3), list(h.shape), align_corners=False)
        return self.fc(F.relu(self.body(F.grid_sample(h, grid, align_corners=False))).mean((2, 3)))


class PrototypeNetwork(nn.Module):
    """Few-shot prototypes: logits are negative distances (``cdist``) from the embedding to learnt
    prototypes; the encoder uses ``weight_norm`` parametrisations."""

    def __init__(self):
        super().__init__()
        wn = nn.utils.parametrizations.weight_norm
        self.enc = nn.Sequential(wn(nn.Linear(16, 64)), nn.ReLU(), wn(nn.Linear(64, 32)))
        self.protos = nn.Parameter(torch.randn(5, 32))

    def forward(self, x):
        return -torch.cdist(self.enc(x), self.protos)


class TimeConditionedUNet(nn.Module):
    """A DDPM-style UNet: a sinusoidal time embedding computed in forward, added per channel inside
    GroupNorm residual blocks, one down- and one up-sampling level with a skip."""

    def __init__(self):
        super().__init__()
        self.time = nn.Sequential(nn.Linear(32, 64), nn.SiLU(), nn.Linear(64, 64))
        self.inp, self.out = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 3, 3, padding=1)
        self.down, self.up = nn.Conv2d(32, 64, 3, 2, 1), nn.ConvTranspose2d(64, 32, 4, 2, 1)
        self.blocks = nn.ModuleList(nn.ModuleDict(dict(
            n1=nn.GroupNorm(8, c), c1=nn.Conv2d(c, c, 3, padding=1), t=nn.Linear(64, c), n2=nn.GroupNorm(8, c),
            c2=nn.Conv2d(c, c, 3, padding=1))) for c in (32, 64, 32))

    @staticmethod
    def block(b, x, t):
        h = b["c1"](F.silu(b["n1"](x))) + b["t"](t)[:, :, None, None]
        return x + b["c2"](F.silu(b["n2"](h)))

    def forward(self, x, step):
        freqs = torch.exp(-math.log(10000) * torch.arange(16, dtype=torch.float32) / 16)
        angles = step[:, None].float() * freqs[None]
        t = self.time(torch.cat([angles.sin(), angles.cos()], -1))
        h1 = self.block(self.blocks[0], self.inp(x), t)
        h2 = self.block(self.blocks[1], self.down(h1), t)
        return self.out(self.block(self.blocks[2], self.up(h2) + h1, t))


class GlobalFilterNet(nn.Module):
    """GFNet: tokens mixed by a learnt complex filter per channel in the 2-D Fourier domain."""

    def __init__(self, c: int = 32, side: int = 8):
        super().__init__()
        self.stem, self.norm = nn.Conv2d(3, c, 4, 4), nn.LayerNorm(c)
        self.filter = nn.Parameter(torch.randn(side, side // 2 + 1, c, 2) * 0.02)
        self.mlp = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))
        self.head = nn.Linear(c, 3)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)
        y = torch.fft.rfft2(self.norm(x), dim=(1, 2), norm="ortho") * torch.view_as_complex(self.filter)
        x = x + torch.fft.irfft2(y, s=x.shape[1:3], dim=(1, 2), norm="ortho")
        x = x + self.mlp(x)
        return self.head(x.mean((1, 2)))


class CellLoopSeq2Label(nn.Module):
    """``nn.LSTMCell`` feeding ``nn.GRUCell``, stepped in a Python loop over the tokens."""

    def __init__(self):
        super().__init__()
        self.embed, self.lstm, self.gru, self.out = nn.Embedding(50, 16), nn.LSTMCell(16, 48), nn.GRUCell(48, 40), nn.Linear(40, 5)

    def forward(self, ids):
        h = c = self.embed.weight.new_zeros(ids.shape[0], 48)
        g = self.embed.weight.new_zeros(ids.shape[0], 40)
        for t in range(ids.shape[1]):
            h, c = self.lstm(self.embed(ids[:, t]), (h, c))
            g = self.gru(h, g)
        return self.out(g)


class Capsules(nn.Module):
    """Primary capsules and three iterations of routing by agreement."""

    def __init__(self, n_in: int = 16, d_in: int = 8, n_out: int = 4, d_out: int = 16):
        super().__init__()
        self.n_in, self.d_in = n_in, d_in
        self.primary = nn.Conv2d(3, n_in * d_in, 3, stride=2, padding=1)
        self.W = nn.Parameter(torch.randn(1, n_in, n_out, d_out, d_in) * 0.1)

    @staticmethod
    def squash(v):
        n2 = (v ** 2).sum(-1, keepdim=True)
        return n2 / (1 + n2) * v / (n2.sqrt() + 1e-8)

    def forward(self, x):
        u = self.squash(self.primary(x).mean((2, 3)).view(x.shape[0], self.n_in, self.d_in))
        votes = (self.W @ u[:, :, None, :, None]).squeeze(-1)
        logits = torch.zeros(votes.shape[:3])
        for _ in range(3):
            v = self.squash((logits.softmax(2)[..., None] * votes).sum(1))
            logits = logits + (votes * v[:, None]).sum(-1)
        return v.norm(dim=-1)


class LinearAttention(nn.Module):
    """Performer-style attention: positive feature maps, keys and values contracted first by einsum."""

    def __init__(self, d: int = 32, heads: int = 4):
        super().__init__()
        self.heads, self.qkv, self.o = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff, self.head = nn.Sequential(nn.Linear(d, 64), nn.GELU(), nn.Linear(64, d)), nn.Linear(d, 3)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = nn.functional.elu(q) + 1, nn.functional.elu(k) + 1
        kv = torch.einsum("bhnd,bhne->bhde", k, v)
        z = 1 / (torch.einsum("bhnd,bhd->bhn", q, k.sum(2)) + 1e-6)
        y = torch.einsum("bhnd,bhde,bhn->bhne", q, kv, z).transpose(1, 2).reshape(b, n, d)
        x = x + self.o(y)
        return self.head((x + self.ff(x)).mean(1))


class Involution(nn.Module):
    """Involution: a kernel generated at every position, applied to ``F.unfold`` patches per group."""

    def __init__(self, c: int = 16, k: int = 3, groups: int = 4):
        super().__init__()
        self.c, self.k, self.groups = c, k, groups
        self.stem, self.reduce = nn.Conv2d(3, c, 3, padding=1), nn.Conv2d(c, c // 2, 1)
        self.span, self.head = nn.Conv2d(c // 2, k * k * groups, 1), nn.Conv2d(c, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        kernel = self.span(torch.relu(self.reduce(x))).view(b, self.groups, 1, self.k * self.k, h, w)
        patches = nn.functional.unfold(x, self.k, padding=self.k // 2).view(b, self.groups, c // self.groups, self.k * self.k, h, w)
        return self.head((kernel * patches).sum(3).view(b, c, h, w))


class PairwiseInteractions(nn.Module):
    """DLRM: embedding bags and a bottom MLP as feature vectors, their pairwise dot products (``einsum``)
    gathered below the diagonal by ``tril_indices``, a top MLP."""

    def __init__(self, features: int = 5, dim: int = 8):
        super().__init__()
        self.bags = nn.ModuleList(nn.EmbeddingBag(40, dim, mode="mean") for _ in range(features - 1))
        self.bottom = nn.Sequential(nn.Linear(13, 24), nn.ReLU(), nn.Linear(24, dim))
        pairs = features * (features - 1) // 2
        self.top = nn.Sequential(nn.Linear(dim + pairs, 24), nn.ReLU(), nn.Linear(24, 1))

    def forward(self, dense, sparse):
        d = self.bottom(dense)
        feats = torch.stack([d, *(bag(sparse[:, i]) for i, bag in enumerate(self.bags))], 1)
        rows, cols = torch.tril_indices(feats.shape[1], feats.shape[1], -1)
        return self.top(torch.cat([d, torch.einsum("bik,bjk->bij", feats, feats)[:, rows, cols]], 1))


class HyperNetwork(nn.Module):
    """A linear whose weight another linear generates from a learned task embedding."""

    def __init__(self):
        super().__init__()
        self.task, self.generate = nn.Parameter(torch.randn(8)), nn.Linear(8, 16 * 32)
        self.encode, self.out = nn.Linear(20, 32), nn.Linear(16, 3)

    def forward(self, x):
        weight = self.generate(self.task).view(16, 32)
        return self.out(F.relu(F.linear(F.relu(self.encode(x)), weight)))


class MixtureDensity(nn.Module):
    """A mixture density head: one linear split into unequal parts (weights, means, scales)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh())
        self.head = nn.Linear(64, 5 + 10 + 10)

    def forward(self, x):
        pi, mu, sigma = torch.split(self.head(self.body(x)), [5, 10, 10], -1)
        return pi.log_softmax(-1), mu.view(-1, 5, 2), sigma.exp().view(-1, 5, 2)


class SplitBranches(nn.Module):
    """An unequal channel split into two conv branches, concatenated back."""

    def __init__(self):
        super().__init__()
        self.stem, self.out = nn.Conv2d(3, 48, 3, padding=1), nn.Conv2d(48, 10, 1)
        self.a, self.b = nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(32, 32, 1)

    def forward(self, x):
        p, q = torch.split(F.relu(self.stem(x)), [16, 32], 1)
        return self.out(torch.cat([F.relu(self.a(p)), F.relu(self.b(q))], 1)).mean((2, 3))


class StraightThrough(nn.Module):
    """Binarised activations with a straight-through gradient (``h + (hard - h).detach()``)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(10, 64), nn.Linear(64, 4)

    def forward(self, x):
        h = torch.sigmoid(self.a(x))
        return self.b(h + ((h > 0.5).float() - h).detach())


class StyleTransfer(nn.Module):
    """Johnson et al.'s transformer net: reflection padding, affine InstanceNorm, residual blocks,
    nearest upsampling."""

    def __init__(self):
        super().__init__()

        def layer(i, o, k, stride=1):
            return nn.Sequential(nn.ReflectionPad2d(k // 2), nn.Conv2d(i, o, k, stride), nn.InstanceNorm2d(o, affine=True),
                                 nn.ReLU())
        self.down = nn.Sequential(layer(3, 16, 9), layer(16, 32, 3, 2))
        self.res = nn.ModuleList(nn.Sequential(layer(32, 32, 3), nn.ReflectionPad2d(1), nn.Conv2d(32, 32, 3),
                                               nn.InstanceNorm2d(32, affine=True)) for _ in range(2))
        self.up = nn.Sequential(nn.Upsample(scale_factor=2), layer(32, 16, 3), nn.ReflectionPad2d(4), nn.Conv2d(16, 3, 9))

    def forward(self, x):
        h = self.down(x)
        for block in self.res:
            h = h + block(h)
        return self.up(h)


class NonLocal(nn.Module):
    """A non-local block: attention over pixels with ``view`` and ``bmm``."""

    def __init__(self):
        super().__init__()
        self.stem, self.head = nn.Conv2d(3, 32, 3, padding=1), nn.Linear(32, 4)
        self.theta, self.phi, self.g, self.w = nn.Conv2d(32, 16, 1), nn.Conv2d(32, 16, 1), nn.Conv2d(32, 16, 1), nn.Conv2d(16, 32, 1)

    def forward(self, x):
        x = self.stem(x)
        b, _, h, w = x.shape
        t, p = self.theta(x).flatten(2).transpose(1, 2), self.phi(x).flatten(2)
        y = torch.bmm(torch.softmax(torch.bmm(t, p), -1), self.g(x).flatten(2).transpose(1, 2))
        return self.head((x + self.w(y.transpose(1, 2).reshape(b, 16, h, w))).mean((2, 3)))


class DeformableConv(nn.Module):
    """torchvision's ``DeformConv2d`` with offsets from a conv."""

    def __init__(self):
        super().__init__()
        import torchvision
        self.stem, self.offsets = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 18, 3, padding=1)
        self.deform, self.head = torchvision.ops.DeformConv2d(16, 32, 3, padding=1), nn.Linear(32, 4)

    def forward(self, x):
        h = F.relu(self.stem(x))
        return self.head(F.relu(self.deform(h, self.offsets(h))).mean((2, 3)))


class UniversalTransformer(nn.Module):
    """One ``nn.TransformerEncoderLayer`` applied four times (shared weights)."""

    def __init__(self):
        super().__init__()
        self.embed, self.out = nn.Linear(12, 32), nn.Linear(32, 3)
        self.block = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)

    def forward(self, x):
        h = self.embed(x)
        for _ in range(4):
            h = self.block(h)
        return self.out(h.mean(1))


class SoftMixture(nn.Module):
    """A dense mixture of experts: every expert runs, their stacked outputs weighted by a softmax gate."""

    def __init__(self):
        super().__init__()
        self.gate, self.out = nn.Linear(16, 4), nn.Linear(16, 2)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16)) for _ in range(4))

    def forward(self, x):
        y = torch.stack([expert(x) for expert in self.experts], -1)
        return self.out(x + (y * self.gate(x).softmax(-1).unsqueeze(-2)).sum(-1))


class NeRF(nn.Module):
    """NeRF's MLP: sin/cos positional encoding at fixed frequencies, the encoding concatenated again
    at layer 4."""

    def __init__(self):
        super().__init__()
        self.register_buffer("freqs", 2.0 ** torch.arange(6))
        self.layers = nn.ModuleList([nn.Linear(39, 64)] + [nn.Linear(64 + (39 if i == 3 else 0), 64) for i in range(6)])
        self.out = nn.Linear(64, 4)

    def forward(self, p):
        e = (p[..., None] * self.freqs).flatten(-2)
        enc = h = torch.cat([p, e.sin(), e.cos()], -1)
        for i, layer in enumerate(self.layers):
            h = F.relu(layer(torch.cat([h, enc], -1) if i == 4 else h))
        return self.out(h)


class CBAM(nn.Module):
    """CBAM: channel attention from average- and max-pooled features through a shared MLP, then spatial
    attention from the channels' mean and max (``torch.max(x, 1)[0]``) through a 7x7 conv."""

    def __init__(self, c: int = 32):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.mlp = nn.Sequential(nn.Linear(c, 16), nn.ReLU(), nn.Linear(16, c))
        self.spatial, self.head = nn.Conv2d(2, 1, 7, padding=3), nn.Linear(c, 5)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = x * torch.sigmoid(self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3))))[:, :, None, None]
        maps = torch.cat([x.mean(1, keepdim=True), torch.max(x, 1, keepdim=True)[0]], 1)
        return self.head((x * torch.sigmoid(self.spatial(maps))).flatten(2).mean(-1))


class MixConv(nn.Module):
    """MixNet's mixed depthwise conv: the channels split in three, each part with its own kernel size."""

    def __init__(self):
        super().__init__()
        self.stem, self.pw, self.head = nn.Conv2d(3, 48, 1), nn.Conv2d(48, 24, 1), nn.Linear(24, 5)
        self.dw = nn.ModuleList(nn.Conv2d(16, 16, k, padding=k // 2, groups=16) for k in (3, 5, 7))

    def forward(self, x):
        parts = torch.split(self.stem(x), [16, 16, 16], 1)
        x = torch.cat([conv(part) for conv, part in zip(self.dw, parts)], 1)
        return self.head(self.pw(F.relu(x)).mean((2, 3)))


class SelectiveKernel(nn.Module):
    """SKNet: two branches stacked on a new dim, mixed by a softmax over the branches per channel."""

    def __init__(self, c: int = 32):
        super().__init__()
        self.stem, self.fc, self.att, self.head = nn.Conv2d(3, c, 3, padding=1), nn.Linear(c, 16), nn.Linear(16, 2 * c), nn.Linear(c, 5)
        self.branches = nn.ModuleList([nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=2, dilation=2)])

    def forward(self, x):
        x = F.relu(self.stem(x))
        feats = torch.stack([branch(x) for branch in self.branches], 1)
        weights = self.att(F.relu(self.fc(feats.sum(1).mean((2, 3))))).view(x.shape[0], 2, -1).softmax(1)
        return self.head((feats * weights[..., None, None]).sum(1).mean((2, 3)))


class LoRALinear(nn.Module):
    """A linear layer with a low-rank adapter on raw parameters: ``base(x) + x @ A @ B * scale``."""

    def __init__(self, d_in: int, d_out: int, rank: int = 8):
        super().__init__()
        self.base = nn.Linear(d_in, d_out)
        self.A, self.B = nn.Parameter(torch.randn(d_in, rank) * 0.1), nn.Parameter(torch.randn(rank, d_out) * 0.1)

    def forward(self, x):
        return self.base(x) + (x @ self.A @ self.B) * 0.5


class LoRAMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down, self.out = LoRALinear(16, 64), LoRALinear(64, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.out(x + self.down(F.gelu(self.up(x))))


class InterpolatedPositions(nn.Module):
    """DINO-style ViT: a 4x4 grid of position embeddings resized (bicubic) to the patch grid of the input."""

    def __init__(self, d: int = 32):
        super().__init__()
        self.patch, self.head = nn.Conv2d(3, d, 4, 4), nn.Linear(d, 5)
        self.pos, self.cls = nn.Parameter(torch.randn(1, 16, d)), nn.Parameter(torch.zeros(1, 1, d))
        self.block = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.0, batch_first=True)

    def forward(self, x):
        t = self.patch(x)
        grid = self.pos.reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(grid, size=t.shape[2:], mode="bicubic", align_corners=False)
        t = t.flatten(2).transpose(1, 2) + pos.flatten(2).transpose(1, 2)
        return self.head(self.block(torch.cat([self.cls.expand(x.shape[0], -1, -1), t], 1))[:, 0])


class Perceiver(nn.Module):
    """Perceiver: learned latents cross-attend to the inputs (nn.MultiheadAttention), then self-attend."""

    def __init__(self, d: int = 32):
        super().__init__()
        self.embed, self.latents, self.head = nn.Linear(6, d), nn.Parameter(torch.randn(8, d)), nn.Linear(d, 3)
        self.cross = nn.MultiheadAttention(d, 4, batch_first=True)
        self.block = nn.TransformerEncoderLayer(d, 4, 64, dropout=0.0, batch_first=True)

    def forward(self, x):
        kv = self.embed(x)
        q = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.head(self.block(q + self.cross(q, kv, kv, need_weights=False)[0]).mean(1))


class SegNet(nn.Module):
    """SegNet: the decoder unpools (MaxUnpool2d) at the indices of the encoder's max pooling."""

    def __init__(self):
        super().__init__()
        self.e1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.e2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.pool, self.unpool = nn.MaxPool2d(2, return_indices=True), nn.MaxUnpool2d(2)
        self.d2 = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.d1 = nn.Conv2d(16, 5, 3, padding=1)

    def forward(self, x):
        h1, i1 = self.pool(self.e1(x))
        h2, i2 = self.pool(self.e2(h1))
        return self.d1(self.unpool(self.d2(self.unpool(h2, i2)), i1))


class CausalSeq2Seq(nn.Module):
    """nn.Transformer with a causal target mask and no ``tgt_is_causal`` hint (PyTorch's tutorial usage)."""

    def __init__(self, d: int = 32):
        super().__init__()
        self.source, self.target, self.out = nn.Embedding(40, d), nn.Embedding(40, d), nn.Linear(d, 40)
        self.transformer = nn.Transformer(d, 4, 2, 2, 64, dropout=0.0, batch_first=True)

    def forward(self, source, target):
        mask = nn.Transformer.generate_square_subsequent_mask(target.shape[1])
        return self.out(self.transformer(self.source(source), self.target(target), tgt_mask=mask))


class VectorQuantizedVAE(nn.Module):
    """VQ-VAE: nearest-codebook quantisation with a straight-through gradient and an EMA codebook updated
    in place in training."""

    def __init__(self, codes: int = 32, d: int = 16, decay: float = 0.9):
        super().__init__()
        self.decay = decay
        self.enc = nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, d, 3, padding=1))
        self.dec = nn.Sequential(nn.ConvTranspose2d(d, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 3, 3, padding=1))
        self.register_buffer("codebook", torch.randn(codes, d))
        self.register_buffer("counts", torch.ones(codes))
        self.register_buffer("sums", self.codebook.clone())

    def forward(self, x):
        z = self.enc(x)
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        distances = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t() + self.codebook.pow(2).sum(1)
        codes = distances.argmin(1)
        q = F.embedding(codes, self.codebook).view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
        if self.training:
            with torch.no_grad():
                onehot = F.one_hot(codes, self.codebook.shape[0]).type(flat.dtype)
                self.counts.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
                self.sums.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
                self.codebook.copy_(self.sums / (self.counts.unsqueeze(1) + 1e-5))
        return self.dec(z + (q - z).detach()), (q.detach() - z).pow(2).mean()


class GroupedQuerySDPA(nn.Module):
    """Grouped-query attention through ``scaled_dot_product_attention(enable_gqa=True)``: 8 query heads
    over 2 key/value heads, k and v never copied (torchtune / hand-written LLM style)."""

    def __init__(self, d: int = 64, heads: int = 8, kv: int = 2):
        super().__init__()
        self.heads, self.kv, self.hd = heads, kv, d // heads
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, kv * self.hd), nn.Linear(d, kv * self.hd)
        self.o, self.head = nn.Linear(d, d), nn.Linear(d, 4)

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.heads, self.hd).transpose(1, 2)
        k, v = (f(x).view(b, t, self.kv, self.hd).transpose(1, 2) for f in (self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.head(x + self.o(y.transpose(1, 2).reshape(b, t, -1)))


class CheckpointedResNet(nn.Module):
    """Residual blocks run through ``torch.utils.checkpoint`` (activation checkpointing to save memory)."""

    def __init__(self, c: int = 32):
        super().__init__()
        self.stem, self.head = nn.Conv2d(3, c, 3, padding=1), nn.Linear(c, 10)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                                  nn.Conv2d(c, c, 3, padding=1)) for _ in range(3))

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = x + torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        return self.head(x.mean((2, 3)))


class NormZoo(nn.Module):
    """PReLU per channel, InstanceNorm with and without affine, LocalResponseNorm, RMSNorm and a
    LayerNorm over the last two dims."""

    def __init__(self):
        super().__init__()
        self.c1, self.a1, self.n1 = nn.Conv2d(3, 32, 3, padding=1), nn.PReLU(32), nn.InstanceNorm2d(32, affine=True)
        self.c2, self.n2, self.lrn = nn.Conv2d(32, 16, 3, padding=1), nn.InstanceNorm2d(16), nn.LocalResponseNorm(5)
        self.fc, self.rms, self.ln2 = nn.Linear(16, 24), nn.RMSNorm(24), nn.LayerNorm((4, 24))
        self.out = nn.Linear(24, 3)

    def forward(self, x):
        h = self.lrn(self.n2(self.c2(self.n1(self.a1(self.c1(x))))))
        tokens = self.rms(self.fc(F.adaptive_avg_pool2d(h, 2).flatten(2).transpose(1, 2)))
        return self.out(self.ln2(tokens))


class Video3D(nn.Module):
    """3-D convs (dense, depthwise, pointwise) with BatchNorm3d over clips."""

    def __init__(self):
        super().__init__()
        self.c, self.bn = nn.Conv3d(3, 16, 3, padding=1), nn.BatchNorm3d(16)
        self.dw, self.pw, self.fc = nn.Conv3d(16, 16, 3, padding=1, groups=16), nn.Conv3d(16, 24, 1), nn.Linear(24, 4)

    def forward(self, x):
        return self.fc(self.pw(self.dw(F.relu(self.bn(self.c(x))))).mean((2, 3, 4)))


class SpectrogramCNN(nn.Module):
    """An STFT front end (magnitude, log) feeding 1-D convs and a transposed conv (audio)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(64))
        self.c, self.up, self.fc = nn.Conv1d(33, 32, 4, 2, 1), nn.ConvTranspose1d(32, 16, 4, 2, 1), nn.Linear(16, 5)

    def forward(self, wav):
        spec = torch.stft(wav, 64, 16, window=self.window, return_complex=True).abs()
        return self.fc(F.gelu(self.up(F.gelu(self.c(torch.log1p(spec))))).mean(-1))


class SpaceToDepth(nn.Module):
    """PixelUnshuffle (channels × 4) with circular and reflect padding, ceil-mode pooling."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 16, 3, padding=1, padding_mode="circular")
        self.c2 = nn.Conv2d(64, 32, 3, padding=1, padding_mode="reflect")
        self.unshuffle, self.fc = nn.PixelUnshuffle(2), nn.Linear(32, 3)

    def forward(self, x):
        return self.fc(F.avg_pool2d(self.c2(self.unshuffle(F.relu(self.c(x)))), 3, ceil_mode=True).mean((2, 3)))


class TiedAutoencoder(nn.Module):
    """The decoder's transposed conv reuses the encoder conv's weight (tied weights)."""

    def __init__(self):
        super().__init__()
        self.enc, self.mid = nn.Conv2d(3, 32, 4, stride=2, padding=1), nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, x):
        return F.conv_transpose2d(F.relu(self.mid(F.relu(self.enc(x)))), self.enc.weight, stride=2, padding=1)


class CosineClassifier(nn.Module):
    """Normalised features against normalised class weights with a learnt scale (few-shot / face
    recognition heads)."""

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32))
        self.classes, self.scale = nn.Parameter(torch.randn(10, 32)), nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        return self.scale * F.linear(F.normalize(self.f(x), dim=-1), F.normalize(self.classes, dim=-1))


class HookedDictOutput(nn.Module):
    """Forward hooks (one stores features, one rescales an output) and a dict output holding a tuple with
    None and a list."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.main, self.aux = nn.Linear(8, 32), nn.Linear(32, 32), nn.Linear(32, 3), nn.Linear(32, 2)
        self.features: dict[str, torch.Tensor] = {}
        self.b.register_forward_hook(lambda m, i, o: self.features.__setitem__("b", o))
        self.a.register_forward_hook(lambda m, i, o: o * 2)

    def forward(self, x):
        h = F.relu(self.b(F.relu(self.a(x))))
        return {"main": self.main(h), "aux": (self.aux(h), None), "pooled": [h.mean(-1)]}


class EmbeddingMaxNorm(nn.Module):
    """An embedding with ``max_norm`` (rows renormalised in place at lookup: the op blocks the embedding
    width, reported) and ``padding_idx``."""

    def __init__(self):
        super().__init__()
        self.emb, self.fc = nn.Embedding(50, 32, padding_idx=0, max_norm=1.0), nn.Linear(32, 4)

    def forward(self, ids):
        return self.fc(self.emb(ids).mean(1))


class DictInput(nn.Module):
    """A two-modality model taking one dict (``model({"image": ..., "tokens": ...})``)."""

    def __init__(self):
        super().__init__()
        self.img, self.txt, self.head = nn.Conv2d(3, 16, 3, padding=1), nn.Embedding(50, 16), nn.Linear(32, 5)

    def forward(self, batch):
        return self.head(torch.cat([self.img(batch["image"]).mean((2, 3)), self.txt(batch["tokens"]).mean(1)], -1))


class Siamese(nn.Module):
    """One encoder applied to two inputs (shared weights), their distance scored."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(32, 1)

    def forward(self, a, b):
        return self.head((self.enc(a) - self.enc(b)).abs())


class TokenTopK(nn.Module):
    """EViT-style token pruning: the tokens the class token attends to most are gathered (``topk`` +
    ``gather`` along the sequence), the rest dropped."""

    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x):
        y, w = self.attn(x, x, x, need_weights=True)
        x = x + y
        idx = w[:, 0, 1:].topk(4, dim=-1).indices + 1
        x = torch.cat([x[:, :1], torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))], 1)
        x = x + self.mlp(self.norm(x))
        return self.head(x[:, 0])


class KANLayer(nn.Module):
    """A Kolmogorov-Arnold layer: B-spline bases of each input on a grid buffer (Cox-de Boor recursion),
    contracted with coefficients ``[out, in, bases]`` by ``einsum``, plus a SiLU base branch."""

    def __init__(self, inputs: int = 8, outputs: int = 16, grid: int = 5, order: int = 3):
        super().__init__()
        knots = torch.arange(-order, grid + order + 1) * (2 / grid) - 1
        self.register_buffer("grid", knots.expand(inputs, -1).contiguous())
        self.coef = nn.Parameter(torch.randn(outputs, inputs, grid + order) * 0.1)
        self.base, self.out, self.order = nn.Linear(inputs, outputs), nn.Linear(outputs, 3), order

    def forward(self, x):
        g, u = self.grid, x.unsqueeze(-1)
        b = ((u >= g[:, :-1]) & (u < g[:, 1:])).to(x.dtype)
        for p in range(1, self.order + 1):
            b = ((u - g[:, :-(p + 1)]) / (g[:, p:-1] - g[:, :-(p + 1)]) * b[..., :-1]
                 + (g[:, p + 1:] - u) / (g[:, p + 1:] - g[:, 1:-p]) * b[..., 1:])
        return self.out(self.base(F.silu(x)) + torch.einsum("bik,oik->bo", b, self.coef))


class SameUnflattenBilinear(nn.Module):
    """``padding="same"``, ``F.normalize`` and ``cumsum`` over channels, ``nn.Unflatten`` of pooled features
    and ``nn.Bilinear`` of two views of them."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 5, padding="same"), nn.Conv2d(16, 16, 3, padding="same")
        self.unflatten, self.bilinear, self.fc = nn.Unflatten(1, (4, 4)), nn.Bilinear(16, 16, 8), nn.Linear(8, 4)

    def forward(self, x):
        v = self.c2(F.normalize(self.c1(x), dim=1)).cumsum(1).mean((2, 3))
        return self.fc(self.bilinear(self.unflatten(v).softmax(-1).flatten(1), v))


class OrthogonalLinear(nn.Module):
    """A linear under ``parametrizations.orthogonal`` (its weight made by ``matrix_exp`` in forward: an op
    without a rule, reported)."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.utils.parametrizations.orthogonal(nn.Linear(16, 16))
        self.b = nn.Linear(16, 4)

    def forward(self, x):
        return self.b(F.relu(self.a(x)))


class LayerNormCHW(nn.Module):
    """LayerNorm over channels, height and width together (``nn.LayerNorm([C, H, W])``), then flattened."""

    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.LayerNorm([8, 6, 6]), nn.Linear(8 * 36, 5)

    def forward(self, x):
        return self.fc(self.norm(self.conv(x)).flatten(1))


class ModuleDictRouter(nn.Module):
    """Branches of an ``nn.ModuleDict`` picked by name, one shared head, a list of outputs."""

    def __init__(self):
        super().__init__()
        self.branch = nn.ModuleDict({"x": nn.Linear(8, 16), "y": nn.Linear(8, 16)})
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return [self.head(F.relu(self.branch[k](x))) for k in ("x", "y")]


class WhereMasked(nn.Module):
    """Hidden units gated by ``torch.where`` on a second projection's sign, then ``clamp`` and ``nan_to_num``."""

    def __init__(self):
        super().__init__()
        self.value, self.gate, self.out = nn.Linear(8, 32), nn.Linear(8, 32), nn.Linear(32, 3)

    def forward(self, x):
        h = self.value(x)
        return self.out(torch.where(self.gate(x) > 0, h, torch.zeros_like(h)).clamp(max=3).nan_to_num())


class BagClassifier(nn.Module):
    """A text classifier on ``nn.EmbeddingBag`` (mean of each row's token embeddings)."""

    def __init__(self):
        super().__init__()
        self.bag = nn.EmbeddingBag(100, 32, mode="mean")
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 5)

    def forward(self, ids):
        return self.fc2(F.relu(self.fc1(self.bag(ids))))


class WeightNormConvs(nn.Module):
    """1-D convs under the ``weight_norm`` parametrisation (weight = g · v / ‖v‖), one residual."""

    def __init__(self):
        super().__init__()
        norm = nn.utils.parametrizations.weight_norm
        self.c1, self.c2 = norm(nn.Conv1d(4, 32, 3, padding=1)), norm(nn.Conv1d(32, 32, 3, padding=1))
        self.c3 = norm(nn.Conv1d(32, 6, 1))

    def forward(self, x):
        h = F.relu(self.c1(x))
        return self.c3(h + F.relu(self.c2(h)))


class ConformerBlock(nn.Module):
    """A Conformer block's half-step feed-forward and convolution module: pointwise conv, GLU over
    channels, depthwise conv, BatchNorm1d, SiLU, pointwise conv, on a transposed [B, T, C] stream."""

    def __init__(self, d=32):
        super().__init__()
        self.ff = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
        self.norm = nn.LayerNorm(d)
        self.pw1, self.pw2 = nn.Conv1d(d, 2 * d, 1), nn.Conv1d(d, d, 1)
        self.dw = nn.Conv1d(d, d, 5, padding=2, groups=d)
        self.bn = nn.BatchNorm1d(d)
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        x = x + 0.5 * self.ff(x)
        h = F.glu(self.pw1(self.norm(x).transpose(1, 2)), dim=1)
        x = x + self.pw2(F.silu(self.bn(self.dw(h)))).transpose(1, 2)
        return self.head(x.mean(1))


class ReflectPadNet(nn.Module):
    """``nn.ReflectionPad2d`` and convs with ``padding_mode`` reflect and replicate."""

    def __init__(self):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.c1 = nn.Conv2d(3, 16, 3)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect")
        self.c3 = nn.Conv2d(16, 16, 3, padding=1, padding_mode="replicate")
        self.out = nn.Conv2d(16, 3, 1)

    def forward(self, x):
        h = F.relu(self.c1(self.pad(x)))
        return self.out(h + F.relu(self.c3(F.relu(self.c2(h)))))


class ConvMixer(nn.Module):
    """ConvMixer: a patch stem, then per block a residual depthwise conv and a pointwise conv (GELU and
    BatchNorm after each), blocks held in a ``ModuleList`` of ``ModuleDict``s."""

    def __init__(self, dim=32, depth=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 2, stride=2), nn.GELU(), nn.BatchNorm2d(dim))
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "dw": nn.Sequential(nn.Conv2d(dim, dim, 3, groups=dim, padding="same"), nn.GELU(), nn.BatchNorm2d(dim)),
            "pw": nn.Sequential(nn.Conv2d(dim, dim, 1), nn.GELU(), nn.BatchNorm2d(dim))}) for _ in range(depth))
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block["pw"](x + block["dw"](x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class MultiQueryAttention(nn.Module):
    """Multi-query attention: per-head queries, one key/value head broadcast over them by ``@``."""

    def __init__(self, d=48, heads=6):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.q, self.kv, self.o = nn.Linear(d, d), nn.Linear(d, 2 * self.dh), nn.Linear(d, d)
        self.head = nn.Linear(d, 4)

    def forward(self, x):
        b, n, c = x.shape
        q = self.q(x).view(b, n, self.h, self.dh).transpose(1, 2)
        k, v = self.kv(x).unsqueeze(1).split(self.dh, dim=-1)
        a = (q @ k.transpose(-2, -1)) * self.dh ** -0.5
        y = (a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.head((x + self.o(y)).mean(1))


class Highway(nn.Module):
    """A highway network: each layer mixes its transform and its input by a learned sigmoid gate."""

    def __init__(self, d=32, n=3):
        super().__init__()
        self.inp, self.out = nn.Linear(10, d), nn.Linear(d, 2)
        self.h = nn.ModuleList(nn.Linear(d, d) for _ in range(n))
        self.t = nn.ModuleList(nn.Linear(d, d) for _ in range(n))

    def forward(self, x):
        x = self.inp(x)
        for h, t in zip(self.h, self.t):
            g = torch.sigmoid(t(x))
            x = g * F.relu(h(x)) + (1 - g) * x
        return self.out(x)


class FiLM(nn.Module):
    """FiLM conditioning: a second input's MLP gives per-channel scale and shift (``chunk``) of a conv."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)
        self.cond = nn.Sequential(nn.Linear(7, 32), nn.ReLU(), nn.Linear(32, 32))
        self.out = nn.Linear(16, 5)

    def forward(self, x, c):
        gamma, beta = self.cond(c).chunk(2, -1)
        h = F.relu(self.c1(x))
        h = F.relu(self.c2(h) * gamma[:, :, None, None] + beta[:, :, None, None]) + h
        return self.out(h.mean((2, 3)))


class PointNet(nn.Module):
    """PointNet: a T-Net predicts a 3×3 transform (``view`` + identity) applied with ``bmm``, then a shared
    per-point MLP (1×1 Conv1d) and a max over points."""

    def __init__(self):
        super().__init__()
        self.tnet = nn.Sequential(nn.Conv1d(3, 32, 1), nn.ReLU(), nn.Conv1d(32, 64, 1), nn.ReLU())
        self.tfc = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 9))
        self.mlp = nn.Sequential(nn.Conv1d(3, 32, 1), nn.BatchNorm1d(32), nn.ReLU(), nn.Conv1d(32, 64, 1))
        self.cls = nn.Linear(64, 4)

    def forward(self, points):
        t = self.tfc(self.tnet(points).max(2).values).view(-1, 3, 3) + torch.eye(3)
        return self.cls(self.mlp(torch.bmm(t, points)).max(2).values)


class CondConv(nn.Module):
    """CondConv: per-sample kernels mixed from an expert bank (``einsum``), run as one grouped conv with the
    batch folded into the groups."""

    def __init__(self, cin=8, cout=16, experts=4):
        super().__init__()
        self.cout = cout
        self.stem = nn.Conv2d(3, cin, 3, padding=1)
        self.bank = nn.Parameter(torch.randn(experts, cout, cin, 3, 3) * 0.1)
        self.route, self.head = nn.Linear(cin, experts), nn.Linear(cout, 3)

    def forward(self, x):
        x = F.relu(self.stem(x))
        b, c, h, w = x.shape
        r = torch.sigmoid(self.route(x.mean((2, 3))))
        kernels = torch.einsum("be,eoikl->boikl", r, self.bank).reshape(b * self.cout, c, 3, 3)
        y = F.conv2d(x.reshape(1, b * c, h, w), kernels, padding=1, groups=b).view(b, self.cout, h, w)
        return self.head(F.relu(y).mean((2, 3)))


class GatedAttentionUnit(nn.Module):
    """FLASH's gated attention unit: one projection split into u, v and a shared base z, per-role scale
    and offset of z by ``einsum``, squared-ReLU attention, gated output."""

    def __init__(self, d=32, e=64, s=16):
        super().__init__()
        self.e, self.s = e, s
        self.norm = nn.LayerNorm(d)
        self.uv = nn.Linear(d, 2 * e + s)
        self.gamma = nn.Parameter(torch.randn(2, s) * 0.02 + 1)
        self.beta = nn.Parameter(torch.zeros(2, s))
        self.o, self.head = nn.Linear(e, d), nn.Linear(d, 3)

    def forward(self, x):
        u, v, z = F.silu(self.uv(self.norm(x))).split([self.e, self.e, self.s], -1)
        q, k = (torch.einsum("bns,hs->bnhs", z, self.gamma) + self.beta).unbind(2)
        a = F.relu(q @ k.transpose(1, 2) / math.sqrt(self.s)) ** 2
        return self.head((x + self.o(u * (a @ v))).mean(1))


class DropPathBlocks(nn.Module):
    """Pre-norm MLP blocks with hand-written stochastic depth in training (``bernoulli_`` per sample)."""

    def __init__(self, d=32, n=3, p=0.2):
        super().__init__()
        self.p = p
        self.inp, self.out = nn.Linear(8, d), nn.Linear(d, 2)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
                                    for _ in range(n))

    def forward(self, x):
        x = self.inp(x)
        for block in self.blocks:
            y = block(x)
            if self.training:
                y = y * x.new_empty(x.shape[0], 1, 1).bernoulli_(1 - self.p) / (1 - self.p)
            x = x + y
        return self.out(x.mean(1))


class ManualGRU(nn.Module):
    """Hidden state created in forward with new_zeros(B, hidden); loop over time."""
    def __init__(self, d=8, h=32):
        super().__init__(); self.h = h
        self.xz = nn.Linear(d, 3 * h); self.hz = nn.Linear(h, 3 * h); self.out = nn.Linear(h, 5)
    def forward(self, x):
        hid = x.new_zeros(x.size(0), self.h)
        for t in range(x.size(1)):
            a = self.xz(x[:, t]); b = self.hz(hid)
            ar, az, an = a.chunk(3, -1); br, bz, bn = b.chunk(3, -1)
            r = torch.sigmoid(ar + br); z = torch.sigmoid(az + bz); n = torch.tanh(an + r * bn)
            hid = (1 - z) * n + z * hid
        return self.out(hid)

class MambaLite(nn.Module):
    """Mamba-style block: in_proj split to x,z; causal depthwise conv1d; selective scan in a loop."""
    def __init__(self, d=16, expand=2, state=4, layers=2):
        super().__init__()
        di = d * expand; self.state = state
        self.emb = nn.Linear(3, d)
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            b = nn.Module()
            b.norm = nn.LayerNorm(d); b.in_proj = nn.Linear(d, 2 * di)
            b.conv = nn.Conv1d(di, di, 4, groups=di, padding=3)
            b.x_proj = nn.Linear(di, 1 + 2 * state); b.dt_proj = nn.Linear(1, di)
            b.A_log = nn.Parameter(torch.log(torch.arange(1, state + 1).float()).repeat(di, 1))
            b.D = nn.Parameter(torch.ones(di)); b.out_proj = nn.Linear(di, d)
            self.blocks.append(b)
        self.head = nn.Linear(d, 4)
    def forward(self, u):
        h = self.emb(u)
        for b in self.blocks:
            x, z = b.in_proj(b.norm(h)).chunk(2, -1)
            L = x.shape[1]
            x = F.silu(b.conv(x.transpose(1, 2))[..., :L].transpose(1, 2))
            dt, B, C = torch.split(b.x_proj(x), [1, self.state, self.state], -1)
            dt = F.softplus(b.dt_proj(dt))
            A = -torch.exp(b.A_log)
            s = x.new_zeros(x.shape[0], x.shape[2], self.state)
            ys = []
            for t in range(L):
                s = torch.exp(dt[:, t, :, None] * A) * s + dt[:, t, :, None] * B[:, t, None, :] * x[:, t, :, None]
                ys.append((s * C[:, t, None, :]).sum(-1))
            y = torch.stack(ys, 1) + x * b.D
            h = h + b.out_proj(y * F.silu(z))
        return self.head(h.mean(1))

class RWKVTimeShift(nn.Module):
    """RWKV-style token shift (ZeroPad2d) with learnt mixing vectors and a squared-ReLU channel mix."""
    def __init__(self, d=32, layers=2):
        super().__init__()
        self.shift = nn.ZeroPad2d((0, 0, 1, -1))
        self.mix = nn.ParameterList([nn.Parameter(torch.rand(1, 1, d)) for _ in range(layers)])
        self.key = nn.ModuleList([nn.Linear(d, 4 * d, bias=False) for _ in range(layers)])
        self.value = nn.ModuleList([nn.Linear(4 * d, d, bias=False) for _ in range(layers)])
        self.ln = nn.ModuleList([nn.LayerNorm(d) for _ in range(layers)])
        self.head = nn.Linear(d, 7)
    def forward(self, x):
        for mix, k, v, ln in zip(self.mix, self.key, self.value, self.ln):
            y = ln(x)
            y = y * mix + self.shift(y) * (1 - mix)
            x = x + v(torch.square(torch.relu(k(y))))
        return self.head(x)

class ALiBiAttention(nn.Module):
    """Attention with ALiBi biases: per-head slopes in a buffer times relative distances."""
    def __init__(self, d=32, heads=4):
        super().__init__(); self.heads = heads
        self.qkv = nn.Linear(d, 3 * d); self.proj = nn.Linear(d, d)
        slopes = torch.tensor([2 ** (-8 * (i + 1) / heads) for i in range(heads)])
        self.register_buffer("slopes", slopes.view(heads, 1, 1))
    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        pos = torch.arange(T, device=x.device)
        bias = -(pos[None, :] - pos[:, None]).abs().float() * self.slopes
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.heads) + bias
        y = att.softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

class CircularConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1, padding_mode="circular"); self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1, padding_mode="circular"); self.b2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 3)
    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = x + F.relu(self.b2(self.c2(x)))
        return self.fc(x.mean((2, 3)))

MultiTaskOutput = collections.namedtuple("MultiTaskOutput", ["logits", "embedding"])

class NamedTupleMultiTask(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(10, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU())
        self.cls = nn.Linear(32, 4); self.emb = nn.Linear(32, 8)
    def forward(self, x):
        h = self.body(x)
        return MultiTaskOutput(self.cls(h), F.normalize(self.emb(h), dim=-1))

class InplaceResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.c1 = nn.Conv2d(16, 24, 1); self.c2 = nn.Conv2d(24, 16, 1)
        self.fc = nn.Linear(16, 2)
    def forward(self, x):
        x = self.stem(x)
        y = self.c2(F.relu(self.c1(x), inplace=True))
        y += x
        x = F.relu(y)
        return self.fc(x.flatten(2).mean(-1))

class MHAKdimVdim(nn.Module):
    """nn.MultiheadAttention with kdim/vdim != embed_dim, sequence-first."""
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(6, 32); self.kv = nn.Linear(5, 24)
        self.mha = nn.MultiheadAttention(32, 4, kdim=24, vdim=24)
        self.out = nn.Linear(32, 3)
    def forward(self, x, ctx):
        q = self.q(x).transpose(0, 1); kv = self.kv(ctx).transpose(0, 1)
        y, _ = self.mha(q, kv, kv, need_weights=False)
        return self.out(y.transpose(0, 1))

class ConvLSTM(nn.Module):
    def __init__(self, c=3, h=16):
        super().__init__(); self.h = h
        self.gates = nn.Conv2d(c + h, 4 * h, 3, padding=1); self.head = nn.Conv2d(h, 2, 1)
    def forward(self, x):  # B, T, C, H, W
        B, T, C, H, W = x.shape
        hid = x.new_zeros(B, self.h, H, W); cell = x.new_zeros(B, self.h, H, W)
        for t in range(T):
            i, f, o, g = self.gates(torch.cat([x[:, t], hid], 1)).chunk(4, 1)
            cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
            hid = torch.sigmoid(o) * torch.tanh(cell)
        return self.head(hid)

class ChannelShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 1); self.g = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.sh = nn.ChannelShuffle(4); self.c2 = nn.Conv2d(16, 8, 1); self.fc = nn.Linear(8, 2)
    def forward(self, x):
        return self.fc(self.c2(self.sh(self.g(F.relu(self.c1(x))))).mean((2, 3)))

class ClassAttentionPool(nn.Module):
    """CaiT-style class attention: a learnt query token expanded over the batch attends to the tokens."""
    def __init__(self, d=32, heads=4):
        super().__init__(); self.heads = heads
        self.embed = nn.Linear(6, d); self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.q = nn.Linear(d, d); self.k = nn.Linear(d, d); self.v = nn.Linear(d, d); self.proj = nn.Linear(d, d)
        self.head = nn.Linear(d, 5)
    def forward(self, x):
        x = self.embed(x); B, N, C = x.shape
        c = self.cls.expand(B, -1, -1)
        u = torch.cat([c, x], 1)
        q = self.q(c).reshape(B, 1, self.heads, -1).transpose(1, 2)
        k = self.k(u).reshape(B, N + 1, self.heads, -1).transpose(1, 2)
        v = self.v(u).reshape(B, N + 1, self.heads, -1).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, 1, C)
        return self.head(self.proj(y)[:, 0] + c[:, 0])

class TokenBatchNorm(nn.Module):
    """BatchNorm1d over tokens (B, C, L) via transposes, as in some audio/point transformers."""
    def __init__(self, d=24):
        super().__init__()
        self.fc1 = nn.Linear(5, d); self.bn = nn.BatchNorm1d(d); self.fc2 = nn.Linear(d, d); self.out = nn.Linear(d, 2)
    def forward(self, x):
        h = self.fc1(x)
        h = self.bn(h.transpose(1, 2)).transpose(1, 2)
        h = h + F.gelu(self.fc2(h))
        return self.out(h.amax(1))

class ZerosCatHidden(nn.Module):
    """torch.zeros with a literal channel count concatenated to features (padding channels by hand)."""
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1); self.c2 = nn.Conv2d(16, 16, 3, padding=1); self.fc = nn.Linear(16, 2)
    def forward(self, x):
        y = F.relu(self.c1(x))
        pad = torch.zeros(y.shape[0], 8, y.shape[2], y.shape[3])
        y = torch.cat([y, pad], 1)
        return self.fc(F.relu(self.c2(y)).mean((2, 3)))

class SEWithScalarGate(nn.Module):
    """Squeeze-excitation scaled by a learnt 0-d parameter."""
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 32, 3, padding=1); self.se1 = nn.Linear(32, 8); self.se2 = nn.Linear(8, 32)
        self.alpha = nn.Parameter(torch.tensor(0.5)); self.fc = nn.Linear(32, 3)
    def forward(self, x):
        x = F.relu(self.c(x))
        s = torch.sigmoid(self.se2(F.relu(self.se1(x.mean((2, 3))))))[:, :, None, None]
        x = x + self.alpha * x * s
        return self.fc(x.mean((2, 3)))


def _image(size: int = 8, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size)


def _torch_init(model: nn.Module) -> nn.Module:
    """PyTorch's default initialisation in place of the model's own, whose small convolution and batch-norm
    weights leave the detection scores equal (top-k ties that float32 and float64 break differently)."""
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model


def _torchvision() -> Any:
    import torchvision.models.detection.backbone_utils
    import torchvision.models.optical_flow
    return torchvision


HAND: dict[str, Callable[[], tuple[nn.Module, tuple]]] = {
    "fused_qkv_split_per_head": lambda: (FusedQKVSplitPerHead(), (torch.randn(2, 5, 64),)),
    "causal_self_attention": lambda: (CausalSelfAttention(), (torch.randn(2, 10, 48),)),
    "group_norm_fpn": lambda: (GroupNormFPN(), (_image(16),)),
    "pixel_shuffle_sr": lambda: (PixelShuffleSR(), (_image(),)),
    "unfold_fold": lambda: (UnfoldFold(), (_image(),)),
    "repeat_kv_attention": lambda: (RepeatKV(), (torch.randn(2, 5, 64),)),
    "weight_standardised_convs": lambda: (WeightStandardised(), (_image(),)),
    "grouped_convs": lambda: (GroupedConvs(), (_image(),)),
    "unet": lambda: (UNet(), (_image(16),)),
    "mlp_mixer": lambda: (Mixer(), (_image(16),)),
    "tcn": lambda: (TCN(), (torch.randn(2, 20, 8),)),
    "torch_transformer_encoder": lambda: (TorchEncoder(), (torch.randint(0, 100, (2, 9)),)),
    "cross_attention": lambda: (CrossAttention(), (torch.randn(2, 5, 16), torch.randn(2, 7, 24))),
    "gru_classifier": lambda: (GRUClassifier(), (torch.randint(0, 100, (2, 7)),)),
    "float64_mlp": lambda: (Float64MLP().double(), (torch.randn(2, 5, 8, dtype=torch.float64),)),
    "temporal_shift": lambda: (TemporalShift(), (_image(8, batch=8),)),
    "gated_by_slices": lambda: (GatedBySlices(), (torch.randn(2, 5, 8),)),
    "spectral_norm_critic": lambda: (SpectralNormCritic(), (_image(16),)),
    "float32_attention": lambda: (Float32Attention(), (torch.randn(2, 5, 32),)),
    "einsum_vit": lambda: (EinsumViT(), (_image(8),)),
    "cifar_resnet_option_a": lambda: (CifarResNetOptionA(), (_image(16),)),
    "message_passing_gnn": lambda: (MessagePassingGNN(), (torch.randn(10, 8), torch.randint(0, 10, (2, 30)))),
    "wavenet": lambda: (WaveNet(), (torch.randn(2, 1, 64),)),
    "vae": lambda: (VAE(), (torch.randn(4, 32),)),
    "spatial_transformer": lambda: (SpatialTransformer(), (_image(8),)),
    "prototype_network": lambda: (PrototypeNetwork(), (torch.randn(4, 16),)),
    "time_conditioned_unet": lambda: (TimeConditionedUNet(), (_image(16), torch.tensor([3, 500]))),
    "global_filter_net": lambda: (GlobalFilterNet(), (_image(32),)),
    "cell_loop_seq2label": lambda: (CellLoopSeq2Label(), (torch.randint(0, 50, (2, 6)),)),
    "capsules": lambda: (Capsules(), (_image(8),)),
    "linear_attention": lambda: (LinearAttention(), (torch.randn(2, 9, 32),)),
    "involution": lambda: (Involution(), (_image(8),)),
    "pairwise_interactions": lambda: (PairwiseInteractions(), (torch.randn(4, 13), torch.randint(0, 40, (4, 4, 3)))),
    "hyper_network": lambda: (HyperNetwork(), (torch.randn(4, 20),)),
    "mixture_density": lambda: (MixtureDensity(), (torch.randn(4, 6),)),
    "split_branches": lambda: (SplitBranches(), (_image(16),)),
    "straight_through": lambda: (StraightThrough(), (torch.randn(4, 10),)),
    "style_transfer": lambda: (StyleTransfer(), (_image(32),)),
    "non_local": lambda: (NonLocal(), (_image(8),)),
    "deformable_conv": lambda: (DeformableConv(), (_image(16),)),
    "universal_transformer": lambda: (UniversalTransformer(), (torch.randn(2, 7, 12),)),
    "soft_mixture": lambda: (SoftMixture(), (torch.randn(4, 16),)),
    "nerf": lambda: (NeRF(), (torch.randn(8, 3),)),
    "cbam": lambda: (CBAM(), (_image(16),)),
    "mixconv": lambda: (MixConv(), (_image(16),)),
    "selective_kernel": lambda: (SelectiveKernel(), (_image(16),)),
    "lora_mlp": lambda: (LoRAMLP(), (torch.randn(2, 5, 16),)),
    "interpolated_positions": lambda: (InterpolatedPositions(), (_image(20),)),
    "perceiver": lambda: (Perceiver(), (torch.randn(2, 30, 6),)),
    "segnet_unpool": lambda: (SegNet(), (_image(16),)),
    "causal_seq2seq": lambda: (CausalSeq2Seq(), (torch.randint(0, 40, (2, 7)), torch.randint(0, 40, (2, 5)))),
    "vq_vae_ema": lambda: (VectorQuantizedVAE(), (_image(16),)),
    "grouped_query_sdpa": lambda: (GroupedQuerySDPA(), (torch.randn(2, 6, 64),)),
    "checkpointed_resnet": lambda: (CheckpointedResNet(), (_image(16),)),
    "norm_zoo": lambda: (NormZoo(), (_image(16),)),
    "video_3d": lambda: (Video3D(), (torch.randn(2, 3, 4, 8, 8),)),
    "spectrogram_cnn": lambda: (SpectrogramCNN(), (torch.randn(2, 512),)),
    "space_to_depth": lambda: (SpaceToDepth(), (_image(16),)),
    "tied_autoencoder": lambda: (TiedAutoencoder(), (_image(16),)),
    "cosine_classifier": lambda: (CosineClassifier(), (torch.randn(4, 16),)),
    "hooked_dict_output": lambda: (HookedDictOutput(), (torch.randn(4, 8),)),
    "embedding_max_norm": lambda: (EmbeddingMaxNorm(), (torch.randint(0, 50, (2, 7)),)),
    "channels_last": lambda: (SpaceToDepth().to(memory_format=torch.channels_last),
                              (_image(16).to(memory_format=torch.channels_last),)),
    "bfloat16_attention": lambda: (GroupedQuerySDPA().to(torch.bfloat16), (torch.randn(2, 6, 64, dtype=torch.bfloat16),)),
    "dict_input": lambda: (DictInput(), ({"image": _image(), "tokens": torch.randint(0, 50, (2, 6))},)),
    "siamese": lambda: (Siamese(), (_image(), _image())),
    "token_topk": lambda: (TokenTopK(), (torch.randn(2, 9, 32),)),
    "kan": lambda: (KANLayer(), (torch.rand(4, 8) * 2 - 1,)),
    "same_unflatten_bilinear": lambda: (SameUnflattenBilinear(), (_image(),)),
    "orthogonal_linear": lambda: (OrthogonalLinear(), (torch.randn(2, 16),)),
    "layer_norm_chw": lambda: (LayerNormCHW(), (torch.randn(2, 3, 6, 6),)),
    "module_dict_router": lambda: (ModuleDictRouter(), (torch.randn(2, 8),)),
    "where_masked": lambda: (WhereMasked(), (torch.randn(2, 8),)),
    "embedding_bag": lambda: (BagClassifier(), (torch.randint(0, 100, (3, 7)),)),
    "weight_norm_convs": lambda: (WeightNormConvs(), (torch.randn(2, 4, 20),)),
    "conformer_block": lambda: (ConformerBlock(), (torch.randn(2, 12, 32),)),
    "reflect_pad": lambda: (ReflectPadNet(), (_image(12),)),
    "conv_mixer": lambda: (ConvMixer(), (_image(16),)),
    "multi_query_attention": lambda: (MultiQueryAttention(), (torch.randn(2, 9, 48),)),
    "highway": lambda: (Highway(), (torch.randn(3, 10),)),
    "film": lambda: (FiLM(), (_image(), torch.randn(2, 7))),
    "pointnet": lambda: (PointNet(), (torch.randn(2, 3, 50),)),
    "cond_conv": lambda: (CondConv(), (_image(),)),
    "gated_attention_unit": lambda: (GatedAttentionUnit(), (torch.randn(2, 10, 32),)),
    "drop_path_blocks": lambda: (DropPathBlocks(), (torch.randn(2, 5, 8),)),
    "manual_gru": lambda: (ManualGRU(), (torch.randn(2, 5, 8),)),
    "mamba_lite": lambda: (MambaLite(), (torch.randn(2, 6, 3),)),
    "rwkv_time_shift": lambda: (RWKVTimeShift(), (torch.randn(2, 7, 32),)),
    "alibi_attention": lambda: (ALiBiAttention(), (torch.randn(2, 7, 32),)),
    "circular_conv": lambda: (CircularConvNet(), (_image(),)),
    "namedtuple_multitask": lambda: (NamedTupleMultiTask(), (torch.randn(3, 10),)),
    "inplace_residual": lambda: (InplaceResidual(), (_image(),)),
    "mha_kdim_vdim": lambda: (MHAKdimVdim(), (torch.randn(2, 5, 6), torch.randn(2, 7, 5))),
    "conv_lstm": lambda: (ConvLSTM(), (torch.randn(2, 3, 3, 8, 8),)),
    "channel_shuffle_module": lambda: (ChannelShuffleNet(), (_image(),)),
    "class_attention_pool": lambda: (ClassAttentionPool(), (torch.randn(2, 9, 6),)),
    "token_batch_norm": lambda: (TokenBatchNorm(), (torch.randn(4, 6, 5),)),
    "zeros_cat_hidden": lambda: (ZerosCatHidden(), (_image(),)),
    "se_scalar_gate": lambda: (SEWithScalarGate(), (_image(),)),
    "tv_raft_small": lambda: (_torchvision().models.optical_flow.raft_small(weights=None),
                              (_image(128), _image(128), 2)),  # num_flow_updates=2, positionally; 128: its minimum
    "tv_resnet18_fpn": lambda: (_torchvision().models.detection.backbone_utils.resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, trainable_layers=5), (_image(64),)),
}


# ----------------------------------------------------------------------------------------------
# Hugging Face architectures (small configs)

_SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def _hf(name: str) -> tuple[nn.Module, tuple, dict]:
    import transformers as T
    ids = torch.randint(0, 1000, (2, 16))
    text = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    causal = {**text, "use_cache": False}
    small = _SMALL
    vision = dict(image_size=32, patch_size=8, **small)
    s2s = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
               encoder_ffn_dim=128, decoder_ffn_dim=128)
    seq2seq = {**text, "decoder_input_ids": ids[:, :8], "use_cache": False}
    speech = dict(conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=4, **small)
    pair = {**text, "pixel_values": _image(32)}
    def resnet_detr(width: str = "d_model") -> dict:
        """DETR-style: a small ResNet's last stage, one encoder and decoder layer of 32 (named ``width``)."""
        return dict(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=T.ResNetConfig(
            hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1], embedding_size=16, out_features=["stage4"]),
            encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=10, **{width: 32})

    detr3 = dict(encoder_in_channels=[32, 48, 64], encoder_hidden_dim=32, encoder_ffn_dim=64, encoder_attention_heads=2,
                 d_model=32, decoder_in_channels=[32, 32, 32], decoder_ffn_dim=64, decoder_attention_heads=2,
                 decoder_layers=1, decoder_n_points=2, num_queries=10, num_labels=5)  # RT-DETR-style, 3 levels
    series = {"past_values": torch.randn(2, 10), "past_time_features": torch.randn(2, 10, 1),
              "past_observed_mask": torch.ones(2, 10), "future_values": torch.randn(2, 4),
              "future_time_features": torch.randn(2, 4, 1), "use_cache": False}
    built: dict[str, Callable[[], tuple]] = {
        "albert": lambda: (T.AlbertModel(T.AlbertConfig(embedding_size=32, vocab_size=1000, **small)), (), text),
        "electra": lambda: (T.ElectraModel(T.ElectraConfig(embedding_size=32, vocab_size=1000, **small)), (), text),
        "deberta-v2": lambda: (T.DebertaV2Model(T.DebertaV2Config(vocab_size=1000, **small)), (), text),
        "deberta-v3": lambda: (T.DebertaV2Model(T.DebertaV2Config(  # DeBERTa-v3's relative attention settings
            vocab_size=1000, relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8,
            share_att_key=True, norm_rel_ebd="layer_norm", max_relative_positions=-1, **small)), (), text),
        "mobilebert": lambda: (T.MobileBertModel(T.MobileBertConfig(
            vocab_size=1000, embedding_size=32, intra_bottleneck_size=32, true_hidden_size=32, **small)), (), text),
        "xlm-roberta": lambda: (T.XLMRobertaModel(T.XLMRobertaConfig(vocab_size=1000, max_position_embeddings=130,
                                                                    **small)), (), text),
        "mistral": lambda: (T.MistralModel(T.MistralConfig(vocab_size=1000, num_key_value_heads=2, **small)), (), causal),
        "qwen2": lambda: (T.Qwen2Model(T.Qwen2Config(vocab_size=1000, num_key_value_heads=2, **small)), (), causal),
        "opt": lambda: (T.OPTModel(T.OPTConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                               ffn_dim=128, word_embed_proj_dim=64)), (), causal),
        "bloom": lambda: (T.BloomModel(T.BloomConfig(vocab_size=1000, hidden_size=64, n_layer=2, n_head=4)), (), causal),
        "gpt-neox": lambda: (T.GPTNeoXModel(T.GPTNeoXConfig(vocab_size=1000, **small)), (), causal),
        "phi": lambda: (T.PhiModel(T.PhiConfig(vocab_size=1000, **small)), (), causal),
        "deit": lambda: (T.DeiTModel(T.DeiTConfig(**vision)), (_image(32),), {}),
        "beit": lambda: (T.BeitModel(T.BeitConfig(use_relative_position_bias=True, **vision)), (_image(32),), {}),
        "dinov2": lambda: (T.Dinov2Model(T.Dinov2Config(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                                        num_attention_heads=4)), (_image(32),), {}),
        "swin": lambda: (T.SwinModel(T.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2],
                                                  num_heads=[2, 4], window_size=4)), (_image(32),), {}),
        "convnext": lambda: (T.ConvNextModel(T.ConvNextConfig(hidden_sizes=[16, 32], depths=[2, 2], num_stages=2)),
                             (_image(32),), {}),
        "mobilevit": lambda: (T.MobileViTModel(T.MobileViTConfig(image_size=64, hidden_sizes=[32, 48, 64],
                                                                 neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64])),
                              (_image(64),), {}),
        "segformer": lambda: (T.SegformerModel(T.SegformerConfig(hidden_sizes=[16, 32, 48, 64], num_attention_heads=[1, 2, 2, 4],
                                                                 depths=[1, 1, 1, 1])), (_image(64),), {}),
        "levit": lambda: (T.LevitModel(T.LevitConfig(image_size=64, hidden_sizes=[32, 48, 64], num_attention_heads=[2, 3, 4],
                                                     depths=[1, 1, 1], key_dim=[8, 8, 8])), (_image(64),), {}),
        "clip-vision": lambda: (T.CLIPVisionModel(T.CLIPVisionConfig(**vision)), (_image(32),), {}),
        "clip-text": lambda: (T.CLIPTextModel(T.CLIPTextConfig(vocab_size=1000, max_position_embeddings=32, **small)), (), text),
        "whisper-encoder": lambda: (T.WhisperModel(T.WhisperConfig(
            d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=16, max_source_positions=16, vocab_size=1000,
            pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)).encoder,
            (torch.randn(2, 16, 32),), {}),
        "wav2vec2": lambda: (T.Wav2Vec2Model(T.Wav2Vec2Config(conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
                                                              num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                                                              **small)), (torch.randn(2, 800),), {}),
        "t5": lambda: (T.T5Model(T.T5Config(vocab_size=1000, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)),
                       (), {**text, "decoder_input_ids": ids[:, :8], "use_cache": False}),
        "gemma": lambda: (T.GemmaModel(T.GemmaConfig(vocab_size=1000, num_key_value_heads=1, head_dim=16, **small)), (),
                          causal),
        "falcon": lambda: (T.FalconModel(T.FalconConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                                                        num_attention_heads=4, multi_query=True)), (), causal),
        "mixtral": lambda: (T.MixtralModel(T.MixtralConfig(vocab_size=1000, num_key_value_heads=2, num_local_experts=4,
                                                           num_experts_per_tok=2, **small)), (), causal),
        "gptj": lambda: (T.GPTJModel(T.GPTJConfig(vocab_size=1000, n_embd=64, n_layer=2, n_head=4, rotary_dim=8)), (),
                         causal),
        "modernbert": lambda: (T.ModernBertModel(T.ModernBertConfig(vocab_size=1000, pad_token_id=0, bos_token_id=1,
                                                                     eos_token_id=2, sep_token_id=2, cls_token_id=1,
                                                                     **small)), (), text),
        "funnel": lambda: (T.FunnelBaseModel(T.FunnelConfig(vocab_size=1000, block_sizes=[1, 1], d_model=64, n_head=4,
                                                            d_head=16, d_inner=128)), (), text),
        "vitmae": lambda: (T.ViTMAEModel(T.ViTMAEConfig(mask_ratio=0.5, **vision)), (_image(32),),
                           {"noise": torch.rand(2, 16)}),  # the patch shuffle's noise as an input: deterministic
        "convnextv2": lambda: (T.ConvNextV2Model(T.ConvNextV2Config(hidden_sizes=[16, 32], depths=[2, 2], num_stages=2)),
                               (_image(32),), {}),
        "mamba": lambda: (T.MambaModel(T.MambaConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, state_size=8,
                                                     use_cache=False)), (), {"input_ids": ids}),
        "xlnet": lambda: (T.XLNetModel(T.XLNetConfig(vocab_size=1000, d_model=64, n_layer=2, n_head=4, d_inner=128,
                                                     use_mems_eval=False)), (), {"input_ids": ids}),
        "convbert": lambda: (T.ConvBertModel(T.ConvBertConfig(vocab_size=1000, embedding_size=64, **small)), (), text),
        "data2vec-vision": lambda: (T.Data2VecVisionModel(T.Data2VecVisionConfig(use_relative_position_bias=True, **vision)),
                                    (_image(32),), {}),
        "gpt-bigcode": lambda: (T.GPTBigCodeModel(T.GPTBigCodeConfig(vocab_size=1000, n_embd=64, n_layer=2, n_head=4,
                                                                     multi_query=True)), (), causal),
        "phi3": lambda: (T.Phi3Model(T.Phi3Config(vocab_size=1000, num_key_value_heads=2, pad_token_id=0, **small)), (),
                         causal),
        "hiera": lambda: (T.HieraModel(T.HieraConfig(image_size=[64, 64], embed_dim=16, depths=[1, 1, 1, 1],
                                                     num_heads=[1, 2, 2, 4], patch_stride=[4, 4], masked_unit_size=[8, 8],
                                                     query_stride=[2, 2])), (_image(64),), {}),
        "groupvit-vision": lambda: (T.GroupViTVisionModel(T.GroupViTVisionConfig(
            image_size=32, patch_size=8, hidden_size=64, intermediate_size=128, depths=[1, 1, 1], num_group_tokens=[8, 4, 0],
            num_output_groups=[8, 4, 4], num_attention_heads=4)), (_image(32),), {}),
        "canine": lambda: (T.CanineModel(T.CanineConfig(num_hash_buckets=64, num_hash_functions=2, local_transformer_stride=4,
                                                        downsampling_rate=4, **small)), (), {"input_ids": ids}),
        "patchtst": lambda: (T.PatchTSTModel(T.PatchTSTConfig(num_input_channels=3, context_length=32, patch_length=8,
                                                              patch_stride=8, d_model=32, num_attention_heads=4,
                                                              num_hidden_layers=2, ffn_dim=64)), (),
                             {"past_values": torch.randn(2, 32, 3)}),
        "mamba2": lambda: (T.Mamba2Model(T.Mamba2Config(vocab_size=1000, hidden_size=64, num_hidden_layers=2, state_size=8,
                                                       num_heads=8, head_dim=16, n_groups=1, chunk_size=8,
                                                       use_cache=False)), (), {"input_ids": ids}),
        "rwkv": lambda: (T.RwkvModel(T.RwkvConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, attention_hidden_size=64,
                                                  intermediate_size=128, use_cache=False)), (), {"input_ids": ids}),
        "detr": lambda: (T.DetrModel(T.DetrConfig(
            **resnet_detr())), (_image(64),), {}),
        "depth-anything": lambda: (T.DepthAnythingForDepthEstimation(T.DepthAnythingConfig(
            backbone_config=T.Dinov2Config(image_size=28, patch_size=14, hidden_size=32, num_hidden_layers=4,
                                           num_attention_heads=2, out_features=["stage1", "stage2", "stage3", "stage4"],
                                           reshape_hidden_states=False),
            reassemble_hidden_size=32, neck_hidden_sizes=[16, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=16)),
            (_image(28),), {}),
        "swin2sr": lambda: (T.Swin2SRModel(T.Swin2SRConfig(image_size=16, patch_size=1, embed_dim=16, depths=[2], num_heads=[2],
                                                           window_size=4, upscale=2, upsampler="pixelshuffle")),
                            (_image(16),), {}),
        "hifigan": lambda: (T.SpeechT5HifiGan(T.SpeechT5HifiGanConfig(
            model_in_dim=16, upsample_initial_channel=32, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4],
            resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]])), (torch.randn(2, 10, 16),), {}),
        "bart-encoder": lambda: (T.BartModel(T.BartConfig(vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2,
                                                          encoder_attention_heads=4, decoder_attention_heads=4,
                                                          encoder_ffn_dim=128, decoder_ffn_dim=128)).encoder, (), text),
        "fnet": lambda: (T.FNetModel(T.FNetConfig(vocab_size=1000, **small)), (), {"input_ids": ids}),
        "esm": lambda: (T.EsmModel(T.EsmConfig(vocab_size=33, pad_token_id=1, mask_token_id=32,
                                               position_embedding_type="rotary", **small)),
                        (), {"input_ids": ids % 33, "attention_mask": torch.ones_like(ids)}),
        "mpt": lambda: (T.MptModel(T.MptConfig(vocab_size=1000, d_model=64, n_heads=4, n_layers=2)), (), causal),
        "stablelm": lambda: (T.StableLmModel(T.StableLmConfig(vocab_size=1000, num_key_value_heads=2, **small)), (), causal),
        "codegen": lambda: (T.CodeGenModel(T.CodeGenConfig(vocab_size=1000, n_embd=64, n_layer=2, n_head=4, rotary_dim=8,
                                                           n_positions=64)), (), causal),
        "hubert": lambda: (T.HubertModel(T.HubertConfig(conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
                                                        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                                                        **small)), (torch.randn(2, 1600),), {}),
        "videomae": lambda: (T.VideoMAEModel(T.VideoMAEConfig(num_frames=4, tubelet_size=2, **vision)),
                             (torch.randn(2, 4, 3, 32, 32),), {}),
        "timesformer": lambda: (T.TimesformerModel(T.TimesformerConfig(num_frames=4, **vision)),
                                (torch.randn(2, 4, 3, 32, 32),), {}),
        "vitdet": lambda: (T.VitDetModel(T.VitDetConfig(image_size=32, pretrain_image_size=32, patch_size=8, window_size=2,
                                                        window_block_indices=[0], use_relative_position_embeddings=True,
                                                        **small)), (_image(32),), {}),
        "sam-vision": lambda: (T.SamVisionModel(T.SamVisionConfig(
            hidden_size=64, output_channels=32, num_hidden_layers=2, num_attention_heads=4, image_size=64, patch_size=8,
            window_size=4, global_attn_indexes=[1], mlp_dim=128)), (_image(64),), {}),
        "upernet": lambda: (T.UperNetForSemanticSegmentation(T.UperNetConfig(
            backbone_config=T.ConvNextConfig(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                             out_features=["stage1", "stage2", "stage3", "stage4"]),
            hidden_size=32, auxiliary_in_channels=64, num_labels=5)), (_image(64),), {}),
        "glpn": lambda: (T.GLPNForDepthEstimation(T.GLPNConfig(hidden_sizes=[16, 32, 64, 128], num_attention_heads=[1, 2, 4, 8],
                                                               depths=[1, 1, 1, 1], decoder_hidden_size=32)),
                         (_image(64),), {}),
        "informer": lambda: (T.InformerModel(T.InformerConfig(
            prediction_length=4, context_length=8, lags_sequence=[1, 2], d_model=32, encoder_layers=1, decoder_layers=1,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
            attention_type="full", num_time_features=1)), (),
            {"past_values": torch.randn(2, 10), "past_time_features": torch.randn(2, 10, 1),
             "past_observed_mask": torch.ones(2, 10), "future_values": torch.randn(2, 4),
             "future_time_features": torch.randn(2, 4, 1), "use_cache": False}),
        "qwen3": lambda: (T.Qwen3Model(T.Qwen3Config(vocab_size=1000, num_key_value_heads=2, head_dim=16, **small)), (), causal),
        "deepseek-v3": lambda: (T.DeepseekV3Model(T.DeepseekV3Config(
            vocab_size=1000, hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, n_routed_experts=4, num_experts_per_tok=2, n_group=1,
            topk_group=1, first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=8,
            qk_nope_head_dim=8, v_head_dim=16)), (), causal),
        "gemma2": lambda: (T.Gemma2Model(T.Gemma2Config(vocab_size=1000, num_key_value_heads=2, head_dim=16, **small)),
                           (), causal),
        "qwen2-moe": lambda: (T.Qwen2MoeModel(T.Qwen2MoeConfig(
            vocab_size=1000, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
            shared_expert_intermediate_size=64, **small)), (), causal),
        "zamba2": lambda: (T.Zamba2Model(T.Zamba2Config(
            vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, mamba_d_state=8, mamba_headdim=16,
            n_mamba_heads=8, layers_block_type=["mamba", "hybrid"], use_mem_rope=False)), (), causal),
        "jamba": lambda: (T.JambaModel(T.JambaConfig(
            vocab_size=1000, num_key_value_heads=2, num_experts=1, attn_layer_period=2, attn_layer_offset=1,
            mamba_d_state=8, mamba_dt_rank=8, use_mamba_kernels=False, **small)), (), causal),
        "recurrent-gemma": lambda: (T.RecurrentGemmaModel(T.RecurrentGemmaConfig(
            vocab_size=1000, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, lru_width=64, attention_window_size=8)), (ids,), {"use_cache": False}),
        "lilt": lambda: (T.LiltModel(T.LiltConfig(vocab_size=1000, channel_shrink_ratio=4, hidden_size=96,
                                                  num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)),
                         (), text),
        "pixtral-vision": lambda: (T.PixtralVisionModel(T.PixtralVisionConfig(image_size=32, patch_size=8, head_dim=16,
                                                                              **small)), (_image(32),), {}),
        "dpt": lambda: (T.DPTForDepthEstimation(T.DPTConfig(
            image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
            neck_hidden_sizes=[16, 32, 48, 64], fusion_hidden_size=32, backbone_out_indices=[0, 1, 2, 3])),
            (_image(32),), {}),
        "cvt": lambda: (T.CvtModel(T.CvtConfig(embed_dim=[16, 32, 64], num_heads=[1, 2, 4], depth=[1, 2, 3])),
                        (_image(64),), {}),
        "bit": lambda: (T.BitModel(T.BitConfig(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1],
                                               num_groups=4)), (_image(64),), {}),
        "mobilevitv2": lambda: (T.MobileViTV2Model(T.MobileViTV2Config(image_size=64, width_multiplier=0.5)),
                                (_image(64),), {}),
        "clap-audio": lambda: (T.ClapAudioModel(T.ClapAudioConfig(
            spec_size=64, patch_size=4, patch_embeds_hidden_size=16, depths=[1, 1], num_attention_heads=[2, 4],
            window_size=4, num_mel_bins=16, hidden_size=32, enable_fusion=False)), (torch.randn(2, 1, 64, 16),), {}),
        "distilbert": lambda: (T.DistilBertModel(T.DistilBertConfig(vocab_size=1000, dim=64, n_layers=2, n_heads=4,
                                                                    hidden_dim=128)), (), text),
        "roformer": lambda: (T.RoFormerModel(T.RoFormerConfig(vocab_size=1000, embedding_size=64, **small)), (), text),
        "mpnet": lambda: (T.MPNetModel(T.MPNetConfig(vocab_size=1000, **small)), (), text),
        "big-bird": lambda: (T.BigBirdModel(T.BigBirdConfig(vocab_size=1000, attention_type="original_full", **small)),
                             (), text),
        "llama": lambda: (T.LlamaModel(T.LlamaConfig(vocab_size=1000, num_key_value_heads=2, **small)), (), causal),
        "olmo2": lambda: (T.Olmo2Model(T.Olmo2Config(vocab_size=1000, num_key_value_heads=2, **small)), (), causal),
        "cohere": lambda: (T.CohereModel(T.CohereConfig(vocab_size=1000, num_key_value_heads=2, **small)), (), causal),
        "starcoder2": lambda: (T.Starcoder2Model(T.Starcoder2Config(vocab_size=1000, num_key_value_heads=2, **small)), (),
                               causal),
        "gpt-neo": lambda: (T.GPTNeoModel(T.GPTNeoConfig(vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                                                         attention_types=[[["global", "local"], 1]], window_size=8)),
                            (), causal),
        "biogpt": lambda: (T.BioGptModel(T.BioGptConfig(vocab_size=1000, **small)), (), causal),
        "granite": lambda: (T.GraniteModel(T.GraniteConfig(vocab_size=1000, num_key_value_heads=2, **small)), (), causal),
        "persimmon": lambda: (T.PersimmonModel(T.PersimmonConfig(vocab_size=1000, **small)), (), causal),
        "ast": lambda: (T.ASTModel(T.ASTConfig(num_mel_bins=16, max_length=32, frequency_stride=4, time_stride=4,
                                               **small)), (torch.randn(2, 32, 16),), {}),
        "poolformer": lambda: (T.PoolFormerModel(T.PoolFormerConfig(hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1])),
                               (_image(64),), {}),
        "regnet": lambda: (T.RegNetModel(T.RegNetConfig(hidden_sizes=[16, 32], depths=[1, 1], embedding_size=16,
                                                        groups_width=8)), (_image(32),), {}),
        "efficientnet": lambda: (T.EfficientNetModel(T.EfficientNetConfig(image_size=32, depth_coefficient=0.3)),
                                 (_image(32),), {}),
        "focalnet": lambda: (T.FocalNetModel(T.FocalNetConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                                              focal_levels=[2, 2], focal_windows=[3, 3])),
                             (_image(32),), {}),
        "pvt-v2": lambda: (T.PvtV2Model(T.PvtV2Config(
            image_size=64, hidden_sizes=[16, 32], depths=[1, 1], num_attention_heads=[1, 2], sr_ratios=[2, 1],
            num_encoder_blocks=2, patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[4, 4])), (_image(64),), {}),
        "swiftformer": lambda: (T.SwiftFormerModel(T.SwiftFormerConfig(embed_dims=[16, 32, 48, 64], depths=[1, 1, 1, 1])),
                                (_image(64),), {}),
        "yolos": lambda: (T.YolosModel(T.YolosConfig(image_size=[32, 32], patch_size=8, num_detection_tokens=4,
                                                     **small)), (_image(32),), {}),
        "sew": lambda: (T.SEWModel(T.SEWConfig(conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3),
                                               num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                                               squeeze_factor=2, **small)), (torch.randn(2, 800),), {}),
        "rembert": lambda: (T.RemBertModel(T.RemBertConfig(vocab_size=1000, input_embedding_size=32,
                                                           output_embedding_size=32, **small)), (), text),
        "layoutlm": lambda: (T.LayoutLMModel(T.LayoutLMConfig(vocab_size=1000, **small)), (),
                             {**text, "bbox": torch.randint(0, 100, (2, 16, 4)).sort(-1).values}),
        "siglip-vision": lambda: (T.SiglipVisionModel(T.SiglipVisionConfig(**vision)), (_image(32),), {}),
        "owlvit-vision": lambda: (T.OwlViTVisionModel(T.OwlViTVisionConfig(**vision)), (_image(32),), {}),
        "megatron-bert": lambda: (T.MegatronBertModel(T.MegatronBertConfig(vocab_size=1000, **small)), (), text),
        "clip": lambda: (T.CLIPModel(T.CLIPConfig(
            text_config=dict(vocab_size=1000, max_position_embeddings=32, **small), vision_config=vision,
            projection_dim=32)), (), pair),
        "siglip": lambda: (T.SiglipModel(T.SiglipConfig(text_config=dict(vocab_size=1000, **small),
                                                        vision_config=vision)), (), pair),
        "bart": lambda: (T.BartModel(T.BartConfig(vocab_size=1000, **s2s)), (), seq2seq),
        "whisper": lambda: (T.WhisperModel(T.WhisperConfig(
            num_mel_bins=16, max_source_positions=16, vocab_size=1000, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            decoder_start_token_id=1, **s2s)), (),
            {"input_features": torch.randn(2, 16, 32), "decoder_input_ids": ids[:, :8], "use_cache": False}),
        "llama-causal-lm": lambda: (T.LlamaForCausalLM(T.LlamaConfig(vocab_size=1000, num_key_value_heads=2,
                                                                     tie_word_embeddings=True, **small)), (), causal),
        "roberta-mlm": lambda: (T.RobertaForMaskedLM(T.RobertaConfig(vocab_size=1000, max_position_embeddings=130,
                                                                     **small)), (), text),
        "wav2vec2-ctc": lambda: (T.Wav2Vec2ForCTC(T.Wav2Vec2Config(vocab_size=32, **speech)),
                                 (torch.randn(2, 800),), {}),
        "vitmae-pretraining": lambda: (T.ViTMAEForPreTraining(T.ViTMAEConfig(
            mask_ratio=0.5, decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=4,
            decoder_intermediate_size=64, **vision)), (_image(32),), {"noise": torch.rand(2, 16)}),
        "detr-detection": lambda: (T.DetrForObjectDetection(T.DetrConfig(
            **resnet_detr(), num_labels=5)), (_image(64),), {}),
        "swinv2": lambda: (T.Swinv2Model(T.Swinv2Config(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2],
                                                        num_heads=[2, 4], window_size=4)), (_image(32),), {}),
        "pvt": lambda: (T.PvtModel(T.PvtConfig(
            image_size=64, num_encoder_blocks=2, depths=[1, 1], sequence_reduction_ratios=[2, 1], hidden_sizes=[16, 32],
            patch_sizes=[4, 2], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[4, 4])), (_image(64),), {}),
        "owlv2": lambda: (T.Owlv2ForObjectDetection(T.Owlv2Config(
            text_config=dict(vocab_size=1000, max_position_embeddings=16, **small), vision_config=vision,
            projection_dim=64)), (), pair),  # the class head compares text embeddings with text-width image ones
        "blip-2": lambda: (T.Blip2Model(T.Blip2Config(
            vision_config=dict(image_size=32, patch_size=8, **small),
            qformer_config=dict(vocab_size=1000, encoder_hidden_size=64, **small),
            text_config=dict(model_type="opt", vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                             num_attention_heads=4, ffn_dim=128, word_embed_proj_dim=64),
            num_query_tokens=4, image_token_index=999)), (),  # the 4 query outputs replace the 4 image tokens
            {**pair, "input_ids": torch.cat([torch.full((2, 4), 999), ids[:, 4:] % 999], 1), "use_cache": False}),
        "llava": lambda: (T.LlavaModel(T.LlavaConfig(
            vision_config=dict(model_type="clip_vision_model", image_size=32, patch_size=8, **small),
            text_config=dict(model_type="llama", vocab_size=1000, num_key_value_heads=2, **small),
            image_token_index=999, image_seq_length=16)), (),  # 16 patch features replace the 16 image tokens
            {**pair, "input_ids": torch.cat([torch.full((2, 16), 999), ids[:, :8] % 999], 1),
             "attention_mask": torch.ones(2, 24, dtype=torch.long), "use_cache": False}),
        "sew-d": lambda: (T.SEWDModel(T.SEWDConfig(squeeze_factor=2, position_buckets=8, **speech)),
                          (torch.randn(2, 800),), {}),
        "switch-transformers": lambda: (T.SwitchTransformersModel(T.SwitchTransformersConfig(
            vocab_size=1000, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
            num_experts=4, num_sparse_encoder_layers=1, num_sparse_decoder_layers=1, expert_capacity=32)), (), seq2seq),
        "trocr": lambda: (T.VisionEncoderDecoderModel(
            encoder=T.ViTModel(T.ViTConfig(**vision)), decoder=T.TrOCRForCausalLM(T.TrOCRConfig(
                vocab_size=1000, d_model=64, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=128,
                max_position_embeddings=64))),
            (_image(32),), {"decoder_input_ids": ids[:, :8], "use_cache": False}),
        "luke": lambda: (T.LukeModel(T.LukeConfig(vocab_size=1000, entity_vocab_size=100, entity_emb_size=32, **small)),
                         (), {**text, "entity_ids": torch.tensor([[3, 7], [5, 9]]),
                              "entity_attention_mask": torch.ones(2, 2, dtype=torch.long),
                              "entity_position_ids": torch.tensor([[[1, 2, -1], [4, -1, -1]],
                                                                   [[3, 4, 5], [8, 9, -1]]])}),
        "ernie": lambda: (T.ErnieModel(T.ErnieConfig(vocab_size=1000, **small)), (), text),
        "speech2text": lambda: (T.Speech2TextModel(T.Speech2TextConfig(
            vocab_size=1000, num_conv_layers=2, conv_kernel_sizes=[5, 5], conv_channels=32, input_feat_per_channel=16,
            max_source_positions=64, max_target_positions=64, **s2s)), (),
            {"input_features": torch.randn(2, 32, 16), "decoder_input_ids": ids[:, :8], "use_cache": False}),
        "pegasus": lambda: (T.PegasusModel(T.PegasusConfig(vocab_size=1000, max_position_embeddings=64, **s2s)), (),
                            seq2seq),
        "marian": lambda: (T.MarianModel(T.MarianConfig(vocab_size=1000, pad_token_id=0, decoder_start_token_id=0,
                                                        max_position_embeddings=64, **s2s)), (), seq2seq),
        "m2m100": lambda: (T.M2M100Model(T.M2M100Config(vocab_size=1000, max_position_embeddings=64, **s2s)), (),
                           seq2seq),
        "gpt-oss": lambda: (T.GptOssModel(T.GptOssConfig(vocab_size=1000, num_key_value_heads=2, head_dim=16,
                                                         num_local_experts=4, num_experts_per_tok=2, sliding_window=8,
                                                         **small)), (), causal),
        "olmoe": lambda: (T.OlmoeModel(T.OlmoeConfig(vocab_size=1000, num_key_value_heads=2, num_experts=4,
                                                     num_experts_per_tok=2, **small)), (), causal),
        "git": lambda: (T.GitModel(T.GitConfig(vision_config=dict(image_size=32, patch_size=8, **small),
                                               vocab_size=1000, max_position_embeddings=64, **small)), (),
                        {**causal, **pair}),
        "imagegpt": lambda: (T.ImageGPTModel(T.ImageGPTConfig(vocab_size=513, n_positions=64, n_embd=64, n_layer=2,
                                                              n_head=4)), (), {**causal, "input_ids": ids % 512}),
        "ctrl": lambda: (T.CTRLModel(T.CTRLConfig(vocab_size=1000, n_positions=64, n_embd=64, dff=128, n_layer=2,
                                                  n_head=4)), (), causal),
        "xlm": lambda: (T.XLMModel(T.XLMConfig(vocab_size=1000, emb_dim=64, n_layers=2, n_heads=4,
                                               max_position_embeddings=64)), (), text),
        "squeezebert": lambda: (T.SqueezeBertModel(T.SqueezeBertConfig(vocab_size=1000, embedding_size=64,
                                                                       **small)), (), text),
        "wavlm": lambda: (T.WavLMModel(T.WavLMConfig(**speech)), (torch.randn(2, 800),), {}),
        "unispeech": lambda: (T.UniSpeechModel(T.UniSpeechConfig(**speech)), (torch.randn(2, 800),), {}),
        "patchtsmixer": lambda: (T.PatchTSMixerModel(T.PatchTSMixerConfig(
            context_length=32, patch_length=8, patch_stride=8, num_input_channels=3, d_model=16, num_layers=2,
            self_attn=True, self_attn_heads=2)), (), {"past_values": torch.randn(2, 32, 3)}),
        "autoformer": lambda: (T.AutoformerModel(T.AutoformerConfig(
            prediction_length=4, context_length=8, lags_sequence=[1, 2], d_model=32, encoder_layers=1, decoder_layers=1,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
            num_time_features=1, moving_average=3, label_length=4)), (), series),
        "nystromformer": lambda: (T.NystromformerModel(T.NystromformerConfig(
            vocab_size=1000, num_landmarks=4, segment_means_seq_len=16, conv_kernel_size=3, **small)), (), text),
        "longformer": lambda: (T.LongformerModel(T.LongformerConfig(vocab_size=1000, attention_window=4,
                                                                    max_position_embeddings=130, **small)), (), text),
        "encodec": lambda: (T.EncodecModel(T.EncodecConfig(
            target_bandwidths=[2.0], sampling_rate=800, hidden_size=32, num_filters=8, num_residual_layers=1,
            upsampling_ratios=[4, 2], codebook_size=64, num_lstm_layers=1)), (torch.randn(2, 1, 800),), {}),
        "dinov2-with-registers": lambda: (T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(
            image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_register_tokens=4)), (_image(32),), {}),
        "dinov3-vit": lambda: (T.DINOv3ViTModel(T.DINOv3ViTConfig(image_size=32, patch_size=8, num_register_tokens=2,
                                                                 **small)), (_image(32),), {}),
        "vivit": lambda: (T.VivitModel(T.VivitConfig(image_size=32, num_frames=4, tubelet_size=[2, 8, 8], **small)),
                          (torch.randn(2, 4, 3, 32, 32),), {}),
        "decision-transformer": lambda: (T.DecisionTransformerModel(T.DecisionTransformerConfig(
            state_dim=8, act_dim=3, hidden_size=64, n_layer=2, n_head=4, max_ep_len=64)), (),
            {"states": torch.randn(2, 10, 8), "actions": torch.randn(2, 10, 3), "rewards": torch.randn(2, 10, 1),
             "returns_to_go": torch.randn(2, 10, 1), "timesteps": torch.arange(10).expand(2, 10),
             "attention_mask": torch.ones(2, 10, dtype=torch.long)}),
        "time-series-transformer": lambda: (T.TimeSeriesTransformerModel(T.TimeSeriesTransformerConfig(
            prediction_length=4, context_length=8, lags_sequence=[1, 2], d_model=32, encoder_layers=1, decoder_layers=1,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
            num_time_features=1)), (), series),
        "timesfm": lambda: (T.TimesFmModel(T.TimesFmConfig(patch_length=8, context_length=32, horizon_length=8,
                                                           head_dim=16, **small)), (),
                            {"past_values": torch.randn(2, 32), "past_values_padding": torch.zeros(2, 32),
                             "freq": torch.zeros(2, 1, dtype=torch.long)}),
        "layoutlmv3": lambda: (T.LayoutLMv3Model(T.LayoutLMv3Config(vocab_size=1000, input_size=32, patch_size=8,
                                                                    coordinate_size=12, shape_size=8, **small)), (),
                               {**pair, "bbox": torch.randint(0, 100, (2, 16, 4)).sort(-1).values}),
        "pix2struct-vision": lambda: (T.Pix2StructVisionModel(T.Pix2StructVisionConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, d_ff=128, d_kv=16, patch_embed_hidden_size=48,
            seq_len=16)), (), {"flattened_patches": torch.cat([  # (row, column, 4×4×3 pixels) per patch
                torch.stack(torch.meshgrid(torch.arange(1., 5.), torch.arange(1., 5.), indexing="ij"), -1)
                .reshape(1, 16, 2).expand(2, 16, 2), torch.randn(2, 16, 48)], -1),
                "attention_mask": torch.ones(2, 16)}),
        "siglip2-vision": lambda: (T.Siglip2VisionModel(T.Siglip2VisionConfig(num_patches=16, patch_size=8, **small)), (),
                                   {"pixel_values": torch.randn(2, 16, 192), "pixel_attention_mask": torch.ones(2, 16),
                                    "spatial_shapes": torch.tensor([[4, 4], [4, 4]])}),
        "aimv2-vision": lambda: (T.Aimv2VisionModel(T.Aimv2VisionConfig(image_size=32, patch_size=8, **small)),
                                 (_image(32),), {}),
        "vjepa2": lambda: (T.VJEPA2Model(T.VJEPA2Config(
            patch_size=8, crop_size=32, frames_per_clip=4, tubelet_size=2, hidden_size=64, num_attention_heads=4,
            num_hidden_layers=2, mlp_ratio=2, pred_hidden_size=32, pred_num_attention_heads=4, pred_num_hidden_layers=1)),
            (torch.randn(2, 4, 3, 32, 32),), {}),
        "eomt": lambda: (T.EomtForUniversalSegmentation(T.EomtConfig(
            image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_blocks=2,
            num_queries=10, num_register_tokens=2, num_upscale_blocks=1, num_labels=5)), (_image(32),), {}),
        "hgnet-v2": lambda: (T.HGNetV2ForImageClassification(T.HGNetV2Config(
            embedding_size=16, depths=[1, 1], hidden_sizes=[32, 64], stem_channels=[3, 16, 16],
            stage_in_channels=[16, 32], stage_mid_channels=[16, 32], stage_out_channels=[32, 64], stage_num_blocks=[1, 1],
            stage_downsample=[False, True], stage_downsample_strides=[2, 2], stage_light_block=[False, True],
            stage_kernel_size=[3, 5], stage_numb_of_layers=[2, 2], num_labels=5)), (_image(32),), {}),
        "conditional-detr": lambda: (T.ConditionalDetrModel(T.ConditionalDetrConfig(
            **resnet_detr())), (_image(64),), {}),
        "dab-detr": lambda: (T.DabDetrModel(T.DabDetrConfig(**resnet_detr("hidden_size"))), (_image(64),), {}),
        "rt-detr": lambda: (_torch_init(T.RTDetrForObjectDetection(T.RTDetrConfig(
            backbone_config=T.RTDetrResNetConfig(hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1], embedding_size=16,
                                                 layer_type="basic", out_features=["stage2", "stage3", "stage4"]),
            **detr3))), (_image(64),), {}),
        "d-fine": lambda: (_torch_init(T.DFineForObjectDetection(T.DFineConfig(
            backbone_config=T.HGNetV2Config(
                embedding_size=16, depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 48, 64], stem_channels=[3, 8, 16],
                stage_in_channels=[16, 16, 32, 48], stage_mid_channels=[8, 16, 16, 32], stage_out_channels=[16, 32, 48, 64],
                stage_num_blocks=[1, 1, 1, 1], stage_light_block=[False, False, True, True],
                stage_numb_of_layers=[2, 2, 2, 2], out_features=["stage2", "stage3", "stage4"]),
            **{**detr3, "decoder_layers": 2}))), (_image(64),), {}),  # its tied box heads need 2 decoder layers
        "mask2former": lambda: (T.Mask2FormerModel(T.Mask2FormerConfig(
            backbone_config=T.SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1],
                                         num_heads=[1, 2, 2, 4], window_size=4,
                                         out_features=["stage1", "stage2", "stage3", "stage4"]),
            feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64, encoder_layers=1,
            decoder_layers=2, num_attention_heads=2, dim_feedforward=64, num_queries=10)), (_image(64),), {}),
        "speecht5-asr": lambda: (T.SpeechT5ForSpeechToText(T.SpeechT5Config(
            vocab_size=1000, hidden_size=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, conv_dim=(16, 16), conv_stride=(5, 2),
            conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)), (),
            {"input_values": torch.randn(2, 800), "decoder_input_ids": ids[:, :8], "use_cache": False}),
        "musicgen-decoder": lambda: (T.MusicgenModel(T.MusicgenDecoderConfig(
            vocab_size=64, max_position_embeddings=64, num_hidden_layers=2, ffn_dim=128, num_attention_heads=4,
            hidden_size=64, num_codebooks=2, pad_token_id=64, bos_token_id=64)), (),  # batch × codebooks rows
            {"input_ids": torch.randint(0, 64, (4, 8)), "use_cache": False}),
        "vits": lambda: (T.VitsModel(T.VitsConfig(
            vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64, flow_size=16,
            spectrogram_bins=17, upsample_initial_channel=32, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4],
            resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], depth_separable_num_layers=2,
            duration_predictor_num_flows=2, duration_predictor_filter_channels=32, prior_encoder_num_flows=2,
            prior_encoder_num_wavenet_layers=2, posterior_encoder_num_wavenet_layers=2, noise_scale=0.0,
            noise_scale_duration=0.0)), (),  # noise scales 0: deterministic
            {"input_ids": ids % 40, "attention_mask": torch.ones_like(ids)}),
        "moonshine": lambda: (T.MoonshineModel(T.MoonshineConfig(
            vocab_size=1000, hidden_size=64, intermediate_size=128, encoder_num_hidden_layers=2,
            decoder_num_hidden_layers=2,
            encoder_num_attention_heads=4, decoder_num_attention_heads=4, max_position_embeddings=64)), (),
            {"input_values": torch.randn(2, 1600), "decoder_input_ids": ids[:, :8], "use_cache": False}),
        "dac": lambda: (T.DacModel(T.DacConfig(encoder_hidden_size=8, downsampling_ratios=[2, 4], decoder_hidden_size=32,
                                               n_codebooks=2, codebook_size=64, codebook_dim=8)),
                        (torch.randn(2, 1, 800),), {}),
        "mimi": lambda: (T.MimiModel(T.MimiConfig(
            sampling_rate=800, frame_rate=50, hidden_size=32, num_filters=8, upsampling_ratios=[4, 2], codebook_size=64,
            codebook_dim=16, num_quantizers=2, vector_quantization_hidden_dimension=16, upsample_groups=32,
            num_hidden_layers=1, intermediate_size=64, num_attention_heads=4, num_key_value_heads=4, sliding_window=16)),
            (torch.randn(2, 1, 800),), {}),
        "parakeet-encoder": lambda: (T.ParakeetEncoder(T.ParakeetEncoderConfig(
            subsampling_conv_channels=16, num_mel_bins=16, max_position_embeddings=64, **small)),
            (torch.randn(2, 64, 16),), {}),
        "qwen2-vl": lambda: (T.Qwen2VLModel(T.Qwen2VLConfig(
            text_config=dict(vocab_size=1000, num_key_value_heads=2,
                             rope_parameters=dict(rope_type="default", mrope_section=[2, 3, 3]), **small),
            vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=4, patch_size=8),
            image_token_id=999, video_token_id=998, vision_start_token_id=997, vision_end_token_id=996)), (),
            {**causal, "input_ids": torch.cat([torch.full((2, 1), 997), torch.full((2, 4), 999), torch.full((2, 1), 996),
                                              ids[:, :10] % 990], 1),  # a 4×4-patch image merged 2×2: 4 tokens
             "pixel_values": torch.randn(32, 384), "image_grid_thw": torch.tensor([[1, 4, 4], [1, 4, 4]]),
             "mm_token_type_ids": torch.cat([torch.zeros(2, 1), torch.ones(2, 4), torch.zeros(2, 11)], 1).int()}),
        "qwen2.5-vl": lambda: (T.Qwen2_5_VLModel(T.Qwen2_5_VLConfig(
            text_config=dict(vocab_size=1000, num_key_value_heads=2,
                             rope_parameters=dict(rope_type="default", mrope_section=[2, 3, 3]), **small),
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=64,
                               patch_size=8, window_size=32, fullatt_block_indexes=[1]),
            image_token_id=999, video_token_id=998, vision_start_token_id=997, vision_end_token_id=996)), (),
            {**causal, "input_ids": torch.cat([torch.full((2, 1), 997), torch.full((2, 4), 999), torch.full((2, 1), 996),
                                              ids[:, :10] % 990], 1),
             "pixel_values": torch.randn(32, 384), "image_grid_thw": torch.tensor([[1, 4, 4], [1, 4, 4]]),
             "mm_token_type_ids": torch.cat([torch.zeros(2, 1), torch.ones(2, 4), torch.zeros(2, 11)], 1).int()}),
        "paligemma": lambda: (T.PaliGemmaModel(T.PaliGemmaConfig(
            vision_config=dict(model_type="siglip_vision_model", image_size=32, patch_size=8, **small),
            text_config=dict(model_type="gemma", vocab_size=1000, num_key_value_heads=1, head_dim=16, **small),
            image_token_index=999, projection_dim=64, hidden_size=64, vocab_size=1000)), (),
            {**pair, "input_ids": torch.cat([torch.full((2, 16), 999), ids[:, :8] % 999], 1),
             "attention_mask": torch.ones(2, 24, dtype=torch.long), "use_cache": False,
             # prefix (image, prompt) 0, suffix 1, as the processor gives: without it, eager attention is bidirectional
             # (mask skipped, its Gemma not causal) and an exported graph's causal
             "token_type_ids": torch.cat([torch.zeros(2, 20), torch.ones(2, 4)], 1).long()}),
        "gemma3-text": lambda: (T.Gemma3TextModel(T.Gemma3TextConfig(vocab_size=1000, num_key_value_heads=2, head_dim=16,
                                                                     sliding_window=8, **small)), (), causal),
        "gemma3": lambda: (T.Gemma3Model(T.Gemma3Config(
            text_config=dict(vocab_size=1000, num_key_value_heads=2, head_dim=16, sliding_window=8, **small),
            vision_config=dict(image_size=32, patch_size=8, **small), mm_tokens_per_image=4, image_token_index=999,
            boi_token_index=997, eoi_token_index=998)), (),  # 4×4 patches pooled to 4 image tokens
            {**pair, "input_ids": torch.cat([torch.full((2, 4), 999), ids[:, :8] % 990], 1),
             "attention_mask": torch.ones(2, 12, dtype=torch.long), "use_cache": False}),
        "smolvlm": lambda: (T.SmolVLMModel(T.SmolVLMConfig(
            vision_config=dict(image_size=32, patch_size=8, **small),
            text_config=dict(model_type="llama", vocab_size=1000, num_key_value_heads=2, **small),
            scale_factor=2, image_token_id=999)), (),  # 16 patches shuffled 2×2: 4 image tokens
            {"input_ids": torch.cat([torch.full((2, 4), 999), ids[:, :8] % 999], 1),
             "attention_mask": torch.ones(2, 12, dtype=torch.long), "pixel_values": torch.randn(2, 1, 3, 32, 32),
             "use_cache": False}),
        "mllama": lambda: (T.MllamaModel(T.MllamaConfig(
            vision_config=dict(hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=4,
                               intermediate_size=64, vision_output_dim=64, image_size=32, patch_size=8, max_num_tiles=1,
                               intermediate_layers_indices=[0], supported_aspect_ratios=[[1, 1]]),
            text_config=dict(vocab_size=1000, num_key_value_heads=2, cross_attention_layers=[1], pad_token_id=0,
                             bos_token_id=1, eos_token_id=2, **small),
            image_token_index=999)), (),
            {"input_ids": torch.cat([torch.full((2, 1), 999), ids[:, :8] % 999], 1),
             "attention_mask": torch.ones(2, 9, dtype=torch.long), "pixel_values": torch.randn(2, 1, 1, 3, 32, 32),
             "aspect_ratio_ids": torch.ones(2, 1, dtype=torch.long),
             "aspect_ratio_mask": torch.ones(2, 1, 1, dtype=torch.long),
             "cross_attention_mask": torch.ones(2, 9, 1, 1, dtype=torch.long), "use_cache": False}),
        "sam2-vision": lambda: (T.Sam2VisionModel(T.Sam2VisionConfig(
            backbone_config=T.Sam2HieraDetConfig(
                hidden_size=16, num_attention_heads=1, image_size=[64, 64], patch_kernel_size=[7, 7], patch_stride=[4, 4],
                patch_padding=[3, 3], query_stride=[2, 2], window_positional_embedding_background_size=[4, 4],
                num_query_pool_stages=3, blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
                num_attention_heads_per_stage=[1, 2, 4, 8], window_size_per_stage=[4, 4, 2, 2],
                global_attention_blocks=[3]),
            backbone_channel_list=[128, 64, 32, 16], backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]],
            fpn_hidden_size=32)), (_image(64),), {}),
        "superpoint": lambda: (T.SuperPointForKeypointDetection(T.SuperPointConfig(
            encoder_hidden_sizes=[16, 16, 32, 32], decoder_hidden_size=64, descriptor_decoder_dim=32, max_keypoints=16)),
            (_image(64),), {}),
    }
    return built[name]()


HF = ("albert", "electra", "deberta-v2", "deberta-v3", "mobilebert", "xlm-roberta", "gpt2", "mistral", "qwen2", "opt",
      "bloom", "gpt-neox", "phi", "deit", "beit", "dinov2", "swin", "convnext", "mobilevit", "segformer", "levit",
      "clip-vision", "clip-text", "whisper-encoder", "wav2vec2", "bart-encoder", "t5", "gemma", "falcon", "mixtral", "gptj",
      "modernbert", "funnel", "vitmae", "convnextv2", "mamba", "xlnet", "convbert", "data2vec-vision", "gpt-bigcode", "phi3",
      "hiera", "groupvit-vision", "canine", "patchtst", "mamba2", "rwkv", "detr", "depth-anything", "swin2sr", "hifigan",
      "fnet", "esm", "qwen3", "deepseek-v3", "mpt", "stablelm", "codegen", "hubert", "videomae", "timesformer", "vitdet",
      "sam-vision", "upernet", "glpn", "informer", "gemma2", "qwen2-moe", "zamba2", "jamba", "recurrent-gemma", "lilt",
      "pixtral-vision", "dpt", "cvt", "bit", "mobilevitv2", "clap-audio", "distilbert", "roformer", "mpnet", "big-bird",
      "llama", "olmo2", "cohere", "starcoder2", "gpt-neo", "biogpt", "granite", "persimmon", "ast", "poolformer", "regnet",
      "efficientnet", "focalnet", "pvt-v2", "swiftformer", "yolos", "sew", "rembert", "layoutlm", "siglip-vision",
      "owlvit-vision", "megatron-bert", "clip", "siglip", "bart", "whisper", "llama-causal-lm", "roberta-mlm",
      "wav2vec2-ctc", "vitmae-pretraining", "detr-detection", "swinv2", "pvt", "owlv2", "blip-2", "llava", "sew-d",
      "switch-transformers", "trocr", "luke", "ernie", "speech2text", "pegasus", "marian", "m2m100", "gpt-oss", "olmoe",
      "git", "imagegpt", "ctrl", "xlm", "squeezebert", "wavlm", "unispeech", "patchtsmixer", "autoformer",
      "nystromformer", "longformer", "encodec", "dinov2-with-registers", "dinov3-vit", "vivit", "decision-transformer",
      "time-series-transformer", "timesfm", "layoutlmv3", "pix2struct-vision", "siglip2-vision", "aimv2-vision",
      "vjepa2", "eomt", "hgnet-v2", "conditional-detr", "dab-detr", "rt-detr", "d-fine", "mask2former", "speecht5-asr",
      "musicgen-decoder", "vits", "moonshine", "dac", "mimi", "parakeet-encoder", "qwen2-vl", "qwen2.5-vl", "paligemma",
      "gemma3-text", "gemma3", "smolvlm", "mllama", "sam2-vision", "superpoint")


def names() -> list[str]:
    """Every model of the full probe, in its order: the Hugging Face ones (``hf:``), then the hand-written."""
    return [f"hf:{n}" for n in HF] + list(HAND)


def build(name: str) -> tuple[nn.Module, tuple, dict]:
    if name.startswith("hf:") and name[3:] in HF_ARCHS:  # osf's own small configs (the `osf` command's hf:ARCH)
        spec = resolve(name)
        return spec.model, spec.args, spec.kwargs
    if name.startswith("hf:"):
        return _hf(name[3:])
    model, args = HAND[name]()
    return model, args, {}


# ----------------------------------------------------------------------------------------------

def _grouped_mm_flops(a: list, b: list, *args: Any, out_shape: list, **kwargs: Any) -> int:
    """Mixture-of-experts matmuls, which ``FlopCounterMode`` does not count: 2 × output × contracted size."""
    return 2 * math.prod(out_shape[1:] if len(a) == len(b) == 2 else out_shape) * a[-1]


def _recurrent_flops(x: list, hx: Any, weights: list, *args: Any, out_shape: Any, **kwargs: Any) -> int:
    """``aten.lstm`` / ``gru`` / ``rnn_*`` over a whole sequence, which ``FlopCounterMode`` does not count:
    every step of every sample multiplies by each 2-D weight of each layer and direction, 2 × steps × batch
    × its size."""
    return 2 * math.prod(x[:-1]) * sum(math.prod(w) for w in weights if len(w) == 2)


def _mkldnn_rnn_layer_flops(x: list, w_ih: list, w_hh: list, *args: Any, out_shape: Any, **kwargs: Any) -> int:
    """One layer and direction of ``nn.LSTM`` / ``nn.GRU`` as the CPU runs it (oneDNN), uncounted too."""
    return _recurrent_flops(x, None, [w_ih, w_hh], out_shape=out_shape)


def _flops(model: nn.Module, args: tuple, kwargs: dict) -> int:
    """``FlopCounterMode``'s count of one forward (math attention kernel: the fused ones are not counted),
    grouped matmuls and recurrent layers included."""
    grouped = [torch.ops.aten._grouped_mm]  # FlopCounterMode looks formulas up by overload packet
    if hasattr(torch.ops.transformers, "grouped_mm_fallback"):  # registered once transformers' MoE code ran
        grouped.append(torch.ops.transformers.grouped_mm_fallback)
    recurrent = [torch.ops.aten.lstm, torch.ops.aten.gru, torch.ops.aten.rnn_tanh, torch.ops.aten.rnn_relu]
    formulas = {**dict.fromkeys(grouped, _grouped_mm_flops), **dict.fromkeys(recurrent, _recurrent_flops),
                torch.ops.aten.mkldnn_rnn_layer: _mkldnn_rnn_layer_flops}
    with FlopCounterMode(display=False, custom_mapping=formulas) as counter, sdpa_kernel(SDPBackend.MATH):
        model(*args, **kwargs)
    return counter.get_total_flops()


class NearTies(TorchDispatchMode):
    """Records selections by value (``topk``, ``sort``, ``argsort``, ``argmax``/``argmin``) whose input has
    near ties where it picks: adjacent values within 1e-4 of the input's largest magnitude among the k + 1
    largest (``topk``: which k and their order), at the largest or least (``argmax``/``argmin``) or anywhere
    (``sort``). Rounding may make float32 and float64 pick differently there (a detector's
    top-k over the nearly constant scores of a minimal subnet), so their outputs need not agree."""

    _SELECTIONS = {"aten::topk", "aten::sort", "aten::argsort", "aten::argmax", "aten::argmin"}

    def __init__(self) -> None:
        super().__init__()
        self.near_ties: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func._schema.name
        x = args[0] if args else None
        if name in self._SELECTIONS and isinstance(x, torch.Tensor) and x.is_floating_point() and x.numel() > 1:
            dim = (kwargs or {}).get("dim", args[2] if name == "aten::topk" and len(args) > 2 else
                                     args[1] if name != "aten::topk" and len(args) > 1 else -1)
            flat = x.detach().movedim(dim if isinstance(dim, int) else -1, -1).flatten(0, -2) if x.dim() > 1 \
                else x.detach().reshape(1, -1)
            ordered = flat.sort(-1, descending=True).values
            gaps = ordered[:, :-1] - ordered[:, 1:]
            if name == "aten::topk":  # which k, and their order
                gaps = gaps[:, :args[1]]
            elif name in ("aten::argmax", "aten::argmin"):
                gaps = gaps[:, :1] if name == "aten::argmax" else gaps[:, -1:]
            if gaps.numel() and bool((gaps <= 1e-4 * flat.abs().max().clamp_min(1e-30)).any()):
                self.near_ties.append(f"{name.split('::')[1]} of a {tuple(x.shape)} input")
        return out


def _float64_problem(model: nn.Module, supernet: osf.Supernet, args: tuple, kwargs: dict) -> str:
    """"same" when, cast with ``.double()`` and run on inputs cast alike (random draws seeded alike), the
    extracted ``max()`` gives the original's outputs (atol 1e-5, rtol 1e-4) and the extracted ``min()`` its
    own float32 outputs in the dtypes the original gives (atol 1e-4, rtol 1e-3: float32 rounding); "n/a"
    when the original is not float32 or does not run in float64; else what differs. Dtypes read in
    ``forward`` must follow the cast."""
    def cast(v: Any) -> Any:
        return v.double() if isinstance(v, torch.Tensor) and v.dtype == torch.float32 else v

    def run(m: nn.Module, a: tuple, k: dict) -> list:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            return [x for x in tree_leaves(m(*a, **k)) if isinstance(x, torch.Tensor)]

    args64, kwargs64 = tree_map(cast, args), tree_map(cast, kwargs)
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return "n/a"
    try:
        reference = run(copy.deepcopy(model).double(), args64, kwargs64)
    except Exception:  # noqa: BLE001 - the original itself does not run in float64
        return "n/a"
    try:
        why = common.compare_outputs(reference, run(supernet.extract(supernet.space.max()).eval().double(),
                                                    args64, kwargs64))[0]
        if why:
            return f"max(): {why}"
        small = supernet.extract(supernet.space.min()).eval()
        with NearTies() as selections:
            own = run(small, args, kwargs)
        if len(own) == len(reference):
            own = [x.to(r.dtype) if x.is_floating_point() else x for x, r in zip(own, reference)]
        why = common.compare_outputs(own, run(small.double(), args64, kwargs64), atol=1e-4, rtol=1e-3)[0]
        if why and selections.near_ties:  # float32 and float64 may pick differently: nothing to compare
            return f"near ties (min(): {selections.near_ties[0]})"
        return f"min(): {why}" if why else "same"
    except Exception as e:  # noqa: BLE001 - reported
        return f"{type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}"


def measure(name: str) -> dict:
    torch.manual_seed(SEED)
    started = time.perf_counter()
    row: dict[str, Any] = {"model": name}
    try:
        model, args, kwargs = build(name)
        model.eval()
        with torch.no_grad():
            expected = model(*args, **kwargs)
        supernet = osf.Supernet(model, args, kwargs)
        space = supernet.space
        row.update(groups=len(space.groups), heads=sum(g.kind == "heads" for g in space.groups), units=len(space.units),
                   log10_size=round(space.log10_size(), 2), params=sum(p.numel() for p in model.parameters()),
                   unsupported=sorted({u.target for u in space.analysis.unsupported}))
        problems = []
        with torch.no_grad():
            why = common.compare_outputs(expected, supernet.extract(space.max()).eval()(*args, **kwargs),
                                         atol=1e-4, rtol=1e-3)[0]
        if why:
            problems.append(f"max() differs from the original: {why}")
        row["float64"] = _float64_problem(model, supernet, args, kwargs)
        if row["float64"] not in ("same", "n/a") and not row["float64"].startswith("near ties"):
            problems.append(f"cast to float64: {row['float64']}")
        supernet.eval()
        flops_error, gradients = 0.0, 0
        for role, arch in [("min", space.min()), ("sample 1", space.sample(SEED + 1)), ("sample 2", space.sample(SEED + 2))]:
            small = supernet.extract(arch).eval()
            n_params = sum(p.numel() for p in small.parameters())
            if role == "min":
                row["min_params"] = n_params
            cost = supernet.cost(arch)
            if cost["params"] != n_params:
                problems.append(f"{role}: cost() params {cost['params']} != extracted {n_params}")
            supernet.zero_grad(set_to_none=True)
            with supernet.set_arch(arch):
                shared = supernet(*args, **kwargs)
                shared_loss = common.output_loss(shared)
                if shared_loss is not None:
                    shared_loss.backward()
            own = small(*args, **kwargs)
            own_loss = common.output_loss(own)
            why = common.compare_outputs(own, shared)[0]
            if why:
                problems.append(f"{role}: set_arch differs from extract: {why}")
            if own_loss is not None and shared_loss is not None:
                own_loss.backward()
                gradients += 1
                why = common.gradient_problem(supernet, arch, small)
                if why:
                    problems.append(f"{role}: set_arch {why} from extract's")
            rewritten = supernet.subnet_ir(arch)
            with torch.no_grad():  # the reference both templates must match: the model built from the rewritten IR
                why = common.compare_outputs(rewritten.build().eval()(*args, **kwargs), small(*args, **kwargs))[0]
            if why:
                problems.append(f"{role}: extract differs from the rewritten IR's model: {why}")
            if role == "sample 1" and list(osf.trace(small, args, kwargs).modules) != list(rewritten.modules):
                problems.append(f"{role}: osf.trace of the extracted model is not its own IR (hierarchy lost)")
            counted = _flops(small, args, kwargs)
            flops_error = max(flops_error, abs(cost["flops"] - counted) / max(counted, 1))
        row.update(template=supernet.template_status == "template", problems=problems, ok=not problems,
                   gradients_checked=gradients, flops_error=round(flops_error, 5))
    except Exception as e:  # noqa: BLE001 - a failing model is a result
        row.update(ok=False, problems=[f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"],
                   refused=isinstance(e, osf.TraceError), traceback=traceback.format_exc()[-2000:])
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def section(env: dict, rows: list[dict]) -> str:
    ok = sum(r["ok"] for r in rows)
    lines = ["<!-- probe:start -->", "## Probe: models no test names", "",
             f"Generated by `{env['command']}` on {env['date']}.", "",
             f"- Machine: {env['platform']} ({env['machine']}), {env['cpus']} CPUs",
             f"- Versions: python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, osf {env['osf']}",
             f"- Seed {SEED}; random weights; Hugging Face: small configs (width 64, 2 layers, 4 heads where the "
             "architecture has them), batch 2; hand-written models: `bench/probe.py`",
             "- *OK*: the supernet builds; `extract(max())` equals the original (eval mode, `allclose` atol 1e-4, "
             "rtol 1e-3); for `min()` and two sampled archs, the supernet at the arch (`set_arch`) gives the extracted "
             "model's outputs (atol 1e-5, rtol 1e-4) and the same gradients on every kept weight (loss: mean square "
             "of the outputs; rtol 1e-4, atol 1e-5 × the gradient's largest magnitude, torch.testing's tolerances "
             "for bfloat16), the extracted model gives the outputs of the model built from the arch's rewritten IR "
             "(`supernet.subnet_ir(arch).build()`, the reference both templates must match), `osf.trace` of the "
             "first sampled one returns its own IR (the rewritten IR's modules), and `cost()` gives its "
             "exact parameter count; cast with `.double()` (inputs cast alike), the extracted `max()` gives the "
             "original's float64 outputs (atol 1e-5, rtol 1e-4) and the extracted `min()` its float32 outputs "
             "in the original's output dtypes (atol 1e-4, rtol 1e-3), where the original runs in float64 "
             "(dtypes read in `forward` follow the cast). *FLOPs Δ*: the largest relative difference of `cost()` against "
             "`FlopCounterMode` on the extracted model (math attention kernel; given formulas for grouped "
             "expert matmuls and whole-sequence LSTM / GRU / RNN layers, which it does not count; target 1 %). *Unsupported*: ops "
             "without a dimension rule (their dims stay fixed)", "",
             f"{ok} of {len(rows)} models OK; {sum(r.get('refused', False) for r in rows)} refused at capture with a "
             "`TraceError` naming the cause (*refused*: see the rows; value-dependent branches and shapes that "
             "`torch.export` itself cannot capture, or a custom autograd Function whose backward a graph loses); "
             f"gradients compared on {sum(r.get('gradients_checked', 0) > 0 for r in rows)}"
             f" (the others have no output with a gradient); `cost()` FLOPs within 1 % of `FlopCounterMode` on "
             f"{sum(r.get('flops_error', 1) <= 0.01 for r in rows)} (beyond: "
             + (", ".join(f"{r['model']} {r['flops_error']:.1%}" for r in rows if r.get("flops_error", 0) > 0.01)
                or "none") + f"); cast to float64, {sum(r.get('float64') == 'same' for r in rows)} of "
             f"{sum(r.get('float64') not in (None, 'n/a') for r in rows)} models whose original runs in float64 "
             "match (the others are not float32, or fail in float64 in the original's own forward); *near ties*: "
             "the minimal subnet's float32 and float64 outputs differ where a `topk` / `sort` / `argmax` picks "
             "among values within 1e-4 of the largest (rounding decides; not counted as a problem): " + (", ".join(
                 f"{r['model']} ({r['float64']})" for r in rows if str(r.get("float64", "")).startswith("near ties"))
                 or "none") + ".", "",
             "| model | OK | groups (heads) | units | log10 size | min params / params | FLOPs Δ | unsupported ops | problems |",
             "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        size = f"{r['min_params']:,} / {r['params']:,}" if "min_params" in r else ""
        flops = f"{r['flops_error']:.2%}" if "flops_error" in r else ""
        lines.append(f"| {r['model']} | {'yes' if r['ok'] else 'refused' if r.get('refused') else 'NO'} | "
                     + (f"{r['groups']} ({r['heads']}) | {r['units']} | {r['log10_size']} | " if "groups" in r else "| | | ")
                     + f"{size} | {flops} | {', '.join(u.replace('aten.', '') for u in r.get('unsupported', []))} | "
                     + "; ".join(r["problems"]).replace("|", "\\|") + " |")
    return "\n".join(lines + ["<!-- probe:end -->"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--only", metavar="REGEX", help="only models whose name matches REGEX (re.search); "
                                                        "merged into the last full results")
    opts = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    import transformers
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(2)
    chosen = list(QUICK) if opts.quick else names()
    if opts.only:
        chosen = [n for n in chosen if re.search(opts.only, n)]
    result = common.ROOT / "bench" / "results" / ("probe-quick.json" if opts.quick else "probe.json")
    kept = common.rows_kept(result, chosen) if opts.only else []
    rows = []
    for name in chosen:
        rows.append(measure(name))
        r = rows[-1]
        print(f"{name:28} {'OK' if r['ok'] else 'FAILED':6} {r['seconds']:5.1f}s {'; '.join(r['problems'])[:200]}", flush=True)
    order = {n: i for i, n in enumerate(names())}
    rows = sorted(kept + rows, key=lambda r: order.get(r["model"], len(order)))
    env = common.environment(command="python bench/probe.py" + (" --quick" if opts.quick else "")
                             + (f" --only '{opts.only}'" if opts.only else ""),
                             transformers=common.version("transformers"))
    common.publish("probe", "probe", opts.quick, env, rows, section(env, rows))
    return 1 if opts.quick and not all(r["ok"] for r in rows) else 0  # the CI smoke test fails on a failed model


if __name__ == "__main__":
    sys.exit(main())
