"""Small hand-written models for the tests (multi-input/-output, kwargs, dict outputs, tied weights,
a custom user module, one that cannot be traced, a mixture of experts with data-dependent sizes)."""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn


class Gate(nn.Module):
    """A custom user module with its own constructor arguments and a buffer."""

    def __init__(self, dim: int, scale: float = 0.5, *, bias: bool = True):
        super().__init__()
        self.dim, self.scale = dim, scale
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.register_buffer("shift", torch.linspace(-1, 1, dim))

    def forward(self, x):
        return x * torch.sigmoid(self.proj(x) * self.scale) + self.shift


class MultiIO(nn.Module):
    """Two inputs, one keyword input, a dict output with a nested tuple."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Conv1d(3, 8, 3, padding=1)
        self.gate = Gate(8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(8, 4)

    def forward(self, x, seq, *, scale=None):
        h = self.gate(self.a(x))
        s = self.bn(self.b(seq)).mean(-1)
        if scale is not None:
            s = s * scale
        z = self.drop(F.gelu(h + s))
        return {"logits": self.head(z), "aux": (h, s)}


class TiedLM(nn.Module):
    """Tied input/output embeddings and one block applied twice (ALBERT-style sharing)."""

    def __init__(self, vocab: int = 50, dim: int = 16):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.shared = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids):
        h = self.emb(ids)
        h = h + self.shared(h)
        h = h + self.shared(h)
        return self.out(self.norm(h))


class SharedInChild(nn.Module):
    """One positional-conv module held at the root and by reference inside every block (timm CoaT)."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.cpe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.blocks = nn.ModuleList(_BlockWithCpe(self.cpe, dim) for _ in range(2))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class _BlockWithCpe(nn.Module):
    def __init__(self, cpe: nn.Module, dim: int):
        super().__init__()
        self.cpe = cpe
        self.mlp = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        return x + self.mlp(self.cpe(x))


class DataDependent(nn.Module):
    """Branches on tensor values: neither torch.export nor torch.fx can capture it."""

    def __init__(self):
        super().__init__()
        self.inner = Branchy()

    def forward(self, x):
        return self.inner(x)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        if y.sum() > 0:
            return y.relu()
        return y.tanh()


def tiny_factory():
    """Factory for `osf inspect python:tests.toys:tiny_factory`."""
    return TiedLM(), (torch.randint(0, 50, (2, 7)),)


class NeedsTargetsWhenTraining(nn.Module):
    """Like torchvision detectors: training mode requires targets."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x, targets=None):
        if self.training:
            assert targets is not None, "targets should not be none when in training mode"
            return {"loss": (self.fc(x) - targets).square().mean()}
        return {"scores": self.fc(x).softmax(-1)}


class ForwardBlocks(nn.Module):
    """Context managers inside ``forward``: a ``torch.no_grad()`` target from a module that must get no
    gradient, a spectral-normed layer (its power iteration updates buffers under ``no_grad`` in training),
    and an autocast block with a nested float32 block."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 32)
        self.target = nn.Linear(32, 32)
        self.sn = nn.utils.parametrizations.spectral_norm(nn.Linear(32, 32))
        self.low = nn.Linear(32, 32)
        self.exact = nn.Linear(32, 32)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        with torch.no_grad():
            t = self.target(h).softmax(-1)
        h = F.relu(self.sn(h * t))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = self.low(h)
            with torch.autocast("cpu", enabled=False):
                exact = self.exact(low.float())
        return self.head(h + low.float() + exact)


class CondInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.cond(x.sum() > 0, torch.sin, torch.cos, (self.fc(x),))


class LayerDropWhenTraining(nn.Module):
    """Skips its layer at random in training, the draw made with ``torch.rand`` turned into a Python bool
    (Wav2Vec2 / HuBERT) or with Python's ``random`` (older Hugging Face models)."""

    def __init__(self, draw: str = "torch"):
        super().__init__()
        self.draw = draw
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if self.training and (bool(torch.rand([]) < 0.5) if self.draw == "torch" else random.random() < 0.5):
            return x
        return self.fc(x)


class RoutedExperts(nn.Module):
    """Mixture of experts written by hand: each expert runs on the tokens routed to it, found by
    ``torch.where`` (a data-dependent size), and adds into their rows with ``index_add_``."""

    def __init__(self):
        super().__init__()
        self.gate, self.out = nn.Linear(32, 4), nn.Linear(32, 2)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32)) for _ in range(4))

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        weight, chosen = torch.softmax(self.gate(flat), -1).topk(2, -1)
        y = torch.zeros_like(flat)
        for i, expert in enumerate(self.experts):
            token, slot = torch.where(chosen == i)
            y.index_add_(0, token, expert(flat[token]) * weight[token, slot, None])
        return self.out(y.view_as(x))


class GroupedMatmulExperts(nn.Module):
    """Mixture of experts as libraries write it for speed: tokens sorted by their expert, one
    ``torch._grouped_mm`` over all experts' stacked bfloat16 weights (E, K, N) (its only dtype when traced),
    the offsets counted by ``histc``."""

    def __init__(self, experts: int = 4):
        super().__init__()
        self.experts = experts
        self.a, self.gate, self.out = nn.Linear(16, 32), nn.Linear(32, experts), nn.Linear(32, 3)
        self.up = nn.Parameter((torch.randn(experts, 32, 64) / 6).bfloat16())
        self.down = nn.Parameter((torch.randn(experts, 64, 32) / 8).bfloat16())

    def forward(self, x):
        h = self.a(x)
        expert = self.gate(h).argmax(-1)
        order = torch.argsort(expert, stable=True)
        counts = torch.histc(expert.float(), bins=self.experts, min=0, max=self.experts - 1)
        offs = torch.cumsum(counts, 0).to(torch.int32)
        hidden = torch.relu(torch._grouped_mm(h[order].bfloat16(), self.up, offs=offs))
        y = torch._grouped_mm(hidden, self.down, offs=offs).float()
        return self.out(h + torch.zeros_like(h).index_copy(0, order, y))


class ClassTokenEncoder(nn.Module):
    """A class token expanded to the batch and concatenated in front of the tokens (a ViT's stem): a graph
    traced for one batch size fails at any other."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.proj, self.mix, self.head = nn.Linear(8, dim), nn.Linear(dim, dim), nn.Linear(dim, 3)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))

    def forward(self, x):
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), self.proj(x)], 1)
        t = t + self.mix(t).relu()
        return self.head(t[:, 0])


class SwishFn(torch.autograd.Function):
    """A memory-saving swish: its backward is the derivative of its forward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * s * (1 + x * (1 - s))


class GradReverse(torch.autograd.Function):
    """Gradient reversal (domain-adversarial training): identity forward, negated scaled backward."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


swish = SwishFn.apply  # kept bound at import, as models usually do
reverse_gradient = GradReverse.apply


@torch.library.custom_op("osf_tests::reverse_gradient", mutates_args=())
def reverse_gradient_op(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Gradient reversal as a custom op: what osf's error asks for."""
    return x.clone()


reverse_gradient_op.register_fake(lambda x, scale: torch.empty_like(x))
reverse_gradient_op.register_autograd(lambda ctx, grad: (-ctx.scale * grad, None),
                                      setup_context=lambda ctx, inputs, output: setattr(ctx, "scale", inputs[1]))


class DomainAdversarial(nn.Module):
    """A feature extractor with a label head and a domain head behind a gradient reversal, swish
    activations from a custom Function and a block under a reentrant checkpoint."""

    def __init__(self, as_custom_op: bool = False):
        super().__init__()
        self.as_custom_op = as_custom_op
        self.stem, self.block, self.head = nn.Linear(10, 32), nn.Linear(32, 32), nn.Linear(32, 3)
        self.domain = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, x):
        h = swish(self.stem(x))
        h = h + torch.utils.checkpoint.checkpoint(self.block, h, use_reentrant=True)
        reverse = reverse_gradient_op if self.as_custom_op else reverse_gradient
        return self.head(h), self.domain(reverse(h, 0.5))


class GradientHooks(nn.Module):
    """Registers a gradient hook on an activation in forward: one that scales the gradient, or one that
    keeps it (as Grad-CAM does)."""

    def __init__(self, scale: float | None):
        super().__init__()
        self.scale, self.kept = scale, []
        self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        h = torch.relu(self.a(x))
        if h.requires_grad:
            h.register_hook(self.kept.append if self.scale is None else lambda grad: grad * self.scale)
        return self.b(h)


class ForcesFromEnergy(nn.Module):
    """Calls torch.autograd.grad in forward (an interatomic potential's forces)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 32), nn.Linear(32, 1)

    def forward(self, positions):
        positions = positions if positions.requires_grad else positions.requires_grad_()
        with torch.enable_grad():
            energy = self.b(torch.tanh(self.a(positions))).sum()
            forces = -torch.autograd.grad(energy, positions, create_graph=True)[0]
        return energy, forces


class CausalSeq2Seq(nn.Module):
    """nn.Transformer with a causal target mask and no ``tgt_is_causal`` hint (PyTorch's tutorial usage)."""

    def __init__(self):
        super().__init__()
        self.source, self.target = nn.Embedding(40, 32), nn.Embedding(40, 32)
        self.transformer = nn.Transformer(32, 4, 2, 2, 64, batch_first=True)
        self.out = nn.Linear(32, 40)

    def forward(self, source, target):
        mask = nn.Transformer.generate_square_subsequent_mask(target.shape[1])
        return self.out(self.transformer(self.source(source), self.target(target), tgt_mask=mask))
