"""Built-in small models and offline data sets for the demo, the docs and the benchmarks: a residual CNN
and a small ViT (1-D or 2-D), the scikit-learn digits (8×8 images) and MNIST-1D (length-40 signals)."""
from __future__ import annotations

import torch
from torch import nn


def _conv(dims: int):
    return nn.Conv1d if dims == 1 else nn.Conv2d


def _norm(dims: int):
    return nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d


class ResidualBlock(nn.Module):
    def __init__(self, width: int, expansion: int, dims: int):
        super().__init__()
        conv, norm = _conv(dims), _norm(dims)
        self.body = nn.Sequential(conv(width, width * expansion, 3, padding=1), norm(width * expansion), nn.ReLU(),
                                  conv(width * expansion, width, 3, padding=1), norm(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class ResidualCNN(nn.Module):
    """Stem, ``blocks`` residual blocks of ``width`` channels, global pooling, linear head."""

    def __init__(self, in_channels: int = 1, classes: int = 10, *, dims: int = 2, width: int = 32,
                 blocks: int = 4, expansion: int = 2):
        super().__init__()
        self.stem = nn.Sequential(_conv(dims)(in_channels, width, 3, padding=1), _norm(dims)(width), nn.ReLU())
        self.blocks = nn.Sequential(*[ResidualBlock(width, expansion, dims) for _ in range(blocks)])
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(x.flatten(2).mean(-1))


class TinyViT(nn.Module):
    """Patch embedding, class token, learned positions, ``depth`` pre-norm encoder blocks, linear head."""

    def __init__(self, in_channels: int = 1, classes: int = 10, *, dims: int = 2, size: int = 8, patch: int = 2,
                 dim: int = 64, depth: int = 4, heads: int = 4, mlp: int = 128):
        super().__init__()
        self.embed = _conv(dims)(in_channels, dim, patch, stride=patch)
        tokens = (size // patch) ** dims
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.encoder(x))[:, 0])


def digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as (x_train, y_train, x_test, y_test): 1×8×8 images in [0, 1], a fixed
    80/20 split (shipped with scikit-learn; nothing is downloaded)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the digits data set ships with scikit-learn: pip install scikit-learn (or "
                          "pip install 'osf[demo]')") from None
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(x))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def mnist1d() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST-1D, generated locally (never downloaded): 1×40 signals, 4000 train and 1000 test."""
    from mnist1d.data import get_dataset_args, make_dataset
    d = make_dataset(get_dataset_args())

    def t(a, dtype):
        return torch.tensor(a, dtype=dtype)
    return t(d["x"], torch.float32).unsqueeze(1), t(d["y"], torch.long), \
        t(d["x_test"], torch.float32).unsqueeze(1), t(d["y_test"], torch.long)
