"""One generated forward for every arch of a space, so that switching to a new arch compiles nothing.

``compile_program`` rewrites the subnet's IR and generates code per arch (milliseconds: a third of the
training time of a small model that samples new subnets every step). A ``ProgramTemplate`` generates the
full graph once, with every op guarded (``if _on[i]``), every width-dependent argument (``view`` sizes,
``groups``, split sizes…) read from a table (``_c[k]``), every cut-able ``linear`` called through a slot
(``_F[k]``) and every weight read through a per-arch reader (``_read``). Binding an arch fills those
tables: which ops survive (``space.liveness.Liveness``: the units' edge contraction and dead code, as
``space.subnet`` does it), the contracted units' outputs (``elif`` branches assign their inputs), the
shape arguments (``space.subnet``'s own rewrite, memoised per combination of the few widths each op
depends on) and the weight cuts (the same slots, groups and ``_CutLinear`` as ``compile_program``).

Anything the template cannot express raises ``TemplateUnsupported``; the supernet then compiles that arch
(or every arch of that model) the per-arch way, which computes the same function."""
from __future__ import annotations

import copy
import dataclasses
import math
import types
from typing import Any, Callable

import torch

from ..ir.codegen import Guards, SubnetParts, compile_graph, remember, safe_name
from ..ir.graph import BUFFER, CONST, IR, PARAM, Graph, ModuleNode, OpNode, is_symint
from ..ir.ops import functional_form, is_inplace
from ..ir.serial import decode_arg, node_refs, resolve_target
from ..space.arch import Arch
from ..space.analysis import dim_source
from ..space.liveness import WIDTHS_KEPT, Liveness, WidthTable, groups_in, shrunk_atoms
from ..space.space import SearchSpace
from ..space.subnet import (_ARG_REWRITES, RUNTIME_SIZE, SPLIT_OPS, Cuts, as_split_with_sizes, kept_aliases,
                            kept_modules, ran_modules, resized_op, arg_dim, split_pieces, subnet_structure,
                            TensorCut, tensor_cut)
from .program import (_LINEAR_MIN, SharedGrads, SubnetProgram, _CutLinear, _flagged, _Index, _node, _row_index, _spec,
                      matrix_placeholders, view_groups)

_LINEAR = "aten.linear.default"


class TemplateUnsupported(Exception):
    """The template cannot express this graph (or arch); compile per arch instead."""


class ProgramTemplate:
    """Generated forwards (training and eval graph) of every arch of ``space`` over the tensors of ``net``
    (the supernet's shared weights, read at every call from their ``homes``: canonical name -> (module,
    attribute)); ``bind(arch)`` gives the arch's ``SubnetProgram`` in well under a millisecond."""

    own = False  # the ops read the shared weights (cut per arch), not an extracted model's own

    def __init__(self, space: SearchSpace, net: torch.nn.Module, homes: dict[str, tuple[torch.nn.Module, str]],
                 grads: SharedGrads) -> None:
        self.space, self.net, self.homes, self.grads = space, net, homes, grads
        self.dim_cuts = _DimCuts(space)
        self.tensor_tables: dict[str, WidthTable] = {}  # canonical name -> its cut table (shared by both graphs)
        ir = space.ir
        self.graphs = {"train": _GraphTemplate(self, ir, ir.graph, "train")}
        if ir.eval_graph is not None:
            self.graphs["eval"] = _GraphTemplate(self, ir, ir.eval_graph, "eval")

    def bind(self, arch: Arch) -> SubnetProgram:
        """``arch``'s program (validated by the caller); ``TemplateUnsupported`` when it needs a form of
        an op the template does not have."""
        widths = [arch.width.get(g.key, g.size) for g in self.space.groups]
        dropped = self.space.dropped_units(arch)
        train = self.graphs["train"].bind(widths, dropped)
        return SubnetProgram(train, self.graphs["eval"].bind(widths, dropped) if "eval" in self.graphs else None)


class ExtractionTemplate:
    """Generated forwards of every arch's standalone model (``Supernet.extract``): the guarded code of a
    ``ProgramTemplate``, reading the extracted model's own (already cut) tensors and modules from
    ``root._osf_homes`` / ``root._osf_owners``. ``parts(arch)`` fills the arch's tables and lists the
    modules and tensors its model keeps (as ``space.subnet`` prunes them), so extracting a new arch
    generates and compiles no code."""

    own = True

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        ir = space.ir
        self.reads: dict[str, int] = {}  # canonical tensor -> index into root._osf_homes
        self.owners: dict[str, int] = {}  # module path -> index into root._osf_owners
        self.graphs = {"train": _GraphTemplate(self, ir, ir.graph, "train")}
        if ir.eval_graph is not None:
            self.graphs["eval"] = _GraphTemplate(self, ir, ir.eval_graph, "eval")
        self.read_names, self.owner_paths = list(self.reads), list(self.owners)  # complete now
        self.ran = ran_modules(ir)
        self.cuts = _CutTables(space)
        self.kept: dict[tuple, tuple] = {}  # per set of dropped units: what the model keeps (``remember``)
        self.blueprints: dict = {}  # what the blueprints of every arch share (``Blueprint``'s cache)
        # the space over a tensor-less IR: what a model extracted here keeps alive to pickle its own IR
        lean = copy.copy(space)
        lean.ir = IR(ir.graph, {n: ModuleNode(n, m.meta, m.children) for n, m in ir.modules.items()}, {},
                     ir.aliases, ir.info, ir.eval_graph)
        self.lean = lean

    def read_slot(self, canonical: str) -> int:
        return self.reads.setdefault(canonical, len(self.reads))

    def owner_slot(self, path: str) -> int:
        return self.owners.setdefault(path, len(self.owners))

    def parts(self, arch: Arch) -> tuple[SubnetParts, dict[str, TensorCut]]:
        """(``arch``'s ``SubnetParts``, how to cut each tensor its model keeps: ``space.subnet.cut_plan``);
        ``arch`` is validated by the caller. ``TemplateUnsupported`` when it needs a form of an op the
        template lacks."""
        ir = self.space.ir
        widths = [arch.width.get(g.key, g.size) for g in self.space.groups]
        dropped = self.space.dropped_units(arch)
        depth = tuple(dropped)
        fns, owners, kept_tensors = {}, set(), set()
        for key, graph in self.graphs.items():
            fn, live, kept = graph.bind_own(widths, dropped)
            fns[key] = fn
            if depth not in self.kept:
                owners.update([graph.owner_of[i] for i in kept if not graph.symint[i]])
                kept_tensors.update(c for name, c in graph.canonical.items() if name in live)
        if depth not in self.kept:  # what a model keeps depends on the dropped units alone
            modules = kept_modules(ir, owners, kept_tensors, self.ran)
            remember(self.kept, depth, (modules, kept_tensors, *kept_aliases(ir, modules, kept_tensors)))
        modules, kept_tensors, module_aliases, aliases, persistent = self.kept[depth]
        lean = self.lean
        parts = SubnetParts(modules, aliases, module_aliases, persistent, fns["train"], fns.get("eval"),
                            self.read_names, self.owner_paths, lambda: subnet_structure(lean, arch), depth)
        return parts, self.cuts.plan(arch, widths, kept_tensors)


class _DimCuts:
    """The cut of each (resolved) dim expression at the widths of the groups in it, shared by every arch
    of a template (the last ``WIDTHS_KEPT`` combinations of each): the tensors of one dim share its cut
    and its index."""

    def __init__(self, space: SearchSpace) -> None:
        an = space.analysis
        self.space, self.dims = space, an.dims
        group_of = {g.atom: i for i, g in enumerate(space.groups)}
        self.groups: dict[Any, tuple[int, ...]] = {}  # dim expression -> indices of the groups in it
        for exprs in an.tensors.values():
            for e in exprs:
                if e not in self.groups:
                    self.groups[e] = groups_in([[e]], an.dims, group_of)
        self.memo: dict[Any, dict[tuple, Any]] = {}
        self.facts = Cuts.facts()

    def cuts(self, kept: dict[int, int], widths: list[int] | dict[int, int]) -> _MemoCuts:
        """The ``Cuts`` of an arch whose atoms keep ``kept`` channels (a prefix each), with these group
        ``widths`` (indexable by every group of the dims it is asked about)."""
        return _MemoCuts(self, kept, widths)


class _MemoCuts(Cuts):
    """The ``Cuts`` of one arch whose per-dim results are shared by every arch with the same widths in
    that dim (``_DimCuts``)."""

    def __init__(self, shared: _DimCuts, kept: dict[int, int], widths: list[int] | dict[int, int]) -> None:
        super().__init__(shared.dims, kept, prefix=True, facts=shared.facts)
        self.shared, self.widths = shared, widths

    def of(self, exprs: list) -> list[tuple[int, int, torch.Tensor | None]]:
        out, memos, groups, widths = [], self.shared.memo, self.shared.groups, self.widths
        for d, e in enumerate(exprs):
            r = self._facts(e)[0]
            memo = memos.get(r)
            if memo is None:
                memo = memos[r] = {}
            key = tuple([widths[i] for i in groups[e]])
            cut_ = memo.get(key, _MISSING)
            if cut_ is _MISSING:
                cut_ = remember(memo, key, self._dim_cut(e), WIDTHS_KEPT)
            if cut_ is not None:
                out.append((d, *cut_))
        return out


class _CutTables:
    """``space.subnet.cut_plan`` memoised across archs: per tensor at the widths of its groups (the last
    ``WIDTHS_KEPT`` combinations), and per dim (``_DimCuts``)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space, self.dims = space, _DimCuts(space)
        an = space.analysis
        self.tensor_groups = {name: tuple(sorted({i for e in exprs for i in self.dims.groups[e]}))
                              for name, exprs in an.tensors.items()}
        self.shapes = {name: t.shape for name, t in space.ir.tensors.items()}
        self.tensors: dict[str, dict[tuple, TensorCut]] = {name: {} for name in an.tensors}

    def plan(self, arch: Arch, widths: list[int], names: set[str]) -> dict[str, TensorCut]:
        an, plan, cuts = self.space.analysis, {}, None
        for name in names:
            memo = self.tensors[name]
            key = tuple([widths[i] for i in self.tensor_groups[name]])
            c = memo.get(key)
            if c is None:
                if cuts is None:
                    cuts = self.dims.cuts(self.space.kept_counts(arch), widths)
                c = remember(memo, key, tensor_cut(cuts, an.tensors[name], self.shapes[name]), WIDTHS_KEPT)
            plan[name] = c
        return plan


_MISSING = object()


class _GraphTemplate:
    """The template of one graph (training or eval): its generated code and the tables ``bind`` fills."""

    def __init__(self, owner: ProgramTemplate, ir: IR, graph: Graph, key: str) -> None:
        space = owner.space
        self.owner, self.key, self.vals = owner, key, space.analysis.values[key]
        self.group_of = {g.atom: i for i, g in enumerate(space.groups)}
        self.index = {op.name: i for i, op in enumerate(graph.ops)}
        self.n_ops = len(graph.ops)
        located = space.located_units(key)
        self.liveness = Liveness(graph, located)
        self.lives: dict[tuple, tuple[set[str], set[int]]] = {}  # per set of dropped units (``remember``)
        # a copy whose arguments the template rewrites into table reads
        ops = [dataclasses.replace(op, args=copy.deepcopy(op.args), kwargs=copy.deepcopy(op.kwargs))
               for op in graph.ops]
        self.hold: dict[str, str] = {}  # value -> the last op that may still read it
        self.calls: dict[str, str] = {}
        self.extra: dict[str, Any] = {}
        instead = self._contractions(located)
        self._inplace_calls(ops, instead)
        self._dynamic_arguments(graph, ops)
        tensor_ps = [p for p in graph.placeholders if p.kind in (PARAM, BUFFER, CONST)]
        owners = list(dict.fromkeys(op.owner for op in ops))
        if owner.own:  # the extracted model's own tensors and modules, by the owner's numbering
            self.canonical = {p.name: ir.aliases.get(p.target, p.target) for p in tensor_ps}
            self.owner_of = [op.owner for op in graph.ops]
            self.symint = [is_symint(op) for op in graph.ops]
            reads = {p.target: f"_W[{owner.read_slot(self.canonical[p.name])}]" for p in tensor_ps}
            # the root is ``self``: a root holding itself in ``_osf_owners`` would be freed by the cycle
            # collector only, late (each extracted model's weights held meanwhile)
            owner_reads = {m: "self" if m == "" else f"_M[{owner.owner_slot(m)}]" for m in owners}
            preamble = ["_W = [getattr(self if m is None else m, k) for m, k in self._osf_homes]",
                        "_M = self._osf_owners"]
        else:
            self._linears(graph, ops, tensor_ps)
            self._tensor_reads(ir, graph, tensor_ps)
            self.extra["_M"] = [owner.net.get_submodule(m) for m in owners]
            reads = {p.target: f"_W[{j}]" for j, p in enumerate(tensor_ps)}
            owner_reads = {m: f"_M[{k}]" for k, m in enumerate(owners)}
            preamble = ["_W = _read(_dev)"] if tensor_ps else []
        guards = Guards({op.name: f"_on[{i}]" for i, op in enumerate(ops)}, instead, self.hold, owner_reads)
        fn = compile_graph(ir, Graph(graph.placeholders, ops, graph.outputs), reads, self.extra, preamble,
                           self.calls, guards)
        self.code, self.globals, self.source = fn.__code__, fn.__globals__, fn.__osf_source__

    def _keep(self, ref: str, until: str) -> None:
        if ref not in self.hold or self.index[self.hold[ref]] < self.index[until]:
            self.hold[ref] = until

    def _contractions(self, located: dict) -> dict[str, list[tuple[str, str]]]:
        """Per unit output, the ``elif`` branches that give it the unit's input when that unit is the
        contracted one (innermost unit first), and per mark among a unit's ops the branch that gives it the
        value it marks (``Liveness``: its readers read that value); ``self.alternative``: unit -> [(op
        index, branch, value, what it becomes)]."""
        instead: dict[str, list[tuple[str, str]]] = {}
        self.alternative: dict[str, list[tuple[int, int, str, str]]] = {}
        for unit, (_, inp, out, forwards) in sorted(located.items(), key=lambda kv: len(kv[1][0])):
            if out not in self.index:
                raise TemplateUnsupported(f"unit '{unit}' ends in {out}, which is not an op of the {self.key} graph")
            for value, source in [(out, inp), *forwards.items()]:
                branches = instead.setdefault(value, [])
                branches.append((f"_x[{self.index[value]}] == {len(branches) + 1}", source))
                self.alternative.setdefault(unit, []).append((self.index[value], len(branches), value, source))
                self._keep(source, value)
        return instead

    def _inplace_calls(self, ops: list[OpNode], instead: dict) -> None:
        """An in-place op on a value a contraction may replace runs out of place then (as the rewrite does:
        it would otherwise write into the unit's input, which others read)."""
        for op in ops:
            if not is_inplace(op.target):
                continue
            firsts = [r for r in node_refs(op.args[:1]) if r in instead]
            if not firsts:
                continue
            functional = functional_form(op.target)
            if functional is None:
                continue  # Liveness refuses the archs that would need it
            name = f"_fn{len(self.extra)}"
            self.extra[name], self.extra[name + "i"] = resolve_target(functional), resolve_target(op.target)
            ran = " and ".join(f"_on[{self.index[r]}]" for r in firsts)
            self.calls[op.name] = f"({name}i if {ran} else {name})"

    def _dynamic_arguments(self, graph: Graph, ops: list[OpNode]) -> None:
        """Width-dependent constant arguments read ``_c[k]``, filled per arch from a table per op keyed by
        the widths of the groups it depends on (``self.dynamic``: (op index, table, slots))."""
        dims = self.owner.space.analysis.dims
        hints = self.owner.space.analysis.hints
        self.dynamic: list[tuple[int, WidthTable, list[int]]] = []
        self.runtime_sizes: list[tuple[int, int, int]] = []  # (op index, slot, index of the op read from)
        self.n_consts = 0
        for i, op in enumerate(ops):
            if op.target not in _ARG_REWRITES or _never_rewritten(op):
                continue
            groups = groups_in(_argument_dims(op, self.vals), dims, self.group_of)
            if not groups:
                continue
            _normal_form(op, self.vals, dims)
            static = copy.deepcopy(op)
            places = []  # (arg, element or None, node the element may replace or None)
            for j, a in enumerate(op.args):
                if isinstance(a, list) and node_refs(a):
                    places += [(j, m, _node(e)) for m, e in enumerate(a)]
                elif not node_refs([a]):
                    places.append((j, None, None))
            slots = list(range(self.n_consts, self.n_consts + len(places)))
            self.n_consts += len(places)
            for ref in {ref for _, _, ref in places if ref is not None}:  # read inside an expression
                self._keep(ref, op.name)
            runtime = set()  # positions in places of sizes read at run time
            for n, ((j, m, ref), k) in enumerate(zip(places, slots)):
                source = self._size_source(graph, i, m) if ref is not None else None
                if source is not None:  # a size that a subnet reads at run time from an earlier value
                    runtime.add(n)
                    self._keep(source[0], op.name)
                    self.runtime_sizes.append((i, k, self.index[source[0]]))
                    expr = {"expr": f"({safe_name(ref)} if _c[{k}] is None else "
                                    f"{safe_name(source[0])}.size({source[1]}) if _c[{k}] is True else _c[{k}])"}
                else:
                    expr = {"expr": f"_c[{k}]" if ref is None
                            else f"({safe_name(ref)} if _c[{k}] is None else _c[{k}])"}
                if m is None:
                    op.args[j] = expr
                else:
                    op.args[j][m] = expr
            table = WidthTable(groups, _ArgsAt(self.owner, graph.ops[i], static, places, runtime, self.vals, hints))
            self.dynamic.append((i, table, slots))

    def _size_source(self, graph: Graph, at: int, dim: int) -> tuple[str, int] | None:
        """Where op ``at`` reads the size of its output dim ``dim`` when that dim is sized at run time: the
        nearest earlier value with that dim, as ``space.subnet`` reads it."""
        an, name = self.owner.space.analysis, graph.ops[at].name
        if (name, dim) not in an.sized_at_run_time.get(self.key, ()):
            return None
        return dim_source(graph.ops[:at], self.vals, an.dims, self.vals[name][dim])

    def _linears(self, graph: Graph, ops: list[OpNode], tensor_ps: list) -> None:
        """``linear`` ops on a parameter that no other op reads call ``_F[k]``: a ``_CutLinear`` where the
        arch cuts a large weight, else the plain op (``self.linears``: (op index, weight slot, bias slot))."""
        kinds = {p.name: p.kind for p in graph.placeholders}
        matrices = matrix_placeholders(graph)
        slot_of = {p.name: j for j, p in enumerate(tensor_ps)}
        readers: dict[str, int] = {}
        for op in ops:
            for ref in set(op.inputs):
                readers[ref] = readers.get(ref, 0) + 1
        self.linears: list[tuple[int, int, int | None]] = []
        for i, op in enumerate(ops):
            if op.target != _LINEAR or op.kwargs or len(op.args) < 2 or op.name in self.calls:
                continue
            weight = _node(op.args[1])
            bias = _node(op.args[2]) if len(op.args) > 2 and op.args[2] is not None else None
            if (kinds.get(weight) == PARAM and weight in matrices and readers[weight] == 1
                    and (len(op.args) < 3 or op.args[2] is None
                         or (bias in slot_of and readers[bias] == 1 and bias != weight))):
                self.calls[op.name] = f"_F[{len(self.linears)}]"
                self.linears.append((i, slot_of[weight], slot_of[bias] if bias is not None else None))

    def _tensor_reads(self, ir: IR, graph: Graph, tensor_ps: list) -> None:
        """Per tensor placeholder: where it is read from (live, at every call) and its cut table; the
        order of first use (the grouping of cut parameters follows it)."""
        an = self.owner.space.analysis
        slot_of = {p.name: j for j, p in enumerate(tensor_ps)}
        order = dict.fromkeys(r for op in graph.ops for r in op.inputs if r in slot_of)
        self.first_use = [slot_of[n] for n in order] + [j for j, p in enumerate(tensor_ps) if p.name not in order]
        self.tensors = []  # per slot: (placeholder name, canonical name, is parameter, cut table)
        for p in tensor_ps:
            canon = ir.aliases.get(p.target, p.target)
            exprs = an.tensors[canon]
            table = self.owner.tensor_tables.get(canon)
            if table is None:
                table = self.owner.tensor_tables[canon] = WidthTable(groups_in([exprs], an.dims, self.group_of),
                                                                     _TensorCut(self.owner, exprs))
            self.tensors.append((p.name, canon, p.kind == PARAM, table))
        self.homes = []  # per slot: the dict of its module that holds it (parameters or buffers), and its key
        for _, canon, _, _ in self.tensors:
            module, local = self.owner.homes[canon]
            self.homes.append((module._parameters if local in module._parameters else module._buffers, local))
        self.n_tensors = len(tensor_ps)

    def _tables(self, widths: list[int], dropped: list[str]) -> tuple[set[str], set[int], list, list, list]:
        """(live values, surviving op indices, ``_on``, ``_x``, ``_c``) of the arch with these group
        ``widths`` and ``dropped`` units."""
        depth = tuple(dropped)
        if depth not in self.lives:
            remember(self.lives, depth, self.liveness.live(dropped))
        live, kept = self.lives[depth]
        on = [False] * self.n_ops
        for i in kept:
            on[i] = True
        x = [0] * self.n_ops
        replace = {value: source for u in dropped for _, _, value, source in self.alternative.get(u, ())}
        for unit in dropped:
            for i, branch, value, _ in self.alternative.get(unit, ()):
                while value in replace:
                    value = replace[value]
                if value in live:  # else nothing reads the unit's output (and its input may not exist)
                    x[i] = branch
        consts: list[Any] = [None] * self.n_consts
        for i, table, slots in self.dynamic:
            if on[i]:
                for k, v in zip(slots, table(widths)):
                    consts[k] = v
        for i, k, source in self.runtime_sizes:
            if on[i] and consts[k] is True and not on[source]:
                raise TemplateUnsupported(f"the value a size of op {i} is read from does not run in this arch")
        return live, kept, on, x, consts

    def bind_own(self, widths: list[int], dropped: list[str]) -> tuple[Callable, set[str], set[int]]:
        """(the forward of the arch's standalone model, the values it reads, the indices of the ops it
        runs)."""
        live, kept, on, x, consts = self._tables(widths, dropped)
        fn = types.FunctionType(self.code, {**self.globals, "_on": on, "_x": x, "_c": consts}, "forward")
        fn.__osf_source__ = self.source
        return fn, live, kept

    def bind(self, widths: list[int], dropped: list[str]) -> Callable:
        """The forward of the arch with these group ``widths`` and ``dropped`` units, on views of the
        shared weights."""
        live, _, on, x, consts = self._tables(widths, dropped)
        # weight reads, as compile_program makes them
        grads = self.owner.grads
        read: dict[int, tuple[str, Any, int, _Index | None]] = {}  # slot -> (canonical, grad cut, kept elements, rows)
        plain: list[tuple[int, tuple]] = []
        for j in self.first_use:
            name, canon, is_param, table = self.tensors[j]
            if name not in live:
                continue
            cut = table(widths)
            if cut is None:
                continue
            steps, spec, elements, rows = cut
            if is_param and spec is not None:
                read[j] = (canon, grads.cut(canon, spec), elements, rows)
            else:
                plain.append((j, steps))
        fns: list[Callable] = []
        for i, w, b in self.linears:
            if on[i] and w in read and read[w][2] >= _LINEAR_MIN:
                weight, bias = read.pop(w), read.pop(b) if b in read else None
                fns.append(_CutLinear(weight[1], None if bias is None else bias[1],
                                      (weight[3], None if bias is None else bias[3])))
            else:
                fns.append(_ATEN_LINEAR)
        groups = view_groups([(j, *member) for j, member in read.items()])
        homes = self.homes
        reader = _Reader(self.n_tensors, tuple((j, *homes[j]) for j in self.first_use if self.tensors[j][0] in live),
                         tuple(groups), tuple(plain))
        fn = types.FunctionType(self.code, {**self.globals, "_on": on, "_x": x, "_c": consts, "_F": fns,
                                            "_read": reader}, "forward")
        fn.__osf_source__ = self.source
        return fn


_ATEN_LINEAR = torch.ops.aten.linear.default


class _Reader:
    """An arch's weight reads, in placeholder order: the shared tensors its ops use, fetched from their
    modules at every call (an optimizer or ``.to()`` may replace them), then cut: groups of cut parameters
    through their gradient slots, other cut tensors as views or gathers; None for the tensors it does
    not use."""

    __slots__ = ("n", "fetch", "groups", "plain")

    def __init__(self, n: int, fetch: tuple, groups: tuple, plain: tuple) -> None:
        self.n, self.fetch, self.groups, self.plain = n, fetch, groups, plain

    def __call__(self, device: torch.device) -> list:
        out: list = [None] * self.n
        for j, home, local in self.fetch:
            out[j] = home[local]
        for group, at in self.groups:
            for j, view in zip(at, group(*[out[j] for j in at])):
                out[j] = view
        for j, steps in self.plain:
            t = out[j]
            for d, n, index in steps:
                t = t.narrow(d, 0, n) if index is None else t.index_select(d, index(device))
            out[j] = _flagged(out[j], t)
        return out


class _TensorCut:
    """How an arch cuts one shared tensor, at the widths of its groups: None (whole) or ``(steps, spec,
    kept elements, rows)``: ``steps`` the narrows / index selections of a plain read (``(dim, length,
    kept positions or None)``), ``spec`` the runs of a gradient-slot read (None: too many runs), ``rows`` the
    dim-0 gather index of the slot read."""

    def __init__(self, owner: ProgramTemplate, exprs: list) -> None:
        self.owner, self.exprs = owner, exprs

    def __call__(self, widths: dict[int, int]):
        owner = self.owner
        kept = shrunk_atoms(owner.space, widths)
        if not kept:
            return None
        cuts = owner.dim_cuts.cuts(kept, widths)
        slices = cuts.of(self.exprs)
        if not slices:
            return None
        steps = tuple((d, n, None if index is None else _Index(index)) for d, n, index in slices)
        spec = _spec(slices)
        shape = [cuts.size_of(e) for e in self.exprs]
        for d, n, _ in slices:
            shape[d] = n
        rows = None if spec is None else _row_index(spec)
        return steps, spec, math.prod(shape), rows


class _ArgsAt:
    """The constant arguments of one op at given widths (``space.subnet``'s own rewrite), at the template's
    ``places``; a node element that the rewrite replaced by a number gives that number, else None (True
    at the ``runtime`` places where the rewrite reads the size at run time)."""

    def __init__(self, owner: ProgramTemplate, op: OpNode, static: OpNode, places: list, runtime: set[int],
                 vals: dict, hints: dict[str, int]) -> None:
        self.owner, self.op, self.static, self.places, self.vals, self.hints = owner, op, static, places, vals, hints
        self.runtime = runtime

    def __call__(self, widths: dict[int, int]) -> list:
        op, dims = self.op, self.owner.space.analysis.dims
        new = resized_op(op, self.vals, dims, shrunk_atoms(self.owner.space, widths), self.hints, meta=False)
        _normal_form(new, self.vals, dims)
        static = self.static
        fixed = {j for j, m, _ in self.places if m is None}
        if (new.target != static.target or new.kwargs != static.kwargs or len(new.args) != len(static.args)
                or any(new.args[j] != static.args[j] for j in range(len(new.args)) if j not in fixed
                       and not (isinstance(static.args[j], list) and node_refs(static.args[j])
                                and len(new.args[j]) == len(static.args[j])))):
            raise TemplateUnsupported(f"{op.name}: the rewrite at these widths changes the op's form")
        out = []
        for n, (j, m, ref) in enumerate(self.places):
            v = new.args[j] if m is None else new.args[j][m]
            if ref is not None:
                if v == {"node": ref}:
                    v = None
                elif isinstance(v, dict) and RUNTIME_SIZE in v and n in self.runtime:
                    out.append(True)  # read from the template's source value at run time
                    continue
                elif not isinstance(v, int):
                    raise TemplateUnsupported(f"{op.name}: the rewrite replaces {ref} by {v!r}")
            out.append(decode_arg(v, {}))
        return out


def _never_rewritten(op: OpNode) -> bool:
    """A convolution or GroupNorm with one group: its rewrite only ever changes ``groups``."""
    if op.target == "aten.group_norm.default":
        return op.args[1] == 1
    if not op.target.startswith(("aten.conv", "aten.convolution")):
        return False
    at = 8 if op.target == "aten.convolution.default" else 6
    return (op.args[at] if len(op.args) > at else op.kwargs.get("groups", 1)) == 1


def _argument_dims(op: OpNode, vals: dict) -> list:
    """The dim expressions that ``op``'s rewritable arguments depend on: a split's along its dim (its
    pieces; the other dims pass through: a chunked symbolic batch of channels that shrink keeps its
    traced pieces), else every dim of its output and inputs."""
    out = vals.get(op.name)
    x = vals.get(op.args[0]["node"]) if op.args and isinstance(op.args[0], dict) and "node" in op.args[0] else None
    if op.target in SPLIT_OPS and isinstance(out, dict) and isinstance(x, list):
        d = arg_dim(op, x)
        return [[x[d]]] + [[e[d]] for e in out["list"] if e is not None]
    return [out] + [vals.get(r) for r in op.inputs]


def _normal_form(op: OpNode, vals: dict, dims) -> None:
    """The one form a width-dependent op takes at every width: splits as ``split_with_sizes``, slices
    with their dim, start and end given."""
    if op.target in SPLIT_OPS and op.target != "aten.split_with_sizes.default":
        ins = [vals.get(a["node"]) if isinstance(a, dict) and "node" in a else None for a in op.args]
        as_split_with_sizes(op, split_pieces(op, ins, vals[op.name], dims))
    elif op.target == "aten.slice.Tensor" and not op.kwargs and len(op.args) < 4:
        op.args = op.args + [0, None, None][len(op.args) - 1:]
