"""Evaluating a subnet with inherited weights (BatchNorm statistics recalibrated first)."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from ..space.arch import Arch
from ..supernet.batches import BatchFn, batch_size, explained, split_batch, to_device
from ..supernet.supernet import Supernet
from .distill import select_output
from .labels import Score


def _checked_labels(target: Any, kind: str = "accuracy") -> torch.Tensor:
    if not isinstance(target, torch.Tensor):
        raise ValueError(f"{kind} needs class labels, but the batch's target is {type(target).__name__}; give "
                         "(inputs, labels) pairs or dicts with a 'labels' entry, batch_fn= that returns them, or "
                         "metric= for a score without labels")
    return target


def accuracy(output: Any, target: torch.Tensor) -> float:
    """Top-1 accuracy of logits (the ``logits`` entry of dict-like outputs) against class labels, one per
    sample or one per position (``osf.train.labels``: segmentation, tagging; positions labelled -100 are
    left out); NaN where no position is labelled."""
    score = Score("accuracy")
    score.add(select_output(output), _checked_labels(target))
    return score.value()


def evaluate(supernet: Supernet, arch: Arch, loader: Iterable, *, metric: Callable[[Any, Any], float] | str = "accuracy",
             calib_loader: Iterable | None = None, calib_batches: int = 20,
             batch_fn: BatchFn | None = None, seed: int | None = 0) -> float:
    """Mean of ``metric(output, target)`` over ``loader`` (weighted by batch size) for ``arch`` on the
    shared weights, in eval mode; ``metric`` ``"accuracy"`` (top-1) or ``"miou"`` (mean intersection over
    union): that score counted over every labelled sample or position of the loader (``labels.Score``). A
    subnet with BatchNorm is first recalibrated on ``calib_batches`` batches
    of ``calib_loader`` (training data): shared running statistics fit no single subnet. Those batches are
    drawn with ``seed`` (``Supernet.recalibrate``), so the same call gives the same number every time; None
    draws them from the loader's current state."""
    score = Score(metric) if isinstance(metric, str) else None
    if supernet.batch_norms(arch):
        if calib_loader is None:
            raise ValueError("this supernet has BatchNorm layers whose statistics must be re-estimated per subnet: "
                             "pass calib_loader= (a loader of training data)")
        supernet.recalibrate(arch, calib_loader, calib_batches, batch_fn, seed=seed)
    was_training = supernet.training
    supernet.eval()
    total, count, batches = 0.0, 0, 0
    device = supernet.device()
    try:
        with torch.no_grad(), supernet.set_arch(arch):
            for batch in loader:
                args, kwargs, target = split_batch(batch, batch_fn)
                with explained(batch, batch_fn):
                    out = supernet(*to_device(args, device), **to_device(kwargs, device))
                if score is not None:
                    score.add(select_output(out), _checked_labels(target, score.kind).to(device))
                else:
                    n = batch_size(args, kwargs)
                    total += metric(out, to_device(target, device)) * n
                    count += n
                batches += 1
    finally:
        supernet.train(was_training)
    if batches == 0:
        raise ValueError("evaluate: the loader yielded no batch")
    if score is not None:
        if score.counted == 0:
            raise ValueError("evaluate: every label of the loader is -100 (left out), so there is nothing to score")
        return score.value()
    return total / count
