"""Evaluating a subnet with inherited weights (BatchNorm statistics recalibrated first)."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

from ..space.arch import Arch
from ..supernet.batches import BatchFn, batch_size, explained, split_batch, to_device
from ..supernet.supernet import Supernet
from .distill import select_output
from .checkpoint import kept_buffers, rng_state, set_rng_state
from .ema import EMA
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


@dataclass
class Validation:
    """What ``osf.train(validate=...)`` scores while it trains: ``osf.evaluate`` of each of ``archs`` (name ->
    arch; default the max and min subnets) on ``loader`` every ``every`` steps (``"epoch"``: after every
    pass over the training loader, ``len(loader) // accumulate`` steps; None: once, after the last step) and
    after the last step. BatchNorm subnets are recalibrated on ``calib_loader`` (default: the
    training loader) as ``osf.evaluate`` does, and the running statistics, random state and data order of
    training are put back afterwards, so a run validated or not trains the same weights. Each score is logged
    with its step as ``val_<metric>/<name>`` (``metrics.jsonl``, TensorBoard, the progress bar).
    ``monitor``: the name (of ``archs``, or ``"max"`` / ``"min"``; ``<name>_ema`` for an EMA's score) whose score
    a ``ReduceLROnPlateau`` scheduler of the run steps on (default: the first scored)."""
    loader: Iterable
    every: int | str | None = None
    archs: dict[str, Arch] | None = None
    metric: Callable[[Any, Any], float] | str = "accuracy"
    calib_loader: Iterable | None = None
    calib_batches: int = 20
    batch_fn: BatchFn | None = None
    monitor: str | None = None

    def __post_init__(self) -> None:
        if self.every not in (None, "epoch") and (isinstance(self.every, bool) or not isinstance(self.every, int)
                                                  or self.every < 1):
            raise ValueError(f"Validation: every must be a whole number of steps >= 1, 'epoch' (or None: after the "
                             f"last step only), got {self.every!r}")
        if isinstance(self.metric, str):
            Score(self.metric)  # an unknown name is refused here, not after the first steps
        elif not callable(self.metric):
            raise ValueError(f"Validation: metric must be 'accuracy', 'miou' or a function (output, target) -> "
                             f"float, got {self.metric!r}")
        if isinstance(self.loader, Iterator):  # (iter() would start a DataLoader's workers just to ask)
            raise ValueError("Validation: loader is an iterator, which one validation would use up; give a "
                             "DataLoader (or another iterable that starts over on every pass)")

    def metric_name(self) -> str:
        """``accuracy`` / ``miou``, or the metric function's name (``score`` for a lambda)."""
        if isinstance(self.metric, str):
            return self.metric
        name = getattr(self.metric, "__name__", "")
        return name if name.isidentifier() else "score"

    def named_archs(self, supernet: Supernet) -> dict[str, Arch]:
        """The archs to score, each checked against ``supernet``'s space."""
        if self.archs is None:
            return {"max": supernet.space.max(), "min": supernet.space.min()}
        if not isinstance(self.archs, dict) or not self.archs:
            raise ValueError("Validation: archs must be a non-empty dict of name -> osf.Arch (e.g. {'max': "
                             "space.max(), 'edge': arch}), or None for the max and min subnets")
        for name, arch in self.archs.items():
            if not isinstance(arch, Arch):
                raise ValueError(f"Validation: archs[{name!r}] is a {type(arch).__name__}, not an osf.Arch")
            supernet.space.validate(arch)
        return dict(self.archs)

    def monitor_key(self, supernet: Supernet) -> str:
        """The logged key a ``ReduceLROnPlateau`` steps on: ``val_<metric>/<monitor>``."""
        return f"val_{self.metric_name()}/{self.monitor or next(iter(self.named_archs(supernet)))}"

    def check_plateau(self, scheduler: Any, supernet: Supernet, ema: EMA | None) -> None:
        """Refuse a monitor that is never scored, and a plateau scheduler that would cut the rate while the
        score (accuracy, mIoU: higher is better) improves."""
        names = list(self.named_archs(supernet))
        scored = names + ([f"{n}_ema" for n in names] if ema is not None else [])
        if self.monitor is not None and self.monitor not in scored:
            raise ValueError(f"Validation: monitor '{self.monitor}' is not scored; choose one of {scored}")
        if isinstance(self.metric, str) and scheduler.mode != "max":
            raise ValueError(f"ReduceLROnPlateau(mode='{scheduler.mode}') would cut the learning rate while "
                             f"{self.metric} (higher is better) improves; build it with mode='max'")

    def due(self, step: int, steps: int, epoch_steps: int | None = None) -> bool:
        """Whether to validate after ``step`` (counted from 1) of ``steps``; ``epoch_steps``: the steps of a
        pass over the training loader (for ``every="epoch"``)."""
        every = epoch_steps if self.every == "epoch" else self.every
        return step == steps or (every is not None and step % every == 0)

    def scores(self, supernet: Supernet, train_loader: Iterable, ema: EMA | None = None) -> dict[str, float]:
        """``val_<metric>/<name>`` of every arch on the current weights (and ``val_<metric>/<name>_ema`` on
        ``ema``'s averages); the supernet's buffers (BatchNorm statistics) are as before afterwards."""
        calib = self.calib_loader if self.calib_loader is not None else train_loader
        rng = rng_state()
        name, archs = self.metric_name(), self.named_archs(supernet)

        def score(suffix: str) -> dict[str, float]:
            return {f"val_{name}/{arch_name}{suffix}": float(evaluate(
                supernet, arch, self.loader, metric=self.metric, calib_loader=calib, calib_batches=self.calib_batches,
                batch_fn=self.batch_fn)) for arch_name, arch in archs.items()}
        try:
            with kept_buffers(supernet):
                if ema is None:
                    return score("")
                trained = score("")
                with ema.applied():
                    return trained | score("_ema")
        finally:
            set_rng_state(rng)  # a shuffled validation loader, data augmentation: training's draws stay its own

    def check_loaders(self, train_loader: Iterable) -> None:
        """Refuse calibration loaders whose passes would take batches from training's own pass."""
        calib = self.calib_loader if self.calib_loader is not None else train_loader
        which = "calib_loader" if self.calib_loader is not None else "the training loader (calib_loader's default)"
        if isinstance(calib, Iterator):
            raise ValueError(f"Validation: {which} is an iterator, so recalibrating BatchNorm would use up training "
                             "batches; give a DataLoader, or calib_loader= a separate one")
        if calib is train_loader and getattr(calib, "persistent_workers", False) and getattr(calib, "num_workers", 0):
            raise ValueError("Validation: the training loader keeps persistent workers, whose one iterator a "
                             "recalibration pass would restart mid-epoch; give calib_loader= a separate DataLoader "
                             "of training data, or persistent_workers=False")
