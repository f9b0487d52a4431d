"""Recover a module's constructor arguments from the instance, and verify them.

Rule (no per-architecture knowledge): for each parameter of ``type(m).__init__``, look for an attribute
of the same name (or ``_name``) on the instance and encode its value; optional parameters that are not
stored fall back to their defaults. The recovered call is then *verified*: re-instantiating the class
(on the meta device) must reproduce the same parameter and buffer names and shapes. Anything else is
reported as unrecovered with the reason, never guessed.
"""
from __future__ import annotations

import functools
import inspect
import itertools
import json
import warnings
from typing import Any, Callable

import torch
from torch import nn

from .serial import dtype_from_name


class _Unencodable(Exception):
    pass


def qualname(obj: Any) -> str:
    """``module.QualName`` of a class or function."""
    return f"{obj.__module__}.{obj.__qualname__}"


def encode_init_value(value: Any, child_names: dict[int, str]) -> Any:
    """JSON-encode a constructor argument value; modules that are children become references."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return {"float": repr(value)}
        return value
    if isinstance(value, (list, tuple)):
        items = [encode_init_value(v, child_names) for v in value]
        return items if isinstance(value, list) else {"tuple": items}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: encode_init_value(v, child_names) for k, v in value.items()}}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, nn.Module):
        if id(value) in child_names:
            return {"module": child_names[id(value)]}
        raise _Unencodable(f"a module instance ({type(value).__name__}) that is not a child")
    if isinstance(value, type) and "<locals>" not in value.__qualname__:
        return {"class": qualname(value)}
    if isinstance(value, functools.partial):
        return {"partial": encode_init_value(value.func, child_names),
                "args": [encode_init_value(a, child_names) for a in value.args],
                "kwargs": {k: encode_init_value(v, child_names) for k, v in value.keywords.items()}}
    if inspect.isfunction(value) or inspect.isbuiltin(value):
        if "<lambda>" in value.__qualname__ or "<locals>" in value.__qualname__:
            raise _Unencodable("a lambda or local function")
        return {"function": qualname(value)}
    to_dict = getattr(value, "to_dict", None)
    from_dict = getattr(type(value), "from_dict", None)
    if callable(to_dict) and callable(from_dict):  # configuration objects (e.g. HF PretrainedConfig)
        d = to_dict()
        json.dumps(d)
        return {"config": qualname(type(value)), "dict": d}
    raise _Unencodable(f"a value of type {type(value).__name__}")


def decode_init_value(value: Any, resolve_module: Callable[[str], nn.Module] | None = None) -> Any:
    """Inverse of :func:`encode_init_value`. Module references are built by ``resolve_module``."""
    from .graph import import_class
    if isinstance(value, list):
        return [decode_init_value(v, resolve_module) for v in value]
    if not isinstance(value, dict):
        return value
    (kind, payload), *rest = value.items()
    if kind == "tuple":
        return tuple(decode_init_value(v, resolve_module) for v in payload)
    if kind == "float":
        return float(payload)
    if kind == "dict":
        return {k: decode_init_value(v, resolve_module) for k, v in payload.items()}
    if kind == "dtype":
        return dtype_from_name(payload)
    if kind in ("class", "function"):
        return import_class(payload)
    if kind == "partial":
        return functools.partial(decode_init_value(payload, resolve_module),
                                 *decode_init_value(value["args"], resolve_module),
                                 **decode_init_value({"dict": value["kwargs"]}, resolve_module))
    if kind == "config":
        return import_class(payload).from_dict(value["dict"])
    if kind == "module":
        if resolve_module is None:
            raise ValueError(f"constructor argument refers to child module '{payload}'")
        return resolve_module(payload)
    raise ValueError(f"unknown constructor-argument encoding {kind!r}")


def state_shapes(module: nn.Module) -> dict[str, list[int]]:
    shapes = {f"p:{n}": list(t.shape) for n, t in module.named_parameters(remove_duplicate=False)}
    shapes.update({f"b:{n}": list(t.shape) for n, t in module.named_buffers(remove_duplicate=False)})
    return shapes


_SKIP_KINDS = (inspect.Parameter.VAR_KEYWORD,)


def recover_init(module: nn.Module, child_names: dict[int, str]) -> dict:
    """Recover ``module``'s constructor arguments: {"status": "verified"|"unverified"|"unrecovered",
    "args": {...}, "reason": str}."""
    cls = type(module)
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError) as e:
        return {"status": "unrecovered", "reason": f"no inspectable constructor ({e})"}
    args: dict[str, Any] = {}
    defaulted: list[str] = []
    for p in list(sig.parameters.values())[1:]:
        if p.kind in _SKIP_KINDS:
            continue
        if p.kind == inspect.Parameter.VAR_POSITIONAL:
            if isinstance(module, nn.Sequential):  # children given positionally
                args["*" + p.name] = [{"module": child_names[id(c)]} for c in module.children()]
            continue
        found, value = _lookup(module, p)
        if not found:
            if isinstance(module, (nn.ModuleList, nn.ModuleDict)) and p.name == "modules":
                args[p.name] = ([{"module": child_names[id(c)]} for c in module.children()]
                                if isinstance(module, nn.ModuleList)
                                else {"dict": {k: {"module": child_names[id(c)]} for k, c in module.items()}})
                continue
            if p.default is inspect.Parameter.empty:
                return {"status": "unrecovered",
                        "reason": f"required constructor argument '{p.name}' is not stored on the instance"}
            defaulted.append(p.name)
            continue
        try:
            args[p.name] = encode_init_value(value, child_names)
        except (_Unencodable, TypeError, ValueError) as e:
            if p.default is inspect.Parameter.empty:
                return {"status": "unrecovered", "reason": f"constructor argument '{p.name}' is {e}"}
            defaulted.append(p.name)
    out = {"args": args}
    if defaulted:
        out["defaults_assumed"] = defaulted
    return out


def _lookup(module: nn.Module, p: inspect.Parameter) -> tuple[bool, Any]:
    for attr in (p.name, "_" + p.name):
        if attr in module._parameters or attr in module._buffers:
            value = getattr(module, attr)
        elif attr in module.__dict__:
            value = module.__dict__[attr]
        elif attr in module._modules:
            value = module._modules[attr]
        else:
            continue
        if isinstance(p.default, bool) or p.annotation in (bool, "bool"):
            if value is None or isinstance(value, torch.Tensor):  # e.g. Linear(bias=True) stores a Parameter
                return True, value is not None
        if isinstance(value, torch.Tensor):
            return False, None
        return True, value
    return False, None


def instantiate_from_args(class_path: str, args: dict, resolve_module: Callable[[str], nn.Module] | None,
                          device: str | torch.device = "meta") -> nn.Module:
    from .graph import import_class
    cls = import_class(class_path)
    positional = []
    kwargs = {}
    for k, v in args.items():
        if k.startswith("*"):
            positional = decode_init_value(v, resolve_module)
        else:
            kwargs[k] = decode_init_value(v, resolve_module)
    with warnings.catch_warnings(), torch.device(device):
        warnings.simplefilter("ignore")
        return cls(*positional, **kwargs)


def verify_all(model: nn.Module, names: dict[int, str]) -> dict[str, dict]:
    """Recover and verify constructor arguments of every module; children before parents.
    Identical (class, args) pairs are verified once."""
    modules = list(model.named_modules())
    results: dict[str, dict] = {}
    cache: dict[str, tuple[bool, str]] = {}

    def resolve(child: str) -> nn.Module:
        res = results.get(child)
        if res is None or res["status"] != "verified":
            raise _Unencodable(f"child module '{child}' is not itself re-instantiable")
        return instantiate_from_args(res["class"], res["args"], resolve)

    for qual, mod in reversed(modules):
        rec = recover_init(mod, names)
        rec["class"] = qualname(type(mod))
        if "status" in rec:
            results[qual] = rec
            continue
        key = rec["class"] + json.dumps(rec["args"], sort_keys=True) + json.dumps(state_shapes(mod), sort_keys=True)
        if key not in cache:
            cache[key] = _verify(rec, mod, resolve)
        ok, reason = cache[key]
        rec["status"] = "verified" if ok else "unverified"
        if not ok:
            rec["reason"] = reason
        results[qual] = rec
    return results


def size_arguments(rec: dict, module: nn.Module) -> dict[str, list]:
    """The integer constructor arguments of a verified leaf ``module`` (``rec``: its ``recover_init``
    record with "class") that are a size of its own tensors, stored under their own name: {argument:
    [tensor, dim]}, where re-instantiating with the argument one larger (on the meta device) grows that
    dim, and every dim it changes, by one and changes nothing else. ``Linear.in_features`` is, ``groups``
    and ``num_heads`` are not; neither is a grouped conv's ``in_channels`` (one larger is refused)."""
    def own_shapes(m: nn.Module) -> dict[str, list[int]]:
        return {k: list(t.shape) for k, t in itertools.chain(m._parameters.items(), m._buffers.items())
                if t is not None}

    def shapes(args: dict) -> dict[str, list[int]] | None:
        try:
            return own_shapes(instantiate_from_args(rec["class"], args, None))
        except Exception:  # noqa: BLE001 - a constructor refusing the value rules the argument out
            return None

    base = own_shapes(module) if not module._modules else {}
    sizes: dict[str, list] = {}
    for name, value in rec["args"].items() if base else ():
        if (type(value) is not int or module.__dict__.get(name) != value
                or not any(value in shape for shape in base.values())):
            continue
        grown = shapes({**rec["args"], name: value + 1})
        if grown is None or grown.keys() != base.keys() or any(len(grown[k]) != len(base[k]) for k in base):
            continue
        changed = [(k, d, grown[k][d] - size) for k in base for d, size in enumerate(base[k]) if grown[k][d] != size]
        if changed and all(step == 1 for _, _, step in changed):
            sizes[name] = [changed[0][0], changed[0][1]]
    return sizes


def _verify(rec: dict, mod: nn.Module, resolve: Callable[[str], nn.Module]) -> tuple[bool, str]:
    expected = state_shapes(mod)
    last_error = ""
    for device in ("meta", "cpu"):
        if device == "cpu" and sum(p.numel() for p in mod.parameters()) > 50_000_000:
            break
        try:
            rebuilt = instantiate_from_args(rec["class"], rec["args"], resolve, device)
        except Exception as e:  # noqa: BLE001 - any constructor failure means "not verified"
            last_error = f"re-instantiation failed: {type(e).__name__}: {str(e)[:200]}"
            continue
        got = state_shapes(rebuilt)
        if got == expected:
            return True, ""
        diff = [k for k in sorted(set(got) | set(expected)) if got.get(k) != expected.get(k)][:3]
        return False, f"re-instantiated module differs in parameter/buffer shapes: {diff}"
    return False, last_error
