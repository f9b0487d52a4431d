"""Which subnets are trained at each step.

A sampler's ``sample(step)`` returns ``[(role, arch), ...]``: the subnets whose losses are summed in that
step. Roles name what a subnet stands for in the logs (``max``, ``min``, ``random``, ...); in-place
distillation uses the ``max`` subnet's outputs as soft targets, so it must come first. Samplers are
deterministic in ``(seed, step)`` — nothing to checkpoint but their settings, and every rank of a
distributed run agrees on the list. To plug in your own, subclass ``Sampler`` and implement ``sample``.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Mapping, Sequence

from ..space.arch import Arch
from ..space.space import SearchSpace

if TYPE_CHECKING:
    from ..supernet.supernet import Supernet


class Sampler:
    """Base class: ``k`` subnets per step, reproducible from ``seed``."""

    def __init__(self, space: SearchSpace, k: int = 4, seed: int = 0):
        if k < 1:
            raise ValueError(f"a sampler needs k >= 1 subnets per step, got {k}")
        self.space, self.k, self.seed = space, k, seed

    def rng(self, step: int) -> random.Random:
        return random.Random(f"osf-sampler:{self.seed}:{step}")

    def sample(self, step: int) -> list[tuple[str, Arch]]:
        raise NotImplementedError

    def settings(self) -> dict:
        """What a checkpoint records to check that a resumed run samples the same subnets."""
        return {"class": type(self).__name__, "k": self.k, "seed": self.seed}


class UniformSampler(Sampler):
    """``k`` uniformly random subnets."""

    def sample(self, step: int) -> list[tuple[str, Arch]]:
        rng = self.rng(step)
        return [("random", self.space.sample(rng)) for _ in range(self.k)]


class ArchSampler(Sampler):
    """The same named subnets at every step: ``ArchSampler(space, {"picked": arch})`` trains ``arch`` alone,
    e.g. to fine-tune a subnet the search picked, on its inherited weights, before extracting it. The
    other subnets share those weights, so they change too: fine-tune in a process (or a copy of the
    supernet) you do not search from afterwards, or load the trained checkpoint again. A name is the
    subnet's role in the logs (``loss/picked``); ``max`` is kept for the max subnet (in-place distillation
    takes it as the teacher when it comes first)."""

    def __init__(self, space: SearchSpace, archs: Mapping[str, Arch]):
        if not isinstance(archs, Mapping) or not archs:
            raise ValueError("ArchSampler needs a dict of at least one subnet by name, e.g. {'picked': arch}")
        for name, arch in archs.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"ArchSampler: subnet names must be non-empty strings, got {name!r}")
            try:
                space.validate(arch)
            except (TypeError, ValueError) as e:
                raise type(e)(f"ArchSampler: subnet '{name}': {e}") from None
            if name == "max" and arch != space.max():
                raise ValueError("ArchSampler: the name 'max' is kept for space.max() (in-place distillation's "
                                 "teacher); give this subnet another name")
        super().__init__(space, len(archs), 0)
        self.archs = dict(archs)

    def sample(self, step: int) -> list[tuple[str, Arch]]:
        return list(self.archs.items())

    def settings(self) -> dict:
        return {"class": type(self).__name__, "archs": {name: a.to_json() for name, a in self.archs.items()}}


class SandwichSampler(Sampler):
    """The sandwich rule: the max subnet, the min subnet and ``k - 2`` random ones (``k >= 2``)."""

    def __init__(self, space: SearchSpace, k: int = 4, seed: int = 0):
        if k < 2:
            raise ValueError(f"the sandwich rule needs k >= 2 (max and min), got {k}")
        super().__init__(space, k, seed)

    def sample(self, step: int) -> list[tuple[str, Arch]]:
        rng = self.rng(step)
        return ([("max", self.space.max()), ("min", self.space.min())]
                + [("random", self.space.sample(rng)) for _ in range(self.k - 2)])


class MotifSampler(SandwichSampler):
    """Sandwich over motifs: each random subnet is replaced by its motif's most salient member
    (``space.salient``, from the supernet's current weights), so equivalent subnets share one trained
    representative."""

    def __init__(self, supernet: "Supernet", k: int = 4, seed: int = 0):
        super().__init__(supernet.space, k, seed)
        self.supernet = supernet

    def sample(self, step: int) -> list[tuple[str, Arch]]:
        picks = super().sample(step)
        if len(picks) <= 2:
            return picks
        tensors = self.supernet.tensors()
        return picks[:2] + [("motif", self.space.salient(arch, tensors)) for _, arch in picks[2:]]


class ProgressiveShrinking(Sampler):
    """Once-for-All's progressive shrinking: the space opens in stages. Each stage ``(start, min_ratio,
    depth)`` begins at fraction ``start`` of ``total_steps``, offers width choices of at least
    ``min_ratio`` × a group's size and drops units only if ``depth``; within a stage, the sandwich rule.
    A stage whose only subnet is the max (the first, by default) trains it once per step, not ``k`` times."""

    def __init__(self, space: SearchSpace, total_steps: int, k: int = 4, seed: int = 0,
                 stages: Sequence[tuple[float, float, bool]] = ((0.0, 1.0, False), (0.25, 1.0, True),
                                                                (0.5, 0.5, True), (0.75, 0.0, True))):
        super().__init__(space, k, seed)
        if not stages or stages[0][0] != 0.0 or list(stages) != sorted(stages, key=lambda s: s[0]):
            raise ValueError("stages must start at 0.0 and be sorted by their start fraction")
        self.total_steps, self.stages = total_steps, [tuple(s) for s in stages]

    def stage(self, step: int) -> tuple[float, float, bool]:
        current = self.stages[0]
        for s in self.stages:
            if step >= s[0] * self.total_steps:
                current = s
        return current

    def sample(self, step: int) -> list[tuple[str, Arch]]:
        _, ratio, depth = self.stage(step)
        rng = self.rng(step)
        space = self.space
        allowed = {g.key: [c for c in g.choices if c >= ratio * g.size] or [g.size] for g in space.groups}
        # the stage's smallest subnet keeps the units space.min() keeps (a ViT keeps one block, not none)
        smallest = Arch({k: v[0] for k, v in allowed.items()},
                        space.min().depth if depth else {u.key: True for u in space.units})
        picks = [("max", space.max())]
        if smallest == picks[0][1]:  # k copies of one subnet would only repeat the same step
            return picks
        if self.k >= 2:
            picks.append(("min", smallest))
        return picks + [("random", space.sample(rng, widths=allowed, depth=depth))
                        for _ in range(self.k - len(picks))]

    def settings(self) -> dict:
        return {**super().settings(), "total_steps": self.total_steps, "stages": [list(s) for s in self.stages]}


class WarmupSampler(Sampler):
    """The max subnet alone for the first ``steps`` steps, then ``sampler``'s subnets: the shared weights
    first learn the full model, as Once-for-All's first stage does, before smaller subnets pull on them.
    Wraps any sampler (sandwich, motif, uniform, your own); ``ProgressiveShrinking`` with stages
    ``((0.0, 1.0, False), (f, 0.0, True))`` gives the same subnets as a sandwich sampler warmed up for
    the fraction ``f`` of the steps."""

    def __init__(self, sampler: Sampler, steps: int):
        if steps < 0:
            raise ValueError(f"WarmupSampler needs steps >= 0, got {steps}")
        super().__init__(sampler.space, sampler.k, sampler.seed)
        self.sampler, self.steps = sampler, steps

    def sample(self, step: int) -> list[tuple[str, Arch]]:
        return [("max", self.space.max())] if step < self.steps else self.sampler.sample(step)

    def settings(self) -> dict:
        return {**super().settings(), "warmup_steps": self.steps, "then": self.sampler.settings()}
