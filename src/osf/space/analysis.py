"""Dimension analysis: one pass over the IR's op graph(s) assigns every tensor dim an expression over
atoms (``dims.Dims``); each op rule unifies the dims its semantics tie together.

Safety rule: an op without a rule *blocks* every dim it touches (they keep their size) and is reported;
nothing is ever treated as pass-through. Graph inputs and outputs are blocked too. Dims that an op
derives (spatial sizes after a conv, a new size-1 axis, a created tensor) are fresh blocked atoms, so the
only prunable atoms are those that reach a parameter, buffer or constant tensor.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..ir.graph import BUFFER, CONST, INPUT, IR, PARAM, Graph, OpNode, Placeholder
from ..ir.ops import is_scalar_check
from ..ir.serial import resolve_target
from .dims import Cat, Dims, Measured, Prod, Size, is_static, size_div, size_of, slice_bounds, value_dims


@dataclass
class Unsupported:
    op: str
    target: str
    owner: str
    reason: str


@dataclass
class DimAnalysis:
    """Dims of every value of every graph, of every tensor, plus what blocked what."""
    dims: Dims
    values: dict[str, dict[str, Any]]  # graph key -> value name -> [expr] (or {"list": [[expr], …]})
    tensors: dict[str, list]  # canonical tensor name -> [expr]
    unsupported: list[Unsupported] = field(default_factory=list)
    # batch dims that two operands of a contraction share (attention heads kept apart, as XLNet's einsums
    # do, or a batched matmul's groups): their slices are independent, so they count in whole units
    batched: list = field(default_factory=list)
    # symbolic dims of created or expanded tensors (copies, free to shrink), per graph key: (op name, output
    # dim); a subnet reads their new size at run time from an earlier value with that dim (``dim_source``)
    sized_at_run_time: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    # traced value of each size symbol and of each expression ``size_of`` counts as one (``size_hints``)
    hints: dict[str, int] = field(default_factory=dict)


def analyse(ir: IR) -> DimAnalysis:
    dims = Dims()
    result = DimAnalysis(dims, {}, {})
    graphs = {"train": ir.graph}
    if ir.eval_graph is not None:
        graphs["eval"] = ir.eval_graph
    for key, graph in graphs.items():
        _Pass(ir, graph, result).run(key)
    result.hints = size_hints(*graphs.values())
    for key, graph in graphs.items():  # once unification is complete
        vals, at = result.values[key], {op.name: i for i, op in enumerate(graph.ops)}
        for name, d in result.sized_at_run_time.get(key, ()):
            if dim_source(graph.ops[:at[name]], vals, dims, vals[name][d]) is None:
                dims.block(vals[name][d], f"a size of {name} ({graph.ops[at[name]].target}) read from no "
                                          "earlier value")
    return result


def size_hints(*graphs: Graph) -> dict[str, int]:
    """Example value of each size symbol: of ``B`` (-> 2) from the input placeholders, and of each
    expression ``dims.size_of`` counts as one symbol (``(((S-1)//8))+1`` -> 28) from the traced size of
    a dim where it is the one factor not yet known."""
    hints: dict[str, int] = {}
    for graph in graphs:
        for p in graph.placeholders:
            if p.kind == INPUT and isinstance(p.meta, dict) and p.meta.get("sym"):
                for v, s in zip(p.meta["shape"], p.meta["sym"]):
                    if s and s.isidentifier():
                        hints[s] = int(v)
    pending = list(dict.fromkeys((int(v), size_of(v, s)) for graph in graphs for meta in _value_metas(graph)
                                 for v, s in zip(meta["shape"], meta.get("sym") or ()) if s and not s.isidentifier()))
    while pending:  # in graph order, so the hints never depend on hashing
        left = []
        for value, (coef, syms) in pending:
            unknown = [f for f in syms if f not in hints]
            known = coef * math.prod(hints[f] for f in syms if f in hints)
            if len(unknown) == 1 and known and value % known == 0:
                hints[unknown[0]] = value // known
            elif len(unknown) > 1:
                left.append((value, (coef, syms)))
        if len(left) == len(pending):
            break
        pending = left
    return hints


def _value_metas(graph: Graph):
    """The tensor metadata (``shape``, ``sym``) of every placeholder and op output of ``graph``."""
    for node in (*graph.placeholders, *graph.ops):
        meta = node.meta
        for m in meta["list"] if isinstance(meta, dict) and "list" in meta else [meta]:
            if isinstance(m, dict) and "shape" in m:
                yield m


def dim_source(ops: list[OpNode], vals: dict, dims: Dims, dim: Any) -> tuple[str, int] | None:
    """The last of ``ops`` whose value has a dim that is ``dim``, and that dim's position (where a subnet
    reads the size of ``dim`` at run time), else None."""
    want = dims.resolve(dim)
    for op in reversed(ops):
        v = vals.get(op.name)
        if isinstance(v, list):
            for d, e in enumerate(v):
                if dims.resolve(e) == want:
                    return op.name, d
    return None


def measured_dim(vals: dict, a: Any) -> Any:
    """The tensor dim whose size argument ``a`` is (the value of a ``sym_size`` op), else None."""
    v = vals.get(a["node"]) if isinstance(a, dict) and "node" in a else None
    return v.dim if isinstance(v, Measured) else None


def value_sizes(meta: Any) -> list[Size] | None:
    if not isinstance(meta, dict) or "shape" not in meta:
        return None
    syms = meta.get("sym") or [None] * len(meta["shape"])
    return [size_of(v, s) for v, s in zip(meta["shape"], syms)]


class _Pass:
    def __init__(self, ir: IR, graph: Graph, result: DimAnalysis):
        self.ir, self.graph, self.r, self.d = ir, graph, result, result.dims
        self.key = ""
        self.producers = graph.producers()
        self.vals: dict[str, Any] = {}
        self.metas: dict[str, Any] = {}
        self.copies_along: dict[str, set[int]] = {}  # value -> dims it repeats one slice along (expanded)

    # ----- driver -----
    def run(self, key: str) -> None:
        self.key = key
        for p in self.graph.placeholders:
            self.metas[p.name] = p.meta
            sizes = value_sizes(p.meta)
            if sizes is None:
                continue
            if p.kind in (PARAM, BUFFER, CONST):
                canon = self.ir.aliases.get(p.target, p.target)
                if canon not in self.r.tensors:
                    self.r.tensors[canon] = [self.d.atom(s, "param") for s in sizes]
                self.vals[p.name] = self.r.tensors[canon]
            else:
                atoms = [self.d.atom(s, "input") for s in sizes]
                for a in atoms:
                    self.d.block(a, "graph input")
                self.vals[p.name] = atoms
        for op in self.graph.ops:
            self.metas[op.name] = op.meta
            if (isinstance(op.meta, dict) and ("symint" in op.meta or "sym" in op.meta and "shape" not in op.meta)
                    or is_scalar_check(op.target)):
                if op.target == "aten.sym_size.int" and (x := self.tensor(op.args[0])) is not None:
                    self.vals[op.name] = Measured(x[_norm_dim(op.args[1], len(x))])
                continue  # sizes, their comparisons and run-time assertions: no tensor dims
            rule = _rule_for(op.target)
            try:
                out = rule(self, op) if rule is not None else None
            except _Unsupported as e:
                out = self._unsupported(op, str(e))
            if rule is None:
                out = self._unsupported(op, "no dimension rule for this op")
            if out is not None:
                self.vals[op.name] = out
        for ref in _refs(self.graph.outputs):
            for e in value_dims(self.vals.get(ref)):
                self.d.block(e, "graph output")
        self.r.values[key] = self.vals

    def _unsupported(self, op: OpNode, reason: str):
        self.r.unsupported.append(Unsupported(op.name, op.target, op.owner, reason))
        why = f"unsupported op {op.target} ({op.name} in '{op.owner or '<root>'}'): {reason}"
        for ref in op.inputs:
            for e in value_dims(self.vals.get(ref)):
                self.d.block(e, why)
        return self.fresh_out(op, why)

    # ----- helpers for rules -----
    def arg(self, op: OpNode, i: int, name: str, default: Any = None) -> Any:
        if i < len(op.args):
            return op.args[i]
        return op.kwargs.get(name, default)

    def tensor(self, a: Any) -> list | None:
        """The dims of a tensor argument (None for non-tensors)."""
        if isinstance(a, dict) and "node" in a:
            v = self.vals.get(a["node"])
            return v if isinstance(v, list) else None
        return None

    def out_sizes(self, op: OpNode, index: int | None = None) -> list[Size]:
        meta = op.meta
        if index is not None:
            meta = meta["list"][index]
        sizes = value_sizes(meta)
        if sizes is None:
            raise _Unsupported("output has no tensor metadata")
        return sizes

    def fresh(self, size: Size, why: str) -> int:
        a = self.d.atom(size, "derived")
        self.d.block(a, why)
        return a

    def copies(self, size: Size) -> int:
        """A dim of ``size`` identical positions (an expanded / repeated size-1 dim, a tensor of one value):
        free to shrink, since any prefix of it is the same tensor."""
        return self.d.atom(size, "derived")

    def copies_sized_at_run_time(self, op: OpNode, dim: int, size: Size) -> int:
        """Copies along output dim ``dim`` of symbolic ``size``: a subnet that shrinks it reads the new size
        at run time from an earlier value with that dim (fixed at the end of the analysis where none has it)."""
        self.r.sized_at_run_time.setdefault(self.key, []).append((op.name, dim))
        return self.copies(size)

    def fresh_out(self, op: OpNode, why: str):
        meta = op.meta
        if isinstance(meta, dict) and "list" in meta:
            return {"list": [[self.fresh(s, why) for s in value_sizes(m)] if value_sizes(m) else None
                             for m in meta["list"]]}
        sizes = value_sizes(meta)
        return [self.fresh(s, why) for s in sizes] if sizes is not None else None

    def unify(self, a, b, op: OpNode) -> None:
        self.d.unify(a, b, f"{op.name} ({op.target} in '{op.owner or '<root>'}')")

    def size(self, e) -> Size:
        return self.d.size(e)

    def broadcast(self, op: OpNode, inputs: list[list], out_sizes: list[Size]) -> list:
        """Right-aligned broadcasting: equal-sized dims unify; size-1 dims broadcast."""
        out = []
        n = len(out_sizes)
        for i, s in enumerate(out_sizes):
            chosen = None
            for x in inputs:
                j = i - (n - len(x))
                if j < 0:
                    continue
                if self.size(x[j]) == s:
                    if chosen is None:
                        chosen = x[j]
                    else:
                        self.unify(chosen, x[j], op)
                elif not is_static(self.size(x[j])) and not is_static(s):
                    # two symbolic sizes the size algebra cannot equate (``(B+1)//2`` and ``B-(B+1)//2``
                    # of a chunked batch) that the traced op broadcast: equal whenever it runs. No width
                    # group holds a symbolic dim: it stays fixed
                    self.block(x[j], f"symbolic size broadcast by {op.name}")
                elif self.size(x[j]) != (1, ()):
                    raise _Unsupported(f"cannot broadcast size {self.size(x[j])} to {s}")
            out.append(chosen if chosen is not None else self.fresh(s, f"broadcast in {op.name}"))
        return out

    def block(self, e, why: str) -> None:
        self.d.block(e, why)

    def batched(self, a: list, b: list) -> None:
        """Record the batch dims (right-aligned) that two operands of a contraction both have."""
        for x, y in zip(reversed(a), reversed(b)):
            if self.size(x) == self.size(y) != (1, ()):
                self.r.batched.append(x)

    def new_dim(self, x: list, d: int, op: OpNode, why: str) -> None:
        """Dim ``d`` of ``x`` is rewritten by position (sliced, padded, indexed): fixed in and out."""
        self.block(x[d], why)
        x[d] = self.fresh(self.out_sizes(op)[d], why)


class _Unsupported(Exception):
    pass


def _refs(x: Any) -> list[str]:
    from ..ir.serial import node_refs
    return node_refs(x)


def _norm_dim(d: int, n: int) -> int:
    return d + n if d < 0 else d


# ------------------------------------------------------------------------------------------------
# rules

Rule = Callable[[_Pass, OpNode], Any]
RULES: dict[str, Rule] = {}


def rule(*names: str):
    def register(fn: Rule) -> Rule:
        for n in names:
            RULES[n] = fn
        return fn
    return register


_SAME_AS_INPUT = {
    "dropout", "dropout_", "feature_dropout", "feature_dropout_", "alpha_dropout", "alpha_dropout_",
    "contiguous", "clone", "alias", "detach", "detach_", "_to_copy", "to", "lift_fresh_copy",
    "bernoulli", "bernoulli_", "fill_", "zero_", "softmax", "log_softmax", "_softmax", "_log_softmax",
    "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_", "relu6", "silu_", "gelu_", "mish_",
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "copy_", "copy",
    "requires_grad_", "dequantize", "native_dropout", "_assert_tensor_metadata", "real", "imag", "complex",
    "polar", "conj", "conj_physical", "_conj", "resolve_conj", "resolve_neg",
    "uniform_", "normal_", "exponential_", "cauchy_", "log_normal_", "geometric_", "random_",  # random fills
}


def _rule_for(target: str) -> Rule | None:
    if target in RULES:
        return RULES[target]
    if not target.startswith("aten."):
        return None
    packet = target.split(".")[1]
    if packet in _SAME_AS_INPUT:
        return _pointwise
    try:
        op = resolve_target(target)
    except Exception:
        return None
    tags = getattr(op, "tags", ())
    if torch.Tag.pointwise in tags:
        return _pointwise
    if _pointwise_variant(_CANONICAL.get(packet, packet), op):
        return _pointwise_same_rank
    return None


# Python-operator spellings of element-wise bitwise ops (``a & b`` records ``aten.__and__``), and ATen's
# aliases of element-wise ops (``torch.multiply`` records ``aten.multiply``, untagged)
_CANONICAL = {f"__{pre}{name}__": f"bitwise_{full}" for pre in ("", "i") for name, full in
           (("and", "and"), ("or", "or"), ("xor", "xor"), ("lshift", "left_shift"), ("rshift", "right_shift"))} | {
    "multiply": "mul", "multiply_": "mul_", "divide": "div", "divide_": "div_", "true_divide": "div",
    "true_divide_": "div_", "floor_divide": "div", "floor_divide_": "div_", "subtract": "sub", "subtract_": "sub_",
    "negative": "neg", "negative_": "neg_",
    "absolute": "abs", "absolute_": "abs_", "greater": "gt", "greater_equal": "ge", "less": "lt",
    "less_equal": "le", "not_equal": "ne", "fix": "trunc", "fix_": "trunc_", "special_expit": "sigmoid",
    "arccos": "acos", "arcsin": "asin", "arctan": "atan", "arctan2": "atan2", "arccosh": "acosh",
    "arcsinh": "asinh", "arctanh": "atanh", "special_erf": "erf", "special_erfc": "erfc", "special_exp2": "exp2",
    "special_expm1": "expm1", "special_logit": "logit", "special_xlogy": "xlogy"}


def _pointwise_variant(packet: str, op: Any) -> bool:
    """An untagged overload (``where.ScalarOther``, ``masked_fill.Tensor``, in place ``masked_fill_.Scalar``)
    of an op whose other (or out-of-place) overloads ATen tags ``pointwise``: element-wise too when it
    returns one tensor and takes no ``dim``."""
    schema = getattr(op, "_schema", None)
    if schema is None or len(schema.returns) != 1 or str(schema.returns[0].type) != "Tensor" or \
            any(a.name == "dim" for a in schema.arguments):
        return False
    names = [packet, packet[:-1]] if packet.endswith("_") and not packet.endswith("__") else [packet]
    families = [f for f in (getattr(torch.ops.aten, n, None) for n in names) if f is not None]
    return any(torch.Tag.pointwise in getattr(f, o).tags for f in families for o in f.overloads())


def _pointwise_same_rank(p: _Pass, op: OpNode):
    """``_pointwise`` for a ``_pointwise_variant``: refused when an input has more dims than the output."""
    out_sizes = p.out_sizes(op)
    inputs = _tensor_inputs(p, op)
    if any(len(t) > len(out_sizes) for t in inputs):
        raise _Unsupported("an input has more dims than the output (not element-wise)")
    return p.broadcast(op, inputs, out_sizes)


def _tensor_inputs(p: _Pass, op: OpNode) -> list:
    return [t for t in (p.tensor(a) for a in op.args + list(op.kwargs.values())) if t is not None]


def _pointwise(p: _Pass, op: OpNode):
    """Element-wise ops (tagged ``pointwise`` in ATen, plus dropout / copies / softmax-like ops):
    broadcast the tensor inputs into the output."""
    inputs = _tensor_inputs(p, op)
    if isinstance(op.meta, dict) and "list" in op.meta:  # native_dropout: (out, mask)
        out = p.broadcast(op, inputs, p.out_sizes(op, 0))
        return {"list": [out, out]}
    return p.broadcast(op, inputs, p.out_sizes(op))


@rule("aten.linear.default")
def _linear(p: _Pass, op: OpNode):
    """``x @ W.T + b``; a 1-D ``W`` (D-FINE's ``F.linear(probs, project)``) contracts the last dim away."""
    x, w, b = p.tensor(op.args[0]), p.tensor(op.args[1]), p.tensor(p.arg(op, 2, "bias"))
    p.unify(x[-1], w[-1], op)
    if len(w) == 1:
        return list(x[:-1])
    if b is not None:
        p.unify(b[0], w[0], op)
    return list(x[:-1]) + [w[0]]


@rule("aten.bilinear.default")
def _bilinear(p: _Pass, op: OpNode):
    """``y[..., o] = x1[..., i] · W[o, i, j] · x2[..., j] + b[o]``."""
    x1, x2, w, b = p.tensor(op.args[0]), p.tensor(op.args[1]), p.tensor(op.args[2]), p.tensor(p.arg(op, 3, "bias"))
    for e1, e2 in zip(x1[:-1], x2[:-1]):
        p.unify(e1, e2, op)
    p.unify(x1[-1], w[1], op)
    p.unify(x2[-1], w[2], op)
    if b is not None:
        p.unify(b[0], w[0], op)
    return list(x1[:-1]) + [w[0]]


@rule("aten.glu.default")
def _glu(p: _Pass, op: OpNode):
    """``a * sigmoid(b)`` of the two halves of ``dim``: channel k of one half pairs with k of the other."""
    x = list(p.tensor(op.args[0]))
    d = _norm_dim(p.arg(op, 1, "dim", -1), len(x))
    half = p.out_sizes(op)[d]
    if not is_static(half):
        raise _Unsupported("glu along a dynamic dim")
    pair = p.d.atom(half, "split")  # channel k of either half
    p.unify(x[d], Cat((pair, pair)), op)
    x[d] = pair
    return x


def _conv(p: _Pass, op: OpNode, transposed: bool, groups: int):
    x, w, b = p.tensor(op.args[0]), p.tensor(op.args[1]), p.tensor(p.arg(op, 2, "bias"))
    out_sizes = p.out_sizes(op)
    nspatial = len(w) - 2
    batch = list(x[:-(nspatial + 1)])
    w_in, w_out = (w[0], w[1]) if transposed else (w[1], w[0])
    if groups == 1:
        p.unify(x[-(nspatial + 1)], w_in, op)
        ch_out = w_out
        if transposed:
            ch_out = w[1]
    else:  # channels = groups × per-group: one atom for the groups, shared by input, weight and output
        g = p.d.atom((groups, ()), "split")
        if transposed:  # W[in, out/g, k…]
            per_in = p.d.atom(_div(p.size(w[0]), groups), "split")
            p.unify(w[0], Prod((g, per_in)), op)
            p.unify(x[-(nspatial + 1)], w[0], op)
            ch_out = Prod((g, w[1]))
        else:  # W[out, in/g, k…]
            per_out = p.d.atom(_div(p.size(w[0]), groups), "split")
            p.unify(w[0], Prod((g, per_out)), op)
            p.unify(x[-(nspatial + 1)], Prod((g, w[1])), op)
            ch_out = w[0]
    if b is not None:
        p.unify(b[0], ch_out, op)
    for k in w[2:]:
        p.block(k, f"kernel size of {op.name}")
    for s in x[len(x) - nspatial:]:  # the output length follows from it: never prune a dim read as spatial
        p.block(s, f"spatial size read by {op.name}")
    spatial = [p.fresh(s, f"spatial size computed by {op.name}") for s in out_sizes[-nspatial:]]
    return batch + [ch_out] + spatial


def _groups(p: _Pass, op: OpNode, i: int) -> int:
    groups = p.arg(op, i, "groups", 1)
    if not isinstance(groups, int):  # e.g. a per-sample (hyper-network) conv folding the batch into groups
        raise _Unsupported("the number of groups depends on an input size")
    return groups


def _div(s: Size, k: int) -> Size:
    if not is_static(s) or s[0] % k:
        raise _Unsupported(f"channel count {s} not divisible by groups {k}")
    return (s[0] // k, ())


@rule("aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default",
      "aten.conv1d.padding", "aten.conv2d.padding", "aten.conv3d.padding")
def _conv_nd(p: _Pass, op: OpNode):
    return _conv(p, op, False, _groups(p, op, 6))


@rule("aten.conv_transpose1d.default", "aten.conv_transpose2d.input", "aten.conv_transpose3d.input")
def _conv_t(p: _Pass, op: OpNode):
    return _conv(p, op, True, _groups(p, op, 6))


@rule("aten.convolution.default")
def _convolution(p: _Pass, op: OpNode):
    return _conv(p, op, bool(p.arg(op, 6, "transposed")), _groups(p, op, 8))


@rule("torchvision.deform_conv2d.default")
def _deform_conv2d(p: _Pass, op: OpNode):
    """torchvision's deformable conv (input, weight, offset, mask, bias, strides, paddings, dilations, groups,
    offset groups, use_mask): a conv whose kernel samples at learnt offsets. With one group and one offset
    group its channels are a conv's (the input's contracted with the weight's second dim, the output's the
    weight's first and the bias's); the offsets' and mask's channels (offset groups × kernel positions)
    and every spatial dim are fixed, the batch is shared."""
    x, w, offset, mask, bias = (p.tensor(a) for a in op.args[:5])
    if op.args[11:13] != [1, 1] or any(t is None for t in (x, w, offset, mask, bias)):
        raise _Unsupported("deform_conv2d with groups or offset groups")
    p.unify(x[1], w[1], op)
    p.unify(bias[0], w[0], op)
    for t in (offset, mask):
        p.unify(t[0], x[0], op)
        for e in t[1:]:
            p.block(e, f"offsets and mask of {op.name}")
    for e in list(w[2:]) + list(x[2:]):
        p.block(e, f"kernel or spatial size of {op.name}")
    return [x[0], w[0]] + [p.fresh(s, f"spatial size computed by {op.name}") for s in p.out_sizes(op)[2:]]


@rule("aten.batch_norm.default", "aten.instance_norm.default")
def _batch_norm(p: _Pass, op: OpNode):
    x = p.tensor(op.args[0])
    for i, name in enumerate(("weight", "bias", "running_mean", "running_var"), start=1):
        t = p.tensor(p.arg(op, i, name))
        if t is not None:
            p.unify(t[0], x[1], op)
    return list(x)


@rule("aten.layer_norm.default", "aten.rms_norm.default")
def _layer_norm(p: _Pass, op: OpNode):
    x = p.tensor(op.args[0])
    k = len(op.args[1])
    names = ("weight", "bias") if op.target.startswith("aten.layer_norm") else ("weight",)
    for i, name in enumerate(names, start=2):
        t = p.tensor(p.arg(op, i, name))
        if t is not None:
            for a, b in zip(t, x[-k:]):
                p.unify(a, b, op)
    return list(x)


@rule("aten.group_norm.default")
def _group_norm(p: _Pass, op: OpNode):
    """Channels = groups × channels per group, the groups outer (as for a grouped conv): a subnet keeps whole
    norm groups, each normalising the channels it always did (a global prefix would regroup them, and
    sorting by salience would change the maximal subnet). One group normalises a plain channel dim."""
    x = p.tensor(op.args[0])
    groups = int(op.args[1])
    for i, name in ((2, "weight"), (3, "bias")):
        t = p.tensor(p.arg(op, i, name))
        if t is not None:
            p.unify(t[0], x[1], op)
    if groups > 1:
        per = p.d.atom(_div(p.size(x[1]), groups), "split")
        p.unify(x[1], Prod((p.d.atom((groups, ()), "split"), per)), op)
    return list(x)


@rule("aten.prelu.default", "aten._prelu_kernel.default")
def _prelu(p: _Pass, op: OpNode):
    x, w = p.tensor(op.args[0]), p.tensor(op.args[1])
    if p.size(w[0]) != (1, ()):
        p.unify(w[0], x[1], op)
    return list(x)


@rule("aten.embedding.default")
def _embedding(p: _Pass, op: OpNode):
    w, idx = p.tensor(op.args[0]), p.tensor(op.args[1])
    p.block(w[0], f"embedding rows are addressed by index values ({op.name})")
    return list(idx) + [w[1]]


_RNN_GATES = {"aten.lstm.input": 4, "aten.gru.input": 3, "aten.rnn_tanh.input": 1, "aten.rnn_relu.input": 1}


@rule(*_RNN_GATES)
def _rnn(p: _Pass, op: OpNode):
    """``nn.LSTM``/``GRU``/``RNN``: one hidden size for every layer and direction; each weight's rows are
    the gates' blocks of hidden units, concatenated (a subnet keeps the same units of every gate); a
    layer's input is the previous layer's output (the directions concatenated). A unit whose gate rows
    are zero stays zero, so a subnet is the original with those units' weights zeroed. An LSTM with
    ``proj_size`` has a second group, the projected state (``w_hr``'s rows, ``w_hh``'s columns, the
    output and ``h``): a dropped one is the original with its ``w_hr`` row zeroed."""
    gates = _RNN_GATES[op.target]
    x = p.tensor(op.args[0])
    states = [p.tensor(h) for h in (op.args[1] if isinstance(op.args[1], list) else [op.args[1]])]
    params = [p.tensor(w) for w in op.args[2]]
    has_biases, layers, bidirectional, batch_first = op.args[3], op.args[4], op.args[7], op.args[8]
    directions = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    projected = op.target == "aten.lstm.input" and len(params) == layers * directions * (per + 1)
    per += projected
    if len(params) != layers * directions * per or any(w is None for w in params):
        raise _Unsupported("recurrent weights other than (w_ih, w_hh[, b_ih, b_hh][, w_hr]) per layer and direction")
    hidden = params[per - 1][1] if projected else params[1][1]  # w_hr: [proj, hidden]; w_hh: [gates × hidden, hidden]
    state = params[per - 1][0] if projected else hidden  # what h and the output hold
    why = f"layers × directions of {op.name}"
    layer_in = x[-1]
    for layer in range(layers):
        for direction in range(directions):
            w_ih, w_hh, *rest = params[(layer * directions + direction) * per:][:per]
            biases, w_hr = (rest[:-1], rest[-1]) if projected else (rest, None)
            _gate_rows(p, op, [w_ih, w_hh, *biases], hidden, gates)
            if w_hr is not None:
                p.unify(w_hr[0], state, op)
                p.unify(w_hr[1], hidden, op)
            p.unify(w_hh[1], state, op)
            p.unify(w_ih[1], layer_in, op)
        layer_in = Cat((state,) * directions) if directions > 1 else state
    for i, h in enumerate(states):  # LSTM: (h, c); c holds the hidden units
        p.block(h[0], why)
        p.unify(h[-1], hidden if i == 1 else state, op)
        p.unify(h[1], x[0 if batch_first else 1], op)
    out = list(x[:-1]) + [layer_in]
    return {"list": [out] + [list(h) for h in states]}


def _gate_rows(p: _Pass, op: OpNode, weights: list, hidden: Any, gates: int) -> None:
    """The rows of a recurrent weight or bias: each gate's block of the hidden units, concatenated."""
    for w in weights:
        p.unify(w[0], Cat((hidden,) * gates) if gates > 1 else hidden, op)


_CELL_GATES = {"aten.lstm_cell.default": 4, "aten.gru_cell.default": 3, "aten.rnn_tanh_cell.default": 1,
               "aten.rnn_relu_cell.default": 1}


@rule(*_CELL_GATES)
def _rnn_cell(p: _Pass, op: OpNode):
    """``nn.LSTMCell``/``GRUCell``/``RNNCell`` (one step, called in the user's own loop): the gates' rows
    as in ``_rnn``; the state(s) and the output have the hidden size, the input's last dim is ``w_ih``'s."""
    gates = _CELL_GATES[op.target]
    x, w_ih, w_hh = p.tensor(op.args[0]), p.tensor(op.args[2]), p.tensor(op.args[3])
    states = [p.tensor(h) for h in (op.args[1] if isinstance(op.args[1], list) else [op.args[1]])]
    biases = [b for b in (p.tensor(p.arg(op, 4, "b_ih")), p.tensor(p.arg(op, 5, "b_hh"))) if b is not None]
    if w_ih is None or w_hh is None or any(h is None for h in states):
        raise _Unsupported("recurrent cell without tensor weights and states")
    hidden = w_hh[1]
    _gate_rows(p, op, [w_ih, w_hh, *biases], hidden, gates)
    p.unify(w_ih[1], x[-1], op)
    out = list(x[:-1]) + [hidden]
    for h in states:
        p.broadcast(op, [h, out], [p.size(e) for e in out])
    return {"list": [out, list(out)]} if isinstance(op.meta, dict) and "list" in op.meta else out


@rule("aten.embedding_bag.default", "aten.embedding_bag.padding_idx", "aten._embedding_bag.default")
def _embedding_bag(p: _Pass, op: OpNode):
    """Bags of embedding rows reduced per bag: (bags × embedding dim, then index bookkeeping)."""
    w = p.tensor(op.args[0])
    why = f"embedding rows are addressed by index values ({op.name})"
    p.block(w[0], why)
    first = p.out_sizes(op, 0)
    out = [p.fresh(first[0], f"bags of {op.name}"), w[1]]
    return {"list": [out] + [[p.fresh(s, why) for s in value_sizes(m)] if value_sizes(m) else None
                             for m in op.meta["list"][1:]]}


@rule("aten.one_hot.default")
def _one_hot(p: _Pass, op: OpNode):
    return list(p.tensor(op.args[0])) + [p.fresh(p.out_sizes(op)[-1], f"one-hot classes ({op.name})")]


@rule("aten._weight_norm.default")
def _weight_norm(p: _Pass, op: OpNode):
    """``g * v / ||v||`` (``weight_norm`` parametrisations): the weight has ``v``'s dims, ``g`` is ``v``'s
    ``dim`` (size 1 elsewhere)."""
    v, g = list(p.tensor(op.args[0])), p.tensor(op.args[1])
    p.broadcast(op, [v, g], [p.size(e) for e in v])
    return v


@rule("aten.bucketize.Tensor")
def _bucketize(p: _Pass, op: OpNode):
    """The bin of each value among 1-D ``boundaries``: element-wise in the values; the boundaries are
    searched, not broadcast, so their dim stays whole."""
    x, boundaries = p.tensor(op.args[0]), p.tensor(op.args[1])
    p.block(boundaries[0], f"bin boundaries searched by {op.name}")
    return list(x)


@rule("aten.cdist.default", "aten._cdist_forward.default")
def _cdist(p: _Pass, op: OpNode):
    """Distances between the rows of two sets: the feature dim is contracted, batch dims broadcast."""
    a, b = p.tensor(op.args[0]), p.tensor(op.args[1])
    p.unify(a[-1], b[-1], op)
    out_sizes = p.out_sizes(op)
    return p.broadcast(op, [a[:-2], b[:-2]], out_sizes[:-2]) + [a[-2], b[-2]]


@rule("aten.grid_sampler.default", "aten.grid_sampler_2d.default", "aten.grid_sampler_3d.default")
def _grid_sampler(p: _Pass, op: OpNode):
    """Each channel sampled at the grid's points: (batch, channels, the grid's spatial dims); the input's
    spatial dims are addressed by the grid's values."""
    x, grid = p.tensor(op.args[0]), p.tensor(op.args[1])
    p.unify(x[0], grid[0], op)
    why = f"sampled at grid coordinates ({op.name})"
    for e in list(x[2:]) + [grid[-1]]:
        p.block(e, why)
    return [x[0], x[1]] + list(grid[1:-1])


@rule("aten.affine_grid_generator.default")
def _affine_grid(p: _Pass, op: OpNode):
    """Grid coordinates from a batch of affine matrices (their rows and columns fixed)."""
    theta = p.tensor(op.args[0])
    why = f"affine matrices of {op.name}"
    for e in theta[1:]:
        p.block(e, why)
    return [theta[0]] + [p.fresh(s, why) for s in p.out_sizes(op)[1:]]


@rule("aten.matmul.default", "aten.bmm.default", "aten.mm.default", "aten.mv.default", "aten.dot.default",
      "aten.vdot.default")
def _matmul(p: _Pass, op: OpNode):
    a, b = p.tensor(op.args[0]), p.tensor(op.args[1])
    if len(a) == 1 or len(b) == 1:  # a vector: contracted with the other's last (a) or second-last (b) dim
        p.unify(a[-1], b[0] if len(b) == 1 else b[-2], op)
        return list(a[:-1]) if len(b) == 1 else list(b[:-2]) + [b[-1]]
    p.unify(a[-1], b[-2], op)
    out_sizes = p.out_sizes(op)
    batch = p.broadcast(op, [a[:-2], b[:-2]], out_sizes[:-2])
    p.batched(a[:-2], b[:-2])
    return batch + [a[-2], b[-1]]


@rule("aten._grouped_mm.default", "transformers.grouped_mm_fallback.default")
def _grouped_mm(p: _Pass, op: OpNode):
    """Mixture-of-experts matmul (``torch._grouped_mm``; Hugging Face's fallback of it): rows of ``a`` (S, K),
    sorted by expert, each times its expert's matrix of ``b`` (E, K, N) -> (S, N), ``offs`` ending each
    expert's rows; or one matrix per batch entry, (E, M, K) × (E, K, N). K is contracted and N passes, one
    width for every expert; the experts are addressed by position (fixed)."""
    a, b = p.tensor(op.args[0]), p.tensor(p.arg(op, 1, "mat2"))
    offs, bias = p.tensor(p.arg(op, 2, "offs")), p.tensor(p.arg(op, 3, "bias"))
    if a is None or b is None or len(b) != 3 or len(a) not in (2, 3) or (len(a) == 2) != (offs is not None):
        raise _Unsupported("grouped matmul other than (S, K) × (E, K, N) with offsets or (E, M, K) × (E, K, N)")
    p.unify(a[-1], b[1], op)
    p.block(b[0], f"experts addressed by position ({op.name})")
    if offs is not None:
        p.unify(offs[0], b[0], op)
    else:
        p.unify(a[0], b[0], op)
    if bias is not None:
        p.unify(bias[-1], b[2], op)
        p.unify(bias[0], b[0], op)
    return list(a[:-1]) + [b[2]]


@rule("aten.addmm.default", "aten.baddbmm.default")
def _addmm(p: _Pass, op: OpNode):
    c, a, b = (p.tensor(x) for x in op.args[:3])
    p.unify(a[-1], b[-2], op)
    out = list(a[:-1]) + [b[-1]]
    if len(a) == 3:
        p.unify(a[0], b[0], op)
    return p.broadcast(op, [out, c], p.out_sizes(op))


@rule("aten.scaled_dot_product_attention.default")
def _sdpa(p: _Pass, op: OpNode):
    """With ``enable_gqa``, query heads come in groups, one per key/value head (head ``i`` reads key/value
    head ``i // group``): the query head dim is (key/value heads, query heads per group), both prunable."""
    q, k, v = (p.tensor(x) for x in op.args[:3])
    out_sizes = p.out_sizes(op)
    if op.kwargs.get("enable_gqa") and len(q) >= 3 and p.size(q[-3]) != p.size(k[-3]):
        per_group = size_div(p.size(q[-3]), p.size(k[-3]))
        if per_group is None:
            raise _Unsupported(f"{p.size(q[-3])} query heads are not a multiple of {p.size(k[-3])} key heads")
        p.unify(k[-3], v[-3], op)
        p.unify(q[-3], Prod((k[-3], p.d.atom(per_group, "derived"))), op)
        batch = p.broadcast(op, [q[:-3], k[:-3], v[:-3]], out_sizes[:-3]) + [q[-3]]
        p.batched(q[:-3], k[:-3])
        p.r.batched.append(k[-3])
    else:
        batch = p.broadcast(op, [q[:-2], k[:-2], v[:-2]], out_sizes[:-2])
        p.batched(q[:-2], k[:-2])
    p.unify(q[-1], k[-1], op)
    p.unify(k[-2], v[-2], op)
    mask = p.tensor(p.arg(op, 3, "attn_mask"))
    if mask is not None:
        p.broadcast(op, [list(batch) + [q[-2], k[-2]], mask], [p.size(e) for e in batch] + [p.size(q[-2]),
                                                                                         p.size(k[-2])])
    return batch + [q[-2], v[-1]]


@rule("aten.einsum.default")
def _einsum(p: _Pass, op: OpNode):
    """Dims of one letter unify (a size-1 one broadcasts); ``...`` stands for right-aligned broadcast dims;
    without ``->`` the output is ``...`` then the letters used once, sorted (torch's rule)."""
    eq = op.args[0].replace(" ", "")
    operands = [p.tensor(x) for x in op.args[1]]
    lhs, arrow, rhs = eq.partition("->")
    specs = lhs.split(",")
    if len(specs) != len(operands) or any(t is None for t in operands):
        raise _Unsupported("einsum operands do not match the equation")
    ellipsis = max((len(t) - len(spec) + 3 for spec, t in zip(specs, operands) if "..." in spec), default=0)

    def keys(spec: str, rank: int) -> list:
        if "..." not in spec:
            return list(spec)
        before, after = spec.split("...")
        n = rank - len(before) - len(after)
        return list(before) + [("...", ellipsis - n + i) for i in range(n)] + list(after)

    letters: dict[Any, Any] = {}
    users: dict[Any, int] = {}
    for spec, t in zip(specs, operands):
        for key, e in zip(keys(spec, len(t)), t):
            users[key] = users.get(key, 0) + 1
            if key not in letters or p.size(letters[key]) == (1, ()):
                letters[key] = e
            elif p.size(e) != (1, ()):
                p.unify(letters[key], e, op)
    if not arrow:
        once = sorted(ch for ch in set(lhs) - {",", "."} if lhs.count(ch) == 1)
        rhs = ("..." if ellipsis else "") + "".join(once)
    out_keys = keys(rhs, ellipsis + len(rhs) - 3) if "..." in rhs else list(rhs)
    if len(out_keys) != len(p.out_sizes(op)) or any(k not in letters for k in out_keys):
        raise _Unsupported("einsum output does not match the equation")
    p.r.batched.extend(letters[k] for k in out_keys if users[k] > 1 and p.size(letters[k]) != (1, ()))
    return [letters[k] for k in out_keys]


# ----- layout -----

@rule("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default", "aten.view_copy.default",
      "aten.flatten.using_ints", "aten.unflatten.int")
def _reshape(p: _Pass, op: OpNode):
    x = p.tensor(op.args[0])
    out_sizes = p.out_sizes(op)
    out = [p.d.atom(s, "split") for s in out_sizes]
    if any(not p.d.size(e)[0] for e in x):
        raise _Unsupported("empty tensor")
    p.unify(Prod(tuple(x)), Prod(tuple(out)), op)
    return out


@rule("aten.reshape_as.default", "aten.view_as.default")
def _reshape_as(p: _Pass, op: OpNode):
    """The output takes ``other``'s dims (its shape at run time, in every subnet); ``x``'s elements are
    reinterpreted row-major as for ``reshape``."""
    x, other = p.tensor(op.args[0]), p.tensor(op.args[1])
    if any(not p.d.size(e)[0] for e in x):
        raise _Unsupported("empty tensor")
    p.unify(Prod(tuple(x)), Prod(tuple(other)), op)
    return list(other)


@rule("aten.repeat_interleave.self_int")
def _repeat_interleave(p: _Pass, op: OpNode):
    """Each element repeated ``repeats`` times along ``dim``: the output dim is (that dim) × (the copies),
    row-major, so pruning the input dim keeps whole runs of copies. The copies of one element are the
    same, so their number may shrink too (Mamba-2's B and C repeated from groups to heads: fewer heads
    per group); a subnet repeats fewer times."""
    x = list(p.tensor(op.args[0]))
    dim = p.arg(op, 2, "dim")
    if dim is None:
        raise _Unsupported("repeat_interleave without a dim (flattens its input)")
    d = _norm_dim(dim, len(x))
    copies = p.copies((p.arg(op, 1, "repeats"), ()))
    repeated = p.d.atom(p.out_sizes(op)[d], "split")
    p.unify(Prod((x[d], copies)), repeated, op)
    x[d] = repeated
    return x


@rule("aten.permute.default")
def _permute(p: _Pass, op: OpNode):
    x = p.tensor(op.args[0])
    return [x[_norm_dim(d, len(x))] for d in op.args[1]]


@rule("aten.transpose.int", "aten.swapaxes.default")
def _transpose(p: _Pass, op: OpNode):
    x = list(p.tensor(op.args[0]))
    i, j = (_norm_dim(d, len(x)) for d in op.args[1:3])
    x[i], x[j] = x[j], x[i]
    return x


@rule("aten.t.default", "aten.matrix_H.default", "aten.numpy_T.default")
def _t(p: _Pass, op: OpNode):
    return list(reversed(p.tensor(op.args[0])))


@rule("aten.mT.default", "aten.mH.default", "aten.adjoint.default")
def _matrix_transpose(p: _Pass, op: OpNode):
    x = list(p.tensor(op.args[0]))
    x[-2], x[-1] = x[-1], x[-2]
    return x


@rule("aten.type_as.default", "aten.to.other")
def _type_as(p: _Pass, op: OpNode):
    """Only the dtype of the second tensor matters."""
    return list(p.tensor(op.args[0]))


@rule("aten.unsqueeze.default")
def _unsqueeze(p: _Pass, op: OpNode):
    x = list(p.tensor(op.args[0]))
    d = _norm_dim(op.args[1], len(x) + 1)
    return x[:d] + [p.fresh((1, ()), f"new axis from {op.name}")] + x[d:]


@rule("aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default")
def _squeeze(p: _Pass, op: OpNode):
    x = p.tensor(op.args[0])
    if len(op.args) > 1:
        ds = op.args[1] if isinstance(op.args[1], list) else [op.args[1]]
        ds = {_norm_dim(d, len(x)) for d in ds}
    else:
        ds = set(range(len(x)))
    return [e for i, e in enumerate(x) if not (i in ds and p.size(e) == (1, ()))]


def _note_copies(p: _Pass, op: OpNode, x: list, out_sizes: list[Size]) -> None:
    """Record the dims along which ``op`` (an expand of ``x``) repeats one slice: those ``x`` lacks or
    has size 1 in (``_Pass.copies_along``)."""
    lead = len(out_sizes) - len(x)
    p.copies_along[op.name] = {i for i, s in enumerate(out_sizes)
                               if s != (1, ()) and (i < lead or p.size(x[i - lead]) == (1, ()))}


@rule("aten.expand.default", "aten.broadcast_to.default")
def _expand(p: _Pass, op: OpNode):
    x = p.tensor(op.args[0])
    out_sizes = p.out_sizes(op)
    _note_copies(p, op, x, out_sizes)
    n = len(out_sizes)
    out = []
    for i, s in enumerate(out_sizes):
        j = i - (n - len(x))
        if j >= 0 and p.size(x[j]) == s:
            out.append(x[j])
        elif is_static(s):  # copies of one slice
            out.append(p.copies(s))
        elif (m := measured_dim(p.vals, op.args[1][i])) is not None and p.size(m) == s:
            out.append(m)  # copies, as many as another tensor's dim has entries: they shrink with it
        elif j < 0 or p.size(x[j]) == (1, ()):
            out.append(p.copies_sized_at_run_time(op, i, s))
        else:
            out.append(p.fresh(s, f"expanded by {op.name}"))
    return out


@rule("aten.expand_as.default")
def _expand_as(p: _Pass, op: OpNode):
    x, other, out_sizes = p.tensor(op.args[0]), p.tensor(op.args[1]), p.out_sizes(op)
    _note_copies(p, op, x, out_sizes)
    return p.broadcast(op, [x, other], out_sizes)


@rule("aten.repeat.default", "aten.tile.default")
def _repeat(p: _Pass, op: OpNode):
    x = p.tensor(op.args[0])
    reps = [1] * max(0, len(x) - len(op.args[1])) + list(op.args[1])  # tile pads its counts with leading ones
    out_sizes = p.out_sizes(op)
    lead = len(reps) - len(x)
    out = []
    for i, (r, s) in enumerate(zip(reps, out_sizes)):
        j = i - lead
        if j >= 0 and r == 1:
            out.append(x[j])
        elif (j < 0 or p.size(x[j]) == (1, ())) and is_static(s):  # copies of one slice, like expand
            out.append(p.copies(s))
        elif j >= 0 and p.size(x[j]) != (1, ()) and (count := size_div(s, p.size(x[j]))) is not None:
            # whole copies of the dim, one after another: (copy, index in the dim), the count fixed
            out.append(Prod((p.fresh(count, f"repeat count of {op.name}"), x[j])))
        else:
            if j >= 0:
                p.block(x[j], f"repeated by {op.name}")
            out.append(p.fresh(s, f"repeated by {op.name}"))
    return out


def _drop_dim(p: _Pass, op: OpNode, dim: int, why: str) -> list:
    x = p.tensor(op.args[0])
    d = _norm_dim(dim, len(x))
    p.block(x[d], why)
    return list(x[:d]) + list(x[d + 1:])


@rule("aten.select.int")
def _select(p: _Pass, op: OpNode):
    return _drop_dim(p, op, op.args[1], f"indexed by position ({op.name})")


@rule("aten.slice.Tensor", "aten.narrow.default")
def _slice(p: _Pass, op: OpNode):
    """A slice with constant bounds cuts its dim into segments, as a split does (``x[..., :d]``,
    ``x[..., d:2 * d]`` of a fused projection): the output is the middle one. Other slices (a step,
    symbolic bounds) rewrite the dim by position."""
    x = list(p.tensor(op.args[0]))
    d = _norm_dim(p.arg(op, 1, "dim", 0), len(x))
    s, n = p.out_sizes(op)[d], p.size(x[d])
    if n == s:
        return x
    bounds = slice_bounds(op, n[0]) if is_static(n) and is_static(s) else None
    if bounds is None or bounds[1] - bounds[0] != s[0]:
        p.new_dim(x, d, op, f"sliced by position ({op.name})")
        return x
    start, end = bounds
    mid = p.d.atom(s, "split")
    segments = ([p.d.atom((start, ()), "split")] if start else []) + [mid] + \
        ([p.d.atom((n[0] - end, ()), "split")] if end < n[0] else [])
    p.unify(x[d], Cat(tuple(segments)), op)
    x[d] = mid
    return x


@rule("aten.index.Tensor")
def _index(p: _Pass, op: OpNode):
    """``x[i0, i1, ...]``: an integer index addresses one dim, a boolean mask as many as it has (``h[keep]``
    with ``keep`` of ``h``'s first two dims gives ``(picked rows, channels)``); the addressed dims are
    fixed, the others pass through, and the indices' result dims are new."""
    x = p.tensor(op.args[0])
    indices = op.args[1]
    out_sizes = p.out_sizes(op)
    first = _index_offsets(p, indices)
    pos = [i for i, t in enumerate(indices) if t is not None]
    why = f"indexed by values ({op.name})"
    if len(pos) == 1 and first[pos[0] + 1] - first[pos[0]] == 1 and \
            (run := _constant_run(p, indices[pos[0]], p.size(x[first[pos[0]]]))) is not None:
        return _index_run(p, op, list(x), first[pos[0]], *run)
    addressed = {d for i in pos for d in range(first[i], first[i + 1])}
    for d in addressed:
        p.block(x[d], why)
    kept = [e for d, e in enumerate(x) if d not in addressed]
    n_new = len(out_sizes) - len(kept)
    if pos == list(range(pos[0], pos[-1] + 1)):  # adjacent indices: their result stands where they were
        before = list(x[:first[pos[0]]])
        after = list(x[first[pos[-1] + 1]:])
        return before + [p.fresh(s, why) for s in out_sizes[len(before):len(before) + n_new]] + after
    return [p.fresh(s, why) for s in out_sizes[:n_new]] + kept


def _index_offsets(p: _Pass, indices: list) -> list[int]:
    """The first dim of the indexed tensor that each entry of ``indices`` addresses, and after them the dim
    past the last: a boolean mask addresses as many dims as it has, an integer index (or None, a full
    slice) one."""
    def addressed(index: Any) -> int:
        node = p.producers.get(index.get("node")) if isinstance(index, dict) else None
        meta = getattr(node, "meta", None)
        dims = p.tensor(index)
        return len(dims) if isinstance(meta, dict) and meta.get("dtype") in ("bool", "uint8") and dims else 1
    return list(itertools.accumulate((addressed(t) for t in indices), initial=0))


_CONSTANT_PASSING = ("aten.lift_fresh_copy.default", "aten.clone.default", "aten.detach.default", "aten.alias.default")


def _constant_run(p: _Pass, index: Any, size: Size) -> tuple[int, int, bool] | None:
    """``(start, end, from_end)`` when ``index`` is a captured constant listing consecutive positions of a
    static dim of ``size``, all counted from its start or all from its end (``x[..., [-2], :]``, Falcon's
    key head)."""
    node = p.producers.get(index.get("node")) if isinstance(index, dict) else None
    while isinstance(node, OpNode) and node.target in _CONSTANT_PASSING:
        node = p.producers.get(next(iter(_refs(node.args[:1])), None))
    values = p.ir.tensors.get(node.target) if isinstance(node, Placeholder) and node.kind == CONST else None
    if values is None or values.dim() != 1 or not len(values) or values.is_floating_point() \
            or values.dtype == torch.bool or not is_static(size):
        return None
    v = values.tolist()
    if v != list(range(v[0], v[0] + len(v))) or not (v[0] >= 0 or v[-1] < 0) or not -size[0] <= v[0] < size[0]:
        return None
    return (v[0], v[-1] + 1, False) if v[0] >= 0 else (size[0] + v[0], size[0] + v[-1] + 1, True)


def _index_run(p: _Pass, op: OpNode, x: list, d: int, start: int, end: int, from_end: bool) -> list:
    """A constant index of consecutive positions cuts its dim into segments like a constant slice. The
    index is not rewritten, so the taken segment stays fixed, and so do the ones it counts from (before
    it for positions from the start, after it for positions from the end); the others may shrink."""
    n = p.size(x[d])[0]
    before = p.d.atom((start, ()), "split") if start else None
    mid = p.d.atom((end - start, ()), "split")
    after = p.d.atom((n - end, ()), "split") if end < n else None
    p.unify(x[d], Cat(tuple(e for e in (before, mid, after) if e is not None)), op)
    for e in (mid, after if from_end else before):
        if e is not None:
            p.block(e, f"indexed by constant positions ({op.name})")
    x[d] = mid
    return x


@rule("aten.gather.default")
def _gather(p: _Pass, op: OpNode):
    """``out[..., j, ...] = x[..., index[..., j, ...], ...]`` along ``dim``: the output has the index's dims,
    the other dims of ``x`` pair with the index's position by position."""
    x, index = p.tensor(op.args[0]), p.tensor(op.args[2])
    d = _norm_dim(op.args[1], len(x))
    why = f"addressed by index values ({op.name})"
    p.block(x[d], why)
    for i, (a, b) in enumerate(zip(x, index)):
        if i == d:
            continue
        if p.size(a) == p.size(b):
            p.unify(a, b, op)
        else:  # a partial gather along this dim
            p.block(a, why)
            p.block(b, why)
    return list(index)


_INDEXED_WRITES = ("index_add", "index_copy", "index_reduce", "index_fill", "scatter", "scatter_add", "scatter_reduce")


@rule(*(f"aten.{name}{inplace}.{overload}" for name in _INDEXED_WRITES for inplace in ("", "_")
        for overload in ("default", "two", "src", "value", "reduce", "value_reduce", "int_Scalar", "int_Tensor")))
def _indexed_write(p: _Pass, op: OpNode):
    """``self`` with ``source`` written (added, reduced) at index values along ``dim`` (message passing's
    ``index_add_``, ``scatter_add``): that dim of each is addressed by values and fixed; the other dims of
    ``self``, ``source`` and a ``scatter`` index pair position by position (blocked where a partial index
    or source covers only part of ``self``). The output is ``self``."""
    x = list(p.tensor(op.args[0]))
    d = _norm_dim(op.args[1], len(x))
    why = f"addressed by index values ({op.name})"
    index, source = p.tensor(op.args[2]), p.tensor(op.args[3]) if len(op.args) > 3 else None
    scatter = op.target.split(".")[1].startswith("scatter")
    paired = [t for t in ((index if scatter else None), source) if t is not None and len(t) == len(x)]
    if not scatter and index is not None:
        for e in index:
            p.block(e, why)
    if source is not None and len(source) != len(x) and len(source) > 0:
        raise _Unsupported("the source's rank differs from self's")
    for i, e in enumerate(x):
        if i == d:
            for t in [x, *paired]:
                p.block(t[i], why)
        elif all(p.size(t[i]) == p.size(e) for t in paired):
            for t in paired:
                p.unify(e, t[i], op)
        else:  # a partial write along this dim
            for t in [x, *paired]:
                p.block(t[i], why)
    return x


@rule("aten.index_put.default", "aten.index_put_.default", "aten._index_put_impl_.default")
def _index_put(p: _Pass, op: OpNode):
    """``self[indices] = values`` (or ``+=``): the indexed dims are addressed by values and fixed; where they
    lead (``x[mask] = v``, ``out[rows] += v``), the values' trailing dims pair with self's remaining ones."""
    x = list(p.tensor(op.args[0]))
    indices, values = op.args[1], p.tensor(op.args[2])
    why = f"addressed by index values ({op.name})"
    first = _index_offsets(p, indices)
    pos = [i for i, t in enumerate(indices) if t is not None]
    for i in pos:
        for d in range(first[i], first[i + 1]):
            p.block(x[d], why)
    rest = x[first[-1]:] if pos == list(range(len(pos))) else []
    for j, v in enumerate(reversed(values or [])):
        if j < len(rest) and p.size(v) == p.size(rest[-1 - j]):
            p.unify(v, rest[-1 - j], op)
        elif p.size(v) != (1, ()):
            p.block(v, why)
    return x


@rule("aten.masked_scatter.default", "aten.masked_scatter_.default")
def _masked_scatter(p: _Pass, op: OpNode):
    """``x.masked_scatter(mask, source)``: ``source``'s elements fill, in row-major order, the positions
    where ``mask`` is true (a vision-language model puts its image features at the image tokens' rows).
    A mask with one flag per row of the last dim (size 1 there, or copies of one: ``m.unsqueeze(-1)
    .expand_as(x)``) fills whole rows, so ``source``'s last dim is ``x``'s and both shrink alike (its
    other dims count the rows the mask picks: fixed); any other mask is unsupported."""
    x, mask, source = p.tensor(op.args[0]), p.tensor(op.args[1]), p.tensor(op.args[2])
    per_row = bool(mask) and (p.size(mask[-1]) == (1, ())
                              or len(mask) - 1 in p.copies_along.get(op.args[1]["node"], ()))
    if not x or not source or not per_row or p.size(source[-1]) != p.size(x[-1]):
        raise _Unsupported("masked_scatter whose mask may differ along the last dim")
    out = p.broadcast(op, [x, mask], p.out_sizes(op))
    p.unify(source[-1], out[-1], op)
    for e in source[:-1]:
        p.block(e, f"rows picked by the mask of {op.name}")
    return out


@rule("aten.nonzero.default", "aten.where.default", "aten.argwhere.default", "aten.nonzero_static.default")
def _nonzero(p: _Pass, op: OpNode):
    """Positions of the nonzero elements (``torch.where(mask)``): the mask's dims are addressed by them."""
    why = f"positions found by {op.name}"
    for e in p.tensor(op.args[0]) or []:
        p.block(e, why)
    return p.fresh_out(op, why)


@rule("aten.index_select.default")
def _index_select(p: _Pass, op: OpNode):
    x = list(p.tensor(op.args[0]))
    d = _norm_dim(op.args[1], len(x))
    p.new_dim(x, d, op, f"indexed by values ({op.name})")
    return x


@rule("aten.cat.default", "aten.concat.default", "aten.concatenate.default")
def _cat(p: _Pass, op: OpNode):
    ts = [t for t in (p.tensor(a) for a in op.args[0]) if t is not None]
    out_sizes = p.out_sizes(op)
    ts = [t for t in ts if len(t) == len(out_sizes)]  # legacy: empty 1-D tensors are skipped by cat
    d = _norm_dim(p.arg(op, 1, "dim", 0), len(out_sizes))
    for t in ts[1:]:
        for i in range(len(out_sizes)):
            if i != d:
                p.unify(ts[0][i], t[i], op)
    parts = [t[d] for t in ts]
    if all(is_static(p.size(e)) for e in parts):
        cat_dim = Cat(tuple(parts)) if len(parts) > 1 else parts[0]
    else:
        why = f"concatenated along a dynamic dim ({op.name})"
        for e in parts:
            p.block(e, why)
        cat_dim = p.fresh(out_sizes[d], why)
    return [cat_dim if i == d else ts[0][i] for i in range(len(out_sizes))]


@rule("aten.stack.default")
def _stack(p: _Pass, op: OpNode):
    ts = [p.tensor(a) for a in op.args[0]]
    d = _norm_dim(p.arg(op, 1, "dim", 0), len(ts[0]) + 1)
    for t in ts[1:]:
        for a, b in zip(ts[0], t):
            p.unify(a, b, op)
    return list(ts[0][:d]) + [p.fresh((len(ts), ()), f"stacked by {op.name}")] + list(ts[0][d:])


@rule("aten.outer.default")
def _outer(p: _Pass, op: OpNode):
    """``a[i] * b[j]`` of two vectors (sine-cosine position tables, rotary frequencies)."""
    a, b = p.tensor(op.args[0]), p.tensor(op.args[1])
    return [a[0], b[0]]


@rule("aten.broadcast_tensors.default")
def _broadcast_tensors(p: _Pass, op: OpNode):
    """Every output has the inputs' broadcast shape: equal-sized dims unify, size-1 dims are copied."""
    ts = [p.tensor(a) for a in op.args[0]]
    out = p.broadcast(op, [t for t in ts if t is not None], p.out_sizes(op, 0))
    return {"list": [list(out) for _ in ts]}


_REDUCTION_AT = {"aten.mse_loss.default": 2, "aten.l1_loss.default": 2, "aten.smooth_l1_loss.default": 2,
                 "aten.huber_loss.default": 2, "aten.binary_cross_entropy.default": 3,
                 "aten.binary_cross_entropy_with_logits.default": 4}


@rule(*_REDUCTION_AT)
def _elementwise_loss(p: _Pass, op: OpNode):
    """Losses of input against target element by element (a VQ commitment loss computed in forward), with
    their weights broadcast: the operands' dims unify; reduced to a scalar unless ``reduction`` is none."""
    inputs, unreduced = _tensor_inputs(p, op), _reduction(op) == 0
    out = p.broadcast(op, inputs, p.out_sizes(op) if unreduced else _broadcast_sizes(p, inputs))
    return out if unreduced else []


def _reduction(op: OpNode) -> int:
    at = _REDUCTION_AT[op.target]
    return op.kwargs.get("reduction", op.args[at] if len(op.args) > at else 1)


def _broadcast_sizes(p: _Pass, inputs: list[list]) -> list[Size]:
    """The broadcast shape of ``inputs`` (right-aligned, size 1 giving way)."""
    n = max(len(x) for x in inputs)
    sizes: list[Size] = []
    for i in range(n):
        at = [p.size(x[i - (n - len(x))]) for x in inputs if i - (n - len(x)) >= 0]
        sizes.append(next((s for s in at if s != (1, ())), at[0]))
    return sizes


@rule("aten.meshgrid.default", "aten.meshgrid.indexing")
def _meshgrid(p: _Pass, op: OpNode):
    """Grids over 1-D tensors: every output's dims are the inputs' (``xy``: the first two swapped)."""
    ts = [p.tensor(a) for a in op.args[0]]
    if any(t is None or len(t) > 1 for t in ts):
        raise _Unsupported("meshgrid of tensors that are not 1-D")
    dims = [t[0] if t else p.fresh((1, ()), f"0-d input of {op.name}") for t in ts]
    if p.arg(op, 1, "indexing", "ij") == "xy" and len(dims) > 1:
        dims[0], dims[1] = dims[1], dims[0]
    return {"list": [list(dims) for _ in ts]}


@rule("aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default", "aten.tensor_split.sections",
      "aten.tensor_split.indices", "aten.split.sizes")
def _split(p: _Pass, op: OpNode):
    x = p.tensor(op.args[0])
    metas = op.meta["list"]
    dim_arg = p.arg(op, 2, "dim", 0)
    d = _norm_dim(dim_arg, len(x))
    pieces = [value_sizes(m)[d] for m in metas]
    if not all(is_static(s) for s in pieces) or not is_static(p.size(x[d])):  # a batch, a sequence: fixed
        p.block(x[d], f"split along a dynamic dim by {op.name}")
        return {"list": [[p.fresh(s, f"piece of a dynamic dim split by {op.name}") if i == d else e
                          for i, e in enumerate(x)] for s in pieces]}
    if any(s[0] == 0 for s in pieces):
        raise _Unsupported("split into an empty piece")
    segs = [p.d.atom(s, "split") for s in pieces]
    p.unify(x[d], Cat(tuple(segs)) if len(segs) > 1 else segs[0], op)
    return {"list": [[segs[k] if i == d else e for i, e in enumerate(x)] for k in range(len(segs))]}


@rule("aten.unbind.int")
def _unbind(p: _Pass, op: OpNode):
    x = p.tensor(op.args[0])
    d = _norm_dim(p.arg(op, 1, "dim", 0), len(x))
    p.block(x[d], f"unbound by position ({op.name})")
    rest = list(x[:d]) + list(x[d + 1:])
    return {"list": [rest for _ in op.meta["list"]]}


@rule("operator.getitem")
def _getitem(p: _Pass, op: OpNode):
    src = p.vals.get(op.args[0]["node"]) if isinstance(op.args[0], dict) else None
    if not isinstance(src, dict):
        raise _Unsupported("getitem on a non-tuple value")
    for dim, why in src.get("fixed_if_read", {}).get(op.args[1], []):
        p.block(dim, why)
    return src["list"][op.args[1]]


def _spatial_rule(nspatial: int):
    def fn(p: _Pass, op: OpNode):
        x = p.tensor(op.args[0])
        out_sizes = p.out_sizes(op, 0) if isinstance(op.meta, dict) and "list" in op.meta else p.out_sizes(op)
        lead = list(x[:len(x) - nspatial])
        for s in x[len(lead):]:
            p.block(s, f"spatial size read by {op.name}")
        out = lead + [p.fresh(s, f"spatial size computed by {op.name}") for s in out_sizes[len(lead):]]
        if isinstance(op.meta, dict) and "list" in op.meta:
            return {"list": [out, out]}
        return out
    return fn


def _unpool_rule(nspatial: int):
    """``max_unpool{2,3}d(input, indices, output_size, ...)``: the indices (from ``max_pool*_with_indices``)
    point into each (batch, channel) plane of the output, so their leading dims are the input's."""
    def fn(p: _Pass, op: OpNode):
        x, indices = p.tensor(op.args[0]), p.tensor(op.args[1])
        for a, b in zip(x, indices):
            p.unify(a, b, op)
        return _spatial_rule(nspatial)(p, op)
    return fn


RULES["aten.max_unpool2d.default"], RULES["aten.max_unpool3d.default"] = _unpool_rule(2), _unpool_rule(3)

for _n in (1, 2, 3):
    for _name in (f"max_pool{_n}d", f"avg_pool{_n}d", f"adaptive_avg_pool{_n}d", f"adaptive_max_pool{_n}d",
                  f"max_pool{_n}d_with_indices", f"lp_pool{_n}d", f"upsample_nearest{_n}d",
                  f"_upsample_nearest_exact{_n}d", f"upsample_bilinear{_n}d" if _n == 2 else "",
                  "upsample_linear1d" if _n == 1 else "", "upsample_trilinear3d" if _n == 3 else "",
                  "upsample_bicubic2d" if _n == 2 else "", "_upsample_bilinear2d_aa" if _n == 2 else "",
                  "_upsample_bicubic2d_aa" if _n == 2 else ""):
        if _name:
            for _ov in ("default", "vec"):
                RULES[f"aten.{_name}.{_ov}"] = _spatial_rule(_n)


@rule("aten.mean.dim", "aten.sum.dim_IntList", "aten.amax.default", "aten.amin.default", "aten.var.correction",
      "aten.std.correction", "aten.var.dim", "aten.std.dim", "aten.logsumexp.default", "aten.mean.default",
      "aten.sum.default", "aten.max.dim", "aten.min.dim", "aten.var_mean.correction", "aten.norm.ScalarOpt_dim",
      "aten.linalg_vector_norm.default", "aten.linalg_norm.default", "aten.argmax.default", "aten.argmin.default",
      "aten.prod.dim_int", "aten.all.dim", "aten.any.dim", "aten.max.default", "aten.min.default",
      "aten.all.default", "aten.any.default", "aten._is_all_true.default", "aten._is_any_true.default")
def _reduce(p: _Pass, op: OpNode):
    x = p.tensor(op.args[0])
    multi = isinstance(op.meta, dict) and "list" in op.meta
    out_sizes = p.out_sizes(op, 0) if multi else p.out_sizes(op)
    packet, overload = op.target.split(".")[1:3]
    if packet in ("mean", "sum", "max", "min", "all", "any", "_is_all_true", "_is_any_true") and overload == "default":
        dims = None  # over every dim (``_is_all_true``: what ``torch._check_tensor_all(mask)`` records)
    elif packet in ("linalg_vector_norm", "linalg_norm", "norm"):
        dims = p.arg(op, 2, "dim")
    else:
        dims = p.arg(op, 1, "dim")
    dims = [dims] if isinstance(dims, int) else list(dims or []) or list(range(len(x)))
    dims = {_norm_dim(d, len(x)) for d in dims}
    if packet in ("argmax", "argmin"):
        for d in dims:
            p.block(x[d], f"reduced to an index by {op.name}")
    keep = len(out_sizes) == len(x)
    out = []
    for i, e in enumerate(x):
        if i in dims:
            if keep:
                out.append(p.fresh((1, ()), f"reduced by {op.name}"))
        else:
            out.append(e)
    if len(out) != len(out_sizes):
        raise _Unsupported("unexpected reduction output rank")
    if not multi:
        return out
    # (values, indices): only a read of the indices fixes the reduced dims (CBAM's ``x.max(1)[0]`` does not)
    return {"list": [out, out], "fixed_if_read": {1: [(x[d], f"reduced to an index by {op.name}") for d in dims]}}


def _dims_blocked(index_args: tuple[int, ...]):
    """Ops whose listed dims may not be pruned (order matters along them); others pass through."""
    def fn(p: _Pass, op: OpNode):
        x = p.tensor(op.args[0])
        ds = []
        for i in index_args:
            v = p.arg(op, i, "")
            ds.extend(v if isinstance(v, list) else [v] if isinstance(v, int) else [])
        for d in ds:
            p.block(x[_norm_dim(d, len(x))], f"positions matter along this dim ({op.name})")
        if p.out_sizes(op) != [p.size(e) for e in x]:
            raise _Unsupported("output shape differs from input")
        return list(x)
    return fn


@rule("aten.sort.default", "aten.sort.stable", "aten.argsort.default", "aten.argsort.stable", "aten.msort.default",
      "aten.topk.default")
def _sort(p: _Pass, op: OpNode):
    """Values (and indices) ordered along one dim: that dim is blocked (topk: a new one of k); others pass."""
    x = list(p.tensor(op.args[0]))
    at = 2 if op.target == "aten.topk.default" else 1
    d = _norm_dim(0 if op.target == "aten.msort.default" else p.arg(op, at, "dim", -1), len(x))
    why = f"positions matter along this dim ({op.name})"
    p.block(x[d], why)
    if op.target == "aten.topk.default":
        x[d] = p.fresh(p.out_sizes(op, 0)[d], why)
    if isinstance(op.meta, dict) and "list" in op.meta:  # values and indices
        return {"list": [list(x), list(x)]}
    return x


_FFT_KINDS = ("fft", "ifft", "rfft", "irfft", "hfft", "ihfft")


@rule(*(f"aten.fft_{kind}{suffix}.default" for kind in _FFT_KINDS for suffix in ("", "2", "n")),
      "aten._fft_r2c.default", "aten._fft_c2r.default", "aten._fft_c2c.default", "aten.fft_fftshift.default",
      "aten.fft_ifftshift.default")
def _fft(p: _Pass, op: OpNode):
    """Fourier transforms mix all positions along the transformed dims: those are blocked (and where the
    output size differs, a new fixed dim); the other dims pass through (GFNet's channels, FNet's batch).
    Without ``dim``: the last one (``fft``), the last two (``fft2``), the last ``len(s)`` or all
    (``fftn``, ``fftshift``)."""
    x = list(p.tensor(op.args[0]))
    packet = op.target.split(".")[1]
    public = not packet.startswith("_fft") and not packet.endswith("shift")  # (self, n or s, dim, norm)
    dims = p.arg(op, 2 if public else 1, "dim")
    if dims is None and public and packet.endswith("2"):
        dims = [-2, -1]
    elif dims is None and public and not packet.endswith("n"):
        dims = [-1]
    elif dims is None:
        sizes = p.arg(op, 1, "s") if public else None
        dims = list(range(len(x) - len(sizes) if sizes is not None else 0, len(x)))
    dims = [dims] if isinstance(dims, int) else list(dims)
    out_sizes = p.out_sizes(op)
    if len(out_sizes) != len(x):
        raise _Unsupported("output rank differs from the input's")
    why = f"a Fourier transform mixes the positions along this dim ({op.name})"
    for d in (_norm_dim(d, len(x)) for d in dims):
        p.block(x[d], why)
        if out_sizes[d] != p.size(x[d]):
            x[d] = p.fresh(out_sizes[d], why)
    return x


@rule("aten.stft.default", "aten.stft.center")
def _stft(p: _Pass, op: OpNode):
    """Short-time Fourier transform of the last dim into (frequencies, frames[, real/imag]): the signal
    dim and the window are blocked, batch dims pass through."""
    x = list(p.tensor(op.args[0]))
    why = f"signal positions of {op.name}"
    p.block(x[-1], why)
    window = p.tensor(p.arg(op, 4, "window"))
    for e in window or []:
        p.block(e, why)
    return x[:-1] + [p.fresh(s, why) for s in p.out_sizes(op)[len(x) - 1:]]


@rule("aten.view_as_complex.default")
def _view_as_complex(p: _Pass, op: OpNode):
    """``[..., 2]`` real pairs viewed as ``[...]`` complex numbers."""
    x = p.tensor(op.args[0])
    p.block(x[-1], f"real and imaginary parts ({op.name})")
    return list(x[:-1])


@rule("aten.view_as_real.default")
def _view_as_real(p: _Pass, op: OpNode):
    return list(p.tensor(op.args[0])) + [p.fresh((2, ()), f"real and imaginary parts ({op.name})")]


@rule("aten.diff.default")
def _diff(p: _Pass, op: OpNode):
    """``diff(x, n, dim, prepend, append)``: differences along ``dim`` (blocked; its size changes), other
    dims pass through and are shared with ``prepend`` / ``append``."""
    x = list(p.tensor(op.args[0]))
    d = _norm_dim(p.arg(op, 2, "dim", -1), len(x))
    why = f"positions matter along this dim ({op.name})"
    for extra in (p.tensor(p.arg(op, 3, "prepend")), p.tensor(p.arg(op, 4, "append"))):
        for i, e in enumerate(extra or []):
            if i == d:
                p.block(e, why)
            else:
                p.unify(x[i], e, op)
    p.block(x[d], why)
    x[d] = p.fresh(p.out_sizes(op)[d], why)
    return x


RULES["aten.roll.default"] = _dims_blocked((2,))
RULES["aten.flip.default"] = _dims_blocked((1,))
RULES["aten.cumsum.default"] = _dims_blocked((1,))
RULES["aten.cumprod.default"] = _dims_blocked((1,))


@rule("aten.pad.default", "aten.constant_pad_nd.default", "aten.reflection_pad1d.default",
      "aten.reflection_pad2d.default", "aten.replication_pad1d.default", "aten.replication_pad2d.default",
      "aten.reflection_pad3d.default", "aten.replication_pad3d.default")
def _pad(p: _Pass, op: OpNode):
    """Constant padding of a static dim appends fixed segments around it (CIFAR ResNets' option-A
    shortcut pads channels with zeros: the stream keeps its own channels prunable); other padding
    (reflect, replicate, cropping, symbolic sizes) rewrites the dim by position."""
    x = list(p.tensor(op.args[0]))
    pad = op.args[1]
    constant = op.target == "aten.constant_pad_nd.default" or (
        op.target == "aten.pad.default" and p.arg(op, 2, "mode", "constant") == "constant")
    for k in range(len(pad) // 2):
        d = len(x) - 1 - k
        before, after = pad[2 * k], pad[2 * k + 1]
        if not (before or after):
            continue
        if (constant and isinstance(before, int) and isinstance(after, int) and before >= 0 and after >= 0
                and is_static(p.size(x[d]))):
            why = f"padding added by {op.name}"
            x[d] = Cat(tuple([p.fresh((before, ()), why)] if before else []) + (x[d],)
                       + tuple([p.fresh((after, ()), why)] if after else []))
        else:
            p.new_dim(x, d, op, f"padded by {op.name}")
    return x


@rule("aten.unfold.default")
def _unfold(p: _Pass, op: OpNode):
    """``x.unfold(dim, size, step)``: windows along ``dim`` (fixed), a new trailing dim of ``size``."""
    x = list(p.tensor(op.args[0]))
    d = _norm_dim(op.args[1], len(x))
    p.new_dim(x, d, op, f"cut into windows by {op.name}")
    return x + [p.fresh(p.out_sizes(op)[-1], f"window of {op.name}")]


@rule("aten.im2col.default")
def _im2col(p: _Pass, op: OpNode):
    """``F.unfold``: (…, C, H, W) -> (…, C × kernel positions, windows), channels the outer factor."""
    x = p.tensor(op.args[0])
    out_sizes = p.out_sizes(op)
    for e in x[-2:]:
        p.block(e, f"spatial size read by {op.name}")
    kernel = p.fresh((math.prod(op.args[1]), ()), f"kernel positions of {op.name}")
    cols = p.d.atom(out_sizes[-2], "split")
    p.unify(Prod((x[-3], kernel)), cols, op)
    return list(x[:-3]) + [cols, p.fresh(out_sizes[-1], f"windows of {op.name}")]


@rule("aten.col2im.default")
def _col2im(p: _Pass, op: OpNode):
    """``F.fold``: (…, C × kernel positions, windows) -> (…, C, H, W), the inverse of ``im2col``."""
    x = p.tensor(op.args[0])
    out_sizes = p.out_sizes(op)
    p.block(x[-1], f"windows summed by {op.name}")
    channels = p.d.atom(out_sizes[-3], "split")
    p.unify(x[-2], Prod((channels, p.fresh((math.prod(op.args[2]), ()), f"kernel positions of {op.name}"))), op)
    return list(x[:-2]) + [channels] + [p.fresh(s, f"spatial size computed by {op.name}") for s in out_sizes[-2:]]


@rule("aten.pixel_shuffle.default", "aten.pixel_unshuffle.default")
def _pixel_shuffle(p: _Pass, op: OpNode):
    """``pixel_shuffle``: (…, C × r², H, W) -> (…, C, H·r, W·r), the output channels the outer factor of the
    input's; ``pixel_unshuffle`` the inverse, the input channels the outer factor of the output's."""
    x = p.tensor(op.args[0])
    out_sizes = p.out_sizes(op)
    for e in x[-2:]:
        p.block(e, f"spatial size read by {op.name}")
    channels = p.d.atom(out_sizes[-3], "split")
    sub_pixels = p.fresh((op.args[1] ** 2, ()), f"sub-pixels of {op.name}")
    if op.target == "aten.pixel_shuffle.default":
        p.unify(x[-3], Prod((channels, sub_pixels)), op)
    else:
        p.unify(Prod((x[-3], sub_pixels)), channels, op)
    return list(x[:-3]) + [channels] + [p.fresh(s, f"spatial size computed by {op.name}") for s in out_sizes[-2:]]


@rule("aten.channel_shuffle.default", "aten.native_channel_shuffle.default")
def _channel_shuffle(p: _Pass, op: OpNode):
    """``nn.ChannelShuffle``: (N, groups × per group, …) -> (N, per group × groups, …), the hand-written
    view / transpose / reshape in one op, factored alike: a subnet may keep fewer groups (``groups`` is
    rewritten) or fewer channels per group."""
    x = list(p.tensor(op.args[0]))
    n_groups = p.arg(op, 1, "groups")
    if len(x) < 2 or not isinstance(n_groups, int):
        raise _Unsupported("channel_shuffle without a channel dim or with a symbolic number of groups")
    groups = p.d.atom((n_groups, ()), "split")
    per = p.d.atom(_div(p.size(x[1]), n_groups), "split")
    p.unify(x[1], Prod((groups, per)), op)
    x[1] = p.d.atom(p.out_sizes(op)[1], "split")
    p.unify(x[1], Prod((per, groups)), op)
    return x


@rule("aten.histc.default")
def _histc(p: _Pass, op: OpNode):
    """A histogram of every element: the input's dims are reduced away, the bins are new (fixed)."""
    return p.fresh_out(op, f"bins of {op.name}")


@rule("aten.tril.default", "aten.triu.default")
def _triangular(p: _Pass, op: OpNode):
    x = p.tensor(op.args[0])
    for e in x[-2:]:
        p.block(e, f"triangular mask ({op.name})")
    return list(x)


def _create(p: _Pass, op: OpNode):
    return p.fresh_out(op, f"created by {op.name}")


for _t_name in ("arange.default", "arange.start", "arange.start_step", "empty_strided.default",
                "scalar_tensor.default", "rand.default", "randn.default", "randint.default", "randint.low", "randperm.default",
                "linspace.default", "eye.default"):
    RULES[f"aten.{_t_name}"] = _create

# tensors of one value, and where their size list is (``subnet`` rewrites it)
FILLED = {"aten.zeros.default": 0, "aten.ones.default": 0, "aten.full.default": 0, "aten.empty.memory_format": 0,
          "aten.new_zeros.default": 1, "aten.new_ones.default": 1, "aten.new_full.default": 1,
          "aten.new_empty.default": 1}


@rule(*FILLED)
def _filled(p: _Pass, op: OpNode):
    """Every position holds the same value (a state initialised with zeros): a dim of constant size may
    shrink like a copied one; a subnet creates the tensor at its new size."""
    at = FILLED[op.target]
    sizes = op.args[at] if at < len(op.args) and isinstance(op.args[at], list) else []
    out = []
    for i, s in enumerate(p.out_sizes(op)):
        m = measured_dim(p.vals, sizes[i]) if i < len(sizes) else None
        out.append(p.copies(s) if is_static(s) else m if m is not None and p.size(m) == s
                   else p.copies_sized_at_run_time(op, i, s))
    return out
