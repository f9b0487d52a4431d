"""Made-up inputs for a traced model, from the IR alone (graph inputs are never pruned, so every subnet
takes them): for timing, exporting and smoke runs when the user gives none."""
from __future__ import annotations

import re

import torch
import torch.utils._pytree as pytree

from .codegen import load_spec
from .graph import INPUT, IR
from .serial import decode_arg, dtype_from_name

_BATCH_SYMBOL = re.compile(r"B\d*")  # the IR names dynamic batch dims B, B1, B2, …


def synthetic_inputs(ir: IR, batch_size: int | None = None) -> tuple[tuple, dict]:
    """``(args, kwargs)`` with the traced structure, shapes and dtypes, batch dims set to ``batch_size``
    (None: the traced sizes): floats ~ N(0, 1) (seeded), integers 0 (a valid index for any embedding),
    booleans True (e.g. an attention mask that keeps every token). A model traced without a dynamic batch
    keeps its traced batch (another ``batch_size`` is an error)."""
    placeholders = {p.name: p for p in ir.graph.placeholders if p.kind == INPUT}
    generator = torch.Generator().manual_seed(0)
    dynamic = any(s and _BATCH_SYMBOL.fullmatch(s) for p in placeholders.values() if isinstance(p.meta, dict)
                  for s in p.meta.get("sym") or [])
    leaves = []
    for want in ir.info["user_leaves"]:
        if "const" in want:
            leaves.append(decode_arg(want["const"], {}))
            continue
        p = placeholders[want["placeholder"]]
        meta = p.meta
        syms = meta.get("sym") or [None] * len(meta["shape"])
        shape = [batch_size if batch_size is not None and s and _BATCH_SYMBOL.fullmatch(s) else n
                 for n, s in zip(meta["shape"], syms)]
        if batch_size is not None and not dynamic and shape and shape[0] != batch_size:
            raise ValueError(f"input '{p.name}' was traced with a static batch of {shape[0]}: use "
                             f"batch_size={shape[0]}, or osf.trace with dynamic_batch=True")
        dtype = dtype_from_name(meta["dtype"])
        if dtype.is_floating_point or dtype.is_complex:
            leaves.append(torch.randn(shape, generator=generator).to(dtype))
        elif dtype == torch.bool:
            leaves.append(torch.ones(shape, dtype=dtype))
        else:
            leaves.append(torch.zeros(shape, dtype=dtype))
    args, kwargs = pytree.tree_unflatten(leaves, load_spec(ir.info["in_spec"]))
    return tuple(args), dict(kwargs)
