"""Knowledge distillation between subnets (in-place) or from a frozen teacher, for any output type."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .labels import IGNORE_INDEX, class_dim


def select_output(y: Any, field: str | int | None = None) -> torch.Tensor:
    """The tensor of a model output that distillation compares. ``field`` picks a key (dicts, HF
    outputs) or an index (tuples); without it: the tensor itself, ``logits`` or the first entry."""
    if field is None:
        if isinstance(y, torch.Tensor):
            return y
        if isinstance(y, Mapping):
            if "logits" in y:
                return y["logits"]
            field = next(iter(y))
        elif isinstance(y, (tuple, list)) and y:
            field = 0
        else:
            raise TypeError(f"cannot pick a tensor out of a {type(y).__name__} output; pass field=")
    try:
        out = y[field]
    except (KeyError, IndexError, TypeError):
        keys = list(y) if isinstance(y, Mapping) else f"indices 0..{len(y) - 1}" if isinstance(y, (tuple, list)) else "none"
        raise ValueError(f"distillation field {field!r} is not in the model's output (it has {keys})") from None
    if not isinstance(out, torch.Tensor):
        return select_output(out, None)
    return out


@dataclass
class Distill:
    """Distillation settings.

    ``mode``: ``"inplace"`` (the max subnet's outputs, detached, are the targets of the other subnets of
    the same step; the max subnet itself learns from the task loss) or ``"teacher"`` (a frozen
    ``teacher`` model's outputs are the targets of every subnet; it runs in eval mode, without gradients,
    and gets its own mode back when training ends). ``loss``: ``"kl"`` (softened with
    ``temperature``, for logits), ``"mse"`` or ``"cosine"`` (for features and embeddings). ``field``:
    which output to compare (see ``select_output``). ``dim``: the dim of the classes (``"kl"``) or
    features (``"cosine"``); None: the one the batch's integer class labels lack (``osf.train.labels.class_dim``:
    1 for segmentation scores [batch, classes, H, W] against labels [batch, H, W]), else the last. A
    student's loss is ``weight`` × distillation + (1 − ``weight``) × task loss."""
    mode: str = "inplace"
    teacher: nn.Module | None = None
    loss: str = "kl"
    temperature: float = 1.0
    field: str | int | None = None
    weight: float = 1.0
    dim: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("inplace", "teacher"):
            raise ValueError(f"Distill.mode must be 'inplace' or 'teacher', got {self.mode!r}")
        if self.loss not in ("kl", "mse", "cosine"):
            raise ValueError(f"Distill.loss must be 'kl', 'mse' or 'cosine', got {self.loss!r}")
        if (self.mode == "teacher") != (self.teacher is not None):
            raise ValueError("Distill(mode='teacher') needs teacher=<model>; in-place distillation takes none")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"Distill.weight must lie in [0, 1], got {self.weight}")
        if not self.temperature > 0:  # also NaN; a KL at temperature 0 divided by zero in every step
            raise ValueError(f"Distill.temperature must be > 0, got {self.temperature}")

    def __call__(self, student: Any, target: torch.Tensor, labels: Any = None) -> torch.Tensor:
        """The distillation loss of ``student``'s output against ``target`` (the teacher's or the max
        subnet's selected output); ``labels``, the batch's target, tells the class dim when ``dim`` is None."""
        s = select_output(student, self.field).float()
        t = target.float()
        if s.shape != t.shape:
            raise ValueError(f"distillation compares outputs of shape {tuple(s.shape)} (student) and "
                             f"{tuple(t.shape)} (target); pick matching outputs with field=")
        dim = self._dim(s, labels)
        if self.loss == "kl":
            temp = self.temperature
            s, t = (x.movedim(dim, -1) for x in (s, t))
            if _labels_per_position(s, labels):  # positions left out of the task (padding) left out here too
                kept = labels != IGNORE_INDEX
                s, t = s[kept], t[kept]
            s, t = s.reshape(-1, s.shape[-1]) / temp, t.reshape(-1, t.shape[-1]) / temp
            return F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True,
                            reduction="batchmean") * temp * temp
        if self.loss == "mse":
            return F.mse_loss(s, t)
        return 1.0 - F.cosine_similarity(s, t, dim=dim).mean()

    def _dim(self, output: torch.Tensor, labels: Any) -> int:
        """``dim``, else the class dim the batch's integer labels tell, else the last."""
        if self.dim is not None:
            if not -output.dim() <= self.dim < output.dim():
                raise ValueError(f"Distill.dim is {self.dim}, but the compared outputs have {output.dim()} dims "
                                 f"(shape {tuple(output.shape)})")
            return self.dim
        if isinstance(labels, torch.Tensor) and not (labels.is_floating_point() or labels.is_complex()):
            found = class_dim(output, labels)
            if found is not None:
                return found
        return -1


def _labels_per_position(scores: torch.Tensor, labels: Any) -> bool:
    """Whether ``labels`` label each position of ``scores`` (classes last, moved there), in the same layout."""
    return (isinstance(labels, torch.Tensor) and labels.dim() > 1 and not labels.is_floating_point()
            and tuple(labels.shape) == tuple(scores.shape[:-1]))
