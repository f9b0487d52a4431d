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


SCORES = {"accuracy": "accuracy", "miou": "mIoU"}  # the scores ``Score`` counts, by name: how reports call them


class Score:
    """A classification score of class scores against labels, counted exactly over any number of batches:
    ``"accuracy"`` (top-1: the share of labelled samples or positions classified right) or ``"miou"`` (mean
    intersection over union: per class, the positions labelled and predicted as it over those labelled or
    predicted as it; the mean over the classes either holds, as segmentation benchmarks count it). Positions
    labelled ``IGNORE_INDEX`` count for nothing."""

    def __init__(self, kind: str = "accuracy") -> None:
        if kind not in SCORES:
            raise ValueError(f"unknown score {kind!r}; scores: {', '.join(SCORES)} (or a metric function of your own)")
        self.kind, self.hits, self.counted = kind, 0, 0
        self.confusion: torch.Tensor | None = None  # [labelled class, predicted class] counts

    def add(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Count one batch: ``scores`` (the class dim: ``class_dim``) against integer ``labels``."""
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"{self.kind} needs integer class labels, but the batch's target is {labels.dtype} "
                             "(regression targets?); pass metric= with a score for them, e.g. lambda out, y: "
                             "-F.mse_loss(out, y).item()")
        dim = class_dim(scores, labels)
        if dim is None:
            raise ValueError(
                f"{self.kind} compares class scores shaped {list(scores.shape)} with labels shaped "
                f"{list(labels.shape)}; expected [batch, classes] for one label per sample, or the labels' shape with "
                "a dim of classes added for labels per position ([batch, classes, H, W] for [batch, H, W], [batch, "
                "tokens, classes] for [batch, tokens])")
        labelled = labels != IGNORE_INDEX
        predicted = scores.argmax(dim)
        self.counted += int(labelled.sum())
        if self.kind == "accuracy":
            self.hits += int(((predicted == labels) & labelled).sum())
            return
        classes = scores.size(dim)
        truth, guess = labels[labelled], predicted[labelled]
        if truth.numel() and not 0 <= int(truth.min()) <= int(truth.max()) < classes:
            raise ValueError(f"mIoU: labels run from {int(truth.min())} to {int(truth.max())}, but the scores are of "
                             f"{classes} classes (labels from 0; -100 for positions to leave out)")
        counts = torch.bincount(truth * classes + guess, minlength=classes * classes).reshape(classes, classes).cpu()
        if self.confusion is not None and self.confusion.shape != counts.shape:
            raise ValueError(f"mIoU: a batch scored {classes} classes, an earlier one {len(self.confusion)}")
        self.confusion = counts if self.confusion is None else self.confusion + counts

    def value(self) -> float:
        """The score of the batches counted so far; NaN where no sample or position was labelled."""
        if self.counted == 0:
            return float("nan")
        if self.kind == "accuracy":
            return self.hits / self.counted
        assert self.confusion is not None
        both = self.confusion.diagonal().double()
        either = self.confusion.sum(0).double() + self.confusion.sum(1).double() - both
        present = either > 0
        return float((both[present] / either[present]).mean())
