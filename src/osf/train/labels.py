"""Class labels against class scores: one label per sample ([batch] against [batch, classes]) or one per
position (segmentation's [batch, H, W] against [batch, classes, H, W], tagging's [batch, tokens] against
[batch, tokens, classes]); positions labelled ``IGNORE_INDEX`` count for nothing."""
from __future__ import annotations

import torch

IGNORE_INDEX = -100  # ``F.cross_entropy``'s default ignore_index, and Hugging Face's label for padding


def class_dim(scores: torch.Tensor, labels: torch.Tensor) -> int | None:
    """The dim of ``scores`` that holds the classes of integer ``labels``: the one whose removal leaves the
    labels' shape, among dim 1 and the last. Where both fit (as many classes as the last labelled size), dim
    1 for scores of 4 or more dims (images: PyTorch's layout) and the last for fewer (sequences: Hugging
    Face's). None where neither fits."""
    if scores.dim() != labels.dim() + 1 or labels.dim() == 0:
        return None
    last = scores.dim() - 1
    fits = [d for d in dict.fromkeys((1, last)) if scores.shape[:d] + scores.shape[d + 1:] == labels.shape]
    if not fits:
        return None
    return 1 if len(fits) == 2 and scores.dim() >= 4 else fits[-1]


def layout_error(scores: torch.Tensor, labels: torch.Tensor, what: str) -> ValueError:
    """Why ``scores`` cannot be scored against ``labels`` (their shapes and the shapes expected)."""
    return ValueError(
        f"{what} compares class scores shaped {list(scores.shape)} with labels shaped {list(labels.shape)}; expected "
        "[batch, classes] for one label per sample, or the labels' shape with a dim of classes added for labels "
        "per position ([batch, classes, H, W] for [batch, H, W], [batch, tokens, classes] for [batch, tokens])")


def hits_and_counted(scores: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """How many labelled samples or positions ``scores`` classify right (top-1), and how many are labelled
    (not ``IGNORE_INDEX``)."""
    dim = class_dim(scores, labels)
    if dim is None:
        raise layout_error(scores, labels, "accuracy")
    labelled = labels != IGNORE_INDEX
    return int(((scores.argmax(dim) == labels) & labelled).sum()), int(labelled.sum())
