"""A subnet's generated forward over **views** of the supernet's full tensors.

The subnet's IR (without tensors) is compiled as usual, except that each parameter, buffer and constant
is read from the full model and cut on the fly: a prefix of a shrunk dim is a ``narrow`` (a view: no
copy, and the gradient lands in the shared tensor); positions that are not a prefix (a concatenation
segment, a pruned inner factor) use ``index_select`` with a cached index.

A parameter cut to a prefix is read through ``SharedGrads``: its gradient is added straight into the
region of a full-size gradient buffer that the subnet used, instead of autograd's ``narrow`` backward,
which allocates and zero-fills a full-size tensor per read (the dominant extra cost of a small subnet's
step) and adds it whole into ``.grad`` for every further subnet of a step."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..ir.codegen import compile_graph
from torch.autograd.function import once_differentiable

from ..ir.graph import BUFFER, CONST, IR, PARAM
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
        extent = list(target.shape)
        region = target
        for d, n in sizes:
            region = region.narrow(d, 0, n)
            extent[d] = n
        if first:
            if any(b > e for b, e in zip(self.box, extent)):  # stale values outside this write
                _box(target, self.box).zero_()
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


def _box(t: torch.Tensor, extent: list[int]) -> torch.Tensor:
    for d, n in enumerate(extent):
        t = t.narrow(d, 0, n)
    return t


class _PrefixView(torch.autograd.Function):
    """A prefix view of a shared parameter whose gradient lands in its ``_GradSlot``."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, sizes: tuple[tuple[int, int], ...], slot: _GradSlot) -> torch.Tensor:
        ctx.weight, ctx.sizes, ctx.slot = weight, sizes, slot
        out = weight.detach()
        for d, n in sizes:
            out = out.narrow(d, 0, n)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, None]:
        ctx.slot.accumulate(ctx.weight, ctx.sizes, grad)
        return None, None, None


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


def shared_view(weight: torch.Tensor, cut: tuple[_GradSlot, tuple[tuple[int, int], ...]]) -> torch.Tensor:
    """``weight`` narrowed to ``cut``'s prefix sizes; under autograd its gradient goes to the slot."""
    slot, sizes = cut
    if weight.requires_grad and torch.is_grad_enabled():
        return _PrefixView.apply(weight, sizes, slot)
    for d, n in sizes:
        weight = weight.narrow(d, 0, n)
    return weight


def compile_program(sub: IR, exprs_of: dict[str, list], dims, select: dict[int, torch.Tensor],
                    grads: SharedGrads | None = None) -> SubnetProgram:
    """Compile ``sub`` (a subnet IR without tensors) to run on the full model's tensors, cut by
    ``select`` (atom -> kept indices). ``exprs_of`` gives each canonical tensor's dim expressions;
    parameters cut to a prefix send their gradients through ``grads`` when given."""
    indices = _Indices()
    cuts = Cuts(dims, select)
    shared: list[tuple[_GradSlot, tuple[tuple[int, int], ...]]] = []
    views: dict[str, str] = {}
    graphs = [sub.graph] + ([sub.eval_graph] if sub.eval_graph is not None else [])
    for graph in graphs:
        for p in graph.placeholders:
            if p.kind not in (PARAM, BUFFER, CONST) or p.target in views:
                continue
            canon = sub.aliases.get(p.target, p.target)
            slices = cuts.of(exprs_of[canon])
            if grads is not None and p.kind == PARAM and slices and all(ix is None for _, _, ix in slices):
                shared.append(grads.cut(canon, tuple((d, n) for d, n, _ in slices)))
                views[p.target] = f"_sg({{}}, _cuts[{len(shared) - 1}])"
                continue
            expr = "{}"
            for d, n, index in slices:
                expr += f".narrow({d}, 0, {n})" if index is None else f".index_select({d}, _ix({indices.add(index)}, _dev))"
            views[p.target] = expr
    names = {"_ix": indices, "_sg": shared_view, "_cuts": shared}
    train_fn = compile_graph(sub, sub.graph, views, names)
    eval_fn = compile_graph(sub, sub.eval_graph, views, names) if sub.eval_graph is not None else None
    return SubnetProgram(sub, train_fn, eval_fn)
