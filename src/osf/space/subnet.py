"""Rewrite an IR into the IR of one subnet: drop removed units (edge contraction), shrink every width
group (slice tensors, rewrite shape arguments such as ``view`` sizes, ``groups`` and ``normalized_shape``,
recompute value shapes), then remove dead code and empty modules. The result builds with ``ir.build()``
into a plain, physically smaller model."""
from __future__ import annotations

import copy
import dataclasses
import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Container, Iterable

import networkx as nx
import torch
from torch.nn import Parameter

from ..ir.capture import annotate_io, module_ancestors
from ..ir.flops import graph_flops
from ..ir.graph import (BUFFER, CONST, INPUT, IR, PARAM, Graph, ModuleNode, OpNode, Placeholder, is_symint,
                        with_unread_marks)
from ..ir.ops import functional_form, has_side_effect, is_inplace
from ..ir.serial import copy_tree, node_refs, shape_text, substitute_refs
from .analysis import FILLED, dim_source, measured_dim
from .dims import Cat, Prod, Size, atoms_in, is_static, new_size, size_text, slice_bounds
from .units import graph_hash

if TYPE_CHECKING:
    from .arch import Arch
    from .space import SearchSpace


def subnet_ir(space: "SearchSpace", arch: "Arch", *, with_tensors: bool = True,
              tensors: dict[str, torch.Tensor] | None = None) -> IR:
    """The IR of ``arch``, keeping ``space.kept_indices(arch)`` of each shrunk group. Without tensors
    (``with_tensors=False``) it carries shapes only (for costs and signatures) and cannot be built;
    ``tensors`` replace the IR's own."""
    sub = subnet_structure(space, arch)
    if with_tensors:
        sub.tensors = subnet_tensors(space, arch, sub, tensors)
    return sub


def subnet_structure(space: "SearchSpace", arch: "Arch") -> IR:
    """The IR of ``arch`` without tensors: graphs, modules, aliases and shapes (what ``build`` compiles)."""
    space.validate(arch)
    ir, an = space.ir, space.analysis
    kept = {g.atom: arch.width[g.key] for g in space.groups if g.key in arch.width and arch.width[g.key] != g.size}
    dropped = space.dropped_units(arch)
    graphs = {"train": ir.graph}
    if ir.eval_graph is not None:
        graphs["eval"] = ir.eval_graph
    hints = an.hints
    new_graphs = {}
    for key, graph in graphs.items():
        located = space.located_units(key)
        units = [located[k] for k in dropped if k in located]
        new_graphs[key] = _rewrite(graph, an.values[key], an.dims, kept, units, hints)
    used = {ref for g in new_graphs.values() for op in g.ops for ref in op.inputs}
    used |= {ref for g in new_graphs.values() for ref in node_refs(g.outputs)}
    for g in new_graphs.values():
        g.placeholders = [p for p in g.placeholders if p.kind == INPUT or p.name in used]
    kept_tensors = kept_tensor_names(ir.aliases, new_graphs.values())
    shapes = {name: [new_size(an.dims, an.dims.resolve(e), kept)[0] for e in an.tensors[name]]
              for name in kept_tensors}
    alive = kept_modules(ir, (op.owner for g in new_graphs.values() for op in g.ops if not is_symint(op)), kept_tensors,
                         ran_modules(ir))
    modules = _pruned_module_nodes(ir, alive, kept_tensors, shapes)
    module_aliases, aliases, persistent = kept_aliases(ir, modules, kept_tensors)
    _retarget_to_kept_paths(new_graphs.values(), ir.aliases, aliases)
    info = copy_tree(ir.info)
    info["persistent"] = persistent
    info["module_aliases"] = module_aliases
    info["subnet"] = arch.to_json()
    out = IR(new_graphs["train"], modules, {}, aliases, info, new_graphs.get("eval"))
    annotate_io(out)
    return out


def subnet_tensors(space: "SearchSpace", arch: "Arch", structure: IR,
                   tensors: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Own copies of the tensors ``structure`` (``subnet_structure(space, arch)``) reads, cut to ``arch``
    from ``tensors`` (default: the space's IR's)."""
    return cut_tensors(cut_plan(space, arch, kept_tensor_names(space.ir.aliases, structure.graphs)),
                       tensors if tensors is not None else space.ir.tensors)


@dataclass(frozen=True)
class TensorCut:
    """How one tensor is cut: ``sizes``, its shape after the prefix cuts (None: no prefix cut), then
    ``selects``, ``(dim, indices, runs)`` per cut that is not a prefix. ``runs`` lists the indices as a few
    ``(start, length)`` ranges where concatenating them beats ``index_select`` (any dim but the first,
    where index_select copies strided rows element by element); None otherwise."""
    sizes: tuple[int, ...] | None
    selects: tuple[tuple[int, torch.Tensor, tuple[tuple[int, int], ...] | None], ...]
    narrow: tuple[int, int] | None = None  # ``(dim, length)``: a small tensor's only cut, one prefix (one op)


_MAX_RUNS = 16  # above this many ranges, one index_select is as fast as concatenating them
_MAX_KEPT_RUNS = 256  # above this many, ``Cuts`` gathers kept positions as an index tensor at once
# kept elements up to which one narrow_copy beats a view + clone (one call less); above, its copy is slower
# (CPU, torch 2.14: 2^17 elements 13 vs 11 us, 768x384 of 768x768 131 vs 31 us)
_NARROW_COPY_MAX = 1 << 15


def _runs(dim: int, index: "torch.Tensor | RunIndex") -> tuple[tuple[int, int], ...] | None:
    return None if dim == 0 else index_runs(index, _MAX_RUNS)


def index_runs(index: "torch.Tensor | RunIndex", limit: int) -> tuple[tuple[int, int], ...] | None:
    """Ascending ``index`` as ``(start, length)`` ranges of consecutive positions; None beyond ``limit``."""
    if isinstance(index, RunIndex):
        return index.runs if len(index.runs) <= limit else None
    runs: list[list[int]] = []
    for v in index.tolist():
        if runs and runs[-1][0] + runs[-1][1] == v:
            runs[-1][1] += 1
        else:
            if len(runs) == limit:
                return None
            runs.append([v, 1])
    return tuple((a, n) for a, n in runs)


def structure_cost(sub: IR) -> dict[str, int]:
    """``params`` (each tied tensor once) and ``flops`` (of the inference graph) of a subnet's rewritten IR
    (``subnet_structure``): the reference of ``CostModel``, which works them out per op."""
    graph = sub.eval_graph if sub.eval_graph is not None else sub.graph
    seen, params = set(), 0
    for p in sub.graph.placeholders:
        canon = sub.aliases.get(p.target, p.target)
        if p.kind == PARAM and canon not in seen:
            seen.add(canon)
            params += math.prod(p.meta["shape"])
    return {"params": params, "flops": sum(graph_flops(graph).values())}


def cut_plan(space: "SearchSpace", arch: "Arch", names: Iterable[str]) -> dict[str, TensorCut]:
    """Canonical name -> ``TensorCut`` of each tensor in ``names`` (those the subnet reads:
    ``kept_tensor_names``)."""
    an = space.analysis
    cuts = Cuts(an.dims, space.kept_counts(arch), prefix=True)
    return {name: tensor_cut(cuts, an.tensors[name], space.ir.tensors[name].shape) for name in names}


def tensor_cut(cuts: "Cuts", exprs: list, full: torch.Size) -> TensorCut:
    """How ``cuts`` cut a tensor with dims ``exprs`` and shape ``full``."""
    slices = cuts.of(exprs)
    sizes = list(full)
    for d, n, index in slices:
        if index is None:
            sizes[d] = n
    prefix = [d for d, n in enumerate(sizes) if n != full[d]]
    selects = tuple((d, index, _runs(d, index)) for d, _, index in slices if index is not None)
    if len(prefix) == 1 and not selects and math.prod(sizes) <= _NARROW_COPY_MAX:
        return TensorCut(None, (), (prefix[0], sizes[prefix[0]]))
    return TensorCut(tuple(sizes) if prefix else None, selects)


def cut_tensors(plan: dict[str, TensorCut], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Own contiguous copies of ``tensors`` cut by ``plan`` (``cut_plan``); parameters stay parameters.
    A small tensor cut on one dim is one ``narrow_copy``; otherwise one view of its prefix cuts (``as_strided``),
    then an index selection or a clone: the only per-tensor work besides the copy itself, as extraction is
    timed against a plain weight copy."""
    out = {}
    with torch.no_grad():
        for name, c in plan.items():
            t = tensors[name]
            v = t if c.sizes is None else t.as_strided(c.sizes, t.stride(), t.storage_offset())
            if c.narrow is not None:
                v = torch.narrow_copy(t, c.narrow[0], 0, c.narrow[1])  # contiguous
            elif c.selects:
                for d, index, runs in c.selects:
                    v = (torch.cat([v.narrow(d, a, n) for a, n in runs], d) if runs is not None
                         else v.index_select(d, index.to(v.device)))
            else:
                v = v.clone(memory_format=torch.contiguous_format)
            kind = type(t)
            is_param = kind is Parameter or (kind is not torch.Tensor and isinstance(t, Parameter))
            # what Parameter(v, requires_grad) does for a plain tensor, without its Python frame
            out[name] = torch.Tensor._make_subclass(Parameter, v, t.requires_grad) if is_param else v
    return out


def kept_tensor_names(aliases: dict[str, str], graphs: Iterable[Graph]) -> set[str]:
    """Canonical names of the tensors that ``graphs`` (a subnet's) read."""
    return {aliases.get(p.target, p.target) for g in graphs for p in g.placeholders
            if p.kind in (PARAM, BUFFER, CONST)}


class RunIndex:
    """Kept positions as ``(start, length)`` runs (what ``Cuts(prefix=True)`` gives instead of an index
    tensor, for ``tensor_cut``): the tensor is made only where a gather needs it (``to``)."""

    __slots__ = ("runs", "_n", "_index")

    def __init__(self, runs: tuple[tuple[int, int], ...]) -> None:
        self.runs, self._n, self._index = runs, sum(n for _, n in runs), None

    def __len__(self) -> int:
        return self._n

    def to(self, device: torch.device) -> torch.Tensor:
        if self._index is None:
            starts, lengths = torch.tensor(self.runs).unbind(1)
            shifts = starts - (torch.cumsum(lengths, 0) - lengths)  # each run's start minus its new start
            self._index = torch.arange(self._n) + torch.repeat_interleave(shifts, lengths, output_size=self._n)
        return self._index.to(device)


class Cuts:
    """How tensors are cut down when each atom in ``select`` keeps the listed indices. ``of(exprs)``
    gives ``(dim, kept length, indices)`` per changed dim of a tensor with dims ``exprs``, with
    ``indices`` None when the kept positions are a prefix (a ``narrow``, so a view). Each distinct dim
    expression is analysed once per instance (a model reuses few). ``prefix=True`` promises that every
    selection is a prefix (``space.kept_indices``): kept positions are then worked out as runs of
    consecutive positions, without an index tensor per atom (a DenseNet concatenation has dozens), and
    given as ``RunIndex`` (for ``tensor_cut``) instead of index tensors; ``select`` may then give each
    atom's kept count instead of its indices. ``facts``: a ``Cuts.facts()`` memo of what each dim
    expression resolves to, shared by instances over the same ``dims``."""

    def __init__(self, dims, select: dict[int, torch.Tensor | int], *, prefix: bool = False,
                 facts: tuple[dict, dict] | None = None) -> None:
        self.dims, self.select = dims, select
        self._memo: dict[Any, tuple[int, torch.Tensor | None] | None] = {}
        self._counts = {a: v if isinstance(v, int) else len(v) for a, v in select.items()} if prefix else None
        self._sizes, self._known = facts if facts is not None else self.facts()

    @staticmethod
    def facts() -> tuple[dict[Any, int], dict[Any, tuple[Any, Size, frozenset]]]:
        """An empty memo of dim facts (sizes, resolutions) to share between ``Cuts`` over one ``dims``."""
        return {}, {}

    def of(self, exprs: list) -> list[tuple[int, int, torch.Tensor | None]]:
        out = []
        for d, e in enumerate(exprs):
            if e not in self._memo:
                self._memo[e] = self._dim_cut(e)
            cut_ = self._memo[e]
            if cut_ is not None:
                out.append((d, *cut_))
        return out

    def size_of(self, e) -> int:
        """The full length of dim expression ``e``."""
        return self._facts(e)[1][0]

    def _facts(self, e) -> tuple[Any, Size, frozenset]:
        """(resolved ``e``, its size, its atoms)."""
        facts = self._known.get(e)
        if facts is None:
            r = self.dims.resolve(e)
            facts = self._known[e] = (r, self.dims.size(r), frozenset(atoms_in(r)))
        return facts

    def _dim_cut(self, e) -> tuple[int, torch.Tensor | None] | None:
        dims, select = self.dims, self.select
        r, full, atoms = self._facts(e)
        if not is_static(full) or not any(a in select for a in atoms):
            return None
        if self._counts is not None:
            runs = self._kept_runs(r)
            if runs is not None:
                if len(runs) == 1 and runs[0][0] == 0:
                    return None if runs[0][1] == full[0] else (runs[0][1], None)
                index = RunIndex(tuple(runs))
                return len(index), index
        pos = dims.positions(r, {a: torch.arange(v) if isinstance(v, int) else v for a, v in select.items()})
        prefix = torch.equal(pos, torch.arange(len(pos)))
        if prefix and len(pos) == full[0]:
            return None
        return len(pos), None if prefix else pos

    def _size(self, e) -> int:
        if e not in self._sizes:
            self._sizes[e] = self.dims.size(e)[0]
        return self._sizes[e]

    def _kept_runs(self, e) -> list[tuple[int, int]] | None:
        """The positions of (resolved, static) ``e`` kept by prefix selections, in their new order, as
        ``(start, length)`` runs (adjacent ones merged); None past ``_MAX_KEPT_RUNS`` runs."""
        if isinstance(e, int):
            size = self._size(e)
            return [(0, self._counts.get(e, size))]
        if isinstance(e, Prod):  # outer factor first: each kept outer position repeats the inner runs
            runs = [(0, 1)]
            for f in e.factors:
                inner, size = self._kept_runs(f), self._size(f)
                if inner is None:
                    return None
                if inner == [(0, size)]:
                    runs = [(a * size, n * size) for a, n in runs]
                else:
                    runs = [(i * size + b, m) for a, n in runs for i in range(a, a + n) for b, m in inner]
                if len(runs) > _MAX_KEPT_RUNS:
                    return None
        else:
            runs, offset = [], 0
            for part in e.parts:
                inner = self._kept_runs(part)
                if inner is None:
                    return None
                runs += [(offset + a, n) for a, n in inner]
                offset += self._size(part)
        merged: list[tuple[int, int]] = []
        for a, n in runs:
            if not n:
                continue
            if merged and merged[-1][0] + merged[-1][1] == a:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            else:
                merged.append((a, n))
        return merged if len(merged) <= _MAX_KEPT_RUNS else None


def cut(t: torch.Tensor, slices: list[tuple[int, int, torch.Tensor | None]]) -> torch.Tensor:
    """``t`` (detached) cut by ``slices`` (``Cuts.of``): a view when every cut is a prefix; otherwise a
    new contiguous tensor (prefixes are narrowed first, so the index selections copy only what is kept)."""
    out = t.detach()
    for d, n, index in slices:
        if index is None:
            out = out.narrow(d, 0, n)
    for d, n, index in slices:
        if index is not None:
            out = out.index_select(d, index.to(out.device))
    return out


# ------------------------------------------------------------------------------------------------

def _rewrite(graph: Graph, vals: dict, dims, kept: dict[int, int], units: list, hints: dict[str, int]) -> Graph:
    removed: set[str] = set()
    replace: dict[str, str] = {}
    for ops, inp, out, forwards in units:
        removed |= set(ops)
        replace.update(forwards)
        replace[out] = inp
    dead_owners = _dead_owners(graph, removed)

    def sub(ref: str) -> str:
        while ref in replace:
            ref = replace[ref]
        return ref

    ops = []
    sizes = _RuntimeSizes(graph, vals, dims, kept, hints)
    for op in graph.ops:
        if op.name in removed or op.mode_gated and op.owner in dead_owners:
            continue
        new = dataclasses.replace(op, args=substitute_refs(op.args, sub), kwargs=substitute_refs(op.kwargs, sub),
                                  meta=copy_tree(op.meta))
        if new.args[:1] != op.args[:1] and is_inplace(op.target):
            new.target = _out_of_place(op)  # it would now write into a value others still read
        if kept:
            resize_value(new, vals, dims, kept, hints)
            if new.target in _SIZE_LISTS:
                sizes.resolve(new, ops)
        ops.append(new)
    outputs = substitute_refs(graph.outputs, sub)
    placeholders = [Placeholder(p.name, p.kind, p.target, copy_tree(p.meta)) for p in graph.placeholders]
    if kept:
        for p in placeholders:
            if p.name in vals and isinstance(p.meta, dict):
                p.meta = resized_meta(p.meta, vals[p.name], dims, kept, hints)
    return Graph(placeholders, _dce(ops, outputs), outputs)


RUNTIME_SIZE = "size_of"  # marks a symbolic size argument that the rewrite reads from a tensor at run time
# ops whose size list (at that argument) may hold such marks
_SIZE_LISTS = {"aten.expand.default": 1, "aten.broadcast_to.default": 1, **FILLED}


class _RuntimeSizes:
    """Symbolic sizes that change in a subnet (``B × heads`` once heads shrink) cannot be written as numbers:
    they are read at run time, by a new ``sym_size`` op, from a value computed earlier that has that dim."""

    def __init__(self, graph: Graph, vals: dict, dims, kept: dict[int, int], hints: dict[str, int]) -> None:
        self.graph, self.vals, self.dims, self.kept, self.hints = graph, vals, dims, kept, hints
        self.names: set[str] | None = None  # of the graph's values, once a size is read

    def resolve(self, op: OpNode, ops: list[OpNode]) -> None:
        """Replace each run-time size mark in ``op``'s size list by a ``sym_size`` op appended to ``ops``."""
        at = _SIZE_LISTS[op.target]
        if at < len(op.args) and isinstance(op.args[at], list):
            op.args[at] = [self._read(e[RUNTIME_SIZE], op, ops) if isinstance(e, dict) and RUNTIME_SIZE in e
                           else e for e in op.args[at]]

    def _read(self, dim: Any, op: OpNode, ops: list[OpNode]) -> dict:
        source = dim_source(ops, self.vals, self.dims, dim)
        if source is None:
            raise NotImplementedError(f"{op.name} ({op.target} in '{op.owner}'): a symbolic size changes with the "
                                      "subnet and no value computed before it has that dim to read it from")
        if self.names is None:
            self.names = {p.name for p in self.graph.placeholders} | {o.name for o in self.graph.ops}
        name, k = f"{op.name}_size", 0
        while name in self.names:
            k += 1
            name = f"{op.name}_size{k}"
        self.names.add(name)
        new = new_size(self.dims, self.dims.resolve(dim), self.kept)
        ops.append(OpNode(name, "aten.sym_size.int", [{"node": source[0]}, source[1]], {}, op.owner,
                          {"symint": size_text(new), "hint": _eval(new, self.hints)}, scope=op.scope))
        return {"node": name}


def _out_of_place(op: OpNode) -> str:
    functional = functional_form(op.target)
    if functional is None:
        raise NotImplementedError(f"{op.name} ({op.target} in '{op.owner}') writes in place into a value "
                                  "that a removed unit used to produce, and has no out-of-place form")
    return functional


def _dead_owners(graph: Graph, removed: set[str]) -> set[str]:
    """Modules all of whose (non-bookkeeping) ops were removed."""
    alive: set[str] = set()
    had: set[str] = set()
    for op in graph.ops:
        if op.mode_gated or is_symint(op):
            continue
        had.add(op.owner)
        if op.name not in removed:
            alive.add(op.owner)
    return had - alive


def _dce(ops: list[OpNode], outputs: list) -> list[OpNode]:
    """Drop ops whose results nobody uses. Ops with side effects stay (an in-place write may go through
    a view into a live tensor), and marks of module arguments whose value stays; those of removed units
    were dropped before."""
    live = set(node_refs(outputs))
    keep = []
    for op in reversed(ops):
        if op.name in live or has_side_effect(op.target) and not is_symint(op):
            keep.append(op)
            live.update(op.inputs)
    return with_unread_marks(ops, keep)


# ----- width: new shapes and shape arguments -----

def resized_meta(meta: dict, exprs: list, dims, kept: dict[int, int], hints: dict[str, int]) -> dict:
    """A value's metadata with its shape (and symbolic dims) at the widths ``kept`` (atom -> size); the
    cost model reuses it so its tables follow exactly the rewrite ``subnet_ir`` does."""
    meta = dict(meta)
    shape, syms = list(meta["shape"]), list(meta.get("sym") or [None] * len(meta["shape"]))
    for i, e in enumerate(exprs):
        r = dims.resolve(e)
        old, new = dims.size(r), new_size(dims, r, kept)
        if old == new:
            continue
        shape[i] = _eval(new, hints)
        syms[i] = None if is_static(new) else size_text(new)
    meta["shape"] = shape
    if meta.get("sym"):
        meta["sym"] = syms
    return meta


def _eval(s: Size, hints: dict[str, int]) -> int:
    v = s[0]
    for sym in s[1]:
        v *= hints.get(sym, 1)
    return v


def _sizes(exprs: list, dims, kept) -> list[Size]:
    return [new_size(dims, dims.resolve(e), kept) for e in exprs]


def _resized(exprs: list, dims, kept) -> tuple[list[Size], list[Size]]:
    """The sizes of dims ``exprs`` at the widths ``kept``, and as traced."""
    return _sizes(exprs, dims, kept), [dims.size(dims.resolve(e)) for e in exprs]


def _changed(exprs: list, dims, kept) -> bool:
    return any(dims.size(dims.resolve(e)) != new_size(dims, dims.resolve(e), kept) for e in exprs)


def resize_value(op: OpNode, vals: dict, dims, kept: dict[int, int], hints: dict[str, int]) -> None:
    """Rewrite ``op``'s output metadata (a tensor, or a list of them) to the widths ``kept``, in place."""
    out = vals.get(op.name)
    if isinstance(out, list) and isinstance(op.meta, dict):
        op.meta = resized_meta(op.meta, out, dims, kept, hints)
    elif isinstance(out, dict) and isinstance(op.meta, dict) and "list" in op.meta:
        op.meta["list"] = [resized_meta(m, e, dims, kept, hints) if e is not None and isinstance(m, dict) else m
                           for m, e in zip(op.meta["list"], out["list"])]
    fn = _ARG_REWRITES.get(op.target)
    if fn is None:
        return
    ins = [vals.get(a["node"]) if isinstance(a, dict) and "node" in a
           else [measured_dim(vals, e) for e in a] if isinstance(a, list) else None for a in op.args]
    fn(op, ins, out, dims, kept)


def resized_op(op: OpNode, vals: dict, dims, kept: dict[int, int], hints: dict[str, int], *,
               meta: bool = True) -> OpNode:
    """A copy of ``op`` with its arguments (and, with ``meta``, its output metadata; else none) rewritten
    to the widths ``kept`` (atom -> size), as ``subnet_structure`` rewrites it; ``op`` is left alone."""
    new = dataclasses.replace(op, args=copy.deepcopy(op.args), kwargs=copy.deepcopy(op.kwargs),
                              meta=copy.deepcopy(op.meta) if meta else None)
    if kept:
        resize_value(new, vals, dims, kept, hints)
    return new


def _static_or_fail(s: Size, op: OpNode) -> int:
    if not is_static(s):
        raise NotImplementedError(f"cannot rewrite a symbolic size {size_text(s)} in {op.name} ({op.target})")
    return s[0]


def _size_or_runtime(s: Size, e: Any) -> Any:
    """A static new size as a number; a symbolic one as ``{"size_of": dim}``, which ``_rewrite`` turns into
    a ``sym_size`` of a value computed before the op that has that dim (the dim's size at run time)."""
    return s[0] if is_static(s) else {RUNTIME_SIZE: e}


def _rw_view(op, ins, out, dims, kept):
    new_sizes, old_sizes = _resized(out, dims, kept)
    if new_sizes == old_sizes:
        return
    old = op.args[1]
    args, dynamic_changed = [], []
    for i, (a, s, o) in enumerate(zip(old, new_sizes, old_sizes)):
        if is_static(s):
            args.append(s[0])
        elif s == o:
            args.append(a)
        else:
            args.append(-1)
            dynamic_changed.append(i)
    if len(dynamic_changed) > 1:
        raise NotImplementedError(f"{op.name} ({op.target}): more than one symbolic size changes")
    op.args = [op.args[0], args] + op.args[2:]


def _rw_unflatten(op, ins, out, dims, kept):
    d = op.args[1] if op.args[1] >= 0 else op.args[1] + len(ins[0])
    sizes, old = _resized(out[d:d + len(op.args[2])], dims, kept)
    if sizes == old:
        return
    op.args = op.args[:2] + [[a if a == -1 or s == o else _static_or_fail(s, op)
                              for a, s, o in zip(op.args[2], sizes, old)]]


def _rw_size_list(at: int):
    """The size list at argument ``at`` (``expand``, tensors of one value) takes the new sizes of the dims
    that shrank (``expand``'s -1, keep the input's size, stays; so does a size read from the very dim it
    sizes, which shrinks with it)."""
    def fn(op, ins, out, dims, kept):
        new_sizes, old_sizes = _resized(out, dims, kept)
        if new_sizes == old_sizes:
            return
        sizes = [a if s == o or a == -1 or m is not None and dims.resolve(m) == dims.resolve(e)
                 else _size_or_runtime(s, e)
                 for a, s, o, m, e in zip(op.args[at], new_sizes, old_sizes, ins[at], out)]
        op.args = op.args[:at] + [sizes] + op.args[at + 1:]
    return fn


def _rw_repeat(op, ins, out, dims, kept):
    """A count that copies a size-1 dim follows the copies' new size (``repeat``; ``tile`` pads its counts
    with leading ones)."""
    if not _changed(out, dims, kept):
        return
    reps = list(op.args[1])
    lead = len(out) - len(reps)
    first_in = len(out) - len(ins[0])  # output position of the input's dim 0
    for i, e in enumerate(out[lead:]):
        j = lead + i - first_in
        if j >= 0 and dims.size(dims.resolve(ins[0][j])) != (1, ()):
            continue  # whole copies of a dim that shrinks: the count stays
        r = dims.resolve(e)
        size = new_size(dims, r, kept)
        if reps[i] != 1 and size != dims.size(r):  # copies of a size-1 dim shrink with their count
            reps[i] = _static_or_fail(size, op)
    op.args = [op.args[0], reps] + op.args[2:]


def _rw_norm_shape(op, ins, out, dims, kept):
    k = len(op.args[1])
    op.args = [op.args[0], [_static_or_fail(s, op) for s in _sizes(ins[0][-k:], dims, kept)]] + op.args[2:]


def _leading_count(op: OpNode, channels, traced: int, dims, kept) -> int:
    """The new size of the leading factors of ``channels`` whose traced sizes multiply to ``traced``: a group
    count that the analysis factored out of a channel dim as its outer factor (conv groups, norm groups).
    Unification may have split that factor further (a depthwise conv's groups feeding a grouped one)."""
    r = dims.resolve(channels)
    if not _changed([r], dims, kept):
        return traced
    traced_size = new = 1
    for factor in (r.factors if isinstance(r, Prod) else (r,)):
        if traced_size == traced:
            break
        traced_size *= _static_or_fail(dims.size(factor), op)
        new *= _static_or_fail(new_size(dims, factor, kept), op)
    if traced_size != traced:
        raise NotImplementedError(f"{op.name}: channels {size_text(dims.size(r))} do not factor as {traced} groups")
    return new


def _rw_groups(index: int):
    def fn(op, ins, out, dims, kept):
        groups = op.args[index] if len(op.args) > index else op.kwargs.get("groups", 1)
        if groups == 1:
            return
        nspatial = len(ins[1]) - 2
        new = _leading_count(op, ins[0][-(nspatial + 1)], groups, dims, kept)  # in channels = groups × per group
        if len(op.args) > index:
            op.args[index] = new
        else:
            op.kwargs["groups"] = new
    return fn


def _rw_group_count(op, ins, out, dims, kept):
    """``groups`` (GroupNorm, channel shuffle) counts the kept groups (the analysis factored the channels as
    groups × per group)."""
    if op.args[1] != 1:
        op.args = [op.args[0], _leading_count(op, ins[0][1], op.args[1], dims, kept)] + op.args[2:]


SPLIT_OPS = ("aten.split.Tensor", "aten.split.sizes", "aten.chunk.default", "aten.tensor_split.sections",
             "aten.tensor_split.indices", "aten.split_with_sizes.default")  # rewritten as split_with_sizes


def _rw_split(op, ins, out, dims, kept):
    """Pieces whose length changes give new static sizes; a split none of whose pieces change (one along
    a dim no group shrinks, such as a symbolic batch) is left as traced."""
    pieces, old = _resized([e[arg_dim(op, ins[0])] for e in out["list"]], dims, kept)
    if pieces != old:
        as_split_with_sizes(op, [_static_or_fail(s, op) for s in pieces])


def as_split_with_sizes(op: OpNode, pieces: list[int]) -> None:
    """Rewrite a split-like op (``SPLIT_OPS``) in place as ``split_with_sizes(x, pieces, dim)``."""
    d = op.args[2] if len(op.args) > 2 else op.kwargs.get("dim", 0)
    op.target = "aten.split_with_sizes.default"
    op.args = [op.args[0], pieces, d]
    op.kwargs = {}


def split_pieces(op: OpNode, ins: list, out: dict, dims) -> list[int]:
    """The traced sizes of the pieces of split-like ``op`` (``ins``/``out``: its dim expressions)."""
    return [_static_or_fail(dims.size(dims.resolve(e[arg_dim(op, ins[0])])), op) for e in out["list"]]


def arg_dim(op: OpNode, x: list) -> int:
    """``op``'s ``dim`` argument (third, or by keyword: splits, ``repeat_interleave``) as an index into
    ``x``, its input's dim expressions."""
    d = op.args[2] if len(op.args) > 2 else op.kwargs.get("dim", 0)
    return d + len(x) if d < 0 else d


def _rw_slice(op, ins, out, dims, kept):
    """A full-range slice along a shrunk dim stays full-range; a slice that takes a segment of it
    (``analysis._slice``) takes the segment's new position."""
    x = ins[0]
    d = op.args[1] if len(op.args) > 1 else op.kwargs.get("dim", 0)
    d = d + len(x) if d < 0 else d
    if not _changed([x[d]], dims, kept):
        return
    whole, part = dims.resolve(x[d]), dims.resolve(out[d])
    if whole == part:
        op.args = [op.args[0], d, 0, sys.maxsize] + op.args[4:]
        return
    if not isinstance(whole, Cat):
        raise NotImplementedError(f"{op.name} ({op.target}): a slice of a shrunk dim that is no concatenation")
    start, _ = slice_bounds(op, _static_or_fail(dims.size(whole), op))
    new_start = 0
    for segment in whole.parts:  # the segments before the slice's (its start is a segment boundary)
        if start == 0:
            break
        start -= _static_or_fail(dims.size(segment), op)
        new_start += _static_or_fail(new_size(dims, segment, kept), op)
    length = _static_or_fail(new_size(dims, part, kept), op)
    if op.target == "aten.narrow.default":
        op.args, op.kwargs = [op.args[0], d, new_start, length], {}
    else:
        op.args, op.kwargs = [op.args[0], d, new_start, new_start + length] + op.args[4:], {}


def _rw_repeat_interleave(op, ins, out, dims, kept):
    """``repeats`` follows the copies' new number, ``output_size`` (when given) the shrunk dim."""
    d = arg_dim(op, ins[0])
    if not _changed([out[d]], dims, kept):
        return
    total, base = new_size(dims, dims.resolve(out[d]), kept), new_size(dims, dims.resolve(ins[0][d]), kept)
    if total[1] != base[1] or not base[0] or total[0] % base[0]:
        raise NotImplementedError(f"cannot rewrite the repeats of {op.name} ({op.target}) from "
                                  f"{size_text(base)} to {size_text(total)}")
    if "repeats" in op.kwargs:
        op.kwargs["repeats"] = total[0] // base[0]
    else:
        op.args = op.args[:1] + [total[0] // base[0]] + op.args[2:]
    if "output_size" in op.kwargs or len(op.args) > 3:
        size = _static_or_fail(total, op)
        if "output_size" in op.kwargs:
            op.kwargs["output_size"] = size
        else:
            op.args = op.args[:3] + [size] + op.args[4:]


_ARG_REWRITES = {
    "aten.view.default": _rw_view, "aten.reshape.default": _rw_view, "aten._unsafe_view.default": _rw_view,
    "aten.view_copy.default": _rw_view,
    "aten.unflatten.int": _rw_unflatten,
    "aten.repeat.default": _rw_repeat, "aten.tile.default": _rw_repeat,
    **{target: _rw_size_list(at) for target, at in _SIZE_LISTS.items()},
    "aten.layer_norm.default": _rw_norm_shape, "aten.rms_norm.default": _rw_norm_shape,
    "aten.conv1d.default": _rw_groups(6), "aten.conv2d.default": _rw_groups(6), "aten.conv3d.default": _rw_groups(6),
    "aten.conv1d.padding": _rw_groups(6), "aten.conv2d.padding": _rw_groups(6),
    "aten.conv3d.padding": _rw_groups(6),
    "aten.conv_transpose1d.default": _rw_groups(6), "aten.conv_transpose2d.input": _rw_groups(6),
    "aten.conv_transpose3d.input": _rw_groups(6), "aten.convolution.default": _rw_groups(8),
    **dict.fromkeys(SPLIT_OPS, _rw_split),
    "aten.repeat_interleave.self_int": _rw_repeat_interleave,
    "aten.group_norm.default": _rw_group_count,
    "aten.channel_shuffle.default": _rw_group_count, "aten.native_channel_shuffle.default": _rw_group_count,
    "aten.slice.Tensor": _rw_slice, "aten.narrow.default": _rw_slice,
}


# ----- modules -----

def _module_path_kept(path: str, modules: Container[str], module_aliases: dict[str, list]) -> bool:
    """Whether module ``path`` exists in the subnet, directly or as (a child of) a kept module alias."""
    if path in modules:
        return True
    for alias, (canon, _) in module_aliases.items():
        if path == alias or path.startswith(alias + "."):
            return canon + path[len(alias):] in modules
    return False


def _retarget_to_kept_paths(graphs, all_aliases: dict[str, str], kept_aliases: dict[str, str]) -> None:
    """Point each weight placeholder at a path the subnet still has: a tied tensor whose traced path lies in
    a removed module is read through one of its other names."""
    for g in graphs:
        for p in g.placeholders:
            if p.kind in (PARAM, BUFFER) and p.target not in kept_aliases:
                canon = all_aliases.get(p.target, p.target)
                p.target = next((q for q, c in kept_aliases.items() if c == canon), p.target)


def ran_modules(ir: IR) -> set[str]:
    """Modules that run ops in ``ir`` (and their ancestors); the others only hold tensors (a tied embedding)."""
    ran = {""}
    for g in ir.graphs:
        for op in g.ops:
            ran.update(module_ancestors(op.owner))
    return ran


def kept_modules(ir: IR, owners: Iterable[str], kept_tensors: set[str], ran: set[str]) -> set[str]:
    """The modules a subnet keeps: those that run its ops (``owners``, of the ops that are no size arithmetic:
    where a size is read differs between a subnet's own rewrite and the supernet's templates) and their
    ancestors, and the holders of its tensors (``kept_tensors``) unless the tensor is tied to a kept module
    that ran ops in ``ir``."""
    alive = {""}  # closed under ancestors: a module in it has its ancestors in it
    for owner in owners:
        if owner not in alive:
            alive.update(module_ancestors(owner))
    for q, c in ir.aliases.items():
        if c in kept_tensors:
            mod = q.rpartition(".")[0]
            if mod not in alive and (mod not in ran or not any(
                    ir.aliases.get(q2) == c and q2.rpartition(".")[0] in alive for q2 in ir.aliases)):
                alive.update(module_ancestors(mod))
    return alive


def kept_aliases(ir: IR, modules: Container[str], kept_tensors: set[str]) -> tuple[dict, dict, list[str]]:
    """(module aliases, tensor aliases, persistent buffers) of ``ir`` that a subnet keeping ``modules`` and
    ``kept_tensors`` still has."""
    module_aliases = {a: v for a, v in ir.info.get("module_aliases", {}).items()
                      if v[0] in modules and a.rpartition(".")[0] in modules}
    aliases = {q: c for q, c in ir.aliases.items()
               if c in kept_tensors and _module_path_kept(q.rpartition(".")[0], modules, module_aliases)}
    return module_aliases, aliases, [q for q in ir.info.get("persistent", []) if q in aliases]


def _pruned_module_nodes(ir: IR, alive: set[str], kept_tensors: set[str],
                         shapes: dict[str, list[int]]) -> dict[str, ModuleNode]:
    modules: dict[str, ModuleNode] = {}
    for name, node in ir.modules.items():
        if name not in alive:
            continue
        meta = copy_tree(node.meta)
        prefix = f"{name}." if name else ""
        changed = _update_entries(meta["params"], lambda local, m: m["tensor"], kept_tensors, shapes)
        changed |= _update_entries(meta["buffers"], lambda local, m: ir.aliases.get(prefix + local),
                                   kept_tensors, shapes)
        if changed:
            meta["init"] = {"status": "unrecovered", "reason": "shapes changed by subnet extraction"}
        modules[name] = ModuleNode(name, meta, [c for c in node.children if c in alive])
    seen: set[str] = set()
    for name in sorted(modules, key=lambda n: -n.count(".")):
        node = modules[name]
        own = sum(math.prod(shapes[p["tensor"]]) for p in node.meta["params"].values() if p["tensor"] not in seen)
        seen.update(p["tensor"] for p in node.meta["params"].values())
        node.meta["own_params"] = own
    for name in sorted(modules, key=lambda n: -n.count(".")):
        node = modules[name]
        node.meta["num_params"] = node.meta["own_params"] + sum(modules[c].meta["num_params"] for c in node.children)
    return modules


def _update_entries(entries: dict, canon_of, kept_tensors: set[str], shapes: dict[str, list[int]]) -> bool:
    """Drop removed tensors from a module's params/buffers metadata and update shapes; True if changed."""
    changed = False
    for local, m in list(entries.items()):
        canon = canon_of(local, m)
        if canon not in kept_tensors:
            del entries[local]
            changed = True
        elif m["shape"] != shapes[canon]:
            m["shape"] = shapes[canon]
            changed = True
    return changed


# ----- motifs -----

def topology_hash(ir: IR) -> str:
    """Isomorphism-invariant hash of a (subnet) graph: op types and shapes, weight shapes, arg positions."""
    g = nx.DiGraph()
    produced = ir.graph.producers()
    for op in ir.graph.ops:
        if is_symint(op):
            continue
        g.add_node(op.name, label=f"{op.target}:{shape_text(op.meta)}")
        for pos, ref in enumerate(op.inputs):
            p = produced.get(ref)
            if p is None or is_symint(p):
                continue
            if isinstance(p, Placeholder):
                pname = ref if p.kind == INPUT else f"{op.name}#{pos}"
                g.add_node(pname, label=f"{p.kind}:{shape_text(p.meta)}")
                g.add_edge(pname, op.name, pos=str(pos))
            else:
                g.add_edge(ref, op.name, pos=str(pos))
    for i, ref in enumerate(node_refs(ir.graph.outputs)):
        g.add_node(f"output#{i}", label=f"output{i}")
        if ref in g:
            g.add_edge(ref, f"output#{i}", pos="0")
    return graph_hash(g, iterations=4)
