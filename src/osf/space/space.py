"""``SearchSpace``: width groups and removable units derived from an IR, with sampling, validation,
counting, salience and motifs."""
from __future__ import annotations

import difflib
import math
import numbers
import random
import warnings
from fnmatch import fnmatch
from typing import Iterable

import torch

from ..ir.errors import user_stacklevel
from ..ir.graph import IR
from .analysis import analyse
from .arch import Arch
from .groups import WidthGroup, find_groups, salience
from .reach import output_inputs
from .units import Unit, find_units, locate_in


_DRAWS = 100  # draws of sample() before an arch whose outputs ignore the inputs is repaired instead
_CUTS_KEPT = 4096  # cut_outputs results remembered (per set of contracted units) before starting afresh


def _globs(option: str, value: str | Iterable[str] | None) -> list[str] | None:
    """``include`` / ``exclude`` as a list of globs: one string is one glob (iterated, its characters were
    globs, and ``*`` among them matched every module)."""
    if value is None:
        return None
    globs = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(g, str) for g in globs):
        raise TypeError(f"SearchSpace {option} must be module-name globs (strings), got {value!r}")
    return globs


def _check_options(width_ratios: tuple, multiple_of: object, depth: object) -> None:
    if not width_ratios:
        raise ValueError("SearchSpace width_ratios is empty; give the fractions of each width to offer, e.g. "
                         "(0.25, 0.5, 0.75, 1.0)")
    if isinstance(multiple_of, bool) or not isinstance(multiple_of, numbers.Integral) or multiple_of < 1:
        raise ValueError(f"SearchSpace multiple_of must be a whole number >= 1 (channel rounding), got {multiple_of!r}")
    if not isinstance(depth, bool):
        raise TypeError(f"SearchSpace depth must be True or False, got {depth!r}")


def _check_globs_match(ir: IR, analysis, *, include: list[str] | None, exclude: list[str] | None,
                       refuse: bool) -> None:
    """Refuse an include / exclude glob that matches no module and no removable unit (a typo there
    silently pruned what the user meant to keep, or nothing at all); with ``refuse=False``, warn."""
    globs = [("include", g) for g in include or ()] + [("exclude", g) for g in exclude or ()]
    unmatched = [(option, g) for option, g in globs if not any(fnmatch(name, g) for name in ir.modules)]
    if unmatched:  # unit keys of residual branches ("blocks.0/residual:body") are no module names
        keys = [u.key for u in find_units(ir, analysis).units]
        unmatched = [(option, g) for option, g in unmatched if not any(fnmatch(k, g) for k in keys)]
    if unmatched:
        option, glob = unmatched[0]
        modules = [n for n in ir.modules if n]
        names = difflib.get_close_matches(glob.strip("*?[]"), modules, n=3, cutoff=0.4) or modules[:3]
        message = (f"SearchSpace {option} glob {glob!r} matches no module and no removable unit; module names "
                   f"such as {', '.join(map(repr, names))} (osf space MODEL lists the groups and units)")
        if refuse:
            raise ValueError(message)
        warnings.warn(message, stacklevel=user_stacklevel())


class SearchSpace:
    """The search space of an IR.

    Options: ``width_ratios`` (fractions of each group's size offered), ``multiple_of`` (channel rounding),
    ``depth`` (removable units on/off), ``include`` / ``exclude`` (module-name globs for groups and
    units), ``prune_head_dim`` (also shrink the inner factor of factorised dims such as head_dim).
    ``unmatched_globs="warn"`` (instead of ``"error"``) accepts a glob that matches nothing, with a warning:
    for spaces saved before such globs were refused, which must be rebuilt as they were."""

    def __init__(self, ir: IR, *, width_ratios: Iterable[float] = (0.25, 0.5, 0.75, 1.0), multiple_of: int = 8,
                 depth: bool = True, include: list[str] | None = None, exclude: list[str] | None = None,
                 prune_head_dim: bool = False, unmatched_globs: str = "error"):
        self.ir = ir
        include, exclude = _globs("include", include), _globs("exclude", exclude)
        _check_options(tuple(width_ratios), multiple_of, depth)
        self.options = {"width_ratios": tuple(width_ratios), "multiple_of": multiple_of, "depth": depth,
                        "include": include, "exclude": exclude, "prune_head_dim": prune_head_dim}
        self.analysis = analyse(ir)
        if unmatched_globs not in ("error", "warn"):
            raise ValueError(f"SearchSpace unmatched_globs must be 'error' or 'warn', got {unmatched_globs!r}")
        _check_globs_match(ir, self.analysis, include=include, exclude=exclude, refuse=unmatched_globs == "error")
        self.all_groups = find_groups(ir, self.analysis, ratios=tuple(width_ratios), multiple_of=multiple_of,
                                      prune_head_dim=prune_head_dim, include=include, exclude=exclude)
        self.groups: list[WidthGroup] = [g for g in self.all_groups if g.prunable]
        report = find_units(ir, self.analysis, include=include, exclude=exclude) if depth else None
        self.units: list[Unit] = report.units if report else []
        self.rejected_units: dict[str, str] = report.rejected if report else {}
        self._group = {g.key: g for g in self.groups}
        self._unit = {u.key: u for u in self.units}
        self._owner = self._group_owners()
        self._configs = {u.key: self._kept_count(u.key, motifs=False) for u in self.units}  # inside, when kept
        self._located: dict[str, dict] = {"train": {u.key: (set(u.dropped), u.read_as, u.output, u.forwards)
                                                    for u in self.units}}
        self._min: Arch | None = None
        self._reach: list[frozenset[str]] | None = None  # per output, the inputs it depends on (full model)
        self._cuts: dict[frozenset[str], list[int]] = {}  # cut_outputs per set of contracted units

    def located_units(self, graph_key: str) -> dict[str, tuple[set, str, str, dict[str, str]]]:
        """Units as (ops, input, output, forwards) in the training graph or in the eval graph: contracted,
        readers of ``output`` read ``input`` (by the name the unit's ops read it: ``Unit.read_as``), and
        those of each mark among its ops the value it marked."""
        if graph_key not in self._located:
            self._located[graph_key] = locate_in(self.ir, self.analysis, graph_key, self.units)
        return self._located[graph_key]

    # ----- points -----
    def max(self) -> Arch:
        return Arch({g.key: g.size for g in self.groups}, {u.key: True for u in self.units})

    def min(self) -> Arch:
        """The smallest subnet: every group at its smallest width, every unit dropped, except the few
        units that must stay for each output to still depend on the model's inputs (``cut_outputs``)."""
        if self._min is None:
            self._min = self._reconnect(Arch({g.key: g.choices[0] for g in self.groups},
                                             {u.key: False for u in self.units}))
        return Arch(dict(self._min.width), dict(self._min.depth))

    def _reconnect(self, arch: Arch) -> Arch:
        """Keep units of ``arch`` back, smallest first, until no output is cut off from the inputs: a unit
        that alone fixes it wins; else the smallest unit holding other units is kept and its inside searched
        (a ViT: its encoder, then one block)."""
        while self.cut_outputs(arch):
            candidates = sorted(self.dropped_units(arch), key=lambda k: len(self._unit[k].ops))
            for key in candidates:
                trial = Arch(arch.width, {**arch.depth, key: True})
                if not self.cut_outputs(trial):
                    return trial
            parents = [k for k in candidates if any(u.parent == k for u in self.units)]
            if not parents:
                return arch  # no unit reconnects them: the cut comes from the model itself
            arch = Arch(arch.width, {**arch.depth, parents[0]: True})
        return arch

    def cut_outputs(self, arch: Arch) -> list[int]:
        """Positions of the outputs that depend on a model input in the full model but on none in
        ``arch``'s subnet: the graph stays connected, yet such an output ignores the inputs (a ViT without
        blocks classifies its class token alone). See ``osf.space.reach``."""
        self.validate(arch)
        dropped = frozenset(self.dropped_units(arch))
        cut = self._cuts.get(dropped)
        if cut is None:
            if self._reach is None:
                self._reach = output_inputs(self.ir.graph)
            located = self.located_units("train")
            skipped = {op for key in dropped for op in located[key][0]}
            contracted = {}
            for key in dropped:
                contracted.update(located[key][3])
                contracted[located[key][2]] = located[key][1]
            sub = output_inputs(self.ir.graph, skipped, contracted)
            cut = [i for i, (f, s) in enumerate(zip(self._reach, sub)) if f and not s]
            if len(self._cuts) >= _CUTS_KEPT:
                self._cuts.clear()
            self._cuts[dropped] = cut
        return list(cut)

    def sample(self, seed: int | random.Random | torch.Generator | None = None, *,
               widths: dict[str, list[int]] | None = None, depth: bool = True) -> Arch:
        """A uniformly random subnet: every distinct subnet counted by ``size()`` is equally likely, except
        those with an output that ignores the inputs (``cut_outputs``), which are drawn again (after
        ``_DRAWS`` such draws in a row, the last one keeps units back as ``min()`` does). (Flipping a coin per
        unit would drop a unit holding all blocks half of the time.) Inside a dropped unit, widths and units
        are normalised to the maximum. ``widths`` narrows some groups' choices (by group
        key; units are still weighted by the full space's counts, so such a draw is only roughly uniform);
        ``depth=False`` keeps every unit."""
        widths = widths or {}
        self._check_widths(widths)
        if isinstance(seed, torch.Generator):
            seed = int(torch.randint(0, 2**62, (1,), generator=seed))
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        arch = self._draw(rng, widths, depth)
        for _ in range(_DRAWS - 1):
            if not self.cut_outputs(arch):
                return arch
            arch = self._draw(rng, widths, depth)
        return self._reconnect(arch)

    def _check_widths(self, widths: dict[str, list[int]]) -> None:
        for key, allowed in widths.items():
            g = self._group.get(key)
            if g is None:
                raise ValueError(f"unknown width group '{key}'; groups: {_few(self._group)}")
            bad = [w for w in allowed if w not in g.choices]
            if bad or not allowed:
                raise ValueError(f"widths['{key}'] is {list(allowed)}; give a non-empty subset of {g.choices}")

    def _draw(self, rng: random.Random, widths: dict[str, list[int]], depth: bool) -> Arch:
        """One subnet drawn uniformly from all that ``size()`` counts."""
        configs = self._configs
        arch = self.max()

        def visit(parent: str | None) -> None:  # ``parent`` is kept
            for g in self.groups:
                if self._owner[g.key] == parent:
                    arch.width[g.key] = rng.choice(widths.get(g.key, g.choices))
            for u in self.units:
                if u.parent == parent:
                    n = configs[u.key]
                    arch.depth[u.key] = not depth or rng.random() < n / (n + 1)
                    if arch.depth[u.key]:
                        visit(u.key)
        visit(None)
        return arch

    def validate(self, arch: Arch) -> None:
        """Raise ``ValueError`` naming the offending key and its allowed values (``TypeError`` for what
        is no ``Arch``)."""
        if not isinstance(arch, Arch):
            hint = (": a dict of 'width' and 'depth' read from JSON (arch.json, a saved front) becomes one with "
                    "osf.Arch.from_json(data)") if isinstance(arch, (dict, str)) else ""
            raise TypeError(f"expected an osf.Arch, got {type(arch).__name__}{hint}")
        for k, v in arch.width.items():
            g = self._group.get(k)
            if g is None:
                raise ValueError(f"unknown width group '{k}'; groups: {_few(self._group)}")
            if v not in g.choices:
                raise ValueError(f"width of group '{k}' is {v}; allowed values: {g.choices}")
        for k, v in arch.depth.items():
            if k not in self._unit:
                raise ValueError(f"unknown depth unit '{k}'; units: {_few(self._unit)}")
            if not isinstance(v, bool):
                raise ValueError(f"depth of unit '{k}' must be True (keep) or False (drop), got {v!r}")

    def dropped_units(self, arch: Arch) -> list[str]:
        """Units dropped by ``arch`` whose ancestors are all kept (the ones that are contracted)."""
        out = []
        for u in self.units:
            if not arch.depth.get(u.key, True) and not self._inside_dropped(u, arch):
                out.append(u.key)
        return out

    def irrelevant(self, arch: Arch) -> tuple[set[str], set[str]]:
        """The groups and units whose choice cannot change ``arch``'s subnet: those inside a dropped unit
        (a group belongs to the innermost unit holding all its parameters)."""
        dropped = set(self.dropped_units(arch))
        gone = {u.key for u in self.units if u.key in dropped or self._inside_dropped(u, arch)}
        return {g for g, owner in self._owner.items() if owner in gone}, gone - dropped

    def _inside_dropped(self, u: Unit, arch: Arch) -> bool:
        p = u.parent
        while p is not None:
            if not arch.depth.get(p, True):
                return True
            p = self._unit[p].parent
        return False

    # ----- counting -----
    def _group_owners(self) -> dict[str, str | None]:
        """Innermost unit holding every parameter of a group (None = the model itself): when that unit is
        dropped the group's choice no longer matters. (Members may sit in different sub-units, e.g. an
        expansion width read by a block's convolutions and by its squeeze-excitation unit.)"""
        params = {u.key: set(u.params) for u in self.units}
        owners: dict[str, str | None] = {}
        marks = {op.name for op in self.ir.graph.ops if op.is_mark}  # sizes as in the graph without them
        for g in self.groups:
            holders = [u for u in self.units if all(t in params[u.key] for t, _ in g.members)]
            owners[g.key] = min(holders, key=lambda u: len(u.ops - marks)).key if holders else None
        return owners

    def _kept_count(self, unit: str | None, motifs: bool) -> int:
        """Distinct configurations of ``unit``'s inside (or the whole model for None), unit kept."""
        n = 1
        for g in self.groups:
            if self._owner[g.key] == unit:
                n *= len(g.choices)
        children = [u for u in self.units if u.parent == unit]
        if not motifs:
            for c in children:
                n *= 1 + self._kept_count(c.key, motifs)
            return n
        classes: dict[str, list[Unit]] = {}
        for c in children:
            classes.setdefault(c.signature, []).append(c)
        for members in classes.values():
            m = self._kept_count(members[0].key, motifs)
            n *= sum(m ** k for k in range(len(members) + 1))
        return n

    def size(self) -> int:
        """Number of distinct subnets (exact; choices inside a dropped unit are not counted twice)."""
        return self._kept_count(None, motifs=False)

    def log10_size(self) -> float:
        return math.log10(self.size())

    def num_motifs(self) -> int:
        """Number of motifs: sibling units with the same signature are interchangeable, so only the
        sequence of kept members matters (12 isomorphic blocks, depth only: 4096 subsets -> 13 motifs)."""
        return self._kept_count(None, motifs=True)

    # ----- salience and motifs -----
    def salience(self, tensors: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Per width group, a score per channel (or head): aggregated weight magnitude."""
        return salience(self.ir, self.analysis, self.groups, tensors)

    def kept_indices(self, arch: Arch) -> dict[int, torch.Tensor]:
        """Atom -> channels kept by ``arch`` for the shrunk groups: a prefix of each group's channel order
        (``Supernet.sort_by_salience`` puts the most salient channels first)."""
        return {a: torch.arange(n) for a, n in self.kept_counts(arch).items()}

    def kept_counts(self, arch: Arch) -> dict[int, int]:
        """Atom -> number of channels ``arch`` keeps (a prefix: ``kept_indices``), for the shrunk groups."""
        return {g.atom: arch.width[g.key] for g in self.groups if arch.width.get(g.key, g.size) != g.size}

    def unit_salience(self, tensors: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        tensors = tensors if tensors is not None else self.ir.tensors
        return {u.key: float(sum(tensors[t].detach().abs().sum() for t in u.params)) for u in self.units}

    def signature(self, arch: Arch) -> str:
        """Canonical topology hash of the subnet (its motif)."""
        from .subnet import subnet_ir, topology_hash
        return topology_hash(subnet_ir(self, arch, with_tensors=False))

    def salient(self, arch: Arch, tensors: dict[str, torch.Tensor] | None = None) -> Arch:
        """The most salient member of ``arch``'s motif: among interchangeable sibling units, the kept
        ones become the most salient ones (keeping their order and their inner choices)."""
        self.validate(arch)
        sal = self.unit_salience(tensors)
        out = Arch(dict(arch.width), dict(arch.depth))
        for parent in [None] + [u.key for u in self.units]:
            classes: dict[str, list[Unit]] = {}
            for c in self.units:
                if c.parent == parent:
                    classes.setdefault(c.signature, []).append(c)
            for members in classes.values():
                if len(members) < 2:
                    continue
                kept = [m for m in members if out.depth.get(m.key, True)]
                configs = [self._config(m, out) for m in kept]
                best = sorted(sorted(members, key=lambda m: -sal[m.key])[:len(kept)], key=lambda m: m.order)
                for m in members:
                    self._set_config(m, out, None)
                for m, conf in zip(best, configs):
                    self._set_config(m, out, conf)
        return out

    def _inside(self, m: Unit) -> tuple[list[str], list[str]]:
        """Groups owned by ``m`` and units nested in it, in graph order (positions match across
        isomorphic siblings)."""
        units = [u for u in self.units if u.ops < m.ops]
        groups = [g.key for g in self.groups if self._owner[g.key] is not None
                  and self._owner[g.key] in {m.key, *(u.key for u in units)}]
        return groups, [u.key for u in sorted(units, key=lambda u: u.order)]

    def _config(self, m: Unit, arch: Arch) -> tuple[list[int], list[bool]]:
        groups, units = self._inside(m)
        return ([arch.width.get(g, self._group[g].size) for g in groups], [arch.depth.get(u, True) for u in units])

    def _set_config(self, m: Unit, arch: Arch, conf) -> None:
        groups, units = self._inside(m)
        if conf is None:  # dropped: its inside is irrelevant; normalise to the maximum
            arch.depth[m.key] = False
            for g in groups:
                arch.width[g] = self._group[g].size
            for u in units:
                arch.depth[u] = True
            return
        widths, depths = conf
        arch.depth[m.key] = True
        for g, w in zip(groups, widths):
            arch.width[g] = w if w in self._group[g].choices else self._group[g].size
        for u, keep in zip(units, depths):
            arch.depth[u] = keep

    # ----- reporting -----
    def summary(self) -> str:
        """One line: the model's class, how many width groups and removable units, subnets and motifs."""
        return (f"search space of {self.ir.modules[''].class_path}: {len(self.groups)} width groups, "
                f"{len(self.units)} removable units, 10^{self.log10_size():.1f} subnets, "
                f"10^{math.log10(self.num_motifs()):.1f} motifs")

    def describe(self) -> str:
        """A readable table of the width groups and removable units (and what was blocked, and why)."""
        lines = [self.summary(), "", "width groups:"]
        w = max([len(g.key) for g in self.groups] + [10])
        for g in self.groups:
            lines.append(f"  {g.key:<{w}}  {g.kind:<8} {g.size:>6}  choices {g.choices}  "
                         f"({len(g.members)} tensor dims)")
        lines += ["", "removable units:"]
        for u in self.units:
            depth = 0
            p = u.parent
            while p is not None:
                depth += 1
                p = self._unit[p].parent
            lines.append(f"  {'  ' * depth}{u.key}  [{u.kind}, {len(u.ops)} ops]")
        fixed = [g for g in self.all_groups if not g.prunable and g.reasons]
        if fixed:
            lines += ["", "fixed dims (kept at full size):"]
            for g in fixed:
                lines.append(f"  {g.key}  ({g.size}): {g.reasons[0]}")
        if self.analysis.unsupported:
            lines += ["", "ops without a dimension rule (their dims are fixed):"]
            for u in self.analysis.unsupported:
                lines.append(f"  {u.op}  {u.target}  in '{u.owner or '<root>'}': {u.reason}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"SearchSpace({len(self.groups)} groups, {len(self.units)} units, "
                f"10^{self.log10_size():.1f} subnets)")


def _few(d: dict) -> str:
    keys = list(d)
    return ", ".join(keys[:8]) + (f", … ({len(keys)} in all)" if len(keys) > 8 else "")
