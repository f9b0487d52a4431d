"""``CostModel``: exact params and FLOPs of any arch in microseconds, without building a subnet IR.

The reference, ``space.subnet.structure_cost(subnet_structure(space, arch))``, rewrites the whole IR for
every arch. Here the rewrite is split into what depends on depth and what depends on width, both
precomputed once (``Supernet.cost`` uses this, and the reference only for a model it cannot cost):

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

import math
from typing import Any

from ..ir.flops import COUNTED, is_size, op_flops
from ..ir.graph import PARAM, OpNode
from .arch import Arch
from .liveness import Liveness, WidthTable, check_units_keep_dims, groups_in, shrunk_atoms
from .space import SearchSpace
from .subnet import resized_meta, resized_op


class CostModel:
    """``cost(arch) -> {"params": int, "flops": int}`` of a supernet (or its ``SearchSpace``): params exact
    (tied tensors once; tensors of dropped units and unused tensors excluded), FLOPs of the inference
    graph at the traced example shapes (1 multiply-add = 2 FLOPs, as ``torch.utils.flop_counter``), equal
    to those of the arch's rewritten IR (``structure_cost``). ``NotImplementedError`` for a model with a
    removable unit whose input and output dims differ (``Supernet.cost`` then rewrites each arch)."""

    def __init__(self, supernet: Any):
        space = supernet if isinstance(supernet, SearchSpace) else supernet.space
        self.space = space
        ir, an = space.ir, space.analysis
        self._groups = [(g.key, g.size) for g in space.groups]
        group_of = {g.atom: i for i, g in enumerate(space.groups)}
        hints = an.hints
        self._graphs = {"train": Liveness(ir.graph, space.located_units("train"))}
        if ir.eval_graph is not None:
            self._graphs["eval"] = Liveness(ir.eval_graph, space.located_units("eval"))
        for key, graph in self._graphs.items():
            check_units_keep_dims(space, key, graph.graph)
        flop_key = "eval" if ir.eval_graph is not None else "train"
        flop_graph = self._graphs[flop_key].graph
        vals = an.values[flop_key]
        producers = flop_graph.producers()
        self._flop_ops: list[tuple[int, WidthTable]] = []
        for i, op in enumerate(flop_graph.ops):
            if op.target not in COUNTED:
                continue
            refs = [op.name] + op.inputs
            groups = groups_in([vals.get(r) for r in refs], an.dims, group_of)
            self._flop_ops.append((i, WidthTable(groups, _OpFlops(op, producers, vals, an.dims, hints, space))))
        self._params: list[tuple[str, str, WidthTable]] = []  # (placeholder, canonical tensor, size table)
        tables: dict[str, WidthTable] = {}
        train_vals = an.values["train"]
        for p in ir.graph.placeholders:
            if p.kind != PARAM:
                continue
            canon = ir.aliases.get(p.target, p.target)
            if canon not in tables:
                groups = groups_in([an.tensors[canon]], an.dims, group_of)
                tables[canon] = WidthTable(groups, _ParamSize(p, train_vals, an.dims, hints, space))
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


class _ParamSize:
    def __init__(self, placeholder, vals, dims, hints, space):
        self.p, self.vals, self.dims, self.hints, self.space = placeholder, vals, dims, hints, space

    def __call__(self, widths: dict[int, int]) -> int:
        kept = shrunk_atoms(self.space, widths)
        meta = self.p.meta
        if kept and self.p.name in self.vals and isinstance(meta, dict):
            meta = resized_meta(meta, self.vals[self.p.name], self.dims, kept, self.hints)
        return math.prod(meta["shape"])


class _OpFlops:
    """FLOPs of one op at given widths, through the reference's own rewrite of its shapes and arguments."""

    def __init__(self, op: OpNode, producers, vals, dims, hints, space):
        self.op, self.producers, self.vals, self.dims, self.hints, self.space = op, producers, vals, dims, hints, space

    def __call__(self, widths: dict[int, int]) -> int:
        kept = shrunk_atoms(self.space, widths)
        op = self.op
        new = resized_op(op, self.vals, self.dims, kept, self.hints)
        shapes = {}
        for ref in op.inputs:
            meta = self.producers[ref].meta
            v = self.vals.get(ref)
            if is_size(meta):
                continue
            if kept and isinstance(v, list) and isinstance(meta, dict) and "shape" in meta:
                meta = resized_meta(meta, v, self.dims, kept, self.hints)
            shapes[ref] = meta["shape"] if isinstance(meta, dict) and "shape" in meta else None
        return op_flops(new, shapes)
