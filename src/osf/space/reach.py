"""Which model inputs each graph output depends on, followed index by index along one dim through
concatenation and indexing. Dropping units can leave a graph connected yet make an output ignore the
inputs: a ViT without blocks concatenates its class token with the patch embeddings and classifies
token 0, the class token alone. Any op not listed here is assumed to mix everything it reads, so the
analysis may miss such a cut but never reports one that is not there."""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import torch

from ..ir import serial
from ..ir.errors import FormatError
from ..ir.graph import INPUT, Graph, OpNode

Where = tuple[int, int, int] | None  # (dim, start, stop): an input's values reach only that range; None: all
Deps = dict[str, Where]  # model input (placeholder name) -> where its values lie in a tensor


def output_inputs(graph: Graph, skipped: frozenset[str] | set[str] = frozenset(),
                  contracted: dict[str, str] | None = None) -> list[frozenset[str]]:
    """For each output leaf of ``graph`` (in ``node_refs`` order), the model inputs it depends on.

    ``skipped`` ops are left out, and each ``contracted`` value (an output of skipped ops) stands for the
    value it maps to: the graph with units contracted, read without rewriting it (widths do not matter
    here, since every group keeps a channel and the kept channels' slices follow)."""
    contracted = contracted or {}
    deps: dict[str, Deps] = {p.name: ({p.name: None} if p.kind == INPUT else {}) for p in graph.placeholders}
    shapes: dict[str, list[int] | None] = {p.name: _shape(p.meta) for p in graph.placeholders}
    for op in graph.ops:
        if op.name in contracted:  # its readers come later and read what it maps to, already known
            source = contracted[op.name]
            deps[op.name], shapes[op.name] = deps.get(source, {}), shapes.get(source)
            continue
        if op.name in skipped:
            continue
        shapes[op.name] = _shape(op.meta)
        if isinstance(op.meta, dict) and "symint" in op.meta:  # a size: it carries no input values
            deps[op.name] = {}
            continue
        rule = _RULES.get(op.target) or (_pointwise if _is_pointwise(op.target) else _mixing)
        deps[op.name] = rule(op, deps, shapes)
    return [frozenset(deps.get(ref, {})) for ref in serial.node_refs(graph.outputs)]


def _shape(meta: Any) -> list[int] | None:
    return list(meta["shape"]) if isinstance(meta, dict) and "shape" in meta else None


def _ref(arg: Any) -> str | None:
    return arg["node"] if isinstance(arg, dict) and "node" in arg else None


def _arg(op: OpNode, i: int, name: str, default: Any = None) -> Any:
    return op.args[i] if len(op.args) > i else op.kwargs.get(name, default)


def _merge(into: Deps, deps: Deps) -> None:
    for source, where in deps.items():
        if source not in into:
            into[source] = where
        elif into[source] != where:
            a, b = into[source], where
            into[source] = (a[0], min(a[1], b[1]), max(a[2], b[2])) if a and b and a[0] == b[0] else None


def _mixing(op: OpNode, deps: dict[str, Deps], shapes) -> Deps:
    """Default: every input's values may reach every output position."""
    return {source: None for ref in op.inputs for source in deps.get(ref, {})}


def _remap(d: Deps, dim_map: Callable[[int], int | None]) -> Deps:
    """Move each restriction to the output dim ``dim_map`` gives (None: spread over the whole tensor)."""
    out: Deps = {}
    for source, where in d.items():
        new = dim_map(where[0]) if where else None
        _merge(out, {source: (new, where[1], where[2]) if where and new is not None else None})
    return out


def _first(op: OpNode, deps: dict[str, Deps]) -> Deps:
    return deps.get(_ref(op.args[0]) or "", {}) if op.args else {}


def _identity(op: OpNode, deps, shapes) -> Deps:
    return dict(_first(op, deps))


def _pointwise(op: OpNode, deps, shapes) -> Deps:
    """Element-wise with broadcasting: dims align from the right; a broadcast size-1 dim spreads."""
    out_shape = shapes.get(op.name)
    if out_shape is None:
        return _mixing(op, deps, shapes)
    out: Deps = {}
    for ref in op.inputs:
        shape = shapes.get(ref)
        if shape is None:
            _merge(out, {s: None for s in deps.get(ref, {})})
            continue
        shift = len(out_shape) - len(shape)
        _merge(out, _remap(deps.get(ref, {}), lambda d: d + shift
                           if shift >= 0 and shape[d] == out_shape[d + shift] else None))
    return out


def _rank(op: OpNode, shapes) -> int:
    shape = shapes.get(_ref(op.args[0]) or "")
    return len(shape) if shape is not None else 0


def _dim(d: int, rank: int) -> int:
    return d + rank if d < 0 else d


def _cat(op: OpNode, deps, shapes) -> Deps:
    parts = op.args[0]
    out_shape = shapes.get(op.name)
    if out_shape is None:
        return _mixing(op, deps, shapes)
    dim = _dim(_arg(op, 1, "dim", 0), len(out_shape))
    out: Deps = {}
    offset = 0
    for part in parts:
        ref = _ref(part)
        shape = shapes.get(ref or "")
        if shape is None or len(shape) != len(out_shape):  # a legacy empty tensor or unknown: be safe
            _merge(out, {s: None for s in deps.get(ref or "", {})})
            continue
        length = shape[dim]
        for source, where in deps.get(ref, {}).items():
            if where is None or where[0] == dim:
                start, stop = (0, length) if where is None else (where[1], where[2])
                _merge(out, {source: (dim, offset + start, offset + stop)})
            else:
                _merge(out, {source: where})
        offset += length
    return out


def _index_range(op: OpNode, deps, shapes, dim: int, start: int, stop: int, keeps_dim: bool) -> Deps:
    """Positions ``start:stop`` of ``dim`` (one position dropping the dim when not ``keeps_dim``)."""
    out: Deps = {}
    for source, where in _first(op, deps).items():
        if where is None:
            out[source] = None
        elif where[0] == dim:
            lo, hi = max(where[1], start), min(where[2], stop)
            if lo < hi:
                out[source] = (dim, lo - start, hi - start) if keeps_dim else None
        else:
            out[source] = where if keeps_dim or where[0] < dim else (where[0] - 1, where[1], where[2])
    return out


def _select(op: OpNode, deps, shapes) -> Deps:
    shape = shapes.get(_ref(op.args[0]) or "")
    if shape is None:
        return _mixing(op, deps, shapes)
    dim = _dim(op.args[1], len(shape))
    index = op.args[2] if op.args[2] >= 0 else op.args[2] + shape[dim]
    return _index_range(op, deps, shapes, dim, index, index + 1, keeps_dim=False)


def _slice(op: OpNode, deps, shapes) -> Deps:
    shape = shapes.get(_ref(op.args[0]) or "")
    start, stop, step = _arg(op, 2, "start"), _arg(op, 3, "end"), _arg(op, 4, "step", 1)
    if shape is None or not all(isinstance(v, int) or v is None for v in (start, stop, step)) or step != 1:
        return _mixing(op, deps, shapes)
    dim = _dim(_arg(op, 1, "dim", 0), len(shape))
    size = shape[dim]
    start, stop, _ = slice(start, stop).indices(size)
    return _index_range(op, deps, shapes, dim, start, max(start, stop), keeps_dim=True)


def _narrow(op: OpNode, deps, shapes) -> Deps:
    shape = shapes.get(_ref(op.args[0]) or "")
    if shape is None or not isinstance(op.args[2], int) or not isinstance(op.args[3], int):
        return _mixing(op, deps, shapes)
    dim = _dim(op.args[1], len(shape))
    start = op.args[2] if op.args[2] >= 0 else op.args[2] + shape[dim]
    return _index_range(op, deps, shapes, dim, start, start + op.args[3], keeps_dim=True)


def _permute(op: OpNode, deps, shapes) -> Deps:
    rank = _rank(op, shapes)
    order = [_dim(d, rank) for d in op.args[1]]
    return _remap(_first(op, deps), lambda d: order.index(d) if d in order else None)


def _transpose(op: OpNode, deps, shapes) -> Deps:
    rank = _rank(op, shapes)
    a, b = (_dim(op.args[1], rank), _dim(op.args[2], rank)) if len(op.args) > 2 else (0, 1)
    return _remap(_first(op, deps), lambda d: b if d == a else a if d == b else d)


def _unsqueeze(op: OpNode, deps, shapes) -> Deps:
    dim = _dim(op.args[1], _rank(op, shapes) + 1)
    return _remap(_first(op, deps), lambda d: d + 1 if d >= dim else d)


def _reshape(op: OpNode, deps, shapes) -> Deps:
    """A restricted dim survives a reshape when it stays a whole dim: same size, same product before it."""
    before, after = shapes.get(_ref(op.args[0]) or ""), shapes.get(op.name)
    if before is None or after is None:
        return _mixing(op, deps, shapes)

    def dim_map(d: int) -> int | None:
        lead = math.prod(before[:d])
        for e in range(len(after)):
            if math.prod(after[:e]) == lead and after[e] == before[d]:
                return e
        return None
    return _remap(_first(op, deps), dim_map)


def _last_dims(count: Callable[[OpNode], int]) -> Callable:
    """Ops that mix only the trailing ``count(op)`` dims of their first input (linear, layer norm)."""
    def rule(op: OpNode, deps, shapes) -> Deps:
        rank = _rank(op, shapes)
        return _remap(_first(op, deps), lambda d: d if d < rank - count(op) else None)
    return rule


def _along(op: OpNode, deps, shapes) -> Deps:
    """Softmax-like ops: mix along their ``dim`` only."""
    rank = _rank(op, shapes)
    dim = _dim(op.args[1], rank)
    return _remap(_first(op, deps), lambda d: None if d == dim else d)


_RULES: dict[str, Callable[[OpNode, dict, dict], Deps]] = {
    "aten.cat.default": _cat, "aten.concat.default": _cat, "aten.concatenate.default": _cat,
    "aten.select.int": _select, "aten.slice.Tensor": _slice, "aten.narrow.default": _narrow,
    "aten.permute.default": _permute, "aten.transpose.int": _transpose, "aten.t.default": _transpose,
    "aten.unsqueeze.default": _unsqueeze,
    "aten.view.default": _reshape, "aten.reshape.default": _reshape, "aten._unsafe_view.default": _reshape,
    "aten.flatten.using_ints": _reshape,
    "aten.linear.default": _last_dims(lambda op: 1),
    "aten.layer_norm.default": _last_dims(lambda op: len(op.args[1])),
    "aten.softmax.int": _along, "aten._softmax.default": _along, "aten.log_softmax.int": _along,
    **{t: _identity for t in ("aten.dropout.default", "aten.clone.default", "aten.contiguous.default",
                              "aten.alias.default", "aten.detach.default", "aten._to_copy.default",
                              "aten.to.dtype", "aten.to.dtype_layout", "aten.to.device", "aten.type_as.default",
                              "aten.lift_fresh_copy.default")},
}


@functools.cache
def _is_pointwise(target: str) -> bool:
    if not target.startswith("aten."):
        return False
    try:
        op = serial.resolve_target(target)
    except FormatError:  # an op this torch lacks is simply not known to be element-wise
        return False
    return isinstance(op, torch._ops.OpOverload) and torch.Tag.pointwise in op.tags
