"""Surrogate-assisted evolution: after a first generation of uniform samples, each round fits a ridge
regression of the measured metrics on the arch (its width fractions, kept units and exact log costs),
breeds a pool of candidates from the Pareto front (crossover and mutation, plus fresh samples), and
evaluates the few whose predicted metrics add the most hypervolume to the front found so far. Only the
evaluated subnets cost an evaluation; predicting and costing a candidate takes microseconds."""
from __future__ import annotations

import math
import random
from typing import Callable, Sequence

import numpy as np

from ..space.arch import Arch
from ..space.space import SearchSpace

_LAMBDAS = (0.01, 0.1, 1.0, 10.0, 100.0)  # ridge penalties, chosen per fit by leave-one-out error
_POOL = 600  # bred candidates per round
_FRESH = 100  # uniform samples added to each round's pool
_MUTATION = 1.5  # expected number of variables a mutation changes


def features(space: SearchSpace, arch: Arch, costs: dict[str, float], reference: dict[str, float]) -> list[float]:
    """The regression inputs of ``arch``: log params and FLOPs relative to the full model, each group's
    width fraction and each unit's keep flag."""
    return ([math.log(max(costs["params"], 1.0) / max(reference["params"], 1.0)),
             math.log(max(costs["flops"], 1.0) / max(reference["flops"], 1.0))]
            + [arch.width[g.key] / g.size for g in space.groups] + [float(arch.depth[u.key]) for u in space.units])


def fit_ridge(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A ridge regression of ``y`` on standardised ``x`` (intercept not penalised), its penalty picked by
    the exact leave-one-out error; returns the predictor."""
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0

    def design(rows: np.ndarray) -> np.ndarray:
        return np.hstack([np.ones((len(rows), 1)), (rows - mean) / scale])

    z = design(x)
    penalty = np.eye(z.shape[1])
    penalty[0, 0] = 0.0
    best = None
    for lam in _LAMBDAS:
        inverse = np.linalg.pinv(z.T @ z + lam * penalty)
        hat = z @ inverse @ z.T
        residual = (y - hat @ y) / np.clip(1.0 - np.diag(hat), 1e-6, None)
        error = float(np.mean(residual ** 2))
        if best is None or error < best[0]:
            best = (error, inverse @ z.T @ y)
    weights = best[1]
    return lambda rows: design(np.asarray(rows, dtype=float).reshape(-1, x.shape[1])) @ weights


def breed(space: SearchSpace, rng: random.Random, parents: Sequence[Arch], mates: Sequence[Arch]) -> list[Arch]:
    """``_POOL`` children of Pareto ``parents`` (half of them crossed with any evaluated ``mates``, gene
    by gene), each variable then redrawn with probability ``_MUTATION`` / variables, and ``_FRESH``
    uniform samples of the space."""
    groups, units = space.groups, space.units
    rate = _MUTATION / max(1, len(groups) + len(units))
    children = []
    for _ in range(_POOL):
        a = rng.choice(parents)
        b = rng.choice(mates) if rng.random() < 0.5 else a
        width = {g.key: (a if rng.random() < 0.5 else b).width[g.key] for g in groups}
        depth = {u.key: (a if rng.random() < 0.5 else b).depth[u.key] for u in units}
        for g in groups:
            if rng.random() < rate:
                width[g.key] = rng.choice(g.choices)
        for u in units:
            if rng.random() < rate:
                depth[u.key] = not depth[u.key]
        children.append(Arch(width, depth))
    return children + [space.sample(rng) for _ in range(_FRESH)]


def pick(front: np.ndarray, candidates: np.ndarray, k: int, rng: random.Random) -> list[int]:
    """Greedily, ``k`` rows of ``candidates`` (objective vectors, minimised, normalised so the reference
    point is all ones) that add the most hypervolume to ``front`` and the rows picked before them; once no
    candidate adds any, the rest at random."""
    from pymoo.indicators.hv import HV
    volume = HV(ref_point=np.ones(candidates.shape[1]))
    chosen: list[int] = []
    left = list(range(len(candidates)))
    current = front
    base = volume(current) if len(current) else 0.0
    while left and len(chosen) < k:
        gains = [volume(np.vstack([current, candidates[i:i + 1]])) - base for i in left]
        top = max(gains)
        i = left[gains.index(top)] if top > 1e-12 else rng.choice(left)
        chosen.append(i)
        left.remove(i)
        current = np.vstack([current, candidates[i:i + 1]])
        base = volume(current)
    return chosen
