"""An exponential moving average of the weights being trained (BigNAS keeps one of its supernet's)."""
from __future__ import annotations

import contextlib
import numbers
from typing import Any, Iterator

import torch


class EMA:
    """The moving average of ``module``'s trainable floating-point parameters (a supernet, or with
    ``osf.train(model=...)`` the model around it): after each optimizer step ``osf.train`` moves every average
    ``1 - rate`` of the way to the new weights, ``rate = decay``, or with ``warmup`` ``min(decay, (1 + n) / (10 +
    n))`` at the n-th update, so early averages are not dominated by the random initial weights. The averages
    live beside the weights (one more copy of them, in float32 for lower-precision weights), are saved in
    checkpoints and scored by ``Validation``;
    ``applied()`` swaps them in for a block, ``copy_to()`` for good (to search and export them)."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.9998, warmup: bool = True) -> None:
        if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0 < decay < 1:
            raise ValueError(f"EMA: decay must lie strictly between 0 and 1 (e.g. 0.9998), got {decay!r}")
        self.module, self.decay, self.warmup, self.updates = module, float(decay), bool(warmup), 0
        # in float32 at least: a bfloat16 average would not move at all by steps of (1 - decay) x the change
        self.shadow = {name: p.detach().to(torch.promote_types(p.dtype, torch.float32), copy=True)
                       for name, p in self._parameters().items()}
        if not self.shadow:
            raise ValueError(f"EMA: {type(module).__name__} has no trainable floating-point parameters to average")

    def _parameters(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.module.named_parameters() if p.requires_grad and p.is_floating_point()}

    def rate(self) -> float:
        """The share of the old average the next update keeps."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self) -> None:
        """Move the averages towards the module's current weights."""
        weight = 1 - self.rate()
        params = self._parameters()
        for name, t in self.shadow.items():  # the module moved to another device after the EMA was made
            if t.device != params[name].device:
                self.shadow[name] = t.to(params[name].device)
        names = list(self.shadow)
        torch._foreach_lerp_([self.shadow[n] for n in names],
                             [params[n].detach().to(self.shadow[n].dtype) for n in names], weight)
        self.updates += 1

    def settings(self) -> dict[str, Any]:
        return {"decay": self.decay, "warmup": self.warmup}

    def state_dict(self) -> dict[str, Any]:
        return {**self.settings(), "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["shadow"]) != set(self.shadow):
            raise ValueError("EMA: the saved averages are of other parameters than this module's trainable ones")
        with torch.no_grad():
            for name, t in self.shadow.items():
                t.copy_(state["shadow"][name])
        self.updates = int(state["updates"])

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Inside the block the module holds the averages; its trained weights come back after."""
        params = self._parameters()
        trained = {n: params[n].detach().clone() for n in self.shadow}
        self.copy_to()
        try:
            yield
        finally:
            with torch.no_grad():
                for name, t in trained.items():
                    params[name].copy_(t)

    @torch.no_grad()
    def copy_to(self) -> None:
        """Put the averages into the module's parameters (the trained weights are overwritten)."""
        copy_shadow(self.module, self.shadow)


@torch.no_grad()
def copy_shadow(module: torch.nn.Module, shadow: dict[str, torch.Tensor]) -> None:
    """Copy saved averages (``EMA.state_dict()['shadow']``, as a checkpoint holds them) into ``module``."""
    params = dict(module.named_parameters())
    missing = sorted(set(shadow) - set(params))
    if missing:
        raise ValueError(f"EMA: the averages name parameters this {type(module).__name__} lacks (e.g. {missing[0]!r})")
    for name, t in shadow.items():
        params[name].copy_(t)
