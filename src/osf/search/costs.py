"""``CostModel``: exact params and FLOPs of any arch in microseconds, without building a subnet IR.

``Supernet.cost(arch)`` (the reference) rewrites the whole IR for every arch. Here the rewrite is split
into what depends on depth and what depends on width, both precomputed once:

- **Depth** decides which ops survive: the ops of contracted units go, their output is replaced by their
  input, and dead code is removed — the same three steps as ``space.subnet._rewrite``, run as one reverse
  pass over precompiled op indices (no copies, no shapes).
- **Width** decides shapes: a parameter's size and an op's FLOPs depend only on the widths of the groups
  whose atoms appear in its dims (and its inputs' dims). Units are dimension-compatible (a contracted
  unit's input has the dims of its output), so dropping a unit never changes another op's shapes. Each
  parameter and each FLOP-counting op gets a table keyed by those few widths, filled on first use with
  the reference's own shape rewrite (``resized_meta`` / ``resize_value``) and ``osf.ir.flops.op_flops``.
"""
from __future__ import annotations

import copy
import math
from typing import Union

from ..ir.flops import RULES as FLOP_RULES
from ..ir.flops import op_flops
from ..ir.graph import PARAM, Graph, OpNode, is_symint
from ..ir.ops import has_side_effect, is_inplace
from ..ir.serial import node_refs, resolve_target
from ..space.arch import Arch
from ..space.dims import atoms_in
from ..space.space import SearchSpace
from ..space.subnet import size_hints, resized_meta, resize_value
from ..supernet.supernet import Supernet

_FLOP_TARGETS = set(FLOP_RULES) | {"aten.einsum.default", "aten.convolution.default"}


class CostModel:
    """``cost(arch) -> {"params": int, "flops": int}``, equal to ``Supernet.cost(arch)``: params exact
    (tied tensors once; tensors of dropped units and unused tensors excluded), FLOPs of the inference
    graph at the traced example shapes (1 multiply-add = 2 FLOPs, as ``torch.utils.flop_counter``)."""

    def __init__(self, supernet: Union[Supernet, SearchSpace]):
        space = supernet.space if isinstance(supernet, Supernet) else supernet
        self.space = space
        ir, an = space.ir, space.analysis
        self._groups = [(g.key, g.size) for g in space.groups]
        group_of = {g.atom: i for i, g in enumerate(space.groups)}
        hints = size_hints(ir.graph)
        self._graphs = {"train": _Liveness(ir.graph, space.located_units("train"))}
        if ir.eval_graph is not None:
            self._graphs["eval"] = _Liveness(ir.eval_graph, space.located_units("eval"))
        for key, graph in self._graphs.items():
            _check_units_keep_dims(space, key, graph.graph)
        flop_key = "eval" if ir.eval_graph is not None else "train"
        flop_graph = self._graphs[flop_key].graph
        vals = an.values[flop_key]
        producers = flop_graph.producers()
        self._flop_ops: list[tuple[int, _Table]] = []
        for i, op in enumerate(flop_graph.ops):
            if op.target not in _FLOP_TARGETS:
                continue
            refs = [op.name] + op.inputs
            groups = _groups_of([vals.get(r) for r in refs], an.dims, group_of)
            self._flop_ops.append((i, _Table(groups, _OpFlops(op, producers, vals, an.dims, hints, space))))
        self._params: list[tuple[str, str, _Table]] = []  # (placeholder, canonical tensor, size table)
        tables: dict[str, _Table] = {}
        train_vals = an.values["train"]
        for p in ir.graph.placeholders:
            if p.kind != PARAM:
                continue
            canon = ir.aliases.get(p.target, p.target)
            if canon not in tables:
                groups = _groups_of([an.tensors[canon]], an.dims, group_of)
                tables[canon] = _Table(groups, _ParamSize(p, train_vals, an.dims, hints, space))
            self._params.append((p.name, canon, tables[canon]))
        self._flop_graph = flop_key

    def __call__(self, arch: Arch) -> dict[str, int]:
        """``params`` and ``flops`` of ``arch`` (validated; missing keys mean full width / kept)."""
        space = self.space
        space.validate(arch)
        widths = [arch.width.get(k, size) for k, size in self._groups]
        dropped = space.dropped_units(arch)
        used: set[str] = set()
        kept_ops = None
        for key, graph in self._graphs.items():
            live, kept = graph.live(dropped)
            used |= live
            if key == self._flop_graph:
                kept_ops = kept
        flops = sum(table(widths) for i, table in self._flop_ops if i in kept_ops)
        seen: set[str] = set()
        params = 0
        for name, canon, table in self._params:
            if name in used and canon not in seen:
                seen.add(canon)
                params += table(widths)
        return {"params": params, "flops": flops}

    def __repr__(self) -> str:
        return (f"CostModel({self.space.ir.modules[''].class_path}: {len(self._params)} parameter tensors, "
                f"{len(self._flop_ops)} FLOP-counting ops)")


class _Table:
    """A value that depends on the widths of a few groups: computed once per combination of them."""

    def __init__(self, groups: tuple[int, ...], compute):
        self.groups, self.compute, self.values = groups, compute, {}

    def __call__(self, widths: list[int]) -> int:
        key = tuple([widths[i] for i in self.groups])
        value = self.values.get(key)
        if value is None:
            value = self.values[key] = self.compute(dict(zip(self.groups, key)))
        return value


def _groups_of(exprs_lists: list, dims, group_of: dict[int, int]) -> tuple[int, ...]:
    """Indices of the width groups whose atoms occur in any of the given dim-expression lists."""
    found: set[int] = set()
    for exprs in exprs_lists:
        if isinstance(exprs, dict):  # a list-valued op: {"list": [[expr], …]}
            exprs = [e for item in exprs["list"] for e in (item or [])]
        for e in exprs or []:
            for a in atoms_in(dims.resolve(e)):
                if a in group_of:
                    found.add(group_of[a])
    return tuple(sorted(found))


def _kept(space: SearchSpace, widths: dict[int, int]) -> dict[int, int]:
    """Atom -> kept channels for the shrunk groups among ``widths`` (group index -> width)."""
    groups = space.groups
    return {groups[i].atom: w for i, w in widths.items() if w != groups[i].size}


class _ParamSize:
    def __init__(self, placeholder, vals, dims, hints, space):
        self.p, self.vals, self.dims, self.hints, self.space = placeholder, vals, dims, hints, space

    def __call__(self, widths: dict[int, int]) -> int:
        kept = _kept(self.space, widths)
        meta = self.p.meta
        if kept and self.p.name in self.vals and isinstance(meta, dict):
            meta = resized_meta(meta, self.vals[self.p.name], self.dims, kept, self.hints)
        return math.prod(meta["shape"])


class _OpFlops:
    """FLOPs of one op at given widths, through the reference's own rewrite of its shapes and arguments."""

    def __init__(self, op: OpNode, producers, vals, dims, hints, space):
        self.op, self.producers, self.vals, self.dims, self.hints, self.space = op, producers, vals, dims, hints, space

    def __call__(self, widths: dict[int, int]) -> int:
        kept = _kept(self.space, widths)
        op = self.op
        new = OpNode(op.name, op.target, copy.deepcopy(op.args), copy.deepcopy(op.kwargs), op.owner,
                     copy.deepcopy(op.meta), op.mode_gated)
        if kept:
            resize_value(new, self.vals, self.dims, kept, self.hints)
        shapes = {}
        for ref in op.inputs:
            meta = self.producers[ref].meta
            v = self.vals.get(ref)
            if kept and isinstance(v, list) and isinstance(meta, dict) and "shape" in meta:
                meta = resized_meta(meta, v, self.dims, kept, self.hints)
            shapes[ref] = meta["shape"] if isinstance(meta, dict) and "shape" in meta else None
        return op_flops(new, shapes)


class _Liveness:
    """Which ops of one graph survive a set of contracted units (``space.subnet._rewrite`` + ``_dce``)."""

    def __init__(self, graph: Graph, located: dict[str, tuple[set, str, str]]):
        self.graph = graph
        index = {op.name: i for i, op in enumerate(graph.ops)}
        self.names = [op.name for op in graph.ops]
        self.inputs = [tuple(op.inputs) for op in graph.ops]
        self.outputs = node_refs(graph.outputs)
        self.units = {k: (frozenset(index[n] for n in ops if n in index), inp, out)
                      for k, (ops, inp, out) in located.items()}
        self.root = [has_side_effect(op.target) and not is_symint(op) for op in graph.ops]
        # an in-place op whose first argument a contraction replaced becomes out of place (no side effect)
        self.inplace: dict[int, tuple[tuple[str, ...], bool | str]] = {}
        for i, op in enumerate(graph.ops):
            if is_inplace(op.target) and node_refs(op.args[:1]):
                self.inplace[i] = (tuple(node_refs(op.args[:1])), _functional_root(op))
        # mode-gated ops (BatchNorm's num_batches_tracked += 1) go with their owner's last op
        owned: dict[str, set[int]] = {}
        for i, op in enumerate(graph.ops):
            if not op.mode_gated and not is_symint(op):
                owned.setdefault(op.owner, set()).add(i)
        self.gated = {i: frozenset(owned[op.owner]) for i, op in enumerate(graph.ops)
                      if op.mode_gated and op.owner in owned}
        self.order = range(len(graph.ops) - 1, -1, -1)

    def live(self, dropped: list[str]) -> tuple[set[str], set[int]]:
        """(values read by surviving ops or returned, indices of surviving ops) when ``dropped`` units
        (the contracted ones: ``space.dropped_units``) are removed."""
        removed: set[int] = set()
        replace: dict[str, str] = {}
        for k in dropped:
            located = self.units.get(k)
            if located is not None:
                removed |= located[0]
                replace[located[2]] = located[1]

        def sub(ref: str) -> str:
            while ref in replace:
                ref = replace[ref]
            return ref

        live = {sub(r) for r in self.outputs} if replace else set(self.outputs)
        kept: set[int] = set()
        names, inputs, root, inplace, gated = self.names, self.inputs, self.root, self.inplace, self.gated
        for i in self.order:
            if i in removed:
                continue
            if i in gated and gated[i] <= removed:
                continue
            is_root = root[i]
            if replace and i in inplace:
                firsts, functional = inplace[i]
                if any(sub(r) != r for r in firsts):
                    if isinstance(functional, str):
                        raise NotImplementedError(functional)
                    is_root = functional
            if is_root or names[i] in live:
                kept.add(i)
                if replace:
                    live.update(sub(r) for r in inputs[i])
                else:
                    live.update(inputs[i])
        return live, kept


def _functional_root(op: OpNode) -> bool | str:
    """Whether the out-of-place form of in-place ``op`` has a side effect (or why it has no such form)."""
    _, packet, overload = op.target.split(".")
    functional = f"aten.{packet.rstrip('_')}.{overload}"
    try:
        resolve_target(functional)
    except Exception:
        return (f"{op.name} ({op.target} in '{op.owner}') writes in place into a value that a removed unit "
                "used to produce, and has no out-of-place form")
    return has_side_effect(functional) and not is_symint(op)


def _check_units_keep_dims(space: SearchSpace, key: str, graph: Graph) -> None:
    """The precondition of per-op width tables: a contracted unit's input has its output's dims."""
    vals, dims = space.analysis.values[key], space.analysis.dims
    for k, (_, inp, out) in space.located_units(key).items():
        a, b = vals.get(inp), vals.get(out)
        if not (isinstance(a, list) and isinstance(b, list) and len(a) == len(b)
                and all(dims.resolve(x) == dims.resolve(y) for x, y in zip(a, b))):
            raise NotImplementedError(f"unit '{k}' ({key} graph): its input {inp} and output {out} have different "
                                      "dims, so CostModel cannot cost it per op; use Supernet.cost instead")
