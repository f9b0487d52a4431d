"""Rebuild an executable ``nn.Module`` from an IR by generating Python source for its forward.

The rebuilt model mirrors the original hierarchy with light containers (one per original module,
named after its class) that hold the parameters and buffers under the original names, so
``state_dict()`` keys are the original's. The forward is generated code calling the captured ATen ops;
training flags read the owner module's ``.training`` live, and device constants follow the inputs.
"""
from __future__ import annotations

import keyword
from typing import Any, Callable

import torch
import torch.utils._pytree as pytree
from torch import nn

from . import ops as op_rules
from . import serial
from .errors import FormatError, InputError
from .graph import BUFFER, CONST, INPUT, IR, PARAM, Graph


class IRContainer(nn.Module):
    """Stands in the rebuilt hierarchy for one original module: holds its parameters, buffers and
    children. Only the root's forward runs (generated from the IR)."""

    osf_class: str = ""

    def extra_repr(self) -> str:
        return f"osf: {self.osf_class}"

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{type(self).__name__} is part of a model rebuilt from an osf IR; call the root "
                           "model, whose generated forward runs every module")


class RebuiltModel(IRContainer):
    """Root of a model rebuilt from an IR."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.training and self._osf_train_error:
            raise InputError(f"{self._osf_train_error}; call .eval() first, or trace with inputs that work "
                             "in training mode (e.g. targets)")
        values = self._osf_bind(args, kwargs)
        if self.training or self._osf_eval_fn is None:
            fn, spec = self._osf_train_fn, self._osf_out_spec
        else:
            fn, spec = self._osf_eval_fn, self._osf_eval_out_spec
        outs = fn(self, _device(values, self), *values)
        return pytree.tree_unflatten(list(outs), spec)

    def _osf_bind(self, args: tuple, kwargs: dict) -> list:
        leaves, spec = pytree.tree_flatten((args, kwargs))
        if spec != self._osf_in_spec:
            args, kwargs = _rebind(args, kwargs, self._osf_in_spec, self._osf_signature)
            leaves, spec = pytree.tree_flatten((args, kwargs))
            if spec != self._osf_in_spec:
                raise InputError(f"inputs do not match the traced structure: expected {self._osf_in_spec}, "
                                 f"got {spec}; call the model as it was traced")
        values = []
        for leaf, want in zip(leaves, self._osf_user_leaves):
            if "const" in want:
                expected = serial.decode_arg(want["const"], {})
                if leaf != expected:
                    raise InputError(f"non-tensor input {leaf!r} differs from the traced value {expected!r}; "
                                     "osf.trace again with the value you need")
            else:
                values.append(leaf)
        return values


def _device(values: list, model: nn.Module) -> torch.device:
    for v in values:
        if isinstance(v, torch.Tensor):
            return v.device
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def _rebind(args: tuple, kwargs: dict, in_spec: pytree.TreeSpec, names: list[str] | None) -> tuple[tuple, dict]:
    positional, named = serial.spec_children(in_spec)
    n_pos = positional.num_children
    keys = list(named.context or [])
    given = dict(kwargs)
    args = list(args)
    if names is not None:
        if len(args) > n_pos:
            for name, value in zip(names[n_pos:], args[n_pos:]):
                if name in given:
                    raise InputError(f"input '{name}' given twice")
                given[name] = value
            args = args[:n_pos]
        while len(args) < n_pos and names[len(args)] in given:
            args.append(given.pop(names[len(args)]))
    missing = [k for k in keys if k not in given]
    extra = [k for k, v in given.items() if k not in keys and v is not None]
    if len(args) != n_pos or missing or extra:
        raise InputError(f"the model was traced with {n_pos} positional input(s) and keyword input(s) {keys}; "
                         f"got {len(args)} positional, missing {missing}, unexpected {extra}")
    return tuple(args), {k: given[k] for k in keys}


def load_spec(data: Any) -> pytree.TreeSpec:
    """Rebuild a stored pytree spec; a custom output class that cannot be imported is a FormatError."""
    from .graph import import_class

    def resolve(path: str) -> type:
        try:
            return import_class(path)
        except (ImportError, AttributeError) as e:
            raise FormatError(f"the model's inputs/outputs use class '{path}', which cannot be imported ({e}); "
                              "install the package that defines it") from None

    try:
        return serial.spec_from_json(data, resolve)
    except (KeyError, TypeError) as e:
        raise FormatError(f"corrupt input/output structure in the IR: {e}") from None


def _container_class(class_path: str, cache: dict[str, type], base: type = IRContainer) -> type:
    key = f"{base.__name__}:{class_path}"
    if key not in cache:
        short = class_path.rpartition(".")[2] or "Module"
        cache[key] = type(short if short.isidentifier() else "Module", (base,), {"osf_class": class_path})
    return cache[key]


def build(ir: IR, *, share_weights: bool = False) -> RebuiltModel:
    """Rebuild ``ir`` as an executable module. ``share_weights=True`` reuses the IR's tensors instead
    of copying them (the rebuilt model then trains the same storage)."""
    classes: dict[str, type] = {}
    root_meta = ir.modules[""].meta
    root = _container_class(root_meta["class"], classes, RebuiltModel)()
    containers: dict[str, nn.Module] = {"": root}
    for _, node in ir.walk(""):
        parent = containers[node.name]
        for child in node.children:
            local = child[len(node.name) + 1:] if node.name else child
            m = _container_class(ir.modules[child].meta["class"], classes)()
            parent.add_module(local, m)
            containers[child] = m
    _attach_aliases(root, containers, ir.info.get("module_aliases", {}))
    params: dict[str, nn.Parameter] = {}
    persistent = set(ir.info.get("persistent", []))
    for qual, canon in ir.aliases.items():
        mod_name, _, local = qual.rpartition(".")
        owner = _find_container(containers, root, mod_name)
        tensor = ir.tensors[canon]
        is_param = _is_param(ir, qual)
        if is_param:
            if canon not in params:
                data = tensor.detach() if share_weights else tensor.detach().clone()
                params[canon] = nn.Parameter(data, requires_grad=tensor.requires_grad)
            owner.register_parameter(local, params[canon])
        else:
            if canon not in params:
                params[canon] = tensor if share_weights else tensor.clone()
            owner.register_buffer(local, params[canon], persistent=qual in persistent)
    for name, t in ir.tensors.items():
        if name.startswith("_osf_const_"):
            root.register_buffer(name, t if share_weights else t.clone(), persistent=False)
    root._osf_in_spec = load_spec(ir.info["in_spec"])
    root._osf_out_spec = load_spec(ir.info["out_spec"])
    root._osf_eval_out_spec = load_spec(ir.info["eval_out_spec"]) if ir.eval_graph is not None else None
    root._osf_user_leaves = ir.info["user_leaves"]
    root._osf_train_error = ir.info.get("train_error")
    root._osf_signature = ir.info.get("signature")
    root._osf_train_fn = compile_graph(ir, ir.graph)
    root._osf_eval_fn = compile_graph(ir, ir.eval_graph) if ir.eval_graph is not None else None
    return root


def _is_param(ir: IR, qual: str) -> bool:
    mod_name, _, local = qual.rpartition(".")
    node = ir.modules.get(mod_name)
    if node is not None:
        return local in node.meta["params"]
    return isinstance(ir.tensors[ir.aliases[qual]], nn.Parameter)


def _attach_aliases(root: nn.Module, containers: dict[str, nn.Module], aliases: dict[str, list]) -> None:
    """Register a shared module under each further path it had in the original model, at its
    original position among the parent's children (so ``state_dict`` keys keep their order)."""
    for alias in sorted(aliases, key=lambda a: a.count(".")):
        canon, position = aliases[alias]
        parent_name, _, local = alias.rpartition(".")
        parent = root.get_submodule(parent_name)
        if local in parent._modules:  # deeper aliases arrive with their shared ancestor
            continue
        items = list(parent._modules.items())
        items.insert(position, (local, containers[canon]))
        parent._modules.clear()
        parent._modules.update(items)


def _find_container(containers: dict[str, nn.Module], root: nn.Module, mod_name: str) -> nn.Module:
    if mod_name in containers:
        return containers[mod_name]
    return root.get_submodule(mod_name)  # an alias path of a shared module


def attr_path(base: str, qual: str) -> str:
    """Python expression reaching attribute ``qual`` (dotted) from variable ``base``."""
    expr = base
    for part in qual.split(".") if qual else []:
        expr = f"{expr}.{part}" if part.isidentifier() and not keyword.iskeyword(part) else \
            f"getattr({expr}, {part!r})"
    return expr


def compile_graph(ir: IR, graph: Graph) -> Callable:
    """Generate and compile ``fn(self, _dev, *user_inputs) -> list`` running ``graph``."""
    source, globals_ = generate_source(ir, graph)
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<osf-generated {ir.modules[''].meta['class']}>", "exec"), globals_, namespace)
    fn = namespace["forward"]
    fn.__osf_source__ = source
    return fn


def generate_source(ir: IR, graph: Graph) -> tuple[str, dict]:
    targets: dict[str, str] = {}
    globals_: dict[str, Any] = {"torch": torch}
    names: dict[str, str] = {}
    prologue: list[str] = []
    owners: dict[str, str] = {}

    def owner_var(owner: str) -> str:
        if owner not in owners:
            owners[owner] = f"_m{len(owners)}"
            prologue.append(f"    {owners[owner]} = {attr_path('self', owner)}")
        return owners[owner]

    user_inputs = []
    for p in graph.placeholders:
        var = _safe(p.name)
        names[p.name] = var
        if p.kind == INPUT:
            user_inputs.append(var)
        elif p.kind in (PARAM, BUFFER):
            prologue.append(f"    {var} = {attr_path('self', p.target)}")
        elif p.kind == CONST:
            prologue.append(f"    {var} = self.{p.target}")
    body: list[str] = []
    last_use: dict[str, int] = {}
    for i, op in enumerate(graph.ops):
        for ref in op.inputs:
            last_use[ref] = i
    outputs = set(serial.node_refs(graph.outputs))
    placeholder_names = {p.name for p in graph.placeholders}
    for i, op in enumerate(graph.ops):
        names[op.name] = _safe(op.name)
    for i, op in enumerate(graph.ops):
        if op.target not in targets:
            targets[op.target] = f"_t{len(targets)}"
            globals_[targets[op.target]] = serial.resolve_target(op.target)
        args = list(op.args)
        kwargs = dict(op.kwargs)
        flag_at = op_rules.TRAINING_FLAG_ARG.get(op.target)
        if flag_at is not None and len(args) > flag_at:
            if not (op.target in op_rules.STATS_OPTIONAL and args[3] is None):
                args[flag_at] = {"expr": f"{owner_var(op.owner)}.training"}
        prob = op_rules.TRAINING_ONLY_PROB.get(op.target)
        if prob is not None:
            idx, kw = prob
            if len(args) > idx and args[idx]:
                args[idx] = {"expr": f"({_render(args[idx], names)} if {owner_var(op.owner)}.training else 0.0)"}
            elif kwargs.get(kw):
                kwargs[kw] = {"expr": f"({_render(kwargs[kw], names)} if {owner_var(op.owner)}.training else 0.0)"}
        call = f"{targets[op.target]}(" + ", ".join(
            [_render(a, names) for a in args] + [f"{k}={_render(v, names)}" for k, v in kwargs.items()]) + ")"
        line = f"{names[op.name]} = {call}"
        if op.mode_gated:
            line = f"{names[op.name]} = {call} if {owner_var(op.owner)}.training else None"
        body.append(f"    {line}")
        dead = [names[r] for r in dict.fromkeys(op.inputs) if last_use.get(r) == i and r not in outputs
                and r not in placeholder_names]
        if dead:
            body.append("    " + " = ".join(dead) + " = None")
    ret = "    return [" + ", ".join(_render(o, names) for o in graph.outputs) + "]"
    header = "def forward(self, _dev, " + ", ".join(user_inputs) + "):" if user_inputs else "def forward(self, _dev):"
    return "\n".join([header, *prologue, *body, ret]) + "\n", globals_


def _safe(name: str) -> str:
    return f"{name}_" if keyword.iskeyword(name) or name in ("self", "torch", "_dev") else name


def _render(value: Any, names: dict[str, str]) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_render(v, names) for v in value) + "]"
    if not isinstance(value, dict):
        return repr(value)
    (kind, payload), = value.items()
    if kind == "node":
        return names[payload]
    if kind == "expr":
        return payload
    if kind == "tuple":
        return "(" + "".join(_render(v, names) + ", " for v in payload) + ")"
    if kind == "float":
        return f"float({payload!r})"
    if kind in ("dtype", "layout", "memory_format"):
        return f"torch.{payload}"
    if kind == "device":
        return "_dev"
    if kind == "dict":
        return "{" + ", ".join(f"{k!r}: {_render(v, names)}" for k, v in payload.items()) + "}"
    if kind == "slice":
        return "slice(" + ", ".join(_render(v, names) for v in payload) + ")"
    raise FormatError(f"unknown argument encoding {kind!r} in the IR")
