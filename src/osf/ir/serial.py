"""JSON encoding of op targets, op arguments and value metadata of the captured graph.

Everything in the IR is plain JSON. Op targets are strings (``aten.conv2d.default``,
``operator.getitem``) resolved only inside ``torch.ops`` and a few stdlib modules, so loading an IR
never imports or runs anything a file names.
"""
from __future__ import annotations

import builtins
import collections
import math
import operator
from typing import Any, Callable

import sympy
import torch
import torch.fx

from .errors import FormatError

_DTYPES = {str(d).removeprefix("torch."): d for d in vars(torch).values() if isinstance(d, torch.dtype)}
_LAYOUTS = {str(v).removeprefix("torch."): v for v in vars(torch).values() if isinstance(v, torch.layout)}
_MEMORY_FORMATS = {str(v).removeprefix("torch."): v for v in vars(torch).values()
                   if isinstance(v, torch.memory_format)}
_PY_MODULES = {"operator": operator, "math": math, "builtins": builtins}
_TORCH_SYM_FUNCS = {"sym_max", "sym_min", "sym_float", "sym_int", "sym_not", "sym_ite", "sym_sum", "sym_sqrt"}


def target_name(target: Any) -> str:
    """A stable string for an fx ``call_function`` target."""
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return str(target)  # e.g. "aten.conv2d.default"
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", None)
    if module in ("_operator", "operator"):
        return f"operator.{name}"
    if module in _PY_MODULES and name:
        return f"{module}.{name}"
    if module.startswith("torch") and name in _TORCH_SYM_FUNCS:
        return f"torch.{name}"
    if name == "_assert_scalar" or name == "sym_constrain_range_for_size":
        return f"aten.{name}.default"
    raise ValueError(f"op target {target!r} ({module}.{name}) cannot be stored in the IR")


def resolve_target(name: str) -> Any:
    """Inverse of :func:`target_name`; raises FormatError for anything outside the allowed namespaces."""
    head, _, rest = name.partition(".")
    if head in _PY_MODULES and rest and "." not in rest:
        fn = getattr(_PY_MODULES[head], rest, None)
        if fn is not None:
            return fn
    elif head == "torch" and rest in _TORCH_SYM_FUNCS:
        return getattr(torch, rest)
    else:
        try:
            packet_name, _, overload = rest.rpartition(".")
            return getattr(getattr(getattr(torch.ops, head), packet_name), overload)
        except (AttributeError, RuntimeError):
            pass
    raise FormatError(f"unknown op '{name}' in the IR: it is not a torch.ops operator (is a custom-op "
                      "library not loaded?)")


class ModelDtype:
    """A dtype argument that follows the model's floating-point dtype (traced as ``dtype``): encoded as
    {"model_dtype": name}, generated code reads it from the model's tensors (``.half()`` changes it)."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


class ModelFinfo:
    """A float argument that is ``torch.finfo(<the model's dtype>).<attr>`` (e.g. a mask's fill value)."""

    def __init__(self, dtype: torch.dtype, attr: str):
        self.dtype, self.attr = dtype, attr


FINFO_ATTRS = ("min", "max", "eps", "tiny")


def encode_arg(value: Any) -> Any:
    """Encode an fx argument as JSON. Nodes become {"node": name}."""
    if isinstance(value, torch.fx.Node):
        return {"node": value.name}
    if isinstance(value, ModelDtype):
        return {"model_dtype": dtype_name(value.dtype)}
    if isinstance(value, ModelFinfo):
        return {"model_finfo": [dtype_name(value.dtype), value.attr]}
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, list):
        return [encode_arg(v) for v in value]
    if isinstance(value, tuple):
        return {"tuple": [encode_arg(v) for v in value]}
    if isinstance(value, torch.dtype):
        return {"dtype": dtype_name(value)}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    if isinstance(value, dict):
        return {"dict": {str(k): encode_arg(v) for k, v in value.items()}}
    if isinstance(value, slice):
        return {"slice": [encode_arg(value.start), encode_arg(value.stop), encode_arg(value.step)]}
    raise ValueError(f"argument {value!r} of type {type(value).__name__} cannot be stored in the IR")


def decode_arg(value: Any, env: dict[str, Any]) -> Any:
    """Decode an encoded argument to a runtime value; nodes are looked up in ``env``."""
    if isinstance(value, list):
        return [decode_arg(v, env) for v in value]
    if not isinstance(value, dict):
        return value
    (kind, payload), = value.items()
    if kind == "node":
        return env[payload]
    if kind == "tuple":
        return tuple(decode_arg(v, env) for v in payload)
    if kind == "float":
        return float(payload)
    if kind in ("dtype", "model_dtype"):  # model_dtype as traced: the model's dtype then
        return dtype_from_name(payload)
    if kind == "model_finfo":
        return float(getattr(torch.finfo(dtype_from_name(payload[0])), finfo_attr(payload[1])))
    if kind == "device":
        return torch.device(payload)
    if kind == "layout":
        return _LAYOUTS[payload]
    if kind == "memory_format":
        return _MEMORY_FORMATS[payload]
    if kind == "dict":
        return {k: decode_arg(v, env) for k, v in payload.items()}
    if kind == "slice":
        return slice(*(decode_arg(v, env) for v in payload))
    raise FormatError(f"unknown argument encoding {kind!r} in the IR")


def substitute_refs(value: Any, sub: Callable[[str], str]) -> Any:
    """An encoded argument with each node reference ``r`` replaced by ``sub(r)``."""
    if isinstance(value, dict):
        if set(value) == {"node"}:
            return {"node": sub(value["node"])}
        return {k: substitute_refs(v, sub) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_refs(v, sub) for v in value]
    return value


def node_refs(value: Any) -> list[str]:
    """Names of the nodes an encoded argument refers to, in order."""
    if isinstance(value, list):
        return [r for v in value for r in node_refs(v)]
    if isinstance(value, dict):
        (kind, payload), = value.items()
        if kind == "node":
            return [payload]
        if kind in ("tuple", "slice"):
            return [r for v in payload for r in node_refs(v)]
        if kind == "dict":
            return [r for v in payload.values() for r in node_refs(v)]
        if kind == "mapping":
            return node_refs(payload[2])
    return []


def model_dtype_used(value: Any) -> str | None:
    """The traced dtype name of the first argument in ``value`` (encoded) that follows the model's dtype
    (``ModelDtype``, ``ModelFinfo``), or None."""
    if isinstance(value, list):
        return next((d for v in value for d in [model_dtype_used(v)] if d), None)
    if isinstance(value, dict):
        (kind, payload), = value.items()
        if kind == "model_dtype":
            return payload
        if kind == "model_finfo":
            return payload[0]
        if kind in ("tuple", "slice"):
            return model_dtype_used(payload)
        if kind == "dict":
            return model_dtype_used(list(payload.values()))
        if kind == "mapping":
            return model_dtype_used(payload[2])
    return None


def copy_tree(value: Any) -> Any:
    """Copy of JSON-like metadata (dicts, lists, tuples of plain values): ``copy.deepcopy`` without its
    memo, several times faster on the IR's metadata. Dict and list subclasses become plain ones; other
    objects are shared, not copied."""
    if isinstance(value, dict):
        return {k: copy_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_tree(v) for v in value]
    if type(value) is tuple:
        return tuple(copy_tree(v) for v in value)
    return value


def finfo_attr(name: str) -> str:
    """``name`` checked to be one of ``FINFO_ATTRS`` (the IR is read, never trusted)."""
    if name not in FINFO_ATTRS:
        raise FormatError(f"unknown torch.finfo attribute '{name}' in the IR (known: {', '.join(FINFO_ATTRS)})")
    return name


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"`` (what the IR stores; ``dtype_from_name`` reads it back)."""
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise FormatError(f"unknown dtype '{name}' in the IR") from None


def encode_value_meta(val: Any, sizes: dict | None = None) -> Any:
    """Shape/dtype of a node's value: tensors give {"shape", "dtype"[, "sym"]}; symbolic ints give
    {"symint": expr, "hint": int}; containers recurse. ``sizes`` (shape symbol -> int) overrides the example
    values the export saw (a batch traced doubled is reported at the user's size)."""
    if isinstance(val, torch.Tensor):
        shape, sym, dynamic = [], [], False
        for d in val.shape:
            if isinstance(d, torch.SymInt) and not d.node.expr.is_number:  # a SymInt specialised to a number is static
                shape.append(_hint(d, sizes))
                sym.append(_size_text(d))
                dynamic = True
            else:
                shape.append(int(d))
                sym.append(None)
        meta = {"shape": shape, "dtype": dtype_name(val.dtype)}
        if dynamic:
            meta["sym"] = sym
        return meta
    if isinstance(val, torch.SymInt):
        return {"symint": str(val), "hint": _hint(val, sizes)}
    if isinstance(val, (torch.SymFloat, torch.SymBool)):
        return {"sym": str(val)}
    if isinstance(val, (list, tuple)):
        return {"list": [encode_value_meta(v, sizes) for v in val]}
    if isinstance(val, (bool, int, float)) or val is None:
        return {"const": val if not isinstance(val, float) or math.isfinite(val) else None}
    return None


def _size_text(size: torch.SymInt) -> str:
    """A symbolic size as text, with the common integer factor of a sum taken out: export writes a conv's
    8 output channels at height ``(S - 1)//2 + 1`` folded into the batch as ``B*(8*((S - 1)//2) + 8)``;
    as ``8*B*(((S - 1)//2) + 1)`` the channels are a factor the dimension analysis can split off."""
    expr = size.node.expr
    return str(expr) if expr.is_Symbol else str(sympy.factor_terms(expr))


def _hint(sym: torch.SymInt, sizes: dict | None = None) -> int:
    """An example value of ``sym`` (with ``sizes`` substituted); for a data-dependent size (``nonzero``,
    ``torch.where(mask)``: no example value) torch's optimisation hint, 1 where it has none (FLOP counts take
    that size)."""
    node = sym.node
    if sizes:
        env = node.shape_env
        value = node.expr.xreplace(sizes).xreplace(getattr(env, "backed_var_to_val", None) or env.var_to_val)
        if value.is_number:
            return int(value)
    hint = getattr(node, "hint", None)
    if hint is None:
        hint = node.shape_env.optimization_hint(node.expr, fallback=1)
    return int(hint)


def shape_text(meta: Any) -> str:
    """Human-readable shape of value metadata, symbolic dims by name (e.g. ``[B, 197, 768]``)."""
    if not isinstance(meta, dict):
        return "?"
    if "shape" in meta:
        sym = meta.get("sym") or [None] * len(meta["shape"])
        return "[" + ", ".join(s if s is not None else str(d) for d, s in zip(meta["shape"], sym)) + "]"
    if "list" in meta:
        return "(" + ", ".join(shape_text(m) for m in meta["list"]) + ")"
    if "symint" in meta:
        return meta["symint"]
    return "?"


# ---- pytree specs of model inputs/outputs ------------------------------------------------------
_BUILTIN_CONTAINERS = {tuple: "tuple", list: "list", dict: "dict"}


def spec_children(spec: Any) -> list:
    """Child specs of a TreeSpec (``children()`` on recent torch, ``children_specs`` before)."""
    return spec.children() if callable(getattr(type(spec), "children", None)) else spec.children_specs


def spec_to_json(spec: Any) -> Any:
    """JSON form of a ``torch.utils._pytree.TreeSpec`` (namedtuples, dataclass-like and registered
    output types are stored by class path and their field names)."""
    import collections
    if spec.is_leaf():
        return None
    children = [spec_to_json(c) for c in spec_children(spec)]
    t = spec.type
    if t in _BUILTIN_CONTAINERS:
        ctx = list(spec.context) if t is dict else None
        return {"type": _BUILTIN_CONTAINERS[t], "context": ctx, "children": children}
    if t is collections.OrderedDict:
        return {"type": "ordereddict", "context": list(spec.context), "children": children}
    ctx = spec.context
    if isinstance(ctx, type):  # namedtuple: context is the class itself
        return {"type": "namedtuple", "class": f"{ctx.__module__}.{ctx.__qualname__}", "children": children}
    path = f"{t.__module__}.{t.__qualname__}"
    if isinstance(ctx, (list, tuple)) and all(isinstance(k, str) for k in ctx):
        return {"type": "class", "class": path, "context": list(ctx), "children": children}
    if ctx is None:  # a registered type whose fields are fixed by the class (torch.return_types.max)
        return {"type": "class", "class": path, "context": None, "children": children}
    raise ValueError(f"output container {path} cannot be stored in the IR (its pytree context is "
                     f"{type(ctx).__name__})")


def spec_from_json(data: Any, import_class: Any) -> Any:
    """Inverse of :func:`spec_to_json`; ``import_class`` resolves class paths."""
    import torch.utils._pytree as pytree
    if data is None:
        return pytree.treespec_leaf() if hasattr(pytree, "treespec_leaf") else pytree.LeafSpec()
    children = [spec_from_json(c, import_class) for c in data["children"]]
    kind = data["type"]
    if kind in ("tuple", "list"):
        return pytree.TreeSpec(tuple if kind == "tuple" else list, None, children)
    if kind == "dict":
        return pytree.TreeSpec(dict, list(data["context"]), children)
    if kind == "ordereddict":
        return pytree.TreeSpec(collections.OrderedDict, list(data["context"]), children)
    cls = import_class(data["class"])
    if kind == "namedtuple":
        return pytree.TreeSpec(collections.namedtuple, cls, children)
    context = data["context"]
    return pytree.TreeSpec(cls, None if context is None else list(context), children)
