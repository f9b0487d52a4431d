"""A subnet's generated forward over **views** of the supernet's full tensors.

The subnet's IR (without tensors) is compiled as usual, except that each parameter, buffer and constant
is read from the full model and cut on the fly: a prefix of a shrunk dim is a ``narrow`` (a view: no
copy, and the gradient lands in the shared tensor); positions that are not a prefix (a concatenation
segment, a pruned inner factor) use ``index_select`` with a cached index."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..ir.codegen import compile_graph
from ..ir.graph import BUFFER, CONST, IR, PARAM
from ..space.subnet import tensor_slices


@dataclass
class SubnetProgram:
    """Compiled forward functions of one arch (training and, if traced, eval graph) and its IR."""
    ir: IR
    train_fn: Callable
    eval_fn: Callable | None


class _Indices:
    """Index tensors of the non-prefix cuts, moved to each device once."""

    def __init__(self) -> None:
        self.cpu: list[torch.Tensor] = []
        self.on: dict[tuple[int, torch.device], torch.Tensor] = {}

    def add(self, index: torch.Tensor) -> int:
        self.cpu.append(index)
        return len(self.cpu) - 1

    def __call__(self, i: int, device: torch.device) -> torch.Tensor:
        key = (i, device)
        if key not in self.on:
            self.on[key] = self.cpu[i].to(device)
        return self.on[key]


def compile_program(sub: IR, exprs_of: dict[str, list], dims, select: dict[int, torch.Tensor]) -> SubnetProgram:
    """Compile ``sub`` (a subnet IR without tensors) to run on the full model's tensors, cut by
    ``select`` (atom -> kept indices). ``exprs_of`` gives each canonical tensor's dim expressions."""
    indices = _Indices()
    views: dict[str, str] = {}
    graphs = [sub.graph] + ([sub.eval_graph] if sub.eval_graph is not None else [])
    for graph in graphs:
        for p in graph.placeholders:
            if p.kind not in (PARAM, BUFFER, CONST) or p.target in views:
                continue
            canon = sub.aliases.get(p.target, p.target)
            suffix = ""
            for d, n, index in tensor_slices(exprs_of[canon], dims, select):
                suffix += f".narrow({d}, 0, {n})" if index is None else f".index_select({d}, _ix({indices.add(index)}, _dev))"
            views[p.target] = suffix
    names = {"_ix": indices}
    train_fn = compile_graph(sub, sub.graph, views, names)
    eval_fn = compile_graph(sub, sub.eval_graph, views, names) if sub.eval_graph is not None else None
    return SubnetProgram(sub, train_fn, eval_fn)
