"""The hierarchical graph IR.

A flat, topologically ordered list of ATen-level ``OpNode``s (the dataflow) plus a tree of
``ModuleNode``s (the hierarchy, one per ``nn.Module`` at every nesting level). Every op knows its
owner module (innermost module on its stack), so the graph of any module's children is the op graph
with each op collapsed to the child of that module that contains it.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import networkx as nx
import torch

from . import serial

# Placeholder kinds.
INPUT, PARAM, BUFFER, CONST = "input", "param", "buffer", "constant"


@dataclass
class Placeholder:
    """A graph input: a user input, a parameter, a buffer or a lifted constant tensor."""
    name: str
    kind: str
    target: str | None = None  # qualified parameter/buffer name, constant key, or user-input path
    meta: Any = None

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "target": self.target, "meta": self.meta}


@dataclass
class OpNode:
    """One ATen (or symbolic-int) operation of the forward graph."""
    name: str
    target: str
    args: list
    kwargs: dict
    owner: str  # qualified name of the innermost module whose forward ran this op ("" = root)
    meta: Any = None
    mode_gated: bool = False  # only runs in training mode (e.g. BatchNorm's num_batches_tracked += 1)
    context: list | None = None  # context managers of forward it runs under, outermost first (``capture``)
    scope: int | None = None  # the module calls it runs in: an index into ``IR.info["scopes"]`` (``capture``)

    @property
    def inputs(self) -> list[str]:
        return serial.node_refs(self.args) + serial.node_refs(list(self.kwargs.values()))

    @property
    def marks_argument(self) -> bool:
        """An alias capture put at the start of a module's call to mark one of the tensors it takes
        (``meta["argument"]``: its number; ``capture._CallShapes``): an assignment, not a computation."""
        return isinstance(self.meta, dict) and "argument" in self.meta

    @property
    def is_mark(self) -> bool:
        """A mark of a module's argument (``marks_argument``) or of one of the tensors a module returning
        several returned (``meta["result"]``: its number; capture put it as the call's last ops): an
        alias of the value, not a computation."""
        return isinstance(self.meta, dict) and ("argument" in self.meta or "result" in self.meta)

    def to_dict(self) -> dict:
        d = {"name": self.name, "target": self.target, "args": self.args, "kwargs": self.kwargs,
             "owner": self.owner, "meta": self.meta}
        if self.mode_gated:
            d["mode_gated"] = True
        if self.context:
            d["context"] = self.context
        if self.scope is not None:
            d["scope"] = self.scope
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "OpNode":
        return cls(d["name"], d["target"], d["args"], d["kwargs"], d["owner"], d.get("meta"),
                   d.get("mode_gated", False), d.get("context"), d.get("scope"))


def with_unread_marks(ops: list[OpNode], kept: list[OpNode]) -> list[OpNode]:
    """``kept`` (the ops of ``ops`` that dead-code removal keeps) and the marks of module calls
    (``OpNode.is_mark``) whose value is still there: a module that does not read an argument can still be
    given it, and one whose result nobody reads still return it, so a module put in its place or its hooks
    get what the model passed and a hook what the module returned."""
    names = {op.name for op in kept}
    produced = {op.name for op in ops}
    out = []
    for op in ops:  # in order: a module's mark of a value its submodule's mark marks follows that mark
        if op.name in names or op.is_mark and all(ref in names or ref not in produced for ref in op.inputs):
            names.add(op.name)
            out.append(op)
    return out


@dataclass
class Graph:
    """The dataflow of one forward: placeholders, ops in topological order, outputs."""
    placeholders: list[Placeholder]
    ops: list[OpNode]
    outputs: list  # encoded args (node refs or constants), flattened user outputs

    def to_dict(self) -> dict:
        return {"placeholders": [p.to_dict() for p in self.placeholders],
                "ops": [o.to_dict() for o in self.ops], "outputs": self.outputs}

    @classmethod
    def from_dict(cls, d: dict) -> "Graph":
        return cls([Placeholder(**p) for p in d["placeholders"]], [OpNode.from_dict(o) for o in d["ops"]],
                   d["outputs"])

    def without_marks(self) -> "Graph":
        """This graph with the marks of module calls (``OpNode.is_mark``) contracted: each read of one
        reads the value it marks. The search space analyses this view, where a mark would be the same
        tensor under another name (a residual's skip read through a module's mark of it) or one more op
        in a module (two units differing only by the marks of what they return)."""
        marks = {op.name: op.inputs[0] for op in self.ops if op.is_mark}
        if not marks:
            return self

        def origin(ref: str) -> str:
            while ref in marks:
                ref = marks[ref]
            return ref
        ops = [dataclasses.replace(op, args=serial.substitute_refs(op.args, origin),
                                   kwargs=serial.substitute_refs(op.kwargs, origin))
               for op in self.ops if op.name not in marks]
        return Graph(self.placeholders, ops, serial.substitute_refs(self.outputs, origin))

    def producers(self) -> dict[str, Placeholder | OpNode]:
        table: dict[str, Placeholder | OpNode] = {p.name: p for p in self.placeholders}
        table.update({o.name: o for o in self.ops})
        return table


@dataclass
class ModuleNode:
    """One ``nn.Module`` of the hierarchy, with its metadata dictionary (JSON-serialisable)."""
    name: str
    meta: dict
    children: list[str] = field(default_factory=list)
    _ir: "IR | None" = field(default=None, repr=False, compare=False)

    @property
    def class_path(self) -> str:
        return self.meta["class"]

    def instantiate(self, *, device: str | torch.device | None = None) -> torch.nn.Module:
        """Re-create this module from its metadata alone: its class, called with the recovered and
        verified constructor arguments (weights are freshly initialised, not loaded)."""
        init = self.meta.get("init") or {}
        if init.get("status") != "verified":
            raise ValueError(f"module '{self.name or '<root>'}' ({self.class_path}) cannot be re-instantiated "
                             f"from metadata: {init.get('reason', 'constructor arguments not recovered')}")
        from .construct import decode_init_value
        cls = import_class(self.class_path)
        args = {k: decode_init_value(v) for k, v in init["args"].items()}
        with torch.device(device or "cpu"):
            return cls(**args)

    def __repr__(self) -> str:
        return (f"ModuleNode({self.name or '<root>'}: {self.class_path}, params={self.meta['num_params']}, "
                f"children={len(self.children)})")


def import_class(path: str) -> type:
    module, _, name = path.rpartition(".")
    obj: Any = importlib.import_module(module)
    return getattr(obj, name)


class IR:
    """A captured model: graph(s), module hierarchy, tensors (parameters, buffers, constants)."""

    def __init__(self, graph: Graph, modules: dict[str, ModuleNode], tensors: dict[str, torch.Tensor],
                 aliases: dict[str, str], info: dict, eval_graph: Graph | None = None):
        self.graph = graph
        self.eval_graph = eval_graph  # set only when eval mode runs a structurally different graph
        self.modules = modules
        self.tensors = tensors  # canonical name -> tensor (tied parameters stored once)
        self.aliases = aliases  # every parameter/buffer qualified name -> canonical name
        self.info = info  # in/out tree specs, signature, dynamic dims, capture method, versions
        for m in modules.values():
            m._ir = self

    @property
    def graphs(self) -> list[Graph]:
        """The training graph, then the eval graph where eval mode runs another one."""
        return [self.graph] + ([self.eval_graph] if self.eval_graph is not None else [])

    # ----- hierarchy -----
    def node(self, name: str) -> ModuleNode:
        """The module node with this qualified name ("" is the root)."""
        try:
            return self.modules[name]
        except KeyError:
            close = [n for n in self.modules if n.endswith(name.split(".")[-1])][:5]
            raise KeyError(f"no module '{name}' in the IR; similar: {close}") from None

    def walk(self, name: str = "") -> Iterator[tuple[int, ModuleNode]]:
        """Depth-first (level, node) pairs under ``name``."""
        stack = [(0, name)]
        while stack:
            level, n = stack.pop()
            node = self.modules[n]
            yield level, node
            stack.extend((level + 1, c) for c in reversed(node.children))

    def child_of(self, owner: str, ancestor: str) -> str | None:
        """The direct child of ``ancestor`` that contains ``owner`` (None if the op is ``ancestor``'s own)."""
        if owner == ancestor:
            return None
        prefix = f"{ancestor}." if ancestor else ""
        if not owner.startswith(prefix):
            raise ValueError(f"'{owner}' is not inside '{ancestor}'")
        head = owner[len(prefix):].split(".")[0]
        return prefix + head

    def contains(self, ancestor: str, owner: str) -> bool:
        return ancestor == "" or owner == ancestor or owner.startswith(ancestor + ".")

    def graph_of(self, name: str = "", *, graph: Graph | None = None) -> nx.DiGraph:
        """Dataflow among the children of module ``name``: nodes are child modules and the module's own
        ops, plus ``input``/``output`` boundary nodes; edges carry the shapes and dtypes that flow.
        For a ViT's ``encoder.layers`` this is the chain of its blocks."""
        graph = graph or self.graph
        self.node(name)
        g = nx.DiGraph()
        g.add_node("input", kind="boundary")
        g.add_node("output", kind="boundary")
        where: dict[str, str] = {}
        for op in graph.ops:
            if not self.contains(name, op.owner):
                continue
            child = self.child_of(op.owner, name)
            key = child if child is not None else op.name
            where[op.name] = key
            if key not in g:
                if child is not None:
                    g.add_node(key, kind="module", cls=self.modules[child].class_path if child in self.modules
                               else "?")
                else:
                    g.add_node(key, kind="op", target=op.target)
        produced = graph.producers()
        for op in graph.ops:
            dst = where.get(op.name)
            if dst is None:
                continue
            for ref in op.inputs:
                src = where.get(ref)
                p = produced.get(ref)
                if isinstance(p, Placeholder) and p.kind in (PARAM, BUFFER, CONST) or is_symint(p):
                    continue
                src = src if src is not None else "input"
                if src != dst:
                    _add_flow(g, src, dst, p.meta if p is not None else None)
        consumers_outside = self._consumed_outside(name, graph, where)
        for ref in (r for r in consumers_outside if not is_symint(produced[r])):
            _add_flow(g, where[ref], "output", produced[ref].meta)
        return g

    def _consumed_outside(self, name: str, graph: Graph, where: dict[str, str]) -> list[str]:
        out = []
        for op in graph.ops:
            if op.name in where:
                continue
            out.extend(r for r in op.inputs if r in where)
        out.extend(r for r in serial.node_refs(graph.outputs) if r in where)
        return list(dict.fromkeys(out))

    # ----- convenience -----
    @property
    def num_params(self) -> int:
        return self.modules[""].meta["num_params"]

    def build(self) -> torch.nn.Module:
        """An executable ``nn.Module`` rebuilt from the IR alone (same outputs, gradients, state_dict keys)."""
        from .codegen import build
        return build(self)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the IR to ``path`` (a directory: ``ir.json`` + ``weights.safetensors``), atomically, and
        return it. An existing ``path`` raises ``FileExistsError`` unless ``overwrite=True``."""
        from .io import save_ir
        return save_ir(self, path, overwrite=overwrite)

    def to_json(self) -> dict:
        return {"format": "osf-ir", "version": 1, "info": self.info, "aliases": self.aliases,
                "modules": {n: {"meta": m.meta, "children": m.children} for n, m in self.modules.items()},
                "graph": self.graph.to_dict(),
                "eval_graph": self.eval_graph.to_dict() if self.eval_graph is not None else None}

    def __repr__(self) -> str:
        return (f"IR({self.modules[''].class_path}: {len(self.modules)} modules, {len(self.graph.ops)} ops, "
                f"{self.num_params:,} params)")


def is_symint(node: Placeholder | OpNode | None) -> bool:
    """A value that is a (symbolic) size, not tensor data: shape bookkeeping, not dataflow."""
    return node is not None and isinstance(node.meta, dict) and "symint" in node.meta


def _add_flow(g: nx.DiGraph, src: str, dst: str, meta: Any) -> None:
    text = serial.shape_text(meta)
    dtype = meta.get("dtype") if isinstance(meta, dict) else None
    if g.has_edge(src, dst):
        g.edges[src, dst]["shapes"].append(text)
    else:
        g.add_edge(src, dst, shapes=[text], dtype=dtype)
