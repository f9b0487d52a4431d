"""Arch normal forms for the search: choices that cannot matter are fixed, so one subnet has one key."""
from __future__ import annotations

import torch

from ..space.arch import Arch
from ..space.space import SearchSpace


def canonical(space: SearchSpace, arch: Arch) -> Arch:
    """``arch`` with every group and unit listed, and the choices inside dropped units (which do not change
    the subnet) set to the maximum: two archs are the same subnet exactly when their canonical keys match."""
    space.validate(arch)
    width = {g.key: arch.width.get(g.key, g.size) for g in space.groups}
    depth = {u.key: arch.depth.get(u.key, True) for u in space.units}
    groups, units = space.irrelevant(arch)
    for g in space.groups:
        if g.key in groups:
            width[g.key] = g.size
    for u in units:
        depth[u] = True
    return Arch(width, depth)


def representative(space: SearchSpace, arch: Arch, tensors: dict[str, torch.Tensor]) -> Arch:
    """The canonical form of the most salient member of ``arch``'s motif (``space.salient``), applied until
    it no longer changes, so every member of a motif maps to one arch."""
    rep = canonical(space, arch)
    for _ in range(8):
        nxt = canonical(space, space.salient(rep, tensors))
        if nxt.key() == rep.key():
            return rep
        rep = nxt
    return rep


def summary(space: SearchSpace, arch: Arch) -> str:
    """A short description: the mean width ratio of the groups that matter (outside dropped units) and
    the units kept, e.g. ``width 63%, 12/16 units``."""
    groups, inside = space.irrelevant(arch)
    parts = []
    live = [g for g in space.groups if g.key not in groups]
    if live:
        parts.append(f"width {sum(arch.width.get(g.key, g.size) / g.size for g in live) / len(live):.0%}")
    if space.units:
        gone = inside | set(space.dropped_units(arch))
        parts.append(f"{len(space.units) - len(gone)}/{len(space.units)} units")
    return ", ".join(parts) or "full model"
