"""A subnet's generated forward over **views** of the supernet's full tensors.

The subnet's IR (without tensors) is compiled as usual, except that each parameter, buffer and constant
is read from the full model and cut on the fly: a prefix of a shrunk dim is a ``narrow`` (a view: no
copy, and the gradient lands in the shared tensor); positions that are not a prefix (a concatenation
segment, a pruned inner factor) use ``index_select`` with a cached index.

A parameter cut to a prefix is read through ``SharedGrads``: its gradient is added straight into the
region of a full-size gradient buffer that the subnet used, instead of autograd's ``narrow`` backward,
which allocates and zero-fills a full-size tensor per read (the dominant extra cost of a small subnet's
step) and adds it whole into ``.grad`` for every further subnet of a step. Such parameters are read
in groups, one autograd node per group (``_PrefixViews``), and a group hands out the same aliases of the
parameters' memory again while the parameters stay where they are (``_ViewGroup``)."""
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
    add) when that region covers the stale box; otherwise the box is zeroed first. ``last`` remembers the
    region view of the last write while the box is exactly that region, so the same cut's next first write
    is a bare copy (the common case: an arch trained again)."""

    __slots__ = ("buffer", "box", "version", "last")

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None
        self.box: list[int] = []
        self.version = -1
        self.last: tuple[tuple[tuple[int, int], ...], torch.Tensor, int] | None = None  # sizes, region, weight ptr

    def accumulate(self, weight: torch.Tensor, sizes: tuple[tuple[int, int], ...], grad: torch.Tensor) -> None:
        last, buf = self.last, self.buffer
        if (last is not None and weight.grad is None and last[0] == sizes and buf._version == self.version
                and last[2] == weight.data_ptr()):
            weight.grad = buf
            last[1].copy_(grad)
            self.version = buf._version
            return
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
        self.last = (sizes, region, weight.data_ptr()) if target is self.buffer and self.box == extent else None

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


def _alias(view: torch.Tensor) -> torch.Tensor:
    """A tensor on ``view``'s memory that autograd does not link to its base: it may be handed out again
    after an in-place update of the base (a view would then need its autograd history rebuilt)."""
    return torch.empty(0, dtype=view.dtype, device=view.device).set_(
        view.untyped_storage(), view.storage_offset(), view.shape, view.stride())


class _PrefixViews(torch.autograd.Function):
    """Prefix aliases of several shared parameters (a ``_ViewGroup``), one autograd node for all of them:
    each gradient lands in its parameter's ``_GradSlot`` (a node per parameter costs more Python than a
    small subnet's ops)."""

    @staticmethod
    def forward(ctx: Any, group: "_ViewGroup", *weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.group, ctx.weights = group, weights
        ctx.set_materialize_grads(False)  # an unused view sends None, not zeros
        return tuple(_alias(_prefix(w, sizes)) for w, (_, sizes) in zip(weights, group.cuts))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[None, ...]:
        group = ctx.group
        if [w._version for w in ctx.weights] != group.versions:  # what autograd checks for a saved tensor
            changed = [name for name, w, v in zip(group.names, ctx.weights, group.versions) if w._version != v]
            raise RuntimeError(f"shared parameter {changed[0]!r} was modified in place after the forward pass "
                               "read it and before this backward pass (e.g. optimizer.step() between a "
                               "forward and its backward); step the optimizer after backward")
        for weight, (slot, sizes), grad in zip(ctx.weights, group.cuts, grads):
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
            slot.buffer, slot.box, slot.version, slot.last = None, [], -1, None

    def cut(self, name: str, sizes: tuple[tuple[int, int], ...]) -> tuple[_GradSlot, tuple[tuple[int, int], ...]]:
        """What a program's ``_ViewGroup`` holds to read parameter ``name`` cut to ``sizes``."""
        return self.slots.setdefault(name, _GradSlot()), sizes


class _ViewGroup:
    """Prefix views of a few shared parameters (``names``, cut by ``cuts``), under autograd through one
    ``_PrefixViews`` node whose backward sends the gradients to the slots. The views of the last call are
    handed out again while the same parameters, on the same storage, all require grad: they alias the
    parameters' memory, so they follow in-place updates (an optimizer step), and their node serves every
    backward pass it takes part in, so an arch read again (the sandwich's max and min every step) costs
    no per-step Python here. ``versions`` (the parameters' version counters at the last hand-out) let the
    backward pass refuse weights changed in place since, as autograd does for the tensors it saves."""

    __slots__ = ("names", "cuts", "versions", "_weights", "_storage", "_views")

    def __init__(self, names: tuple[str, ...], cuts: tuple[Cut, ...]) -> None:
        self.names, self.cuts = names, cuts
        self.versions: list[int] = []
        self._weights: tuple[torch.Tensor, ...] = ()
        self._storage: list[int] = []
        self._views: tuple[torch.Tensor, ...] = ()

    def __call__(self, *weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not torch.is_grad_enabled() or not any(w.requires_grad for w in weights):
            return tuple(_prefix(w, sizes) for w, (_, sizes) in zip(weights, self.cuts))
        if not all(w.requires_grad for w in weights):  # one node per trainable weight; frozen ones plain
            return tuple(_ViewGroup((name,), (cut,))(w)[0] if w.requires_grad else _prefix(w, cut[1])
                         for name, w, cut in zip(self.names, weights, self.cuts))
        self.versions = [w._version for w in weights]
        if (len(self._weights) == len(weights) and all(a is b for a, b in zip(self._weights, weights))
                and self._storage == [w.data_ptr() for w in weights]):
            return self._views
        self._views = _PrefixViews.apply(self, *weights)
        self._weights, self._storage = weights, [w.data_ptr() for w in weights]
        return self._views


def compile_program(sub: IR, exprs_of: dict[str, list], dims, select: dict[int, torch.Tensor],
                    grads: SharedGrads | None = None) -> SubnetProgram:
    """Compile ``sub`` (a subnet IR without tensors) to run on the full model's tensors, cut by
    ``select`` (atom -> kept indices). ``exprs_of`` gives each canonical tensor's dim expressions;
    parameters cut to a prefix send their gradients through ``grads`` when given, a few per autograd node
    (``_groups_of``)."""
    indices = _Indices()
    cuts = Cuts(dims, select)
    groups: list[_ViewGroup] = []
    names = {"_ix": indices, "_groups": groups}

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
            groups.append(_ViewGroup(tuple(sub.aliases.get(t, t) for t, _, _ in members),
                                     tuple(cut for _, cut, _ in members)))
            var = f"_v{len(groups) - 1}"
            preamble.append(f"{var} = _groups[{len(groups) - 1}]("
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
