"""Removable units (elastic depth) by edge contraction.

A unit is a module at any level of the hierarchy, or a residual branch (one operand of an ``add`` whose
ops feed nothing else). Removing it contracts an edge: a module's output is replaced by its input, a
residual branch disappears and its ``add`` becomes its other operand. A unit is accepted only when the
contracted graph stays connected (one tensor in, one tensor out, no internal value used elsewhere) and
dimension-compatible (input and output dims resolve to the same groups, with equal shapes).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import networkx as nx

from ..ir.flops import graph_flops
from ..ir.graph import BUFFER, CONST, INPUT, IR, PARAM, Graph, OpNode, is_symint
from ..ir.serial import node_refs
from .analysis import DimAnalysis, value_sizes

_ADDS = ("aten.add.Tensor", "aten.add_.Tensor")


@dataclass
class Unit:
    """A removable unit. ``input`` replaces ``output`` when the unit is dropped."""
    key: str
    kind: str  # "module" or "residual"
    ops: frozenset[str]
    input: str
    output: str
    params: list[str]  # canonical tensors read only inside the unit
    order: int  # position of its first op in the graph
    parent: str | None = None
    side: frozenset[str] = frozenset()  # ops making side inputs for this branch alone (dropped with it)
    forwards: dict[str, str] = field(default_factory=dict)  # marks among its ops -> what they mark (``_Marks``)
    read_as: str = ""  # the name its ops read ``input`` by in the graph with marks (``_Marks.read_as``)
    signature: str = ""
    children: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> frozenset[str]:
        """Every op removed with the unit: its own and the side inputs made for it alone."""
        return self.ops | self.side


@dataclass
class UnitReport:
    units: list[Unit]
    rejected: dict[str, str]  # candidate -> why it is not removable


class _Graph:
    def __init__(self, ir: IR, graph: Graph):
        self.ir, self.graph = ir, graph
        self.produced = graph.producers()
        self.index = {op.name: i for i, op in enumerate(graph.ops)}
        self.consumers: dict[str, list[OpNode]] = {}
        for op in graph.ops:
            for ref in op.inputs:
                self.consumers.setdefault(ref, []).append(op)
        self.outputs = set(node_refs(graph.outputs))
        self.tensor_of = {p.name: ir.aliases.get(p.target, p.target) for p in graph.placeholders
                          if p.kind in (PARAM, BUFFER, CONST)}
        self.flops = graph_flops(graph)
        self.inputs = [p.name for p in graph.placeholders if p.kind == INPUT]
        self._reach: dict[str, set[str]] = {}

    def readers(self, ref: str, avoid: frozenset[str] | set[str] = frozenset()) -> set[str]:
        """The ops that read ``ref``'s data, directly or through other ops, not passing through ``avoid``
        (size reads do not count); cached without ``avoid``."""
        if not avoid and ref in self._reach:
            return self._reach[ref]
        seen, stack = set(), [ref]
        while stack:
            for c in self.consumers.get(stack.pop(), []):
                if c.name not in seen and c.name not in avoid and not is_symint(c):
                    seen.add(c.name)
                    stack.append(c.name)
        if not avoid:
            self._reach[ref] = seen
        return seen

    def inputs_cut_off(self, dropped: set[str], carrier: str) -> list[str]:
        """The graph inputs, if removing ``dropped`` and reading ``carrier`` for its output would leave no
        graph input reaching an output (the subnet would ignore its inputs: e.g. the image, where the patch
        embedding is a branch added to a position table of the same shape); [] when one still does."""
        lost = []
        for name in self.inputs:
            reached = self.readers(name)
            if name not in self.outputs and not reached & self.outputs:
                continue  # reaches no output even now
            if not reached & dropped or carrier == name or carrier in reached \
                    or self.readers(name, dropped) & self.outputs:
                return []
            lost.append(name)
        return lost

    def used_outside(self, ref: str, ops: set[str], sink: str | None = None) -> bool:
        """Is value ``ref`` read by anything outside ``ops`` (besides ``sink``)? Size reads (symbolic
        ints) count only when what they compute is itself used outside."""
        if ref in self.outputs:
            return True
        for c in self.consumers.get(ref, []):
            if c.name in ops or c.name == sink:
                continue
            if not is_symint(c) or self.used_outside(c.name, ops, sink):
                return True
        return False

    def op(self, name: str) -> OpNode:
        return self.graph.ops[self.index[name]]

    def is_data(self, ref: str) -> bool:
        p = self.produced.get(ref)
        return p is not None and ref not in self.tensor_of and not is_symint(p)


def find_units(ir: IR, an: DimAnalysis, *, include=None, exclude=None) -> UnitReport:
    from fnmatch import fnmatch
    g = _Graph(ir, ir.graph.without_marks())
    vals = an.values["train"]
    rejected: dict[str, str] = {}
    branches = _residual_branches(g, vals, an, rejected)
    modules = _module_units(ir, g, vals, an, rejected)
    units: list[Unit] = []
    by_ops: dict[frozenset, Unit] = {}
    for u in sorted(branches + modules, key=lambda u: (u.kind != "module", u.order)):
        same = by_ops.get(u.ops) or by_ops.get(u.dropped)
        if same is not None:
            rejected[u.key] = f"same ops as unit '{same.key}'"
            continue
        by_ops[u.ops] = u
        units.append(u)
    # modules strictly inside a residual branch: dropping the branch is the meaningful choice
    kept = []
    for u in units:
        holder = next((b for b in units if b.kind == "residual" and u.kind == "module" and u.ops < b.dropped), None)
        if holder is not None:
            rejected[u.key] = f"inside residual branch '{holder.key}' (drop the branch instead)"
            continue
        kept.append(u)
    units = _nest(_unique_keys(kept), rejected)
    if include:
        units = [u for u in units if any(fnmatch(u.key, p) for p in include)]
    if exclude:
        units = [u for u in units if not any(fnmatch(u.key, p) for p in exclude)]
    keys = {u.key for u in units}
    for u in units:
        if u.parent not in keys:
            u.parent = None
    marks = _Marks(ir, ir.graph)
    for u in units:
        u.children = [c.key for c in units if c.parent == u.key]
        u.signature = _signature(g, u)
        u.ops = marks.dropped_with(u.ops, u.side, u.output)
        u.forwards = marks.forwards(u.ops)
        u.read_as = marks.read_as(u.ops | u.side, u.input)
    return UnitReport(sorted(units, key=lambda u: u.order), rejected)


class _Marks:
    """Which marks of module calls (``OpNode.is_mark``) go with a unit found in the graph without them
    (``Graph.without_marks``): a mark of a value the unit computes for itself (not its output, which a
    contracted unit's input replaces), and the marks of a module call whose ops all go (its arguments'
    and what it returns, also its output). The others stay: the skip of a residual read through a
    module's mark of it, a module's mark of the unit's output, or of an argument the unit alone read
    (kept while its value is). A mark that goes forwards its readers to the value it marked
    (``forwards``): a block's mark of what it returns is read outside it. A contracted unit's readers read
    its input by the name its own ops read it (``read_as``): a block's mark of what it returns, not the value
    inside the block, which would then seem to leave the block's call by another way."""

    def __init__(self, ir: IR, graph: Graph):
        scopes = ir.info.get("scopes") or []
        self.calls: dict[tuple[str, str], set[str]] = {}  # (path, call key) -> the call's ops besides marks
        self.marks: list[tuple[OpNode, tuple[str, str] | None]] = []
        self.inputs = {op.name: op.inputs for op in graph.ops}
        self.order = {op.name: i for i, op in enumerate(graph.ops)}
        self.source = {op.name: op.inputs[0] for op in graph.ops if op.is_mark}  # mark -> the value it marks
        for op in graph.ops:
            frames = scopes[op.scope] if op.scope is not None and op.scope < len(scopes) else []
            if op.is_mark:
                key = next((k for path, k in frames if path == op.owner), None)
                self.marks.append((op, None if key is None else (op.owner, key)))
                continue
            for path, key in frames:
                self.calls.setdefault((path, key), set()).add(op.name)

    def dropped_with(self, ops: frozenset[str], side: frozenset[str], output: str) -> frozenset[str]:
        """``ops`` of a unit with the marks that go with it (``side``: its side-input ops)."""
        if not self.marks:
            return ops
        gone = set(ops | side)
        added = set()
        for op, call in self.marks:
            members = self.calls.get(call) if call is not None else None
            if op.inputs[0] in gone and op.inputs[0] != output or members and members <= gone:
                gone.add(op.name)
                added.add(op.name)
        return ops | added if added else ops

    def read_as(self, ops: frozenset[str] | set[str], value: str) -> str:
        """The name by which a unit's ``ops`` (``dropped_with``) read its input ``value`` (found in the graph
        without marks): the outermost of the marks of it they read from outside, else ``value``."""
        source = self.source

        def origin(ref: str) -> str:
            while ref in source:
                ref = source[ref]
            return ref
        found = [ref for name in ops for ref in self.inputs.get(name, ())
                 if ref in source and ref not in ops and origin(ref) == value]
        return max(found, key=self.order.__getitem__) if found else value

    def forwards(self, ops: frozenset[str] | set[str]) -> dict[str, str]:
        """The marks among a unit's ``ops`` (``dropped_with``), each to the value it marks: where the unit
        is contracted, its readers read that value (and so, for its output, the unit's input)."""
        return {name: value for name, value in self.source.items() if name in ops}


def _unique_keys(units: list[Unit]) -> list[Unit]:
    """Number units whose descriptive keys coincide (parallel branches over the same child modules, e.g.
    several ``conv_kxk`` branches summed in one block): ``key``, ``key#2``, ... in graph order."""
    seen: dict[str, int] = {}
    for u in sorted(units, key=lambda u: (u.order, -len(u.ops))):
        seen[u.key] = seen.get(u.key, 0) + 1
        if seen[u.key] > 1:
            u.key = f"{u.key}#{seen[u.key]}"
    return units


def _nest(units: list[Unit], rejected: dict[str, str]) -> list[Unit]:
    """Units form a forest by op-set containment; a unit that partly overlaps another is rejected."""
    units = sorted(units, key=lambda u: -len(u.ops))
    kept: list[Unit] = []
    for u in units:
        clash = next((v for v in kept if u.ops & v.ops and not u.ops <= v.ops), None)
        if clash is not None:
            rejected[u.key] = f"overlaps unit '{clash.key}' without being inside it"
            continue
        parents = [v for v in kept if u.ops < v.ops]
        u.parent = min(parents, key=lambda v: len(v.ops)).key if parents else None
        kept.append(u)
    return kept


def _same_dims(an: DimAnalysis, vals: dict, a: str, b: str, ga: _Graph) -> str | None:
    ma, mb = ga.produced[a].meta, ga.produced[b].meta
    if value_sizes(ma) != value_sizes(mb):
        return f"input {_shape(ma)} and output {_shape(mb)} shapes differ"
    da, db = vals.get(a), vals.get(b)
    if not isinstance(da, list) or not isinstance(db, list):
        return "input or output is not a tensor"
    d = an.dims
    for i, (x, y) in enumerate(zip(da, db)):
        if d.resolve(x) != d.resolve(y):
            return f"input and output dim {i} are in different groups (channels are not the same)"
    return None


def _shape(meta) -> str:
    from ..ir.serial import shape_text
    return shape_text(meta)


def _closure(ops: set[str], g: _Graph, sink: str) -> set[str]:
    """The largest subset of ``ops`` whose values are used only inside it (or by ``sink``): ops that
    also feed something else (e.g. an attention mask shared by every layer) are side inputs, not part
    of the branch."""
    ops = set(ops)
    changed = True
    while changed:
        changed = False
        for n in sorted(ops, key=g.index.get, reverse=True):
            if g.used_outside(n, ops, sink):
                ops.discard(n)
                changed = True
    return ops


def _side_ops(g: _Graph, ops: set[str], skip: str, add: OpNode) -> set[str]:
    """The ops of branch ``ops`` that only prepare side inputs for it: not reading the skipped value and
    run outside the module that holds the ops which do (and the ``add``), e.g. an attention mask the model
    builds at its root for one layer (Gemma-2's sliding-window layers). They die with the branch."""
    reads_skip = {skip}
    for n in sorted(ops, key=g.index.get):
        if any(ref in reads_skip for ref in g.op(n).inputs):
            reads_skip.add(n)
    home = _common_prefix([g.op(n).owner for n in ops if n in reads_skip] + [add.owner])
    return {n for n in ops if n not in reads_skip and not g.ir.contains(home, g.op(n).owner)}


def _unit_params(g: _Graph, ops: set[str]) -> list[str] | None:
    """Canonical tensors read only inside the unit (what dropping it frees). A tensor that ops outside read
    too is a side input where the unit reads it as an argument (timm EVA's rotary table, read by every
    block's attention); None where the unit holds a call of the module that owns such a tensor (a module
    called again elsewhere: its weights are shared) or reads no tensor of its own."""
    own, shared = set(), False
    for name in ops:
        op = g.op(name)
        for ref in op.inputs:
            if ref not in g.tensor_of:
                continue
            if not any(c.name not in ops and not is_symint(c) for c in g.consumers.get(ref, [])):
                own.add(g.tensor_of[ref])
                continue
            home, owner = g.tensor_of[ref].rpartition(".")[0], op.owner
            if owner == home or home and owner.startswith(home + "."):
                return None
            shared = True
    return None if shared and not own else sorted(own)


def _residual_branches(g: _Graph, vals: dict, an: DimAnalysis, rejected: dict[str, str]) -> list[Unit]:
    anc_cache: dict[str, frozenset] = {}

    def ancestors(ref: str) -> frozenset:
        """Ops (not placeholders) that ``ref`` depends on, itself included."""
        if ref in anc_cache:
            return anc_cache[ref]
        stack, seen = [ref], set()
        while stack:
            r = stack.pop()
            if r in seen or r not in g.index:
                continue
            seen.add(r)
            stack.extend(g.graph.ops[g.index[r]].inputs)
        anc_cache[ref] = frozenset(seen)
        return anc_cache[ref]

    units = []
    for op in g.graph.ops:
        if op.target not in _ADDS or len(op.args) < 2 or op.kwargs.get("alpha", 1) != 1:
            continue
        a, b = op.args[0], op.args[1]
        if not (isinstance(a, dict) and isinstance(b, dict) and "node" in a and "node" in b):
            continue
        a, b = a["node"], b["node"]
        if not (g.is_data(a) and g.is_data(b)) or value_sizes(g.produced[a].meta) != value_sizes(g.produced[b].meta):
            continue
        candidates, cut = [], None
        for branch, skip in ((b, a), (a, b)):
            feeding = _closure({n for n in ancestors(branch) - ancestors(skip) if not is_symint(g.op(n))}, g, op.name)
            if branch not in feeding:
                continue
            params = _unit_params(g, feeding)
            if params is None or not any(g.flops.get(n) for n in feeding):
                continue
            lost = g.inputs_cut_off(feeding | {op.name}, skip)
            if lost:
                cut = (feeding, lost)
                continue
            side = _side_ops(g, feeding, skip, op)
            if branch in side:  # the whole branch comes from outside (x + f(y))
                side = set()
            size = sum(1 for n in feeding if g.flops.get(n))
            candidates.append((size, branch, skip, feeding - side, side, params))
        if not candidates:
            if cut is not None:
                rejected[_branch_key(g, cut[0], op)] = _ignores_inputs(cut[1])
            continue
        _, branch, skip, ops, side, params = max(candidates, key=lambda c: c[0])
        key = _branch_key(g, ops, op)
        ops.add(op.name)
        units.append(Unit(key, "residual", frozenset(ops), skip, op.name, params,
                          min(g.index[n] for n in ops), side=frozenset(side)))
    return units


def _ignores_inputs(inputs: list[str]) -> str:
    return f"without it the output would depend on no graph input ({', '.join(inputs)} cut off)"


def _branch_key(g: _Graph, ops: set[str], add: OpNode) -> str:
    """``<module holding the branch and its add>/residual:<its children the branch runs>``."""
    owners = [g.op(n).owner for n in sorted(ops, key=g.index.get)]
    lca = _common_prefix(owners + [add.owner])
    return f"{lca or '<root>'}/residual:{_common_children(lca, owners)}"


def _common_prefix(owners: list[str]) -> str:
    parts = [o.split(".") if o else [] for o in owners]
    out = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        out.append(level[0])
    return ".".join(out)


def _common_children(parent: str, owners: list[str]) -> str:
    prefix = f"{parent}." if parent else ""
    heads = []
    for o in owners:
        head = o[len(prefix):].split(".")[0] if o.startswith(prefix) and o != parent else "(own ops)"
        if head not in heads:
            heads.append(head)
    return "+".join(heads)


def _module_units(ir: IR, g: _Graph, vals: dict, an: DimAnalysis, rejected: dict[str, str]) -> list[Unit]:
    units = []
    for name, node in ir.modules.items():
        if not name:
            continue
        ops = _module_ops(ir, g.graph, name)
        if not ops or not any(g.flops.get(n) for n in ops):
            continue
        why = _module_problem(g, vals, an, ops)
        if isinstance(why, str):
            if node.meta.get("num_params"):
                rejected[name] = why
            continue
        inp, out, params = why
        units.append(Unit(name, "module", frozenset(ops), inp, out, params, min(g.index[n] for n in ops)))
    return units


def _module_ops(ir: IR, graph: Graph, name: str) -> set[str]:
    """The dataflow ops run by module ``name`` and its descendants (no size bookkeeping)."""
    return {op.name for op in graph.ops if ir.contains(name, op.owner) and not is_symint(op) and not op.mode_gated}


def _module_problem(g: _Graph, vals: dict, an: DimAnalysis, ops: set[str]):
    inputs = []
    for n in sorted(ops, key=g.index.get):  # graph order: a set's order changes with the hash seed
        for ref in g.op(n).inputs:
            if ref not in ops and g.is_data(ref) and ref not in inputs:
                inputs.append(ref)
    outputs = [n for n in ops if g.used_outside(n, ops)]
    if len(outputs) != 1:
        return f"{len(outputs)} tensor outputs (a removable unit has exactly one)"
    if not inputs:
        return "no tensor input"
    # the input that carries the output's dims replaces it; others (e.g. an attention mask) are side inputs
    problems = [_same_dims(an, vals, i, outputs[0], g) for i in inputs]
    carrier = next((i for i, why in zip(inputs, problems) if why is None), None)
    if carrier is None:
        return problems[0] if len(inputs) == 1 else f"none of its {len(inputs)} inputs matches its output: {problems[0]}"
    params = _unit_params(g, ops)
    if params is None:
        return "its weights are also used outside it (shared)"
    lost = g.inputs_cut_off(ops, carrier)
    if lost:
        return _ignores_inputs(lost)
    return carrier, outputs[0], params


def _signature(g: _Graph, u: Unit) -> str:
    """Isomorphism-invariant hash of the unit's op subgraph (op types, shapes, weight shapes)."""
    h = nx.DiGraph()
    ops = u.dropped
    for n in ops:
        op = g.op(n)
        h.add_node(n, label=f"{op.target}:{_shape(op.meta)}")
        for pos, ref in enumerate(op.inputs):
            if ref in ops:
                h.add_edge(ref, n, pos=str(pos))
            elif ref in g.tensor_of:
                pname = f"{n}#{pos}"
                h.add_node(pname, label=f"tensor:{_shape(g.produced[ref].meta)}")
                h.add_edge(pname, n, pos=str(pos))
    return graph_hash(h, iterations=3)


def graph_hash(g: nx.DiGraph, iterations: int) -> str:
    """Weisfeiler-Lehman hash over node ``label`` and edge ``pos``. (networkx >= 3.5 warns that directed
    hashes differ from older versions; osf only compares hashes made by one installation.)"""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The hashes produced for directed graphs changed")
        return nx.weisfeiler_lehman_graph_hash(g, node_attr="label", edge_attr="pos", iterations=iterations)


def locate_in(ir: IR, an: DimAnalysis, graph_key: str, units: list[Unit]
              ) -> dict[str, tuple[set, str, str, dict[str, str]]]:
    """The same units in another graph of the IR (eval mode): ``key -> (ops, input, output, forwards)``
    (``Unit``). Modules are found by owner, residual branches by the weights they read."""
    graph = ir.eval_graph if graph_key == "eval" else ir.graph
    g = _Graph(ir, graph.without_marks())
    marks = _Marks(ir, graph)
    vals = an.values[graph_key]
    branches = {tuple(b.params): b for b in _residual_branches(g, vals, an, {})}
    out = {}
    for u in units:
        if u.kind == "residual":
            b = branches.get(tuple(u.params))
            if b is not None:
                ops = marks.dropped_with(b.ops, b.side, b.output)
                out[u.key] = (set(ops | b.side), marks.read_as(ops | b.side, b.input), b.output, marks.forwards(ops))
            continue
        ops = _module_ops(ir, g.graph, u.key)
        found = _module_problem(g, vals, an, ops) if ops else "no ops"
        if not isinstance(found, str):
            dropped = marks.dropped_with(frozenset(ops), frozenset(), found[1])
            out[u.key] = (set(dropped), marks.read_as(dropped, found[0]), found[1], marks.forwards(dropped))
    return out
