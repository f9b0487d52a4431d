"""Width groups: the atoms of the dimension analysis that reach parameters, with their choices and
channel salience."""
from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatch

import torch

from ..ir import serial
from ..ir.graph import IR, PARAM
from .analysis import DimAnalysis
from .dims import Cat, Prod


@dataclass
class WidthGroup:
    """Tensor dims that must shrink together. ``kind`` is ``"heads"`` for an outer factor of a
    factorised dim (attention heads, conv groups: counted in whole units) or ``"channels"``."""
    key: str
    kind: str
    size: int
    members: list[tuple[str, int]]  # (canonical tensor name, dim)
    choices: list[int]
    atom: int = field(repr=False)
    reasons: list[str] = field(default_factory=list)  # why it is fixed (empty when prunable)

    @property
    def prunable(self) -> bool:
        return not self.reasons and len(self.choices) > 1

    @property
    def modules(self) -> list[str]:
        return list(dict.fromkeys(t.rpartition(".")[0] for t, _ in self.members))


def find_groups(ir: IR, an: DimAnalysis, *, ratios: tuple[float, ...], multiple_of: int,
                prune_head_dim: bool, include: list[str] | None, exclude: list[str] | None) -> list[WidthGroup]:
    d = an.dims
    params, read = param_tensors(ir), read_tensors(ir)
    blocked = d.blocked()
    members: dict[int, list[tuple[str, int]]] = {}
    names: dict[int, str] = {}
    role: dict[int, str] = {}  # "outer" / "inner" factor of a product
    for tensor, exprs in an.tensors.items():
        for dim, e in enumerate(exprs):
            r = d.resolve(e)
            for k, a in _parts(r):
                members.setdefault(a, []).append((tensor, dim))
                if a not in names:
                    names[a] = f"{tensor}[{dim}]" + (f"#{k}" if k is not None else "")
            _mark_roles(r, role)
    for e in an.batched:  # a dim of its own that contractions keep apart: heads counted in whole units
        r = d.resolve(e)
        if isinstance(r, int):
            role.setdefault(r, "outer")
    groups = []
    seen_keys: set[str] = set()
    for a, mem in members.items():
        size = d.size(a)
        if size[1] or size[0] <= 1 or not any(t in params for t, _ in mem):
            continue
        kind = "heads" if role.get(a) == "outer" else "channels"
        reasons = list(blocked.get(a, []))
        if not any(t in read for t, _ in mem):
            reasons.append("only in tensors that forward never reads (shrinking them changes nothing)")
        key = names[a]
        if kind == "heads" and not reasons:
            key = f"{mem[0][0].rpartition('.')[0] or '<root>'}.heads"
        while key in seen_keys:
            key += "'"
        seen_keys.add(key)
        if role.get(a) == "inner" and not prune_head_dim:
            reasons.append("inner factor of a factorised dim (head_dim, or a grouped conv's / GroupNorm's channels "
                           "per group): prune whole heads or groups instead (SearchSpace(prune_head_dim=True) "
                           "allows it)")
        mods = [t.rpartition(".")[0] for t, _ in mem]
        if include and not any(fnmatch(m, pat) for m in mods for pat in include):
            reasons.append("not matched by include")
        if exclude and any(fnmatch(m, pat) for m in mods for pat in exclude):
            reasons.append("excluded")
        step = 1 if kind == "heads" else multiple_of
        choices = _choices(size[0], ratios, step) if not reasons else [size[0]]
        groups.append(WidthGroup(key, kind, size[0], mem, choices, a, reasons))
    return groups


def _mark_roles(r, role: dict[int, str], innermost: bool = False) -> None:
    """Mark the atoms of every product in ``r``: all factors but the last are outer, the atoms of the last
    (one atom, or the segments of a concatenation such as LeViT's q/k/v split of head_dim) inner. Products
    inside concatenations count too (a fused q/k/v projection chunked into heads × head_dim)."""
    if isinstance(r, int):
        if innermost and role.get(r) != "outer":
            role.setdefault(r, "inner")
    elif isinstance(r, Cat):
        for part in r.parts:
            _mark_roles(part, role, innermost)
    elif isinstance(r, Prod):
        *outer, last = r.factors
        for f in outer:
            if isinstance(f, int):
                role[f] = "outer"
            else:
                _mark_roles(f, role)
        _mark_roles(last, role, True)


def _parts(r) -> list[tuple[int | None, int]]:
    """(part index or None, atom) for the atoms of a resolved dim expression."""
    if isinstance(r, int):
        return [(None, r)]
    items = r.factors if isinstance(r, Prod) else r.parts
    out = []
    for k, x in enumerate(items):
        out.extend((k, a) for _, a in _parts(x))
    return out


def _choices(size: int, ratios: tuple[float, ...], step: int) -> list[int]:
    out = set()
    for r in ratios:
        if not 0 < r <= 1:
            raise ValueError(f"width ratio {r} must be in (0, 1]")
        if r == 1:
            out.add(size)
            continue
        k = max(step, int(round(r * size / step)) * step)
        if k < size:
            out.add(k)
    return sorted(out | {size})


def param_tensors(ir: IR) -> set[str]:
    """Canonical names of the tensors that are parameters (not buffers or constants)."""
    return {ir.aliases.get(p.target, p.target) for g in ir.graphs for p in g.placeholders if p.kind == PARAM}


def read_tensors(ir: IR) -> set[str]:
    """Canonical names of the parameters, buffers and constants that some op of ``forward`` reads."""
    names = set()
    for g in ir.graphs:
        used = {ref for op in g.ops for ref in op.inputs} | set(serial.node_refs(g.outputs))
        names |= {ir.aliases.get(p.target, p.target) for p in g.placeholders if p.target and p.name in used}
    return names


def salience(ir: IR, an: DimAnalysis, groups: list[WidthGroup],
             tensors: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Per group, a score per channel (head): the mean weight magnitude of its slice, summed over every
    coupled parameter (each parameter normalised by its own mean magnitude, so scales do not dominate)."""
    tensors = tensors if tensors is not None else ir.tensors
    d = an.dims
    by_atom = {g.atom: g for g in groups}
    scores = {g.key: torch.zeros(g.size, dtype=torch.float64) for g in groups}
    params = param_tensors(ir)
    with torch.no_grad():
        for name, exprs in an.tensors.items():
            if name not in params:
                continue
            w = tensors[name].detach().abs().double()
            if w.numel() == 0:
                continue
            mean = w.mean().clamp_min(1e-12)
            for dim, e in enumerate(exprs):
                r = d.resolve(e)
                atoms = [a for _, a in _parts(r) if a in by_atom]
                if not atoms:
                    continue
                per_pos = w.transpose(0, dim).reshape(w.shape[dim], -1).mean(1) / mean
                coords = d.coords(r)
                for a in atoms:
                    c = coords[a]
                    ok = c >= 0
                    scores[by_atom[a].key].index_add_(0, c[ok], per_pos[ok])
    return scores


def ranking(scores: torch.Tensor) -> torch.Tensor:
    """Channel indices, most salient first (ties keep the original order)."""
    return torch.sort(-scores, stable=True).indices

