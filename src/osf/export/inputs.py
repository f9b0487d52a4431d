"""Example inputs and dynamic dims for exporting a subnet, read from the IR (graph inputs are never
pruned, so every subnet takes the inputs the model was traced with)."""
from __future__ import annotations

from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.export import Dim

from ..ir.codegen import load_spec, traced_signature
from ..ir.graph import INPUT, IR
from ..ir.inputs import synthetic_inputs
from ..ir.serial import spec_children


def _leaf_inputs(ir: IR) -> list[dict | None]:
    """Per flattened leaf of ``(args, kwargs)``: the input placeholder's meta, or None for a constant."""
    metas = {p.name: p.meta for p in ir.graph.placeholders if p.kind == INPUT}
    return [None if "const" in leaf else {"name": leaf["placeholder"], **metas[leaf["placeholder"]]}
            for leaf in ir.info["user_leaves"]]


def example_inputs(ir: IR, example: Any = None) -> tuple[tuple, dict]:
    """``(args, kwargs)`` to export with. ``example``: the positional inputs (a tensor or a tuple) or the
    keyword inputs (a dict), structured as when the model was traced; None: made up from the traced shapes and
    dtypes (``osf.ir.inputs.synthetic_inputs``: the regenerated forward has no data-dependent branches)."""
    spec = load_spec(ir.info["in_spec"])
    if example is not None:
        if isinstance(example, dict):
            args, kwargs = (), dict(example)
        else:
            args, kwargs = (example,) if isinstance(example, torch.Tensor) else tuple(example), {}
        if pytree.tree_flatten((args, kwargs))[1] != spec:
            positional, named = spec_children(spec)
            raise ValueError(f"the example inputs do not match the traced ones ({positional.num_children} positional, "
                             f"keywords {list(named.context or [])}): pass a tuple of the positional inputs or a "
                             "dict of the keyword inputs, as the model was traced")
        for leaf, meta in zip(pytree.tree_leaves((args, kwargs)), _leaf_inputs(ir)):
            for i, sym in enumerate((meta or {}).get("sym") or []):
                if sym and isinstance(leaf, torch.Tensor) and leaf.shape[i] < 2:
                    raise ValueError(f"example input '{meta['name']}' has size {leaf.shape[i]} in dynamic dim {sym}: "
                                     "torch.export would fix it to that size; use an example with >= 2")
        return args, kwargs
    # torch.export fixes a dynamic dim whose example size is 1: make up a batch of 2 (traced at batch 1)
    small = any(s and n < 2 for m in _leaf_inputs(ir) if m for n, s in zip(m["shape"], m.get("sym") or []))
    return synthetic_inputs(ir, batch_size=2 if small else None)


def input_names(ir: IR) -> list[str]:
    """Names of the tensor inputs, in call order (the ONNX graph's input names)."""
    return [m["name"] for m in _leaf_inputs(ir) if m is not None]


def input_signature(ir: IR) -> list[dict]:
    """Name, dtype, shape (symbolic dims by name, e.g. ``B``), whether it is passed by keyword, and the
    bounds the traced graph holds for on its symbolic dims (``{dim: [lowest or None, highest or None]}``,
    from ``ir.info["input_ranges"]``), of every tensor input."""
    positional = spec_children(load_spec(ir.info["in_spec"]))[0].num_leaves
    ranges = ir.info.get("input_ranges") or {}
    out = []
    for i, m in enumerate(_leaf_inputs(ir)):
        if m is not None:
            sym = m.get("sym") or [None] * len(m["shape"])
            out.append({"name": m["name"], "dtype": m["dtype"], "keyword": i >= positional,
                        "shape": [s if s else d for s, d in zip(sym, m["shape"])],
                        "bounds": dict(ranges.get(m["name"], {}))})
    return out


def dynamic_shapes(ir: IR) -> dict | None:
    """``dynamic_shapes`` for ``torch.export`` of a rebuilt model (``forward(*args, **kwargs)``): every dim
    the IR keeps symbolic (batch, sequence) is ``Dim.AUTO``, as in ``osf.trace``; None if there is none."""
    spec = load_spec(ir.info["in_spec"])
    leaves = []
    for meta in _leaf_inputs(ir):
        dims = {i: Dim.AUTO for i, s in enumerate((meta or {}).get("sym") or []) if s}
        leaves.append(dims or None)
    if not any(leaves):
        return None
    args, kwargs = pytree.tree_unflatten(leaves, spec)
    signature = traced_signature(ir)
    if signature is not None:  # the rebuilt forward names its inputs (``codegen.traced_signature``)
        names = list(signature.parameters)[1:]
        return {**dict(zip(names, args)), **kwargs}
    return {"args": args, **kwargs} if args else dict(kwargs)
