"""A subnet's generated forward over **views** of the supernet's full tensors.

The subnet's IR (without tensors) is compiled as usual, except that each parameter, buffer and constant
is read from the full model and cut on the fly: a prefix of a shrunk dim is a ``narrow`` (a view: no
copy, and the gradient lands in the shared tensor); positions that are not a prefix (a concatenation
segment, a pruned inner factor) use ``index_select`` with a cached index.

A parameter cut to a prefix is read through ``SharedGrads``: its gradient is added straight into the
region of a full-size gradient buffer that the subnet used, instead of autograd's ``narrow`` backward,
which allocates and zero-fills a full-size tensor per read (the dominant extra cost of a small subnet's
step) and adds it whole into ``.grad`` for every further subnet of a step. Such parameters are read
in groups, one autograd node per group (``_PrefixViews``)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.autograd.function import once_differentiable

from ..ir.codegen import attr_path, compile_graph
from ..ir.graph import BUFFER, CONST, IR, PARAM, Graph, Placeholder
from ..space.subnet import Cuts


@dataclass
class SubnetProgram:
    """Compiled forward functions of one arch (training and, if traced, eval graph) and its IR."""
    ir: IR
    train_fn: Callable
    eval_fn: Callable | None


class _Indices:
    """Index tensors of the non-prefix cuts, moved to each device once."""

    def __init__(self) -> None:
        self.cpu: list[torch.Tensor] = []
        self.on: dict[tuple[int, torch.device], torch.Tensor] = {}

    def add(self, index: torch.Tensor) -> int:
        self.cpu.append(index)
        return len(self.cpu) - 1

    def __call__(self, i: int, device: torch.device) -> torch.Tensor:
        key = (i, device)
        if key not in self.on:
            self.on[key] = self.cpu[i].to(device)
        return self.on[key]


class _GradSlot:
    """A shared parameter's reusable full-size gradient buffer. ``box`` bounds (per dim) the region that may
    hold stale values: zeros lie outside it. ``version`` is the buffer's version counter after osf's own
    last write, so any other in-place write (a gradient all-reduce, clipping, a user's edit) is noticed and
    the whole buffer counts as stale. A step's first gradient is copied into its region (no zero-fill, no
    add) when that region covers the stale box; otherwise the box is zeroed first."""

    __slots__ = ("buffer", "box", "version")

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None
        self.box: list[int] = []
        self.version = -1

    def accumulate(self, weight: torch.Tensor, sizes: tuple[tuple[int, int], ...], grad: torch.Tensor) -> None:
        target = weight.grad
        first = target is None
        if first:
            target = weight.grad = self._hand_out(weight)
        elif target is self.buffer and target._version != self.version:
            self.box = list(target.shape)  # written elsewhere since (e.g. autograd's own accumulation)
        region = _prefix(target, sizes)
        extent = list(region.shape)
        if first:
            if any(b > e for b, e in zip(self.box, extent)):  # stale values outside this write
                _prefix(target, tuple(enumerate(self.box))).zero_()
            region.copy_(grad)
            self.box = extent
        else:
            region.add_(grad)
            if target is self.buffer:
                self.box = [max(b, e) for b, e in zip(self.box, extent)]
        if target is self.buffer:
            self.version = target._version

    def _hand_out(self, weight: torch.Tensor) -> torch.Tensor:
        """The buffer for a new ``.grad``; its stale box is cleared by the caller's first write."""
        buf = self.buffer
        if buf is None or buf.shape != weight.shape or buf.dtype != weight.dtype or buf.device != weight.device:
            buf = self.buffer = torch.empty_like(weight, memory_format=torch.contiguous_format)
            self.box = list(buf.shape)
        elif buf._version != self.version:
            self.box = list(buf.shape)
        return buf


Cut = tuple[_GradSlot, tuple[tuple[int, int], ...]]  # a parameter's gradient slot and prefix sizes per dim


def _prefix(weight: torch.Tensor, sizes: tuple[tuple[int, int], ...]) -> torch.Tensor:
    for d, n in sizes:
        weight = weight.narrow(d, 0, n)
    return weight


class _PrefixViews(torch.autograd.Function):
    """Prefix views of several shared parameters, one autograd node for all of them: each gradient lands
    in its parameter's ``_GradSlot`` (a node per parameter costs more Python than a small subnet's ops)."""

    @staticmethod
    def forward(ctx: Any, cuts: tuple[Cut, ...], *weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.cuts, ctx.weights = cuts, weights
        ctx.set_materialize_grads(False)  # an unused view sends None, not zeros
        return tuple(_prefix(w.detach(), sizes) for w, (_, sizes) in zip(weights, cuts))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[None, ...]:
        for weight, (slot, sizes), grad in zip(ctx.weights, ctx.cuts, grads):
            if grad is not None:
                slot.accumulate(weight, sizes, grad)
        return (None,) * (len(grads) + 1)


class SharedGrads:
    """The gradient slots of one supernet's parameters (by canonical name), shared by its programs.
    Gradients reach ``.grad`` as usual (None where no subnet used a parameter); ``torch.autograd.grad``
    does not see them, and a ``.grad`` tensor may be reused by the next step once ``.grad`` was set to
    None (``zero_grad()``): keep a copy, not a reference, across steps."""

    def __init__(self) -> None:
        self.slots: dict[str, _GradSlot] = {}

    def release(self) -> None:
        """Drop the buffers (the next step allocates them again); ``.grad`` tensors in use stay valid."""
        for slot in self.slots.values():
            slot.buffer, slot.box, slot.version = None, [], -1

    def cut(self, name: str, sizes: tuple[tuple[int, int], ...]) -> tuple[_GradSlot, tuple[tuple[int, int], ...]]:
        """What a program passes to ``shared_view`` to read parameter ``name`` cut to ``sizes``."""
        return self.slots.setdefault(name, _GradSlot()), sizes


def shared_views(cuts: tuple[Cut, ...], *weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``weights`` narrowed to their ``cuts``' prefix sizes; under autograd their gradients go to the
    slots (through one node when every weight requires grad, else one per weight that does)."""
    if not torch.is_grad_enabled() or not any(w.requires_grad for w in weights):
        return tuple(_prefix(w, sizes) for w, (_, sizes) in zip(weights, cuts))
    if all(w.requires_grad for w in weights):
        return _PrefixViews.apply(cuts, *weights)
    return tuple(_PrefixViews.apply((cut,), w)[0] if w.requires_grad else _prefix(w, cut[1])
                 for w, cut in zip(weights, cuts))


def compile_program(sub: IR, exprs_of: dict[str, list], dims, select: dict[int, torch.Tensor],
                    grads: SharedGrads | None = None) -> SubnetProgram:
    """Compile ``sub`` (a subnet IR without tensors) to run on the full model's tensors, cut by
    ``select`` (atom -> kept indices). ``exprs_of`` gives each canonical tensor's dim expressions;
    parameters cut to a prefix send their gradients through ``grads`` when given, a few per autograd node
    (``_groups_of``)."""
    indices = _Indices()
    cuts = Cuts(dims, select)
    groups: list[tuple[Cut, ...]] = []
    names = {"_ix": indices, "_sgs": shared_views, "_groups": groups}

    def compile_one(graph: Graph) -> Callable:
        views: dict[str, str] = {}
        shared: list[tuple[str, Cut, int]] = []  # target, cut, kept elements
        for p in _by_first_use(graph):
            canon = sub.aliases.get(p.target, p.target)
            slices = cuts.of(exprs_of[canon])
            if grads is not None and p.kind == PARAM and slices and all(ix is None for _, _, ix in slices):
                shared.append((p.target, grads.cut(canon, tuple((d, n) for d, n, _ in slices)),
                               math.prod(p.meta["shape"])))
                continue
            expr = "{}"
            for d, n, index in slices:
                expr += (f".narrow({d}, 0, {n})" if index is None
                         else f".index_select({d}, _ix({indices.add(index)}, _dev))")
            views[p.target] = expr
        preamble = []
        for members in _groups_of(shared):
            groups.append(tuple(cut for _, cut, _ in members))
            var = f"_v{len(groups) - 1}"
            preamble.append(f"{var} = _sgs(_groups[{len(groups) - 1}], "
                            + ", ".join(attr_path("self", target) for target, _, _ in members) + ")")
            views.update((target, f"{var}[{j}]") for j, (target, _, _) in enumerate(members))
        return compile_graph(sub, graph, views, names, preamble)

    train_fn = compile_one(sub.graph)
    eval_fn = compile_one(sub.eval_graph) if sub.eval_graph is not None else None
    return SubnetProgram(sub, train_fn, eval_fn)


_HELD = 1 << 20  # elements of gradient one autograd node may hold back (4 MB in float32)


def _groups_of(shared: list[tuple[str, Cut, int]]) -> list[list[tuple[str, Cut, int]]]:
    """Consecutive shared parameters (in order of first use) grouped into one autograd node each, while
    the group's kept elements stay within ``_HELD``: a node costs more Python than a small subnet's ops,
    but it hands its gradients over only once the backward pass reaches its earliest use."""
    out: list[list[tuple[str, Cut, int]]] = []
    held = 0
    for member in shared:
        if out and held + member[2] <= _HELD:
            out[-1].append(member)
            held += member[2]
        else:
            out.append([member])
            held = member[2]
    return out


def _by_first_use(graph: Graph) -> list[Placeholder]:
    """The tensor placeholders (parameters, buffers, constants) of ``graph`` in order of first use."""
    tensors = {p.name: p for p in graph.placeholders if p.kind in (PARAM, BUFFER, CONST)}
    order = dict.fromkeys(ref for op in graph.ops for ref in op.inputs if ref in tensors)
    return [tensors[name] for name in order] + [p for name, p in tensors.items() if name not in order]
