"""FLOPs of captured ops from their shapes, without running the model.

Convention (the same as ``torch.utils.flop_counter.FlopCounterMode``): only matrix products and
convolutions count, one multiply-add = 2 FLOPs; element-wise ops, norms and activations count 0.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from .graph import Graph, OpNode


def is_size(meta: Any) -> bool:
    """Whether a node with this metadata is a symbolic size (an int read from a shape), not a tensor."""
    return isinstance(meta, dict) and "symint" in meta


def _shape(meta: Any) -> list[int] | None:
    return meta["shape"] if isinstance(meta, dict) and "shape" in meta else None


def _prod(xs) -> int:
    return math.prod(int(x) for x in xs)


def _linear(out, ins) -> int:  # linear(x, W[out, in], b); a 1-D W[in] gives one output per row
    return 2 * _prod(out) * ins[1][-1]


def _mm(out, ins) -> int:  # mm(a[m,k], b[k,n]); addmm(c, a, b); bmm; baddbmm
    a = ins[-2]
    return 2 * _prod(out) * a[-1]


def _grouped_mm(out, ins) -> int:  # a[S, K] × b[E, K, N] -> [S, N]; a[E, M, K] × b[E, K, N];
    # a[M, K] × b[K, N] -> [E, M, N] (K split among the groups)
    a, b = ins[0], ins[1]
    return 2 * _prod(out[1:] if len(a) == len(b) == 2 else out) * a[-1]


def _matmul(out, ins) -> int:
    a, b = ins[0], ins[1]
    k = a[-1]
    return 2 * _prod(out) * k if len(a) > 1 or len(b) > 1 else 2 * k


def _conv(out, ins) -> int:  # conv(x, W[out, in/groups, *k], ...): each output element = in/groups * k MACs
    w = ins[1]
    return 2 * _prod(out) * _prod(w[1:])


def _conv_transpose(out, ins) -> int:  # W[in, out/groups, *k]: each input element feeds out/groups * k
    x, w = ins[0], ins[1]
    return 2 * _prod(x) * _prod(w[1:])


def _sdpa(out, ins) -> int:  # q[..., L, E], k[..., S, E], v[..., S, Ev]
    q, k, v = ins[0], ins[1], ins[2]
    batch = _prod(q[:-2])
    return 2 * batch * q[-2] * k[-2] * q[-1] + 2 * batch * q[-2] * k[-2] * v[-1]


_OPERANDS = {_sdpa: 3}  # tensors a rule reads (the others: 2)

RULES: dict[str, Callable[[list[int], list[list[int]]], int]] = {
    "aten.linear.default": _linear,
    "aten.mm.default": _mm,
    "aten.addmm.default": _mm,
    "aten.bmm.default": _mm,
    "aten.baddbmm.default": _mm,
    "aten.matmul.default": _matmul,
    "aten.conv1d.default": _conv,
    "aten.conv2d.default": _conv,
    "aten.conv3d.default": _conv,
    "aten.conv1d.padding": _conv,
    "aten.conv2d.padding": _conv,
    "aten.conv3d.padding": _conv,
    "aten.conv_transpose1d.default": _conv_transpose,
    "aten.conv_transpose2d.input": _conv_transpose,
    "aten.conv_transpose3d.input": _conv_transpose,
    "aten.scaled_dot_product_attention.default": _sdpa,
    "aten._grouped_mm.default": _grouped_mm,
    "transformers.grouped_mm_fallback.default": _grouped_mm,  # Hugging Face's mixture-of-experts fallback
}


def op_flops(op: OpNode, shapes: dict[str, list[int] | None]) -> int:
    """FLOPs of one op at the traced example shapes (0 for ops that are not products). ``shapes`` holds the
    shape (or None) of every tensor the op reads; symbolic sizes (``is_size``: a conv's ``groups`` read
    from the batch size) are left out, they are no operands."""
    rule = RULES.get(op.target)
    if op.target == "aten.einsum.default":
        return _einsum(op, shapes)
    if op.target in _RECURRENT:
        return _recurrent(op, shapes)
    if op.target == "aten.convolution.default":
        transposed = op.args[6] if len(op.args) > 6 else False
        rule = _conv_transpose if transposed else _conv
    out = _shape(op.meta)
    if rule is None or out is None:
        return 0
    ins = [shapes[r] for r in _tensor_args(op) if r in shapes]
    if len(ins) < _OPERANDS.get(rule, 2) or any(s is None for s in ins):
        return 0
    return int(rule(out, ins))


def _tensor_args(op: OpNode) -> list[str]:
    refs = []
    for a in op.args:
        if isinstance(a, dict) and "node" in a:
            refs.append(a["node"])
    return refs


def _einsum(op: OpNode, shapes: dict) -> int:
    equation = op.args[0]
    operands = [shapes.get(a["node"]) for a in op.args[1] if isinstance(a, dict) and "node" in a]
    if not isinstance(equation, str) or any(s is None for s in operands) or "..." in equation:
        return 0
    lhs = equation.replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for term, shape in zip(lhs, operands):
        for ch, n in zip(term, shape):
            sizes[ch] = n
    if len(operands) < 2:
        return 0
    return 2 * _prod(sizes.values())


# recurrent op -> index of its argument listing the weights (the sequence ops) or None (cells: w_ih, w_hh at 2, 3)
_RECURRENT = {"aten.lstm.input": 2, "aten.gru.input": 2, "aten.rnn_tanh.input": 2, "aten.rnn_relu.input": 2,
              "aten.lstm_cell.default": None, "aten.gru_cell.default": None, "aten.rnn_tanh_cell.default": None,
              "aten.rnn_relu_cell.default": None}


def _recurrent(op: OpNode, shapes: dict) -> int:
    """``nn.LSTM``/``GRU``/``RNN`` and their cells: every time step of every sample multiplies its input,
    its state (and an LSTM's projection) by each 2-D weight of each layer and direction."""
    listed = _RECURRENT[op.target]
    weights = op.args[listed] if listed is not None else op.args[2:4]
    x = shapes.get(op.args[0]["node"]) if isinstance(op.args[0], dict) else None
    matrices = [shapes.get(w["node"]) for w in weights if isinstance(w, dict) and "node" in w]
    if x is None or any(m is None for m in matrices):
        return 0
    return 2 * _prod(x[:-1]) * sum(_prod(m) for m in matrices if len(m) == 2)


# every op that ``op_flops`` may count (all others are 0)
COUNTED = frozenset(RULES) | frozenset(_RECURRENT) | {"aten.einsum.default", "aten.convolution.default"}


def graph_flops(graph: Graph) -> dict[str, int]:
    """FLOPs per op name."""
    shapes = {n.name: _shape(n.meta) for n in (*graph.placeholders, *graph.ops) if not is_size(n.meta)}
    return {op.name: op_flops(op, shapes) for op in graph.ops}


def module_flops(ir) -> dict[str, int]:
    """FLOPs per module (its whole subtree), at the traced example shapes."""
    per_op = graph_flops(ir.graph)
    totals = dict.fromkeys(ir.modules, 0)
    for op in ir.graph.ops:
        f = per_op[op.name]
        if not f:
            continue
        parts = op.owner.split(".") if op.owner else []
        for i in range(len(parts) + 1):
            name = ".".join(parts[:i])
            if name in totals:
                totals[name] += f
    return totals


def human(n: float) -> str:
    """A count for people: ``7.26G``, ``513.00K``, ``128``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n)) if float(n).is_integer() else f"{n:g}"
