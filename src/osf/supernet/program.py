"""A subnet's generated forward over **views** of the supernet's full tensors.

The subnet's IR (without tensors) is compiled as usual, except that each parameter, buffer and constant
is read from the full model and cut on the fly: a prefix of a shrunk dim is a ``narrow`` (a view: no
copy, and the gradient lands in the shared tensor); positions that are not a prefix (a concatenation
segment, a pruned inner factor such as the heads of a fused q/k/v projection) are a few kept ranges,
concatenated (or one ``index_select`` with a cached index when there are very many).

A parameter read through a cut of kept ranges goes through ``SharedGrads``: its gradient is copied or
added straight into the used blocks of a full-size gradient buffer, instead of autograd's ``narrow`` /
``index_select`` backward, which allocates and zero-fills a full-size tensor per read (the dominant
extra cost of a small subnet's step) and adds it whole into ``.grad`` for every further subnet of a
step. Such parameters are read in groups, one autograd node per group (``_CutReads``), and a group of
views hands out the same aliases of the parameters' memory again while the parameters stay where they
are (``_ViewGroup``)."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.autograd.function import once_differentiable

from ..ir.codegen import attr_path, compile_graph
from ..ir.graph import BUFFER, CONST, IR, PARAM, Graph, Placeholder
from ..space.subnet import Cuts, RunIndex, index_runs


@dataclass
class SubnetProgram:
    """Compiled forward functions of one arch (training and, if traced, eval graph)."""
    train_fn: Callable
    eval_fn: Callable | None


class _Index:
    """The kept positions of a non-prefix cut (a tensor, or a ``RunIndex`` that makes it when first
    needed), moved to each device once; freed with what holds it (a program, or a memoised table entry
    of the template)."""

    __slots__ = ("source", "on")

    def __init__(self, index: "torch.Tensor | RunIndex") -> None:
        self.source, self.on = index, {}

    def __call__(self, device: torch.device) -> torch.Tensor:
        t = self.on.get(device)
        if t is None:
            t = self.on[device] = self.source.to(device)
        return t


Runs = tuple[tuple[int, int], ...]  # kept (start, length) ranges of one dim, ascending
Spec = tuple[tuple[int, Runs], ...]  # a cut: (dim, runs) per cut dim; one run from 0 is a prefix
Box = tuple[tuple[tuple[int, int], ...], ...]  # per dim of a buffer: (start, stop) intervals, merged


def _take(weight: torch.Tensor, spec: Spec, rows: torch.Tensor | None = None) -> torch.Tensor:
    """``weight`` cut by ``spec``: a view when every cut dim keeps one run, else a copy (single runs are
    narrowed first, so only kept values are copied). Several runs of dim 0 are gathered by ``rows``
    (their indices: ``index_select`` is the fastest gather of whole rows), of other dims concatenated
    (``index_select`` copies strided dims element by element)."""
    for d, runs in spec:
        if len(runs) == 1:
            weight = weight.narrow(d, *runs[0])
    for d, runs in spec:
        if len(runs) > 1:
            weight = (weight.index_select(0, rows) if d == 0 and rows is not None
                      else torch.cat([weight.narrow(d, a, n) for a, n in runs], d))
    return weight


def _flagged(source: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
    """``cut``, a copy of part of ``source`` made outside autograd (``no_grad``, inference), marked as
    requiring grad when ``source`` does, as a view of it would be: kernels are chosen by the flag.
    ``matmul`` folds a non-contiguous 3-D input of a linear into one ``mm`` only when the weight requires
    grad; without the flag ViT-B/16's q/k/v projection with pruned heads ran as a ``bmm`` (2.4 ms against
    the extracted subnet's 1.1 ms ``mm``) in every evaluation on the shared weights."""
    if source.requires_grad and not cut.requires_grad and not torch.is_grad_enabled():
        cut.requires_grad_()
    return cut


def _is_view(spec: Spec) -> bool:
    return all(len(runs) == 1 for _, runs in spec)


def _blocks(t: torch.Tensor, spec: Spec, *, cut: bool = False) -> list[torch.Tensor]:
    """The blocks of a full-size tensor ``t`` that ``spec`` keeps (one per combination of runs), or with
    ``cut`` the same blocks of a tensor already cut by ``spec`` (a gradient), in the same order."""
    out = [t]
    for d, runs in spec:
        if len(runs) == 1:
            if not cut:
                out = [b.narrow(d, *runs[0]) for b in out]
            continue
        starts = list(itertools.accumulate((n for _, n in runs), initial=0)) if cut else [a for a, _ in runs]
        out = [b.narrow(d, s, n) for b in out for s, (_, n) in zip(starts, runs)]
    return out


_CHUNK = 768  # columns per copy of a transposed 2-D gradient into a strided region


def _chunked(src: torch.Tensor) -> bool:
    """Whether ``_write`` copies ``src`` a few columns at a time: a wide transposed 2-D gradient."""
    return src.dim() == 2 and src.stride(1) != 1 and src.size(1) > 2 * _CHUNK


def _write(dst: torch.Tensor, src: torch.Tensor, add: bool = False) -> None:
    """``dst.copy_(src)`` (``add``: ``dst.add_(src)``); a wide transposed 2-D ``src`` (a linear weight's
    gradient when its input dim was cut, as ``mm``'s backward lays it out) goes a few columns at a time:
    in one piece, a 768×2304 region copy took 4.1 ms against 1.4 ms in chunks (CPU, torch 2.14)."""
    if _chunked(src):
        for j in range(0, src.size(1), _CHUNK):
            _write(dst[:, j:j + _CHUNK], src[:, j:j + _CHUNK], add)
    elif add:
        dst.add_(src)
    else:
        dst.copy_(src)


def _write_pieces(blocks: list[torch.Tensor], grad: torch.Tensor, spec: Spec, add: bool) -> None:
    for block, piece in zip(blocks, _blocks(grad, spec, cut=True)):
        _write(block, piece, add)


def _full_box(shape: torch.Size) -> Box:
    return tuple(((0, n),) for n in shape)


def _extent(shape: torch.Size, spec: Spec) -> Box:
    box = list(_full_box(shape))
    for d, runs in spec:
        box[d] = _merged((a, a + n) for a, n in runs)
    return tuple(box)


def _merged(intervals) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return tuple((a, b) for a, b in out)


def _covers(outer: Box, inner: Box) -> bool:
    return all(all(any(a <= s and e <= b for a, b in o) for s, e in i) for o, i in zip(outer, inner))


class _GradSlot:
    """A shared parameter's reusable full-size gradient buffer. ``box`` bounds (per dim, as intervals) the
    region that may hold stale values: zeros lie outside it. ``version`` is the buffer's version counter
    after osf's own last write, so any other in-place write (a gradient all-reduce, clipping, a user's
    edit) is noticed and the whole buffer counts as stale. A step's first gradient is copied into its
    blocks (no zero-fill, no add) when they cover the stale box; otherwise the box is zeroed first.
    ``last`` remembers the block views of the last write while the box is exactly those blocks, so the
    same cut's next first write is a bare copy (the common case: an arch trained again)."""

    __slots__ = ("buffer", "box", "version", "last")

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None
        self.box: Box = ()
        self.version = -1
        self.last: tuple[Spec, list[torch.Tensor], int] | None = None  # spec, blocks, weight ptr

    def accumulate(self, weight: torch.Tensor, spec: Spec, grad: torch.Tensor) -> None:
        """Add ``grad`` (``weight``'s gradient cut by ``spec``) into ``weight.grad``."""
        self.write(weight, spec, lambda blocks, add: _write_pieces(blocks, grad, spec, add))

    def write(self, weight: torch.Tensor, spec: Spec,
              writer: Callable[[list[torch.Tensor], bool], None]) -> None:
        """Let ``writer(blocks, add)`` put a gradient of ``weight`` cut by ``spec`` into the blocks of
        ``weight.grad`` that ``spec`` keeps (``_blocks`` order): overwriting them (``add`` False: zeros
        lie outside them) or adding to them."""
        blocks = self.bare_blocks(weight, spec)
        if blocks is not None:
            weight.grad = self.buffer
            writer(blocks, False)
            self.version = self.buffer._version
            return
        target = weight.grad
        first = target is None
        if first:
            target = weight.grad = self._hand_out(weight)
        elif target is self.buffer and target._version != self.version:
            self.box = _full_box(target.shape)  # written elsewhere since (e.g. autograd's own accumulation)
        blocks = _blocks(target, spec)
        extent = _extent(target.shape, spec)
        if first:
            if not _covers(extent, self.box):  # stale values outside this write
                for block in _blocks(target, tuple((d, tuple((a, b - a) for a, b in ivs))
                                                   for d, ivs in enumerate(self.box))):
                    block.zero_()
            writer(blocks, False)
            self.box = extent
        else:
            writer(blocks, True)
            if target is self.buffer:
                self.box = tuple(_merged(b + e) for b, e in zip(self.box, extent))
        if target is self.buffer:
            self.version = target._version
        self.last = (spec, blocks, weight.data_ptr()) if target is self.buffer and self.box == extent else None

    def bare_blocks(self, weight: torch.Tensor, spec: Spec) -> list[torch.Tensor] | None:
        """The blocks of the last write when a first gradient of ``weight`` cut by ``spec`` may simply be
        copied into them (the buffer unchanged since, ``.grad`` None, the same cut), else None."""
        last, buf = self.last, self.buffer
        if (last is not None and weight.grad is None and last[0] == spec and buf._version == self.version
                and last[2] == weight.data_ptr()):
            return last[1]
        return None

    def _hand_out(self, weight: torch.Tensor) -> torch.Tensor:
        """The buffer for a new ``.grad``; its stale box is cleared by the caller's first write."""
        buf = self.buffer
        if buf is None or buf.shape != weight.shape or buf.dtype != weight.dtype or buf.device != weight.device:
            buf = self.buffer = torch.empty_like(weight, memory_format=torch.contiguous_format)
            self.box = _full_box(buf.shape)
        elif buf._version != self.version:
            self.box = _full_box(buf.shape)
        return buf


Cut = tuple[_GradSlot, Spec]  # a parameter's gradient slot and how it is cut


def _alias(view: torch.Tensor) -> torch.Tensor:
    """A tensor on ``view``'s memory that autograd does not link to its base: it may be handed out again
    after an in-place update of the base (a view would then need its autograd history rebuilt)."""
    return torch.empty(0, dtype=view.dtype, device=view.device).set_(
        view.untyped_storage(), view.storage_offset(), view.shape, view.stride())


class _CutReads(torch.autograd.Function):
    """Several shared parameters cut by a ``_ViewGroup``, one autograd node for all of them: a cut that
    keeps one run per dim is handed out as an alias of the parameter's memory, one with several runs as a
    copy; each gradient lands in its parameter's ``_GradSlot`` (a node per parameter costs more Python
    than a small subnet's ops)."""

    @staticmethod
    def forward(ctx: Any, group: "_ViewGroup", *weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.group, ctx.weights = group, weights
        ctx.set_materialize_grads(False)  # an unused view sends None, not zeros
        return tuple(_alias(_take(w, spec)) if _is_view(spec) else _take(w, spec, group.rows_on(i, w.device))
                     for i, (w, (_, spec)) in enumerate(zip(weights, group.cuts)))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[None, ...]:
        group = ctx.group
        if [w._version for w in ctx.weights] != group.versions:  # what autograd checks for a saved tensor
            changed = [name for name, w, v in zip(group.names, ctx.weights, group.versions) if w._version != v]
            raise RuntimeError(f"shared parameter {changed[0]!r} was modified in place after the forward pass "
                               "read it and before this backward pass (e.g. optimizer.step() between a "
                               "forward and its backward); step the optimizer after backward")
        targets: list[torch.Tensor] = []
        sources: list[torch.Tensor] = []
        copied: list[tuple[torch.Tensor, _GradSlot]] = []
        for weight, (slot, spec), grad in zip(ctx.weights, group.cuts, grads):
            if grad is None:
                continue
            blocks = slot.bare_blocks(weight, spec) if group.distinct else None
            if blocks is not None and grad.dtype == weight.dtype:
                pieces = _blocks(grad, spec, cut=True)
                if not any(_chunked(piece) for piece in pieces):
                    targets += blocks
                    sources += pieces
                    copied.append((weight, slot))
                    continue
            slot.accumulate(weight, spec, grad)
        if targets:  # first gradients of a cut trained again: one call copies them all
            torch._foreach_copy_(targets, sources)
            for weight, slot in copied:
                weight.grad = slot.buffer
                slot.version = slot.buffer._version
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
            slot.buffer, slot.box, slot.version, slot.last = None, (), -1, None

    def cut(self, name: str, spec: Spec) -> Cut:
        """What a program's ``_ViewGroup`` holds to read parameter ``name`` cut by ``spec``."""
        return self.slots.setdefault(name, _GradSlot()), spec


class _ViewGroup:
    """A few shared parameters (``names``, cut by ``cuts``) read under autograd through one ``_CutReads``
    node whose backward sends the gradients to the slots. When every cut is a view (one run per dim),
    the tensors of the last call are handed out again while the same parameters, on the same storage, all
    require grad: they alias the parameters' memory, so they follow in-place updates (an optimizer step),
    and their node serves every backward pass it takes part in, so an arch read again (the sandwich's max
    and min every step) costs no per-step Python here. ``versions`` (the parameters' version counters at
    the last hand-out) let the backward pass refuse weights changed in place since, as autograd does for
    the tensors it saves. Cuts with several runs are copies, made again at every call; ``rows`` holds
    each member's dim-0 gather index (``_row_index``)."""

    __slots__ = ("names", "cuts", "rows", "versions", "views", "distinct", "_weights", "_storage", "_out")

    def __init__(self, names: tuple[str, ...], cuts: tuple[Cut, ...], rows: tuple[_Index | None, ...]) -> None:
        self.names, self.cuts, self.rows = names, cuts, rows
        self.versions: list[int] = []
        self.views = all(_is_view(spec) for _, spec in cuts)
        self.distinct = len(set(names)) == len(names)  # each parameter once: its first write can be batched
        self._weights: tuple[torch.Tensor, ...] = ()
        self._storage: list[int] = []
        self._out: tuple[torch.Tensor, ...] = ()

    def rows_on(self, i: int, device: torch.device) -> torch.Tensor | None:
        rows = self.rows[i]
        return None if rows is None else rows(device)

    def __call__(self, *weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not torch.is_grad_enabled() or not any(w.requires_grad for w in weights):
            return tuple(_flagged(w, _take(w, spec, self.rows_on(i, w.device)))
                         for i, (w, (_, spec)) in enumerate(zip(weights, self.cuts)))
        if not all(w.requires_grad for w in weights):  # one node per trainable weight; frozen ones plain
            return tuple(_ViewGroup((name,), (cut,), (self.rows[i],))(w)[0] if w.requires_grad
                         else _take(w, cut[1], self.rows_on(i, w.device))
                         for i, (name, w, cut) in enumerate(zip(self.names, weights, self.cuts)))
        self.versions = [w._version for w in weights]
        if (self.views and len(self._weights) == len(weights) and all(a is b for a, b in zip(self._weights, weights))
                and self._storage == [w.data_ptr() for w in weights]):
            return self._out
        out = _CutReads.apply(self, *weights)
        if self.views:
            self._out, self._weights, self._storage = out, weights, [w.data_ptr() for w in weights]
        return out


class _CutLinear:
    """``aten.linear`` on a shared weight (and bias) cut by a ``Cut``, for the generated forward: under
    autograd its backward computes the weight's gradient in place into the kept blocks of the full-size
    ``.grad`` (``addmm_`` into a strided region, as fast as the standalone subnet's ``mm``) instead of
    into a new tensor that is then copied there, transposed when the input dim is cut. Frozen weights,
    ``no_grad`` and autocast take the plain ``linear`` on the cut tensors."""

    __slots__ = ("weight_cut", "bias_cut", "rows")

    def __init__(self, weight_cut: Cut, bias_cut: Cut | None, rows: tuple[_Index | None, _Index | None]) -> None:
        self.weight_cut, self.bias_cut, self.rows = weight_cut, bias_cut, rows

    def take(self, i: int, t: torch.Tensor) -> torch.Tensor:
        """The weight (``i`` 0) or bias (1) cut from the full tensor ``t``."""
        cut, rows = self.weight_cut if i == 0 else self.bias_cut, self.rows[i]
        return t if cut is None else _take(t, cut[1], None if rows is None else rows(t.device))

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if (torch.is_grad_enabled() and weight.requires_grad and not torch.is_autocast_enabled(x.device.type)
                and x.dtype == weight.dtype):
            return _LinearIntoSlots.apply(self, x, weight, bias)
        return torch.nn.functional.linear(x, _flagged(weight, self.take(0, weight)),
                                          None if bias is None else self.take(1, bias))


class _LinearIntoSlots(torch.autograd.Function):
    """``linear(x, cut weight, cut bias)``; the backward writes the weight's gradient straight into its
    ``_GradSlot`` (and a cut bias's through its slot); gradients of uncut biases go to autograd."""

    @staticmethod
    def forward(ctx: Any, lin: _CutLinear, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        w = lin.take(0, weight)
        x2 = x.reshape(-1, x.shape[-1])  # 2-D as autograd's linear folds it (matmul without grad may not: bmm)
        y = x2.new_empty(*x.shape[:-1], w.shape[0])  # not a view: the caller may modify it in place
        if bias is None:
            torch.mm(x2, w.t(), out=y.view(-1, w.shape[0]))
        else:
            torch.addmm(lin.take(1, bias), x2, w.t(), out=y.view(-1, w.shape[0]))
        ctx.lin, ctx.shape = lin, x.shape
        ctx.gathered = None if w._base is weight else w  # a copy of kept rows: kept, not gathered again
        ctx.save_for_backward(x2, weight, bias)  # autograd refuses them if changed in place before backward
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        lin = ctx.lin
        x2, weight, bias = ctx.saved_tensors
        w = ctx.gathered if ctx.gathered is not None else lin.take(0, weight)
        g2 = grad.reshape(-1, grad.shape[-1])
        grad_x = g2.mm(w).view(ctx.shape) if ctx.needs_input_grad[1] else None
        if ctx.needs_input_grad[2]:
            slot, spec = lin.weight_cut
            slot.write(weight, spec, lambda blocks, add: _mm_into(blocks, g2, x2, spec, add))
        grad_bias = None
        if bias is not None and ctx.needs_input_grad[3]:
            grad_bias = g2.sum(0)
            if lin.bias_cut is not None:
                lin.bias_cut[0].accumulate(bias, lin.bias_cut[1], grad_bias)
                grad_bias = None
        return None, grad_x, None, grad_bias


def _mm_into(blocks: list[torch.Tensor], grad: torch.Tensor, x: torch.Tensor, spec: Spec, add: bool) -> None:
    """Write (or add) ``grad.T @ x``, a linear weight's gradient cut by ``spec``, into its ``blocks``."""
    runs = dict(spec)  # the weight's rows are grad's columns, its columns x's: split both like the runs
    parts = [_blocks(t, ((1, runs[d]),) if d in runs else (), cut=True) for d, t in ((0, grad), (1, x))]
    for block, (g, xs) in zip(blocks, itertools.product(*parts)):
        block.addmm_(g.t(), xs, beta=1 if add else 0)


def compile_program(sub: IR, exprs_of: dict[str, list], dims, select: dict[int, torch.Tensor],
                    grads: SharedGrads | None = None) -> SubnetProgram:
    """Compile ``sub`` (a subnet IR without tensors) to run on the full model's tensors, cut by
    ``select`` (atom -> kept indices). ``exprs_of`` gives each canonical tensor's dim expressions;
    parameters cut to a few kept ranges per dim send their gradients through ``grads`` when given: large
    linear weights through a ``_CutLinear``, the others a few per autograd node (``_groups_of``)."""
    indices: list[_Index] = []  # of the gathers in the generated code (``_ix[k](_dev)``)
    cuts = Cuts(dims, select)
    groups: list[_ViewGroup] = []
    names: dict[str, Any] = {"_ix": indices, "_groups": groups, "_flagged": _flagged}
    linear_ids = itertools.count()  # names unique over the training and eval graphs

    def compile_one(graph: Graph) -> Callable:
        exprs: dict[str, str] = {}
        read: dict[str, tuple[str, Cut, int]] = {}  # placeholder -> (target, cut, kept elements): via slots
        for p in _by_first_use(graph):
            canon = sub.aliases.get(p.target, p.target)
            slices = cuts.of(exprs_of[canon])
            spec = _spec(slices) if grads is not None and p.kind == PARAM and slices else None
            if spec is not None:
                read[p.name] = (p.target, grads.cut(canon, spec), math.prod(p.meta["shape"]))
                continue
            expr = "{}"
            for d, n, index in slices:
                if index is None:
                    expr += f".narrow({d}, 0, {n})"
                else:
                    indices.append(_Index(index))
                    expr += f".index_select({d}, _ix[{len(indices) - 1}](_dev))"
            exprs[p.target] = expr if all(index is None for *_, index in slices) else f"_flagged({{}}, {expr})"
        calls = {}
        for op, weight, bias in _cut_linears(graph, read):  # these read their weight and bias whole
            cuts_ = (read.pop(weight)[1], read.pop(bias)[1] if bias in read else None)
            calls[op.name] = f"_lin{next(linear_ids)}"
            names[calls[op.name]] = _CutLinear(
                *cuts_, tuple(None if c is None else _row_index(c[1]) for c in cuts_))
        preamble = []
        members = [(target, sub.aliases.get(target, target), cut, n, _row_index(cut[1]))
                   for target, cut, n in read.values()]
        for group, targets in view_groups(members):
            groups.append(group)
            var = f"_v{len(groups) - 1}"
            preamble.append(f"{var} = _groups[{len(groups) - 1}]("
                            + ", ".join(attr_path("self", target) for target in targets) + ")")
            exprs.update((target, f"{var}[{j}]") for j, target in enumerate(targets))
        return compile_graph(sub, graph, exprs, names, preamble, calls)

    train_fn = compile_one(sub.graph)
    eval_fn = compile_one(sub.eval_graph) if sub.eval_graph is not None else None
    return SubnetProgram(train_fn, eval_fn)


_LINEAR_MIN = 1 << 18  # kept weight elements from which a _CutLinear's saved gradient copy beats its Python


def _cut_linears(graph: Graph, read: dict[str, tuple[str, Cut, int]]) -> list[tuple[Any, str, str | None]]:
    """``(op, weight, bias)`` of the ``aten.linear`` ops whose weight is a parameter read through a gradient
    slot (``read``), keeping at least ``_LINEAR_MIN`` elements, and whose weight and bias
    placeholders no other op reads: a ``_CutLinear`` runs them. Below that size the grouped reads
    (``_ViewGroup``: one node for several weights, views reused) cost less Python than the copy saved
    (ViT-B/16's minimal subnet: 0.5 ms slower per step with every cut linear run by a ``_CutLinear``)."""
    readers: dict[str, int] = {}
    for op in graph.ops:
        for ref in set(op.inputs):
            readers[ref] = readers.get(ref, 0) + 1
    matrices = matrix_placeholders(graph)
    out = []
    for op in graph.ops:
        if op.target != "aten.linear.default" or op.kwargs or len(op.args) < 2 or _node(op.args[1]) not in matrices:
            continue
        weight = _node(op.args[1])
        bias = _node(op.args[2]) if len(op.args) > 2 and op.args[2] is not None else None
        if (weight in read and readers[weight] == 1 and read[weight][2] >= _LINEAR_MIN
                and (len(op.args) < 3 or op.args[2] is None
                     or (bias is not None and readers[bias] == 1 and bias != weight))):
            out.append((op, weight, bias))
    return out


def matrix_placeholders(graph: Graph) -> set[str]:
    """The placeholders holding 2-D tensors: the weights a ``_CutLinear`` can run (a 1-D ``linear`` weight,
    D-FINE's ``F.linear(probs, project)``, contracts the input's last dim away)."""
    return {p.name for p in graph.placeholders
            if isinstance(p.meta, dict) and len(p.meta.get("shape") or ()) == 2}


def _row_index(spec: Spec) -> _Index | None:
    """The kept positions of dim 0 when ``spec`` keeps several runs there (the gather of ``_take``; made
    when first used)."""
    runs = dict(spec).get(0, ())
    return _Index(RunIndex(runs)) if len(runs) > 1 else None


def _node(arg: Any) -> str | None:
    return arg["node"] if isinstance(arg, dict) and set(arg) == {"node"} else None


_MAX_RUNS = 64  # above this many kept ranges in a dim, ``index_select`` and autograd's own backward


def _spec(slices: list[tuple[int, int, torch.Tensor | None]]) -> Spec | None:
    """The cut of ``Cuts.of`` slices as runs per dim; None when a dim keeps too many separate ranges."""
    spec = []
    for d, n, index in slices:
        runs = ((0, n),) if index is None else index_runs(index, _MAX_RUNS)
        if runs is None:
            return None
        spec.append((d, runs))
    return tuple(spec)


_HELD = 1 << 20  # elements of gradient one autograd node may hold back (4 MB in float32)


Read = tuple[Any, str, Cut, int, "_Index | None"]  # (key, canonical name, cut, kept elements, dim-0 gather index)


def view_groups(members: list[Read]) -> list[tuple[_ViewGroup, tuple]]:
    """Cut parameters (in order of first use) read through ``_ViewGroup`` nodes, with their members'
    keys: the views first, then the copies (``_groups_of``)."""
    return [(_ViewGroup(tuple(m[1] for m in group), tuple(m[2] for m in group), tuple(m[4] for m in group)),
             tuple(m[0] for m in group))
            for group in _groups_of([m for m in members if _is_view(m[2][1])])
            + _groups_of([m for m in members if not _is_view(m[2][1])])]


def _groups_of(shared: list[Read]) -> list[list[Read]]:
    """Consecutive shared parameters (in order of first use) grouped into one autograd node each, while
    the group's kept elements stay within ``_HELD``: a node costs more Python than a small subnet's ops,
    but it hands its gradients over only once the backward pass reaches its earliest use."""
    out: list[list[Read]] = []
    held = 0
    for member in shared:
        if out and held + member[3] <= _HELD:
            out[-1].append(member)
            held += member[3]
        else:
            out.append([member])
            held = member[3]
    return out


def _by_first_use(graph: Graph) -> list[Placeholder]:
    """The tensor placeholders (parameters, buffers, constants) of ``graph`` in order of first use."""
    tensors = {p.name: p for p in graph.placeholders if p.kind in (PARAM, BUFFER, CONST)}
    order = dict.fromkeys(ref for op in graph.ops for ref in op.inputs if ref in tensors)
    return [tensors[name] for name in order] + [p for name, p in tensors.items() if name not in order]
