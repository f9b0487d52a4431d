"""What survives an arch, precomputed once per space so that any arch is evaluated in microseconds:
which ops run when units are contracted (``Liveness``), and values that depend on the widths of a few
groups (``WidthTable``). The cost model and the supernet's program template build on both."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..ir.codegen import remember
from ..ir.graph import Graph, OpNode, is_symint
from ..ir.ops import functional_form, has_side_effect, is_inplace
from ..ir.serial import node_refs
from .dims import atoms_in, value_dims

if TYPE_CHECKING:
    from .space import SearchSpace


# combinations of widths one table remembers (the oldest dropped first): a few groups give few, but an op
# behind a concatenation of dozens of groups (DenseNet) meets new ones at nearly every arch sampled
WIDTHS_KEPT = 256


class WidthTable:
    """A value that depends on the widths of a few groups (indices into ``space.groups``): computed by
    ``compute({group: width})`` once per combination of them (the last ``WIDTHS_KEPT`` remembered)."""

    def __init__(self, groups: tuple[int, ...], compute: Callable[[dict[int, int]], Any]):
        self.groups, self.compute, self.values = groups, compute, {}

    def __call__(self, widths: list[int]) -> Any:
        key = tuple([widths[i] for i in self.groups])
        value = self.values.get(key, _MISSING)
        if value is _MISSING:
            value = remember(self.values, key, self.compute(dict(zip(self.groups, key))), WIDTHS_KEPT)
        return value


_MISSING = object()


def groups_in(exprs_lists: list, dims, group_of: dict[int, int]) -> tuple[int, ...]:
    """Indices of the width groups whose atoms occur in any of the given dim-expression lists."""
    found: set[int] = set()
    for exprs in exprs_lists:
        for e in value_dims(exprs):
            for a in atoms_in(dims.resolve(e)):
                if a in group_of:
                    found.add(group_of[a])
    return tuple(sorted(found))


def shrunk_atoms(space: "SearchSpace", widths: dict[int, int]) -> dict[int, int]:
    """Atom -> kept channels of the shrunk groups among ``widths`` (group index -> width, a
    ``WidthTable``'s argument)."""
    groups = space.groups
    return {groups[i].atom: w for i, w in widths.items() if w != groups[i].size}


class Liveness:
    """Which ops of one graph survive a set of contracted units (``space.subnet._rewrite`` + ``_dce``)."""

    def __init__(self, graph: Graph, located: dict[str, tuple[set, str, str, dict[str, str]]]):
        self.graph = graph
        index = {op.name: i for i, op in enumerate(graph.ops)}
        self.names = [op.name for op in graph.ops]
        self.inputs = [tuple(op.inputs) for op in graph.ops]
        self.outputs = node_refs(graph.outputs)
        self.units = {k: (frozenset(index[n] for n in ops if n in index), inp, out, forwards)
                      for k, (ops, inp, out, forwards) in located.items()}
        self.root = [has_side_effect(op.target) and not is_symint(op) for op in graph.ops]
        # an in-place op whose first argument a contraction replaced becomes out of place (no side effect)
        self.inplace: dict[int, tuple[tuple[str, ...], bool | str]] = {}
        for i, op in enumerate(graph.ops):
            if is_inplace(op.target) and node_refs(op.args[:1]):
                self.inplace[i] = (tuple(node_refs(op.args[:1])), functional_root(op))
        # mode-gated ops (BatchNorm's num_batches_tracked += 1) go with their owner's last op
        owned: dict[str, set[int]] = {}
        for i, op in enumerate(graph.ops):
            if not op.mode_gated and not is_symint(op):
                owned.setdefault(op.owner, set()).add(i)
        self.gated = {i: frozenset(owned[op.owner]) for i, op in enumerate(graph.ops)
                      if op.mode_gated and op.owner in owned}
        self.order = range(len(graph.ops) - 1, -1, -1)
        self.produced = set(self.names)
        # marks of module calls, kept while their value is (``ir.graph.with_unread_marks``)
        self.marks = [i for i, op in enumerate(graph.ops) if op.is_mark]

    def live(self, dropped: list[str]) -> tuple[set[str], set[int]]:
        """(values read by surviving ops or returned, indices of surviving ops) when ``dropped`` units
        (the contracted ones: ``space.dropped_units``) are removed."""
        removed: set[int] = set()
        replace: dict[str, str] = {}
        for k in dropped:
            located = self.units.get(k)
            if located is not None:
                removed |= located[0]
                replace.update(located[3])
                replace[located[2]] = located[1]

        def sub(ref: str) -> str:
            while ref in replace:
                ref = replace[ref]
            return ref

        live = {sub(r) for r in self.outputs} if replace else set(self.outputs)
        kept: set[int] = set()
        names, inputs, root, inplace, gated = self.names, self.inputs, self.root, self.inplace, self.gated
        for i in self.order:
            if i in removed:
                continue
            if i in gated and gated[i] <= removed:
                continue
            is_root = root[i]
            if replace and i in inplace:
                firsts, functional = inplace[i]
                if any(sub(r) != r for r in firsts):
                    if isinstance(functional, str):
                        raise NotImplementedError(functional)
                    is_root = functional
            if is_root or names[i] in live:
                kept.add(i)
                if replace:
                    live.update(sub(r) for r in inputs[i])
                else:
                    live.update(inputs[i])
        if self.marks:
            kept_names = {names[i] for i in kept}
            for i in self.marks:  # in order: a mark of a mark follows it
                refs = [sub(r) for r in inputs[i]]
                if i not in kept and i not in removed and all(r in kept_names or r not in self.produced for r in refs):
                    kept.add(i)
                    kept_names.add(names[i])
                    live.update(refs)
        return live, kept


def functional_root(op: OpNode) -> bool | str:
    """Whether the out-of-place form of in-place ``op`` has a side effect (or why it has no such form)."""
    functional = functional_form(op.target)
    if functional is None:
        return (f"{op.name} ({op.target} in '{op.owner}') writes in place into a value that a removed unit "
                "used to produce, and has no out-of-place form")
    return has_side_effect(functional) and not is_symint(op)


def check_units_keep_dims(space: "SearchSpace", key: str, graph: Graph) -> None:
    """The precondition of per-op width tables: a contracted unit's input has its output's dims."""
    vals, dims = space.analysis.values[key], space.analysis.dims
    for k, (_, inp, out, _) in space.located_units(key).items():
        a, b = vals.get(inp), vals.get(out)
        if not (isinstance(a, list) and isinstance(b, list) and len(a) == len(b)
                and all(dims.resolve(x) == dims.resolve(y) for x, y in zip(a, b))):
            raise NotImplementedError(f"unit '{k}' ({key} graph): its input {inp} and output {out} have different "
                                      "dims, so CostModel cannot cost it per op (Supernet.cost rewrites each "
                                      "arch instead)")
